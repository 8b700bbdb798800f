"""Simulation of the communication game behind Proposition 3.8.

A teacher knows ``n_shared`` objects and ``n_candidates`` new ones in R^d (standard normal).
One candidate ``c`` is the new object to be taught. The teacher answers ``m`` random triplet
queries about it -- "is c closer to a than to b?" for random shared ``a != b`` -- and the
student, who holds its own representation of every object, picks the candidate whose own
answers best explain the teacher's, by maximum likelihood under a binary symmetric
channel with the flip rate ``eps_hat`` it *measured* on the shared objects:

    log L(j) = agree_j log(1 - eps_hat) + (m - agree_j) log eps_hat,

so the MLE maximizes agreements when ``eps_hat < 0.5``, minimizes them when
``eps_hat > 0.5`` (a reversed student is as useful as an aligned one) and is a uniform
guess at exactly 0.5. Ties are broken uniformly at random.

Everything is vectorized over trials x queries x candidates; accuracy is evaluated at a
log-spaced grid of query counts from per-block agreement counts (``np.add.reduceat``) and a
cumulative sum. Teacher worlds, the hidden objects and the queries are shared by every
``eps`` (common random numbers), so differences between ``eps`` values are not drowned by
world-to-world noise; each (world, eps) student has its own independent randomness.
Confidence intervals come from a bootstrap over worlds (a cluster bootstrap: trials in one
world share a teacher and a student, so they are not independent).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats
from scipy.spatial.distance import cdist

from repalign.errors import InputError, unknown_name
from repalign.theory.capacity import channel_capacity, check_rate, fano_query_bound, query_ratio
from repalign.theory.students import build_embedding_student, negative_distances

__all__ = [
    "STUDENT_KINDS",
    "GameConfig",
    "GameResult",
    "compare_with_capacity",
    "queries_to_target",
    "simulate_communication_game",
]

logger = logging.getLogger(__name__)

STUDENT_KINDS = ("flip", "embedding")


@dataclass(frozen=True)
class GameConfig:
    """Size of the simulated game. The defaults are the CLI's full grid (see docs/theory.md)."""

    n_shared: int = 40  # objects both know; queries ask about pairs of them
    n_dims: int = 8  # dimension of the teacher's representation
    n_candidates: int = 32  # where the new object may be (uniform prior)
    max_queries: int = 4096  # largest number of teacher answers simulated
    n_worlds: int = 40  # independent teachers (and students)
    n_trials: int = 10  # hidden objects taught per world
    n_grid: int = 40  # query counts (log-spaced) where accuracy is evaluated
    target_accuracy: float = 0.8  # for "queries needed"
    n_bootstrap: int = 300  # cluster bootstrap over worlds
    confidence: float = 0.95

    def __post_init__(self) -> None:
        for name, minimum in (
            ("n_shared", 3),
            ("n_dims", 1),
            ("n_candidates", 2),
            ("max_queries", 1),
            ("n_worlds", 2),
            ("n_trials", 1),
            ("n_grid", 2),
            ("n_bootstrap", 10),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
                raise InputError(f"GameConfig.{name} must be an integer >= {minimum}; got {value!r}")
        if not 1.0 / self.n_candidates < self.target_accuracy <= 1.0:
            raise InputError(
                f"target_accuracy must be above chance (1/{self.n_candidates}) and at most 1; "
                f"got {self.target_accuracy!r}"
            )
        if not 0.0 < self.confidence < 1.0:
            raise InputError(f"confidence must be in (0, 1); got {self.confidence!r}")

    def query_grid(self) -> np.ndarray:
        """Query counts (ints, increasing, starting at 1, ending at ``max_queries``)."""
        return np.unique(np.round(np.geomspace(1, self.max_queries, self.n_grid)).astype(np.int64))


@dataclass(frozen=True, eq=False)
class GameResult:
    """Outcome of :func:`simulate_communication_game`.

    Attributes:
        accuracy: one row per (student, eps, n_queries): ``accuracy`` (+ CI), ``distance_error``
            (mean teacher-space distance between the chosen and the true object), chance levels.
        queries: one row per (student, eps): ``queries_to_target`` (+ CI; ``inf`` when the
            target accuracy is not reached within ``max_queries``), ``reached``, ``fano_bound``,
            ``query_ratio`` (= 1/C(eps)).
        config: the game's configuration.
    """

    accuracy: pd.DataFrame
    queries: pd.DataFrame
    config: GameConfig = field(default_factory=GameConfig)


def queries_to_target(accuracy: np.ndarray, n_queries: np.ndarray, target: float) -> np.ndarray:
    """First query count where an accuracy curve reaches ``target``.

    Linear interpolation in log(query count) between the last grid point below the target
    and the first at or above it; ``inf`` if the curve never reaches it.

    Args:
        accuracy: (..., G) accuracy curves on the grid.
        n_queries: (G,) increasing query counts.
        target: accuracy to reach.
    Returns:
        (...) array of query counts (float).
    """
    accuracy = np.asarray(accuracy, dtype=np.float64)
    grid = np.log(np.asarray(n_queries, dtype=np.float64))
    above = accuracy >= target
    reached = above.any(axis=-1)
    first = np.argmax(above, axis=-1)
    prev = np.maximum(first - 1, 0)
    acc_hi = np.take_along_axis(accuracy, first[..., None], axis=-1)[..., 0]
    acc_lo = np.take_along_axis(accuracy, prev[..., None], axis=-1)[..., 0]
    x_hi, x_lo = grid[first], grid[prev]
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.where(acc_hi > acc_lo, (target - acc_lo) / (acc_hi - acc_lo), 1.0)
    log_m = np.where(first > 0, x_lo + np.clip(frac, 0.0, 1.0) * (x_hi - x_lo), x_hi)
    return np.where(reached, np.exp(log_m), np.inf)


def simulate_communication_game(
    eps,
    *,
    students: str | tuple[str, ...] = STUDENT_KINDS,
    config: GameConfig | None = None,
    seed: int = 0,
) -> GameResult:
    """Simulate the teaching game for every ``eps`` and student kind.

    Args:
        eps: misalignment rates in [0, 1], shape (E,).
        students: "flip", "embedding" or both (see :mod:`repalign.theory.students`).
        config: game size (:class:`GameConfig`); defaults to the full grid.
        seed: everything derives from ``numpy.random.SeedSequence(seed)``; equal seeds give
            identical tables, and adding eps values does not change the others' results.
    Returns:
        :class:`GameResult`.
    """
    config = config or GameConfig()
    eps_values = np.atleast_1d(check_rate(eps)).ravel()
    if eps_values.size == 0:
        raise InputError("eps must contain at least one misalignment rate in [0, 1]")
    kinds = (students,) if isinstance(students, str) else tuple(students)
    for kind in kinds:
        if kind not in STUDENT_KINDS:
            raise unknown_name("student kind", kind, STUDENT_KINDS)
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise InputError(f"seed must be a non-negative integer; got {seed!r}")

    grid = config.query_grid()
    shape = (len(kinds), eps_values.size, config.n_worlds)
    correct = np.empty((*shape, len(grid)))  # per-world accuracy
    distance = np.empty((*shape, len(grid)))
    measured = np.empty(shape)
    chance_distance = np.empty(config.n_worlds)
    for w in range(config.n_worlds):
        world = _World(config, grid, np.random.SeedSequence(seed, spawn_key=(w,)))
        chance_distance[w] = world.chance_distance
        for s, kind in enumerate(kinds):
            for e, value in enumerate(eps_values):
                student_seed = np.random.SeedSequence(seed, spawn_key=(w, 1 + s, _eps_key(value)))
                cum_agree, measured[s, e, w] = world.agreements(kind, value, np.random.default_rng(student_seed))
                correct[s, e, w], distance[s, e, w] = world.decode(cum_agree, measured[s, e, w])
    boot_rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(config.n_worlds + 1,)))
    return _summarize(config, grid, kinds, eps_values, correct, distance, measured, chance_distance, boot_rng)


