"""``repalign theory``: compute the information-theoretic predictions and write tables + figures."""

from __future__ import annotations

import logging
import math
from pathlib import Path

from repalign.cli._output import add_format_option, emit, seed_option

logger = logging.getLogger(__name__)

DEFAULT_OUT = "theory-results"


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "theory",
        help="channel capacity, query bounds and simulations of the alignment theory",
        description="Compute the study's information-theoretic predictions: capacity C(eps) = 1 - H2(eps) and "
        "query bounds, the simulated teaching game (queries to locate a new object vs misalignment eps, flip and "
        "embedding students), worst-case disagreement on adversarial examples, and domain-shift sensitivity. "
        "Writes CSV tables and PNG figures to --out and prints a summary.",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(DEFAULT_OUT),
        help="folder for the CSV tables and PNG figures (default: %(default)s)",
    )
    parser.add_argument(
        "--seed", type=seed_option(), default=0, help="random seed; equal seeds give identical tables (default: 0)"
    )
    parser.add_argument("--quick", action="store_true", help="a much smaller grid (seconds), for smoke tests")
    parser.add_argument("--no-figures", action="store_true", help="write the CSV tables only")
    add_format_option(parser)
    parser.set_defaults(handler=handle)


def handle(args) -> int:
    import time

    from repalign._io import describe_os_error, write_text_atomic
    from repalign.errors import InputError
    from repalign.theory import default_grid, run_theory, summary_table

    out_dir = Path(args.out)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"--out {out_dir} exists and is not a folder; pass a folder path")
    try:  # before minutes of computing: a folder that cannot be made is said at once
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"--out {out_dir}: cannot create the folder: {describe_os_error(exc)}") from None
    start = time.perf_counter()
    tables = run_theory(default_grid(quick=args.quick), seed=args.seed)
    for name, table in tables.items():
        write_text_atomic(out_dir / f"{name}.csv", table.to_csv(index=False))
    summary = summary_table(tables)
    write_text_atomic(out_dir / "summary.csv", summary.to_csv(index=False))
    if not args.no_figures:
        from repalign.theory.figures import write_figures

        write_figures(tables, out_dir)
    logger.warning(
        "theory: wrote %d tables%s to %s in %.1f s",
        len(tables) + 1,
        "" if args.no_figures else " and figures",
        out_dir,
        time.perf_counter() - start,
    )
    records = [{k: _finite_or_none(v) for k, v in row.items()} for row in summary.to_dict(orient="records")]
    emit(records, args.format, title=f"repalign theory (seed {args.seed}; tables in {out_dir})")
    return 0


def _finite_or_none(value):
    """inf (a query count that is infinite or not reached) has no JSON form: report it as null."""
    if isinstance(value, float) and math.isinf(value):
        return None
    return value
