"""``repalign fewshot MODEL --dataset mnist``: few-shot transfer accuracy of a model's embeddings."""

from __future__ import annotations

import sys

from repalign import _options as opt
from repalign.cli._output import add_device_option, add_format_option, emit
from repalign.errors import InputError


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "fewshot",
        help="few-shot transfer accuracy of a model's embeddings (the study's protocol)",
        description="Draw N examples per class from a dataset's test split, train a head on the model's "
        "frozen embeddings, evaluate on the remaining examples; repeat over seeds and report the mean "
        "accuracy with a 95%% t-interval over seeds. See docs/fewshot.md.",
    )
    parser.add_argument(
        "model",
        help="model name, e.g. pixels, tflite:mobilenet_v2_1.0_224_quant, timm:resnet50",
    )
    parser.add_argument(
        "--dataset",
        required=True,
        help="mnist, fashion_mnist, cifar10, cifar100, or a dataset folder (ImageFolder)",
    )
    # --shots and --seeds default to None, not to their values, so that with --splits FILE
    # "not given" differs from "given": the manifest fixes both, and a value that disagrees
    # with it is refused (run_fewshot) instead of ignored
    parser.add_argument(
        "--shots",
        help=f"examples per class, comma-separated (default: {','.join(map(str, opt.DEFAULT_SHOTS))})",
    )
    parser.add_argument(
        "--heads",
        default=",".join(opt.HEADS),
        help=f"heads, comma-separated from {','.join(opt.HEADS)} (default: all)",
    )
    parser.add_argument(
        "--seeds",
        type=int,
        help=f"number of random splits (seeds 0..N-1; default: {opt.DEFAULT_N_SEEDS})",
    )
    parser.add_argument(
        "--max-eval-per-class",
        type=int,
        metavar="N",
        help="evaluate on at most N examples per class (quick runs)",
    )
    parser.add_argument(
        "--split",
        choices=opt.FEWSHOT_SPLITS,
        default=opt.DEFAULT_FEWSHOT_SPLIT,
        help="dataset split (default: %(default)s)",
    )
    parser.add_argument(
        "--splits",
        metavar="FILE",
        help="reuse the split manifest in FILE (.json or .npz)",
    )
    parser.add_argument(
        "--save-splits",
        metavar="FILE",
        help="save the split manifest to FILE (.json or .npz)",
    )
    parser.add_argument(
        "--per-seed",
        action="store_true",
        help="one row per seed instead of mean and CI",
    )
    parser.add_argument(
        "--layer",
        action="append",
        metavar="L",
        help=f"layer to read; repeat for several, all from one forward pass and scored on the same splits "
        f"(default: {opt.DEFAULT_LAYER}; see `repalign models --layers MODEL`)",
    )
    add_device_option(parser)
    parser.add_argument("--batch-size", type=int, help="images per forward pass when embedding")
    add_format_option(parser)
    parser.set_defaults(handler=run)


def parse_int_list(text: str, option: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise InputError(f"{option} takes comma-separated integers, e.g. 1,5,10; got '{text}'.") from None
    if not values:
        raise InputError(f"{option} is empty; give comma-separated integers, e.g. 1,5,10.")
    return values


def run(args) -> int:
    from repalign._device import require_device
    from repalign.fewshot import SplitManifest, run_fewshot

    require_device(args.device)  # even when the embeddings are cached and nothing runs on it

    shots = None if args.shots is None else parse_int_list(args.shots, "--shots")
    heads = tuple(h.strip() for h in args.heads.split(",") if h.strip())
    if args.seeds is not None and args.seeds < 1:
        raise InputError(f"--seeds must be at least 1; got {args.seeds}.")
    if args.max_eval_per_class is not None and args.max_eval_per_class < 1:
        raise InputError(f"--max-eval-per-class must be at least 1; got {args.max_eval_per_class}.")
    splits = None
    if args.splits:
        splits = SplitManifest.load(args.splits)
    elif args.save_splits:
        from repalign.fewshot import make_dataset_splits

        splits = make_dataset_splits(
            args.dataset,
            shots=shots,
            seeds=args.seeds,
            max_eval_per_class=args.max_eval_per_class,
            split=args.split,
        )
    if args.save_splits:
        splits.save(args.save_splits)
    frame = run_fewshot(
        args.model,
        args.dataset,
        shots=shots,
        heads=heads,
        seeds=args.seeds,
        max_eval_per_class=args.max_eval_per_class,
        splits=splits,
        per_seed=args.per_seed,
        split=args.split,
        device=args.device,
        batch_size=args.batch_size,
        progress=sys.stderr.isatty(),
        layer=args.layer,
    )
    emit(frame, args.format, title=f"few-shot accuracy: {args.model} on {args.dataset}")
    return 0
