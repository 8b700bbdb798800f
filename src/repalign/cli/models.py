"""``repalign models [PATTERN] [--source S] [--paper]``: list model names, the exact id each
resolves to, and whether its weights are cached, local, or need a download.
``repalign models --layers MODEL``: a model's layers in network order, with their short names."""

from __future__ import annotations

from repalign.cli._output import add_format_option, emit
from repalign.errors import InputError


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "models",
        help="list models: resolved ids and where their weights come from",
        description="List model names (source:name) with the exact id they resolve to and the state of their "
        "weights: cached (downloaded before), local (data mirror or a local file), download (needs internet), "
        "random (untrained), builtin (no weights). PATTERN is a name, a glob (timm:resnet*, '*mobilenet*') "
        "or a preset (paper, offline).",
    )
    parser.add_argument("pattern", nargs="?", help="model name, glob or preset (default: every listable model)")
    parser.add_argument("--source", help="only this source (timm, torchvision, tflite, cifar_resnet, pixels, ...)")
    parser.add_argument("--paper", action="store_true", help="the 490 timm models of the study")
    parser.add_argument(
        "--layers",
        metavar="MODEL",
        help="instead: list MODEL's layers in network order (input to output), with the short names "
        "--layer takes (loads the model)",
    )
    parser.add_argument("--weights", metavar="PATH", help="with --layers: local weights file for the model")
    add_format_option(parser)
    parser.set_defaults(handler=run)


def run(args) -> int:
    from repalign.models import list_models

    if args.layers is not None:
        return run_layers(args)
    if args.weights is not None:
        raise InputError("--weights applies to --layers MODEL only")

    table = list_models(args.pattern, source=args.source, paper=args.paper)
    if args.format == "table":
        counts = table["weights"].value_counts().to_dict()
        summary = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
        emit(table, "table", title=f"{len(table)} models ({summary})")
    else:
        emit(table, args.format)
    return 0


def run_layers(args) -> int:
    from repalign.models import list_layers

    if args.pattern or args.source or args.paper:
        raise InputError("--layers MODEL lists one model's layers; leave out PATTERN, --source and --paper")
    table = list_layers(args.layers, weights=args.weights, device="cpu")
    if args.format == "table":
        # a TFLite tensor's full name runs to hundreds of characters (json/csv give it whole)
        shown = table.assign(name=[n if len(n) <= 60 else n[:59] + "…" for n in table["name"].astype(str)])
        emit(shown, "table", title=f"{len(table)} layers of {args.layers}, input to output (--layer takes 'layer')")
    else:
        emit(table, args.format)
    return 0
