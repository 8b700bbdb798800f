"""Domain-shift sensitivity of students of varying alignment (Definition A.1).

Sensitivity is the fraction of a representation's triplet answers about class centroids
that flip when the centroids move. Here a domain shift moves every class centroid along
directions the teacher (the human) does not use -- its own answers stay the same -- and a
student built as in :mod:`repalign.theory.students` is ``(1 - t) X + t Z``: ``X`` the
teacher's features, ``Z`` the student's own (nuisance) features, ``t`` set by bisection so
that the student's disagreement with the teacher is ``eps``. The shift moves ``Z`` by
``shift * delta`` (``delta`` standard normal per class), so the student's answers flip in
proportion to how much it relies on what the teacher ignores.

An aligned student (eps ~ 0) barely flips; a student at eps ~ 0.5 is all nuisance and flips
most; a reversed student (eps ~ 1) flips exactly the triplets its mirror image flips.
Hence the same U-shape around 0.5 as the query cost.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from repalign.errors import InputError
from repalign.theory.capacity import check_rate
from repalign.theory.students import build_embedding_student, measure_disagreement, negative_distances

__all__ = ["domain_shift_sensitivity"]


def domain_shift_sensitivity(
    eps,
    *,
    shifts=(0.25, 0.5, 1.0),
    n_classes: int = 30,
    n_dims: int = 8,
    n_worlds: int = 20,
    confidence: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """Fraction of triplets over class centroids that flip under a domain shift.

    Args:
        eps: misalignment rates of the students, in [0, 1], shape (E,).
        shifts: sizes of the centroid moves, in units of the nuisance features' standard
            deviation (> 0), shape (S,).
        n_classes: number of classes (centroids; >= 3).
        n_dims: dimension of the teacher and nuisance features.
        n_worlds: independent teachers and students per eps (>= 2), averaged.
        confidence: level of the t-interval over worlds.
        seed: seeds ``numpy.random.SeedSequence``; equal seeds give identical tables.
    Returns:
        DataFrame with one row per (eps, shift): ``eps``, ``eps_measured`` (mean exact
        disagreement with the teacher), ``alignment`` (1 - eps_measured), ``shift``,
        ``flipped_fraction`` (mean over worlds), ``ci_low``, ``ci_high``, ``n_worlds``.
    """
    eps_values = np.atleast_1d(check_rate(eps)).ravel()
    shift_values = np.atleast_1d(np.asarray(shifts, dtype=np.float64)).ravel()
    if eps_values.size == 0 or shift_values.size == 0:
        raise InputError("eps and shifts must each contain at least one value")
    if np.any(~np.isfinite(shift_values)) or np.any(shift_values <= 0):
        raise InputError(f"shifts must be positive numbers; got {shift_values.tolist()}")
    for name, value, minimum in (("n_classes", n_classes, 3), ("n_dims", n_dims, 1), ("n_worlds", n_worlds, 2)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
            raise InputError(f"{name} must be an integer >= {minimum}; got {value!r}")
    if not 0.0 < confidence < 1.0:
        raise InputError(f"confidence must be in (0, 1); got {confidence!r}")

    flipped = np.empty((eps_values.size, shift_values.size, n_worlds))
    measured = np.empty((eps_values.size, n_worlds))
    for w in range(n_worlds):
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(w,)))
        teacher = rng.standard_normal((n_classes, n_dims))
        direction = rng.standard_normal((n_classes, n_dims))  # where each centroid moves
        for e, value in enumerate(eps_values):
            student_rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(w, 1, round(value * 1e6))))
            nuisance = student_rng.standard_normal((n_classes, n_dims))
            student = build_embedding_student(teacher, nuisance, float(value), n_shared=n_classes)
            measured[e, w] = student.measured_eps
            before = student.similarity()
            for s, size in enumerate(shift_values):
                moved = build_shifted(student, teacher, nuisance + size * direction)
                flipped[e, s, w] = measure_disagreement(moved, before)
    mean = flipped.mean(axis=2)
    half = stats.t.ppf(0.5 + confidence / 2.0, n_worlds - 1) * stats.sem(flipped, axis=2)
    rows = []
    for e, value in enumerate(eps_values):
        for s, size in enumerate(shift_values):
            rows.append(
                {
                    "eps": float(value),
                    "eps_measured": float(measured[e].mean()),
                    "alignment": float(1.0 - measured[e].mean()),
                    "shift": float(size),
                    "flipped_fraction": float(mean[e, s]),
                    "ci_low": float(mean[e, s] - half[e, s]),
                    "ci_high": float(mean[e, s] + half[e, s]),
                    "n_worlds": int(n_worlds),
                }
            )
    return pd.DataFrame(rows)


def build_shifted(student, teacher: np.ndarray, moved_nuisance: np.ndarray) -> np.ndarray:
    """Similarity matrix (n, n) of ``student`` after its nuisance features moved."""
    positions = (1.0 - student.mix) * teacher + student.mix * moved_nuisance
    sim = negative_distances(positions)
    return -sim if student.reversed else sim
