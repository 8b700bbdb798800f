"""Benchmark of repalign.theory: the full ``repalign theory`` grid, and the vectorized
agreement counting of the teaching game against a per-query Python loop (same inputs,
identical outputs), measured side by side in this run.

Run: .venv/bin/python benchmarks/bench_theory.py
"""

from __future__ import annotations

import time

import numpy as np

from repalign.theory import default_grid, run_theory
from repalign.theory.communication import GameConfig, _World
from repalign.theory.students import build_embedding_student


def _timed(func, repeat: int = 3):
    best_wall, best_cpu, out = np.inf, np.inf, None
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        out = func()
        best_wall = min(best_wall, time.perf_counter() - wall)
        best_cpu = min(best_cpu, time.process_time() - cpu)
    return best_wall, best_cpu, out


def loop_agreements(table: np.ndarray, pair: np.ndarray, answers: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Baseline: walk trial by trial, query by query, candidate by candidate."""
    n_candidates = table.shape[1]
    n_trials, _ = pair.shape
    out = np.zeros((n_trials, len(grid), n_candidates), dtype=np.int64)
    for t in range(n_trials):
        counts = [0] * n_candidates
        g = 0
        for q in range(grid[-1]):
            row = table[pair[t, q]]
            for j in range(n_candidates):
                counts[j] += bool(row[j]) == bool(answers[t, q])
            if q + 1 == grid[g]:
                out[t, g] = counts
                g += 1
    return out


def main() -> None:
    config = GameConfig(n_worlds=2, n_trials=12, max_queries=1024)
    grid = config.query_grid()
    world = _World(config, grid, np.random.SeedSequence(0, spawn_key=(0,)))
    rng = np.random.default_rng(1)
    student = build_embedding_student(
        world.teacher, rng.standard_normal(world.teacher.shape), 0.2, n_shared=config.n_shared
    )
    n = config.n_shared
    table = student.prefers_first(np.arange(n, n + config.n_candidates), np.arange(n))
    table = np.ascontiguousarray(table.reshape(config.n_candidates, n * n).T)

    def vectorized():
        return world._block_counts(table[world.pair] == world.answers[:, :, None])

    def baseline():
        return loop_agreements(table, world.pair, world.answers, grid)

    v_wall, _, v_out = _timed(vectorized, repeat=5)
    b_wall, _, b_out = _timed(baseline, repeat=1)
    assert np.array_equal(v_out, b_out), "vectorized and loop counts differ"
    work = config.n_trials * config.max_queries * config.n_candidates
    print(f"agreement counting, {work:,} (trial, query, candidate) cells, identical outputs:")
    print(f"  per-query Python loop {b_wall * 1e3:9.1f} ms")
    print(f"  vectorized (ours)     {v_wall * 1e3:9.1f} ms   speed-up x{b_wall / v_wall:,.0f}")

    wall, cpu, _ = _timed(lambda: run_theory(default_grid(quick=False), seed=0), repeat=1)
    print(
        f"full default grid (repalign theory without figures): wall {wall:.1f} s, CPU {cpu:.1f} s "
        f"(target: under 60 s wall on 2 cores)"
    )
    wall, cpu, _ = _timed(lambda: run_theory(default_grid(quick=True), seed=0), repeat=3)
    print(f"quick grid (--quick): wall {wall:.2f} s, CPU {cpu:.2f} s")


if __name__ == "__main__":
    main()
