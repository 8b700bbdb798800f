"""Run a sequence of jobs in a background thread, ahead of the consumer, in order.

:func:`prefetched` is the loader of numpy-model extraction on the CPU: a thread decodes and
preprocesses batch ``k + 1`` (PIL decode, composite and resize, and numpy, release the GIL)
while the caller runs the forward pass on batch ``k``. On a 2-core machine that puts
decoding on one core and the forward pass on the other, without the start-up cost and
inter-process copies of DataLoader worker processes.

Memory is bounded by ``depth``: at most ``depth`` finished results wait in the queue and one
more is being produced, whatever the number of jobs.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

T = TypeVar("T")

#: How often (seconds) a producer blocked on a full queue checks whether the consumer quit.
_POLL_S = 0.05

__all__ = ["prefetched"]


class _Raised:
    """An exception from the producer thread, carried to the consumer to be re-raised there."""

    def __init__(self, exc: BaseException):
        self.exc = exc


_DONE = object()


def prefetched(
    produce: Callable[[int], T],
    count: int,
    *,
    depth: int = 2,
    name: str = "repalign-prefetch",
) -> Iterator[T]:
    """Yield ``produce(0), produce(1), ..., produce(count - 1)``, computed one job ahead or more.

    Jobs run one after another in a single background thread, so results come in order and
    ``produce`` need not be thread-safe with itself. An exception in ``produce`` is re-raised
    here, unchanged, when the consumer reaches that job. Closing the iterator early (a
    ``break``, an exception in the consumer, garbage collection) stops the thread after the
    job it is running.

    Args:
        produce: job index -> result; runs in the background thread.
        count: number of jobs.
        depth: finished results that may wait for the consumer (>= 1).
    """
    if depth < 1:
        raise ValueError(f"depth must be >= 1; got {depth}")
    results: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item) -> bool:
        """Queue ``item``; False when the consumer has gone away meanwhile."""
        while not stop.is_set():
            try:
                results.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        for index in range(count):
            if stop.is_set():
                return
            try:
                item = produce(index)
            except BaseException as exc:  # noqa: BLE001 - every failure is re-raised by the consumer
                put(_Raised(exc))
                return
            if not put(item):
                return
        put(_DONE)

    thread = threading.Thread(target=work, name=name, daemon=True)
    thread.start()
    try:
        while True:
            item = results.get()
            if item is _DONE:
                return
            if isinstance(item, _Raised):
                raise item.exc
            yield item
    finally:
        stop.set()
        thread.join()