def _eps_key(value: float) -> int:
    return round(float(value) * 1_000_000)


class _World:
    """One teacher world: objects, hidden objects, queries and the teacher's answers."""

    def __init__(self, config: GameConfig, grid: np.ndarray, seed_seq: np.random.SeedSequence):
        rng = np.random.default_rng(seed_seq)
        n, k, m, t = config.n_shared, config.n_candidates, config.max_queries, config.n_trials
        self.config = config
        self.teacher = rng.standard_normal((n + k, config.n_dims))  # shared rows first
        self.hidden = rng.integers(k, size=t)  # (T,) index of c among the candidates
        first = rng.integers(n, size=(t, m))
        second = (first + rng.integers(1, n, size=(t, m))) % n  # uniform over b != a
        self.pair = first * n + second  # (T, M) flat index of the shared pair (a, b)
        self.tie_keys = rng.random((t, 1, k))  # uniform tie-breaking, fixed per trial
        # teacher's answer table: is candidate j closer to shared a than to shared b?
        # Stored pair-major, (n*n, K), so gathering the queried pairs copies whole rows.
        teacher_sim = negative_distances(self.teacher[n:], self.teacher[:n])  # (K, n)
        table = (teacher_sim[:, :, None] > teacher_sim[:, None, :]).reshape(k, n * n)
        self.teacher_table = np.ascontiguousarray(table.T)
        self.answers = table[self.hidden[:, None], self.pair]  # (T, M) what the teacher says
        # block edges so that block g ends at query grid[g]
        self.edges = np.concatenate([[0], grid[:-1]])
        self.block_sizes = np.diff(np.concatenate([[0], grid]))
        between = cdist(self.teacher[n:], self.teacher[n:])  # (K, K) teacher-space distances
        self.candidate_distance = between
        self.chance_distance = between.mean()
        self._base_counts = None

    def _block_counts(self, matches: np.ndarray) -> np.ndarray:
        """(T, M, K) bool -> (T, G, K) cumulative match counts at the grid points."""
        blocks = np.add.reduceat(matches, self.edges, axis=1, dtype=np.int32)
        return np.cumsum(blocks, axis=1)

    def agreements(self, kind: str, eps: float, rng: np.random.Generator) -> tuple[np.ndarray, float]:
        """Cumulative agreements (T, G, K) of every candidate with the teacher, and eps_hat."""
        config = self.config
        n = config.n_shared
        if kind == "flip":
            # The student's answer about candidate j is the teacher's (for j) flipped with
            # probability eps. Per block, agreements with the sent answers are then
            # (matching - Binomial(matching, eps)) + Binomial(mismatching, eps): the same
            # distribution as flipping query by query, with G instead of M draws.
            if self._base_counts is None:
                base = self.teacher_table[self.pair] == self.answers[:, :, None]  # (T, M, K)
                self._base_counts = np.add.reduceat(base, self.edges, axis=1, dtype=np.int64)
            matching = self._base_counts
            mismatching = self.block_sizes[None, :, None] - matching
            blocks = matching - rng.binomial(matching, eps) + rng.binomial(mismatching, eps)
            n_triplets = n * (n - 1) * (n - 2) // 2
            # what the student measures on the shared objects: its flips there
            eps_hat = rng.binomial(n_triplets, eps) / n_triplets
            return np.cumsum(blocks, axis=1), eps_hat
        noise = rng.standard_normal(self.teacher.shape)
        student = build_embedding_student(self.teacher, noise, eps, n_shared=n)
        candidates = np.arange(n, n + config.n_candidates)
        table = student.prefers_first(candidates, np.arange(n)).reshape(config.n_candidates, n * n)
        matches = np.ascontiguousarray(table.T)[self.pair] == self.answers[:, :, None]  # (T, M, K)
        return self._block_counts(matches), student.measured_eps

    def decode(self, cum_agree: np.ndarray, eps_hat: float) -> tuple[np.ndarray, np.ndarray]:
        """Maximum-likelihood choice after each grid count; (G,) accuracy and mean distance."""
        direction = np.sign(0.5 - eps_hat)  # +1 maximize agreements, -1 minimize, 0 guess
        score = direction * cum_agree + self.tie_keys  # keys < 1 only break integer ties
        chosen = np.argmax(score, axis=2)  # (T, G)
        hits = chosen == self.hidden[:, None]
        error = self.candidate_distance[chosen, self.hidden[:, None]]
        return hits.mean(axis=0), error.mean(axis=0)


