"""`repalign results DIR`: print the results of a study."""

from __future__ import annotations

from repalign import _options as opt
from repalign.cli._output import add_format_option

_STAGES = (*opt.STAGES, "failures", "comparison", "all")

# columns worth showing per stage (the full schema goes out with --stage all)
_COLUMNS = {
    "alignment": ["model", "layer", "dataset", "metric", "similarity", "ties", "value", "ci_low", "ci_high", "n"],
    "fewshot": ["model", "layer", "dataset", "head", "shots", "value", "ci_low", "ci_high", "n"],
    "robustness": ["model", "model_id", "dataset", "metric", "value"],
    "failures": ["model", "stage", "dataset", "error"],
}


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "results",
        help="print the results of a study directory",
        description="Print the result rows of a study written by `repalign run`.",
    )
    parser.add_argument("study", metavar="DIR", help="study directory")
    parser.add_argument(
        "--stage",
        choices=_STAGES,
        default="all",
        help="which rows: one stage's successful rows, failures, the [compare] table (comparison), or all "
        "result rows (default)",
    )
    add_format_option(parser)
    parser.set_defaults(handler=handle)


def handle(args) -> int:
    from repalign.cli._output import emit
    from repalign.store import load_study

    study = load_study(args.study)
    if args.stage == "all":
        frame = study.results
        if args.format == "table":  # the terminal cannot show 17 columns legibly
            frame = frame[["model", "layer", "stage", "dataset", "metric", "head", "shots", "value", "status"]]
    elif args.stage == "comparison":  # model_comparison.parquet: a table of its own columns
        frame = study.model_comparison
    else:
        frame = getattr(study, args.stage)[_COLUMNS[args.stage]]
    emit(frame, args.format, title=f"{args.stage}: {len(frame)} rows ({study.path})")
    if args.format == "table" and args.stage in ("alignment", "all"):
        note = domains_note(study.results)
        if note:
            print(f"note: {note}")
    return 0


def domains_note(results) -> str | None:
    """Which human datasets (domains) the alignment rows cover, and which the study left out.

    Any average of a model's alignment is over these domains only; a domain without images
    is a ``skipped`` row (see docs/study.md), one that failed is a ``failed`` row.
    """
    rows = results[results["stage"] == "alignment"]
    if rows.empty:
        return None
    by_status = {
        status: set(rows.loc[rows["status"] == status, "dataset"].dropna()) for status in rows["status"].unique()
    }
    covered = sorted(by_status.get("ok", set()))
    configured = set(rows["dataset"].dropna())
    note = f"alignment rows cover {len(covered)} of the {len(configured)} domains of the study: {', '.join(covered)}"
    skipped = sorted(by_status.get("skipped", set()) - set(covered))
    failed = sorted(by_status.get("failed", set()) - set(covered))
    if skipped:
        note += f"; no images: {', '.join(skipped)}"
    if failed:
        note += f"; failed: {', '.join(failed)}"
    return note
