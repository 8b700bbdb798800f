"""Formatting of tabular results for the terminal (`--format table|json|csv`)."""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any

from repalign._options import DEFAULT_DEVICE, DEFAULT_LAYER, MAX_N_BOOTSTRAP, MAX_SEED

FORMATS = ("table", "json", "csv")


def int_at_least(minimum: int, maximum: int | None = None):
    """An argparse ``type=`` that accepts whole numbers >= ``minimum`` (and <= ``maximum``)
    with a one-line error."""
    expected = f"a whole number >= {minimum}" + (f" and <= {maximum}" if maximum is not None else "")

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text[:40]!r}") from None
        if value < minimum or (maximum is not None and value > maximum):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {value}")
        return value

    parse.__name__ = f"integer >= {minimum}"  # argparse names the type in its messages
    return parse


def seed_option():
    """``type=`` of every ``--seed``: 0 .. 2**32 - 1 (what numpy, scikit-learn and pingouin accept)."""
    return int_at_least(0, MAX_SEED)


def bootstrap_option():
    """``type=`` of every bootstrap count: 0 (no CI) .. MAX_N_BOOTSTRAP."""
    return int_at_least(0, MAX_N_BOOTSTRAP)


class CommaList(argparse.Action):
    """The one rule of every list option: comma-separated values, and the option may be repeated.

    ``--metrics pearson --metrics spearman,triplet`` is ``--metrics pearson,spearman,triplet``:
    the values are kept as one comma-joined string (what the handlers split), and the first
    occurrence replaces the default instead of adding to it.
    """

    def __call__(self, parser, namespace, values, option_string=None):
        previous = getattr(namespace, self.dest, None)
        given = getattr(namespace, f"_{self.dest}_given", False)
        text = str(values)
        setattr(namespace, self.dest, f"{previous},{text}" if given and previous else text)
        setattr(namespace, f"_{self.dest}_given", True)


def comma_values(text: str | None) -> list[str] | None:
    """The values of a :class:`CommaList` option as a list (``None`` when it was not given)."""
    values = [part.strip() for part in (text or "").split(",") if part.strip()]
    return values or None


def add_layer_option(parser, *, note: str = "", what: str = "all from one forward pass") -> None:
    """``--layer``, spelled, listed and defaulted the same in embed, align and fewshot."""
    parser.add_argument(
        "--layer",
        action=CommaList,
        metavar="L[,L...]",
        help=f"{note}layers to read, comma-separated or repeated, {what} "
        f"(default: {DEFAULT_LAYER}; see `repalign models --layers MODEL`)",
    )


def add_format_option(parser, default: str = "table") -> None:
    parser.add_argument("--format", choices=FORMATS, default=default, help="output format (default: %(default)s)")


def add_device_option(parser, *, note: str = "") -> None:
    """``--device``, spelled and defaulted the same in every subcommand (names are checked
    by repalign._device when the handler resolves them)."""
    parser.add_argument(
        "--device",
        default=DEFAULT_DEVICE,
        help=f"{note}auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps (default: %(default)s)",
    )


def emit(records: list[dict[str, Any]] | Any, fmt: str, *, title: str | None = None, stream=None) -> None:
    """Print records (a list of dicts or a DataFrame) as a rich table, JSON lines array, or CSV."""
    stream = stream or sys.stdout
    known: list[str] = []  # a DataFrame's columns, also when it has no rows
    if hasattr(records, "to_dict"):
        known = [str(c) for c in records.columns]
        records = records.to_dict(orient="records")
    records = [{k: _plain(v) for k, v in r.items()} for r in records]
    if fmt == "table" and not records:  # a table without rows or columns would print nothing at all
        stream.write(f"{title + ': ' if title else ''}no rows\n")
        return
    if fmt == "json":
        stream.write(json.dumps(records, indent=2, default=str) + "\n")
    elif fmt == "csv":
        import csv

        columns = _columns(records) or known
        writer = csv.DictWriter(stream, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(records)
    else:
        from rich.table import Table
        from rich.text import Text

        # Text objects, never markup strings: names from users ("[/bold]", "[link=...]") are
        # shown as written, neither parsed (a MarkupError) nor turned into styles
        console = _console(stream)
        # on a terminal the title sits over the table; in a pipe it is a line of its own, so
        # that it is never wrapped to the table's width
        on_terminal = console.width < _PIPE_WIDTH
        table = Table(title=Text(title) if title is not None and on_terminal else None)
        if title is not None and not on_terminal:
            console.print(Text(title))
        columns = _columns(records)
        for column in columns:
            # fold, never cut: a model name cut to "timm:vit_large_patch14_…" names no model
            table.add_column(Text(str(column)), overflow="fold")
        for record in records:
            table.add_row(*[Text(_cell(record.get(c))) for c in columns])
        console.print(table)


def _console(stream):
    """A terminal gets its own width; a pipe or file gets the table at its natural width, so
    that every cell is whole on its line (``| grep``, ``| less -S``, a saved file)."""
    from rich.console import Console

    is_terminal = getattr(stream, "isatty", None) and stream.isatty()
    if is_terminal:
        return Console(file=stream)
    return Console(file=stream, width=_PIPE_WIDTH, color_system=None, soft_wrap=False)


#: the width of a console that is not a terminal: wide enough that nothing wraps
_PIPE_WIDTH = 100_000


def _columns(records: list[dict]) -> list[str]:
    columns: list[str] = []
    for record in records:
        for key in record:
            if key not in columns:
                columns.append(key)
    return columns


def _plain(value: Any) -> Any:
    """numpy scalars -> Python; NaN -> None so JSON stays valid."""
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        try:
            value = value.item()
        except (ValueError, AttributeError):
            pass
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
