"""``repalign fewshot MODEL --dataset mnist``: few-shot transfer accuracy of a model's embeddings.

``repalign fewshot --embeddings FILE``: the same for an embeddings file (``embed --out``
writes one, docs/own-data.md) whose rows carry class labels, or whose rows are the examples
of ``--dataset`` in its order.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from repalign import _options as opt
from repalign.cli._output import CommaList, add_device_option, add_format_option, add_layer_option, comma_values, emit
from repalign.errors import InputError


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "fewshot",
        help="few-shot transfer accuracy of a model's embeddings (the study's protocol)",
        description="Draw N examples per class from a dataset's test split, train a head on the model's "
        "frozen embeddings, evaluate on the remaining examples; repeat over seeds and report the mean "
        "accuracy with a 95% t-interval over seeds. See docs/fewshot.md.",
    )
    parser.add_argument(
        "model",
        nargs="?",
        metavar="MODEL",
        help="model name, e.g. pixels, tflite:mobilenet_v2_1.0_224_quant, timm:resnet50 (or use --embeddings)",
    )
    parser.add_argument(
        "--embeddings",
        metavar="FILE",
        help="an embeddings file (.npz as embed --out writes it, with 'labels'; or .npy rows of --dataset)",
    )
    parser.add_argument(
        "--dataset",
        help="mnist, fashion_mnist, cifar10, cifar100, or a dataset folder (ImageFolder); "
        "with --embeddings optional (the file's labels)",
    )
    parser.add_argument("--weights", metavar="PATH", help="MODEL only: a local weights file for the model")
    # --shots and --seeds default to None, not to their values, so that with --splits FILE
    # "not given" differs from "given": the manifest fixes both, and a value that disagrees
    # with it is refused (run_fewshot) instead of ignored
    parser.add_argument(
        "--shots",
        action=CommaList,
        help=f"examples per class, comma-separated (default: {','.join(map(str, opt.DEFAULT_SHOTS))})",
    )
    parser.add_argument(
        "--heads",
        action=CommaList,
        default=",".join(opt.HEADS),
        help=f"heads, comma-separated from {','.join(opt.HEADS)} (default: all)",
    )
    # a count, so --n-seeds (as --n-bootstrap; --seed is a seed); --seeds, the old spelling,
    # still works and is not shown
    parser.add_argument("--seeds", dest="seeds", type=int, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    parser.add_argument(
        "--n-seeds",
        dest="seeds",
        type=int,
        metavar="N",
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
    add_layer_option(
        parser,
        what="all from one forward pass and scored on the same splits (with --embeddings FILE: one of its layers)",
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

    if (args.model is None) == (args.embeddings is None):
        raise InputError("Give either a MODEL or --embeddings FILE (exactly one of them)")
    if args.embeddings is not None and (args.weights is not None or args.batch_size is not None):
        raise InputError("--weights and --batch-size apply to MODEL only, not to --embeddings")
    if args.model is not None and args.dataset is None:
        raise InputError("MODEL needs --dataset, e.g. --dataset mnist")
    require_device(args.device)  # even when the embeddings are cached and nothing runs on it

    shots = None if args.shots is None else parse_int_list(args.shots, "--shots")
    heads = tuple(h.strip() for h in args.heads.split(",") if h.strip())
    if args.seeds is not None and args.seeds < 1:
        raise InputError(f"--n-seeds must be at least 1; got {args.seeds}.")
    if args.max_eval_per_class is not None and args.max_eval_per_class < 1:
        raise InputError(f"--max-eval-per-class must be at least 1; got {args.max_eval_per_class}.")
    splits = None
    if args.splits:
        splits = SplitManifest.load(args.splits)
    elif args.save_splits and args.dataset is not None:
        from repalign.fewshot import make_dataset_splits

        splits = make_dataset_splits(
            args.dataset,
            shots=shots,
            seeds=args.seeds,
            max_eval_per_class=args.max_eval_per_class,
            split=args.split,
        )
    if args.embeddings is not None:
        return _run_file(args, shots=shots, heads=heads, splits=splits)
    if args.save_splits:
        splits.save(args.save_splits)
    frame = run_fewshot(
        args.model,
        args.dataset,
        **_grid(args, shots=shots, heads=heads, splits=splits),
        split=args.split,
        batch_size=args.batch_size,
        weights=args.weights,
        progress=sys.stderr.isatty(),
        layer=comma_values(args.layer),
    )
    emit(frame, args.format, title=f"few-shot accuracy: {args.model} on {args.dataset}")
    return 0


def _grid(args, *, shots, heads, splits) -> dict:
    """The options of the few-shot grid, the same for a MODEL and for --embeddings FILE."""
    return {
        "shots": shots,
        "heads": heads,
        "seeds": args.seeds,
        "max_eval_per_class": args.max_eval_per_class,
        "splits": splits,
        "per_seed": args.per_seed,
        "device": args.device,
    }


def _run_file(args, *, shots, heads, splits) -> int:
    from repalign.fewshot import make_splits, run_fewshot_file

    if splits is None and args.save_splits:
        # the splits of a labelled file: drawn from its labels, as run_fewshot_file would draw them
        from repalign.embed import read_embeddings_file

        file = read_embeddings_file(args.embeddings)
        if file.labels is None:
            raise InputError(f"{file.source} has no 'labels'; give --dataset to draw and save its splits")
        given = {k: v for k, v in (("shots", shots), ("seeds", args.seeds)) if v is not None}
        splits = make_splits(
            file.labels,
            **given,
            max_eval_per_class=args.max_eval_per_class,
            dataset=file.dataset or Path(file.source).stem,
        )
    if args.save_splits:
        splits.save(args.save_splits)
    # a dataset given explicitly is loaded in its --split; else the file's labels decide
    dataset_options = {} if args.dataset is None else {"dataset": args.dataset, "split": args.split}
    layers = comma_values(args.layer)
    if layers is not None and len(layers) > 1:
        raise InputError("--embeddings FILE scores one layer of the file; give one --layer (or none for its only one)")
    frame = run_fewshot_file(
        args.embeddings,
        **_grid(args, shots=shots, heads=heads, splits=splits),
        layer=layers[0] if layers else None,
        **dataset_options,
    )
    emit(frame, args.format, title=f"few-shot accuracy: {args.embeddings}")
    return 0
