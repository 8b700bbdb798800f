"""``repalign compare MODEL... --images SET``: which models see the same stimuli alike.

Embeds one image set with every model (through the embedding cache) and prints the model x
model matrix of each method (linear CKA, debiased CKA, RSA). When the set is a human dataset
with a similarity matrix, the RSA matrices get a ``human`` row: how each model sees the
stimuli like people, beside how alike the models are. See docs/compare.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

from repalign import _options as opt
from repalign.cli._output import CommaList, add_device_option, add_format_option, emit
from repalign.errors import InputError


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "compare",
        help="model-vs-model alignment (linear / debiased CKA, RSA) on one image set",
        description="Embed one image set with every MODEL and compare the models pairwise: linear CKA, "
        "debiased CKA and RSA (the correlation of two models' similarity matrices). On a human dataset the "
        "RSA matrices also hold the human similarity matrix as a row. See docs/compare.md.",
    )
    parser.add_argument("models", nargs="+", metavar="MODEL", help="two or more model names, e.g. pixels timm:resnet18")
    parser.add_argument(
        "--images",
        required=True,
        metavar="SET",
        help="the image set: a human dataset (peterson:animals), a few-shot dataset (mnist) or an image folder",
    )
    parser.add_argument(
        "--methods",
        action=CommaList,
        default=",".join(opt.DEFAULT_COMPARISON_METHODS),
        metavar="M[,M...]",
        help=f"from {', '.join(opt.COMPARISON_METHODS)} (default: %(default)s)",
    )
    parser.add_argument(
        "--similarity",
        choices=opt.SIMILARITY_METRICS,
        default=opt.DEFAULT_SIMILARITY,
        help="the RSA methods' model similarity (default: %(default)s)",
    )
    parser.add_argument("--no-human", action="store_true", help="leave the human row out of the RSA matrices")
    parser.add_argument(
        "--max-images", type=int, metavar="N", help="the first N images of the set only (e.g. of mnist's 10,000)"
    )
    parser.add_argument("--figures", metavar="DIR", type=Path, help="also write one heatmap PNG per method to DIR")
    add_device_option(parser)
    parser.add_argument("--batch-size", type=int, metavar="N", help="images per forward pass")
    add_format_option(parser)
    parser.set_defaults(handler=run)


def run(args) -> int:
    from repalign._device import require_device
    from repalign.alignment import compare_models, comparison_matrix
    from repalign.data import load_dataset_images
    from repalign.errors import unknown_name
    from repalign.models import resolve_model

    methods = tuple(m for m in args.methods.split(",") if m)
    for method in methods:  # before any (slow) embedding
        if method not in opt.COMPARISON_METHODS:
            raise unknown_name("comparison method", method, opt.COMPARISON_METHODS)
    if len(dict.fromkeys(args.models)) < 2:
        raise InputError("compare needs at least two different models, e.g. repalign compare pixels timm:resnet18 ...")
    if args.max_images is not None and args.max_images < 4:
        raise InputError(f"--max-images must be at least 4 (debiased CKA needs 4 stimuli); got {args.max_images}")
    for model in args.models:
        resolve_model(model)  # an unknown name fails now, not after the first model's embedding
    require_device(args.device)
    source = load_dataset_images(args.images)
    images = source.images
    if args.max_images is not None and args.max_images < len(images):
        from repalign.data.images import SubsetImageSet

        images = SubsetImageSet(images, range(args.max_images))
    embeddings = {model: _embed(model, images, args) for model in dict.fromkeys(args.models)}
    human = _human_similarity(args, source, len(images))
    table = compare_models(embeddings, methods=methods, similarity=args.similarity, human_similarity=human)
    if args.figures is not None:
        _write_figures(table, methods, args.figures, images.name)
    if args.format != "table":
        emit(table, args.format)
        return 0
    for method in methods:
        matrix = comparison_matrix(table, method)
        records = [{"model": name, **row} for name, row in zip(matrix.index, matrix.to_dict(orient="records"))]
        detail = f", similarity={args.similarity}" if method.startswith("rsa_") else ""
        emit(records, "table", title=f"{method} on {images.name} ({len(images)} images{detail})")
    return 0


def _embed(model: str, images, args):
    from repalign.embed import extract_embeddings

    return extract_embeddings(
        model, images, device=args.device, batch_size=args.batch_size, progress=sys.stderr.isatty()
    )


def _human_similarity(args, source, n_images: int):
    """The human matrix of a human dataset's images (None for other sets or with --no-human)."""
    if args.no_human or source.kind != "human" or n_images != len(source.stimuli):
        return None
    from repalign.data.human import load_human

    (human,) = load_human(args.images)
    return human.similarity


def _write_figures(table, methods, folder: Path, set_name: str) -> None:
    from repalign.alignment import comparison_matrix
    from repalign.report.figures import save_figure
    from repalign.report.plots import comparison_heatmap

    for method in methods:
        fig = comparison_heatmap(comparison_matrix(table, method), title=f"{method} on {set_name}")
        for path in save_figure(fig, folder, f"compare_{method}").values():
            print(f"wrote {path}", file=sys.stderr)
