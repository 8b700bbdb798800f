"""The background prefetch iterator (repalign.embed._prefetch): order, errors, bounded look-ahead."""

from __future__ import annotations

import threading
import time

import pytest

from repalign.embed._prefetch import prefetched


def _prefetch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "repalign-prefetch"]


def test_results_come_in_job_order():
    assert list(prefetched(lambda i: i * i, 50, depth=3)) == [i * i for i in range(50)]
    assert list(prefetched(lambda i: i, 0)) == []
    assert not _prefetch_threads()


def test_error_is_reraised_unchanged_after_the_earlier_results():
    def produce(i):
        if i == 3:
            raise ValueError("image 3 is corrupt")
        return i

    iterator = prefetched(produce, 10)
    assert [next(iterator) for _ in range(3)] == [0, 1, 2]
    with pytest.raises(ValueError, match="image 3 is corrupt"):
        next(iterator)
    assert not _prefetch_threads()


@pytest.mark.parametrize("depth", [1, 2, 4])
def test_look_ahead_is_bounded_by_depth(depth):
    started = []

    def produce(i):
        started.append(i)
        return i

    for consumed, item in enumerate(prefetched(produce, 30, depth=depth)):
        time.sleep(0.005)  # a slow consumer: the producer would run far ahead if unbounded
        # queued (<= depth) + the one being produced + the one held by the consumer
        assert len(started) - consumed <= depth + 2
        assert item == consumed
    assert started == list(range(30))


def test_closing_early_stops_the_thread():
    started = []

    def produce(i):
        started.append(i)
        return i

    iterator = prefetched(produce, 1000, depth=2)
    assert [next(iterator) for _ in range(3)] == [0, 1, 2]
    iterator.close()
    assert not _prefetch_threads()
    assert len(started) <= 3 + 2 + 1


def test_bad_depth():
    with pytest.raises(ValueError, match="depth must be >= 1; got 0"):
        next(prefetched(lambda i: i, 3, depth=0))
