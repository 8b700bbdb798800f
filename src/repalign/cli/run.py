"""`repalign run CONFIG`: run a study (or print its plan with --dry-run)."""

from __future__ import annotations

import sys

from repalign import _options as opt
from repalign.cli._output import int_at_least
from repalign.errors import InputError


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "run",
        help="run a study from a TOML config (resumable)",
        description="Run every model of a study config through alignment, few-shot transfer and robustness. "
        "Running the same config again resumes: finished units are skipped. Exit code 0 when every unit "
        "succeeded, 3 when some failed (listed at the end), 2 for an invalid config.",
    )
    parser.add_argument("config", help="study config (TOML), e.g. configs/quickstart.toml")
    parser.add_argument("--dry-run", action="store_true", help="print the plan (units, cache, finished) and exit")
    parser.add_argument("--executor", choices=opt.EXECUTORS, help="override [execution] executor")
    parser.add_argument(
        "--jobs", type=int_at_least(1), metavar="N", help="local worker processes (override [execution] jobs)"
    )
    parser.add_argument(
        "--address",
        metavar="auto|HOST:PORT|ray://HOST:PORT",
        help="Ray cluster to join (implies --executor ray; default: start a private local one); "
        "the auth token comes from RAY_AUTH_TOKEN / RAY_AUTH_TOKEN_PATH / [execution] token_file",
    )
    parser.add_argument(
        "--connect-timeout",
        type=int_at_least(1),
        metavar="S",
        help=f"seconds to join the Ray cluster before a one-line error (default {opt.DEFAULT_CONNECT_TIMEOUT_S})",
    )
    parser.add_argument("--output", metavar="DIR", help="study directory (override [study] output)")
    parser.add_argument("--no-live", action="store_true", help="plain log lines instead of the live progress display")
    cost = parser.add_argument_group("cost estimate (with --dry-run)")
    cost.add_argument(
        "--estimate",
        action="store_true",
        help="also print the compute the study needs and its wall time on 1 and on --gpus devices",
    )
    cost.add_argument(
        "--throughput",
        metavar="GMACS_PER_S|JSON",
        help="the device's measured throughput in GMAC/s, or the JSON of scripts/gpu_check.sh "
        "(default: the GPU of timm's published benchmark, an RTX 4090)",
    )
    cost.add_argument("--gpus", type=int_at_least(1), default=1, metavar="N", help="devices running units in parallel")
    cost.add_argument(
        "--fewshot-seconds",
        type=float,
        metavar="S",
        help="seconds of one model's few-shot grid on one dataset on the device (default: the 2-core CPU's)",
    )
    parser.set_defaults(handler=handle)


def handle(args) -> int:
    from repalign.cli._output import emit
    from repalign.study.run import run_study

    if args.estimate and not args.dry_run:
        raise InputError("--estimate goes with --dry-run: repalign run CONFIG --dry-run --estimate")
    executor = args.executor or ("ray" if args.address else None)
    outcome = run_study(
        args.config,
        executor=executor,
        jobs=args.jobs,
        dry_run=args.dry_run,
        address=args.address,
        output=args.output,
        live=False if args.no_live else None,
        connect_timeout=args.connect_timeout,
    )
    if outcome.dry_run:
        emit(outcome.plan, "table", title=f"plan: {outcome.n_units} units -> {outcome.path}")
        stages = ", ".join(outcome.config.stages) or "none"
        print(
            f"{outcome.n_units} units (one per model); stages: {stages}; executor: {outcome.config.execution.executor}"
        )
        for note in outcome.notes:  # after the table, where a long plan leaves them in view
            print(f"note: {note}")
        if args.estimate:
            for line in _estimate(args, outcome):
                print(line)
        return 0

    print(
        f"study {outcome.path}: {outcome.n_units} units, {outcome.n_skipped} already finished, "
        f"{outcome.n_run} run in {outcome.duration_s:.1f}s, {outcome.n_failed_units} with failures"
    )
    if len(outcome.failures):
        columns = ["model", "stage", "dataset", "error"]
        emit(outcome.failures[columns], "table", title="failures", stream=sys.stdout)
    for note in outcome.notes:
        print(f"note: {note}")
    if outcome.report:
        print(f"report: {outcome.report}")
    return outcome.exit_code


def _estimate(args, outcome) -> list[str]:
    from repalign.study import estimate

    if args.throughput is None:
        throughput = estimate.published_throughput()
    else:
        try:
            throughput = float(args.throughput)
        except ValueError:
            throughput = estimate.throughput_from_gpu_check(args.throughput)
    fewshot_seconds = estimate.DEFAULT_FEWSHOT_SECONDS if args.fewshot_seconds is None else args.fewshot_seconds
    models = [record["model"] for record in outcome.plan]
    result = estimate.estimate_study(
        outcome.config, models, throughput_gmacs_per_s=throughput, fewshot_seconds=fewshot_seconds
    )
    return result.lines(args.gpus)
