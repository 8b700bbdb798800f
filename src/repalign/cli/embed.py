"""``repalign embed MODEL --dataset DATASET``: extract (and cache) a model's embeddings."""

from __future__ import annotations

import sys

from repalign import _options as opt
from repalign.cli._output import CommaList, add_device_option, add_format_option, comma_values, emit
from repalign.errors import InputError


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "embed",
        help="extract a model's embeddings of a dataset's images (cached)",
        description="Extract features (the penultimate layer by default) of every image of a dataset. "
        "Results go to the embedding cache (see `repalign cache`) and optionally to an .npz file.",
    )
    parser.add_argument("model", help="model name, e.g. timm:resnet50, tflite:mobilenet_v2_1.0_224_quant, pixels")
    parser.add_argument(
        "--dataset",
        required=True,
        help="a human dataset (peterson:animals), a few-shot dataset (mnist, cifar10, ...) or a folder of images",
    )
    parser.add_argument(
        "--layer",
        action=CommaList,
        metavar="L[,L...]",
        help=f"layers to read, comma-separated or repeated, all from one forward pass (default: {opt.DEFAULT_LAYER}; "
        "see `repalign models --layers MODEL`)",
    )
    parser.add_argument(
        "--out",
        metavar="FILE.npz",
        help="also write an embeddings file (docs/own-data.md) that align/fewshot --embeddings read",
    )
    parser.add_argument("--weights", metavar="PATH", help="local weights file for the model")
    add_device_option(parser)
    parser.add_argument("--batch-size", type=int, help="images per forward pass (default: the model's)")
    parser.add_argument(
        "--workers", type=int, help="decode/preprocess processes (default: min(4, CPUs) with a GPU, CPUs/4 on CPU)"
    )
    parser.add_argument(
        "--dtype", choices=opt.EMBEDDING_DTYPES, default=opt.DEFAULT_EMBEDDING_DTYPE, help="output dtype"
    )
    parser.add_argument("--no-cache", action="store_true", help="neither read nor write the embedding cache")
    add_format_option(parser)
    parser.set_defaults(handler=run)


def run(args) -> int:
    from repalign._device import require_device
    from repalign.data import load_dataset_images
    from repalign.embed import extract_embeddings, is_cached

    if args.out and not args.out.endswith(".npz"):
        raise InputError(f"--out must name a .npz file; got '{args.out}'")
    require_device(args.device)  # even when the embeddings are cached and nothing runs on it
    source = load_dataset_images(args.dataset)
    images = source.images
    layers = comma_values(args.layer) or [opt.DEFAULT_LAYER]
    cached = (
        False if args.no_cache else is_cached(args.model, images, layer=layers, weights=args.weights, dtype=args.dtype)
    )
    result = extract_embeddings(
        args.model,
        images,
        layer=layers,
        device=args.device,
        batch_size=args.batch_size,
        num_workers=args.workers,
        dtype=args.dtype,
        cache=not args.no_cache,
        weights=args.weights,
        progress=sys.stderr.isatty(),
    )
    arrays = result  # a list of layers was asked for: {layer: (n, d) array}
    if args.out:
        from repalign.embed import write_embeddings_file
        from repalign.models import resolve_model

        # the one file format that align --embeddings and fewshot --embeddings read (docs/own-data.md):
        # the rows' stimulus names or class labels beside them, and what produced them
        write_embeddings_file(
            args.out,
            arrays,
            stimuli=source.stimuli,
            labels=source.labels,
            model=args.model,
            model_id=resolve_model(args.model).resolved_id,
            dataset=source.name,
        )
    records = [
        {
            "model": args.model,
            "dataset": images.name,
            "layer": name,
            "n": array.shape[0],
            "d": array.shape[1],
            "dtype": str(array.dtype),
            "cache": "off" if args.no_cache else ("hit" if cached else "stored"),
            "out": args.out or "",
        }
        for name, array in arrays.items()
    ]
    emit(records, args.format)
    return 0