def _summarize(config, grid, kinds, eps_values, correct, distance, measured, chance_distance, rng):
    n_worlds = config.n_worlds
    weights = rng.multinomial(n_worlds, np.full(n_worlds, 1.0 / n_worlds), size=config.n_bootstrap) / n_worlds
    alpha = (1.0 - config.confidence) / 2.0
    fano = fano_query_bound(config.n_candidates, eps_values, target_accuracy=config.target_accuracy)
    capacity = channel_capacity(eps_values)
    ratio = query_ratio(eps_values)
    acc_rows, query_rows = [], []
    for s, kind in enumerate(kinds):
        for e, eps in enumerate(eps_values):
            curve = correct[s, e].mean(axis=0)  # (G,)
            boot = weights @ correct[s, e]  # (B, G) accuracy curves of resampled worlds
            acc_low, acc_high = np.quantile(boot, [alpha, 1 - alpha], axis=0)
            dist = distance[s, e].mean(axis=0)
            eps_hat = measured[s, e].mean()
            for g, m in enumerate(grid):
                acc_rows.append(
                    {
                        "student": kind,
                        "eps": float(eps),
                        "eps_measured": float(eps_hat),
                        "n_queries": int(m),
                        "accuracy": float(curve[g]),
                        "ci_low": float(acc_low[g]),
                        "ci_high": float(acc_high[g]),
                        "distance_error": float(dist[g]),
                        "chance_accuracy": 1.0 / config.n_candidates,
                        "chance_distance": float(chance_distance.mean()),
                    }
                )
            point = float(queries_to_target(curve, grid, config.target_accuracy))
            boot_q = queries_to_target(boot, grid, config.target_accuracy)
            # "lower"/"higher" never interpolate, so an inf among the replicates stays inf
            q_low = float(np.quantile(boot_q, alpha, method="lower"))
            q_high = float(np.quantile(boot_q, 1 - alpha, method="higher"))
            query_rows.append(
                {
                    "student": kind,
                    "eps": float(eps),
                    "eps_measured": float(eps_hat),
                    "target_accuracy": config.target_accuracy,
                    "queries_to_target": point,
                    "ci_low": q_low,
                    "ci_high": q_high,
                    "reached": bool(np.isfinite(point)),
                    "fano_bound": float(fano[e]),
                    "capacity": float(capacity[e]),
                    "query_ratio": float(ratio[e]),
                }
            )
    return GameResult(accuracy=pd.DataFrame(acc_rows), queries=pd.DataFrame(query_rows), config=config)


