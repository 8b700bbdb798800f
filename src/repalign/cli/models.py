"""``repalign models [PATTERN] [--source S] [--paper]``: list model names, the exact id each
resolves to, and whether its weights are cached, local, or need a download."""

from __future__ import annotations

from repalign.cli._output import add_format_option, emit


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
    add_format_option(parser)
    parser.set_defaults(handler=run)


def run(args) -> int:
    from repalign.models import list_models

    table = list_models(args.pattern, source=args.source, paper=args.paper)
    if args.format == "table":
        counts = table["weights"].value_counts().to_dict()
        summary = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
        emit(table, "table", title=f"{len(table)} models ({summary})")
    else:
        emit(table, args.format)
    return 0
