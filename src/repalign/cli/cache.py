"""``repalign cache list | clear``: inspect and empty the embedding cache."""

from __future__ import annotations

import sys

from repalign.cli._output import add_format_option, emit
from repalign.errors import InputError


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "cache",
        help="list or clear cached embeddings",
        description="Embeddings are cached by content (model weights, preprocessing, layer, images, "
        "code version, dtype) under $REPALIGN_CACHE_HOME.",
    )
    actions = parser.add_subparsers(dest="cache_action", metavar="ACTION")

    listing = actions.add_parser("list", help="list cached embeddings")
    listing.add_argument("--model", metavar="PATTERN", help="only models matching this glob (name or resolved id)")
    add_format_option(listing)
    listing.set_defaults(handler=_list)

    clearing = actions.add_parser("clear", help="delete cached embeddings")
    clearing.add_argument("--model", metavar="PATTERN", help="only models matching this glob (name or resolved id)")
    clearing.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    clearing.set_defaults(handler=_clear)

    parser.set_defaults(handler=lambda args: parser.print_help() or 2)


def _list(args) -> int:
    from repalign.embed.cache import EmbeddingCache

    store = EmbeddingCache()
    table = args.format == "table"
    records = []
    for e in store.entries(model=args.model):
        record = {
            "model": e.get("model"),
            "layer": e.get("layer"),
            "images": e.get("images"),
            "n": e.get("n"),
            "d": e.get("d"),
            "dtype": e.get("dtype"),
            "size": _human_size(e.get("size_bytes", 0)) if table else e.get("size_bytes"),
            "created": (e.get("created") or "")[:19].replace("T", " ") if table else e.get("created"),
        }
        if not table:  # machine-readable output carries the full identity too
            record.update(model_id=e.get("model_id"), key=e.get("key"))
        records.append(record)
    if args.format == "table":
        if not records:
            print(f"No cached embeddings in {store.root}" + (f" matching '{args.model}'" if args.model else ""))
        else:
            total = sum(e.get("size_bytes", 0) for e in store.entries(model=args.model))
            emit(records, "table", title=f"{len(records)} cached embeddings, {_human_size(total)} in {store.root}")
        if not args.model:  # inputs belong to no model (models share them)
            print(_input_cache_line())
    else:
        emit(records, args.format)
    return 0


def _input_cache_line() -> str:
    """One line on the input cache: its entries, their size and the limit."""
    from repalign.embed.inputs import LIMIT_VARIABLE, InputCache

    inputs = InputCache()
    if not inputs.enabled:
        return f"Input cache: off (${LIMIT_VARIABLE}=0)"
    entries = inputs.entries()
    decoded = sum(1 for e in entries if e.get("parts", {}).get("kind") == "decoded-images")
    used = sum(int(e.get("size_bytes", 0)) for e in entries)
    return (
        f"Input cache: {decoded} decoded image set(s) and {len(entries) - decoded} preprocessed input set(s), "
        f"{_human_size(used)} of {_human_size(inputs.max_bytes)} (${LIMIT_VARIABLE}) in {inputs.root}"
    )


def _clear(args) -> int:
    from repalign.embed.cache import EmbeddingCache
    from repalign.embed.inputs import InputCache

    store = EmbeddingCache()
    entries = store.entries(model=args.model)
    # preprocessed inputs belong to no model (models share them): cleared with everything
    inputs = [] if args.model else InputCache().entries()
    what = f"{len(entries)} cached embedding(s)" + (f" of models matching '{args.model}'" if args.model else "")
    what += f" and {len(inputs)} input cache entries (decoded images, preprocessed inputs)" if inputs else ""
    if not entries and not inputs:
        print(f"Nothing to clear in {store.root}" + (f" matching '{args.model}'" if args.model else ""))
        return 0
    if not args.yes:
        if not sys.stdin.isatty():
            raise InputError(f"Refusing to delete {what} without confirmation; pass --yes")
        answer = input(f"Delete {what} from {store.root}? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("Nothing deleted")
            return 0
    removed = store.clear(model=args.model)
    print(f"Deleted {removed} cached embedding(s) from {store.root}")
    if not args.model:
        removed_inputs = InputCache().clear()
        if removed_inputs:
            print(f"Deleted {removed_inputs} input cache entries from {InputCache().root}")
    return 0


def _human_size(n_bytes: int) -> str:
    size = float(n_bytes or 0)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"  # pragma: no cover