def compare_with_capacity(queries: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Compare simulated queries-to-target with the capacity prediction ``a / C(eps)``.

    Per student kind, ``a`` is fitted in log space over the eps values where the target
    was reached (``log a = mean(log q + log C)``, the least-squares scale), so the table's
    ``observed_over_predicted`` column is 1 where the simulation follows ``1/C`` exactly.

    Args:
        queries: the ``queries`` table of :class:`GameResult`.
    Returns:
        ``(table, summary)``: the per-eps table (student, eps, queries_to_target,
        query_ratio, predicted, observed_over_predicted) and a per-student summary
        (student, n_points, scale, pearson_r_log, spearman_r).
    """
    required = {"student", "eps", "queries_to_target", "query_ratio"}
    if missing := required - set(queries.columns):
        raise InputError(f"queries table lacks columns {sorted(missing)}; pass GameResult.queries")
    rows, summary = [], []
    for kind, group in queries.groupby("student", sort=False):
        q = group["queries_to_target"].to_numpy(dtype=float)
        r = group["query_ratio"].to_numpy(dtype=float)
        ok = np.isfinite(q) & np.isfinite(r) & (q > 0)
        scale = float(np.exp(np.mean(np.log(q[ok]) - np.log(r[ok])))) if ok.any() else float("nan")
        predicted = scale * r
        with np.errstate(invalid="ignore", divide="ignore"):
            observed_over_predicted = np.where(ok, q / predicted, np.nan)
        for eps, qq, rr, pp, oo in zip(group["eps"], q, r, predicted, observed_over_predicted):
            rows.append(
                {
                    "student": kind,
                    "eps": float(eps),
                    "queries_to_target": float(qq),
                    "query_ratio": float(rr),
                    "predicted": float(pp),
                    "observed_over_predicted": float(oo),
                }
            )
        enough = ok.sum() >= 3
        summary.append(
            {
                "student": kind,
                "n_points": int(ok.sum()),
                "scale": scale,
                "pearson_r_log": float(stats.pearsonr(np.log(q[ok]), np.log(r[ok]))[0]) if enough else float("nan"),
                "spearman_r": float(stats.spearmanr(q[ok], r[ok])[0]) if enough else float("nan"),
            }
        )
    return pd.DataFrame(rows), pd.DataFrame(summary)
