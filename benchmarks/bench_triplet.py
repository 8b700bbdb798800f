"""Exact triplet alignment: timings, peak memory, and the speed-up over plain numpy.

Run:  .venv/bin/python benchmarks/bench_triplet.py [--max-n 10000] [--threads N]

Prints, in one run and side by side:

* wall time of ``triplet_agreement_counts`` (the public function: validation + compiled
  kernel) at n = 120, 2,000 and 10,000 stimuli, against the targets 5 ms, 1 s and 60 s,
  with the extra resident memory the call needed (peak RSS during the call minus RSS
  before it; the two input matrices are listed separately);
* at n = 1,000, the ratio against a straightforward vectorized O(n^3) numpy
  implementation of the same definition (target >= 50x), asserting identical counts.

Numba compilation (or loading the on-disk cache) happens in a warm-up call on a tiny
input before any timing, so the timings exclude compile time; the warm-up time is
printed too. Inputs are similarity matrices of noisy random embeddings (continuous, so
ties are rare) plus a rounded copy (many ties) at n = 1,000.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np

TARGETS_S = {120: 0.005, 2_000: 1.0, 10_000: 60.0}


def make_pair(n: int, *, seed: int = 0, decimals: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    from repalign.alignment import similarity_matrix

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 64)).astype(np.float32)
    y = x + 1.5 * rng.normal(size=(n, 64)).astype(np.float32)
    model, human = similarity_matrix(x), similarity_matrix(y)
    if decimals is not None:
        model, human = np.round(model, decimals), np.round(human, decimals)
    return model, human


def numpy_reference_counts(model: np.ndarray, human: np.ndarray) -> tuple[int, int, int, int]:
    """The definition, vectorized per anchor: sign comparisons of all pairs (j, k), j < k."""
    n = model.shape[0]
    agree = disagree = tied = missing = 0
    upper = np.triu(np.ones((n, n), dtype=bool), 1)
    for i in range(n):
        keep = upper.copy()
        keep[i, :] = False
        keep[:, i] = False
        dm = np.sign(model[i][:, None] - model[i][None, :])[keep]
        dh = np.sign(human[i][:, None] - human[i][None, :])[keep]
        is_missing = np.isnan(dm) | np.isnan(dh)
        is_tied = ~is_missing & ((dm == 0) | (dh == 0))
        decided = ~is_missing & ~is_tied
        agree += int(np.sum(decided & (dm == dh)))
        disagree += int(np.sum(decided & (dm != dh)))
        tied += int(is_tied.sum())
        missing += int(is_missing.sum())
    return agree, disagree, tied, missing


def _proc_status(field: str) -> int:
    """A memory field of /proc/self/status in bytes (Linux), or -1 elsewhere."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return -1


def _reset_peak_rss() -> bool:
    try:  # Linux >= 4.0: "5" resets the peak resident set size (VmHWM) to the current one
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def timed_call(model, human, repeats: int):
    """(median wall s, median CPU s of all threads, extra peak bytes or -1, counts)."""
    from repalign.alignment import triplet_agreement_counts

    rss_before = _proc_status("VmRSS")
    can_measure = _reset_peak_rss()
    walls, cpus = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        counts = triplet_agreement_counts(model, human)
        walls.append(time.perf_counter() - start)
        cpus.append(time.process_time() - start_cpu)
    extra = _proc_status("VmHWM") - rss_before if can_measure and rss_before >= 0 else -1
    return statistics.median(walls), statistics.median(cpus), extra, counts


def _seconds(value: float) -> str:
    return f"{value * 1e3:.2f} ms" if value < 1 else f"{value:.2f} s"


def _load() -> str:
    try:
        return "load average " + " ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "load average n/a"


def _mib(n_bytes: int) -> str:
    return "n/a" if n_bytes < 0 else f"{n_bytes / 2**20:,.0f} MiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-n", type=int, default=10_000, help="largest n to time (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=None, help="numba threads (default: all cores)")
    args = parser.parse_args()

    import numba

    from repalign.alignment import triplet_agreement_counts

    if args.threads:
        numba.set_num_threads(args.threads)
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"numba {numba.__version__} with {numba.get_num_threads()} threads, numpy {np.__version__}; {_load()}"
    )
    start = time.perf_counter()
    triplet_agreement_counts(*make_pair(8))
    print(f"warm-up (numba compile or cache load, excluded below): {time.perf_counter() - start:.2f} s\n")

    print("Exact triplet alignment, triplet_agreement_counts: median wall time, and CPU time of all threads")
    print("(on a machine shared with other jobs, wall time grows with the load; CPU time much less)")
    print(
        f"{'n':>7} {'triplets':>16} {'wall':>10} {'cpu':>10} {'target':>7} {'ok':>3} {'inputs':>10} {'extra peak':>11}"
    )
    for n, repeats in ((120, 200), (2_000, 5), (10_000, 1)):
        if n > args.max_n:
            print(f"{n:>7} skipped (--max-n {args.max_n})")
            continue
        model, human = make_pair(n)
        wall, cpu, extra, counts = timed_call(model, human, repeats)
        assert counts.total == n * (n - 1) * (n - 2) // 2
        ok = "yes" if wall < TARGETS_S[n] else "NO"
        print(
            f"{n:>7} {counts.total:>16,} {_seconds(wall):>10} {_seconds(cpu):>10} {_seconds(TARGETS_S[n]):>7} {ok:>3} "
            f"{_mib(model.nbytes + human.nbytes):>10} {_mib(extra):>11}"
        )
        del model, human

    print("\nn = 1,000 against a vectorized O(n^3) numpy implementation of the same definition (1 thread)")
    print(
        f"{'input':>22} {'numpy wall':>11} {'ours wall':>10} {'speed-up':>9} {'numpy cpu':>10} {'ours cpu':>9} {'speed-up':>9}  counts"
    )
    for label, decimals in (("continuous", None), ("rounded to 0.01 (ties)", 2)):
        model, human = make_pair(1_000, seed=1, decimals=decimals)
        human[np.random.default_rng(2).random(human.shape) < 0.01] = np.nan  # some missing pairs
        start, start_cpu = time.perf_counter(), time.process_time()
        expected = numpy_reference_counts(model, human)
        base_wall, base_cpu = time.perf_counter() - start, time.process_time() - start_cpu
        wall, cpu, _, counts = timed_call(model, human, 10)
        assert tuple(counts)[:4] == expected, (tuple(counts), expected)
        print(
            f"{label:>22} {_seconds(base_wall):>11} {_seconds(wall):>10} {base_wall / wall:>8.0f}x "
            f"{_seconds(base_cpu):>10} {_seconds(cpu):>9} {base_cpu / cpu:>8.0f}x  {tuple(counts)} identical"
        )
    print(f"\n{_load()}")


if __name__ == "__main__":
    main()
