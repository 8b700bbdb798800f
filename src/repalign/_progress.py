"""One progress bar for long loops (extracting embeddings, fetching files, downloading bytes).

A rich bar drawn on stderr, so it never mixes with a command's output on stdout (a table,
JSON or CSV), and transient, so it disappears when the work is done. It draws only when
it is asked to *and* stderr is a terminal: in logs, CI and pipes it is silent.

(The study's live view, :mod:`repalign.study.progress`, is a different thing: a table of
running units with their current steps, or log lines, and it stays its own.)
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from typing import IO

from repalign.errors import InputError

#: what the bar counts: "items" shows done/total, "bytes" shows sizes and transfer speed
UNITS = ("items", "bytes")


@contextlib.contextmanager
def progress_bar(
    description: str,
    total: int | None,
    *,
    enabled: bool = True,
    unit: str = "items",
    stream: IO[str] | None = None,
) -> Iterator[Callable[[int], None]]:
    """Yield ``advance(k=1)``, which moves the bar ``k`` steps.

    Args:
        description: the text before the bar.
        total: the number of steps (items or bytes); None when unknown.
        enabled: False keeps it silent whatever the stream.
        unit: ``"items"`` (done/total and ETA) or ``"bytes"`` (sizes, speed and ETA).
        stream: where to draw (default: ``sys.stderr``); the bar shows only on a terminal.

    Example:
        >>> with progress_bar("images", 120) as advance:
        ...     for batch in range(4):
        ...         advance(30)
    """
    if unit not in UNITS:
        raise InputError(f"unit must be one of {', '.join(UNITS)}; got {unit!r}")
    stream = sys.stderr if stream is None else stream
    if not enabled or not _is_terminal(stream):
        yield _ignore
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    if unit == "bytes":
        from rich.progress import DownloadColumn, TransferSpeedColumn

        counts = (DownloadColumn(), TransferSpeedColumn())
    else:
        counts = (MofNCompleteColumn(),)
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        *counts,
        TimeRemainingColumn(),
        console=Console(file=stream),
        transient=True,
    )
    with bar:
        task = bar.add_task(escape(description), total=total)  # names in it are text, not markup
        yield lambda k=1: bar.advance(task, k)


def _ignore(k: int = 1) -> None:
    return None


def _is_terminal(stream) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False
