"""`repalign report STUDY_DIR [--out FILE]`: write the study's self-contained HTML report."""

from __future__ import annotations

from repalign import _options as opt
from repalign.cli._output import bootstrap_option, seed_option


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "report",
        help="write the HTML report of a study (tables, figures, statistics)",
        description="Write one self-contained HTML report of a study directory (figures embedded, sortable "
        "tables), plus every table as CSV and every figure as PNG and PDF next to it.",
    )
    parser.add_argument("study_dir", metavar="STUDY_DIR", help="a study directory written by `repalign run`")
    parser.add_argument(
        "--out", metavar="FILE", default=None, help="the HTML file to write (default: STUDY_DIR/report/report.html)"
    )
    parser.add_argument(
        "--n-bootstrap",
        type=bootstrap_option(),
        default=opt.DEFAULT_N_BOOTSTRAP,
        metavar="N",
        help="bootstrap resamples over models for the CIs (default: %(default)s; 0 = none)",
    )
    parser.add_argument(
        "--seed", type=seed_option(), default=None, help="seed of the bootstraps (default: the study's [study] seed)"
    )
    parser.add_argument(
        "--correction",
        choices=opt.CORRECTIONS,
        default=opt.DEFAULT_CORRECTION,
        help="p-value adjustment across each grid of correlations (default: %(default)s)",
    )
    parser.add_argument(
        "--relative-to-ceiling",
        action="store_true",
        help="draw the noise-ceiling figures as alignment / ceiling (human data with repeated judgments only)",
    )
    parser.set_defaults(handler=run)


def run(args) -> int:
    from repalign.report.html import write_report

    path = write_report(
        args.study_dir,
        out=args.out,
        n_bootstrap=args.n_bootstrap,
        random_state=args.seed,
        correction=args.correction,
        relative_to_ceiling=args.relative_to_ceiling,
    )
    print(path)
    return 0
