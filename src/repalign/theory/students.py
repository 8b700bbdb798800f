"""Students misaligned with a teacher by a chosen rate ``eps``, built two ways.

* **Flip student**: the student's answer to every triplet is the teacher's answer flipped
  independently with probability ``eps`` -- the binary symmetric channel exactly.
* **Embedding student**: a student *representation* ``(1 - t) X + t Z`` that interpolates the
  teacher's embedding ``X`` toward independent noise ``Z``; ``t`` is found by bisection so
  that the student's disagreement with the teacher on the shared objects, measured exactly
  over all triplets by :func:`repalign.alignment.triplet_agreement_counts`, equals ``eps``.
  For ``eps > 0.5`` the student is the reversed configuration of the ``1 - eps`` student: it
  calls objects similar when they are far apart, which flips every triplet answer. Its
  errors are correlated across triplets (a real geometry), unlike the flip student's.

Similarities are negative Euclidean distances (times -1 for a reversed student); square
matrices come from :func:`repalign.alignment.similarity_matrix` (``metric="neg_euclidean"``).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

import numpy as np
from scipy.spatial.distance import cdist

from repalign.errors import InputError

__all__ = ["EmbeddingStudent", "build_embedding_student", "measure_disagreement", "negative_distances"]

logger = logging.getLogger(__name__)


def negative_distances(points: np.ndarray, others: np.ndarray | None = None) -> np.ndarray:
    """Similarity ``-||x_i - y_j||``, shape (len(points), len(others)).

    Without ``others``: the square (n, n) matrix of the foundation's
    ``similarity_matrix(points, metric="neg_euclidean")``, the form the triplet code scores.
    """
    if others is None:
        from repalign.alignment import similarity_matrix  # lazy: sibling module

        return similarity_matrix(points, metric="neg_euclidean")
    return -cdist(points, others, "euclidean")


def measure_disagreement(student_sim: np.ndarray, teacher_sim: np.ndarray) -> float:
    """Fraction of (non-tied) triplets on which the two similarity matrices disagree.

    Exact over all n(n-1)(n-2)/2 triplets, via the foundation's triplet code; ``eps = 1 - D``
    where ``D`` is the triplet alignment.
    """
    from repalign.alignment import triplet_agreement_counts  # lazy: sibling module

    counts = triplet_agreement_counts(student_sim, teacher_sim)
    decided = int(counts.agree) + int(counts.disagree)
    if decided == 0:
        raise InputError("No untied triplets to measure disagreement on; use at least 3 distinct objects")
    return int(counts.disagree) / decided


@dataclass(frozen=True, eq=False)
class EmbeddingStudent:
    """A student representation of ``n_objects`` objects (the shared ones first).

    Attributes:
        positions: (n_objects, d) student coordinates.
        reversed: True when the student's similarity is +distance (the eps > 0.5 branch).
        mix: interpolation weight ``t`` toward the noise (0 = the teacher itself).
        target_eps: the disagreement rate asked for.
        measured_eps: its exact disagreement with the teacher on the shared objects.
    """

    positions: np.ndarray
    reversed: bool
    mix: float
    target_eps: float
    measured_eps: float

    def similarity(self, rows: np.ndarray | slice = slice(None), cols: np.ndarray | slice | None = None) -> np.ndarray:
        """Student similarity between ``positions[rows]`` and ``positions[cols]`` (default: square over rows)."""
        others = None if cols is None else self.positions[cols]
        sim = negative_distances(self.positions[rows], others)
        return -sim if self.reversed else sim

    def prefers_first(self, anchors: np.ndarray, shared: np.ndarray) -> np.ndarray:
        """Answer table ``A[i, a, b]`` = "anchor i is more similar to shared a than to shared b".

        Args:
            anchors: indices of anchor objects, shape (k,).
            shared: indices of the objects asked about, shape (n,).
        Returns:
            (k, n, n) bool array.
        """
        sim = self.similarity(anchors, shared)
        return sim[:, :, None] > sim[:, None, :]


def _interpolate(teacher: np.ndarray, noise: np.ndarray, mix: float) -> np.ndarray:
    return (1.0 - mix) * teacher + mix * noise


def build_embedding_student(
    teacher: np.ndarray,
    noise: np.ndarray,
    target_eps: float,
    *,
    n_shared: int,
    tol: float = 2e-3,
    max_iter: int = 40,
) -> EmbeddingStudent:
    """Bisect the interpolation weight until the measured disagreement equals ``target_eps``.

    Args:
        teacher: (n_objects, d) teacher embedding; rows ``[:n_shared]`` are the shared objects.
        noise: (n_objects, d) independent noise the student drifts toward.
        target_eps: wanted disagreement rate in [0, 1].
        n_shared: number of shared objects the disagreement is measured on (>= 3).
        tol: stop when ``|measured - target| <= tol``.
        max_iter: bisection steps at most (the interval halves each step).
    Returns:
        The student. If even pure noise (t = 1) disagrees less than asked (the ceiling is
        about 0.5), the student is the pure-noise one and ``measured_eps`` says so.
    """
    teacher = np.asarray(teacher, dtype=np.float64)
    noise = np.asarray(noise, dtype=np.float64)
    if teacher.ndim != 2 or noise.shape != teacher.shape:
        raise InputError(
            f"teacher and noise must be (n_objects, d) arrays of one shape; got {teacher.shape} and {noise.shape}"
        )
    if not 3 <= n_shared <= len(teacher):
        raise InputError(f"n_shared must be between 3 and {len(teacher)}; got {n_shared}")
    if not 0.0 <= target_eps <= 1.0:
        raise InputError(f"target_eps must be in [0, 1]; got {target_eps}")
    reverse = target_eps > 0.5
    goal = 1.0 - target_eps if reverse else target_eps  # the unreversed student's target
    teacher_sim = negative_distances(teacher[:n_shared])

    def disagreement(mix: float) -> float:
        student = _interpolate(teacher[:n_shared], noise[:n_shared], mix)
        return measure_disagreement(negative_distances(student), teacher_sim)

    if goal <= 0.0:
        mix, measured = 0.0, 0.0
    else:
        mix, measured = 1.0, disagreement(1.0)
        if measured > goal + tol:
            lo, hi = 0.0, 1.0
            for _ in range(max_iter):
                mix = 0.5 * (lo + hi)
                measured = disagreement(mix)
                if abs(measured - goal) <= tol:
                    break
                lo, hi = (mix, hi) if measured < goal else (lo, mix)
        elif measured < goal - tol:
            logger.debug("pure noise disagrees at %.4f < target %.4f; using t = 1", measured, goal)
    student = EmbeddingStudent(
        positions=_interpolate(teacher, noise, mix),
        reversed=reverse,
        mix=float(mix),
        target_eps=float(target_eps),
        measured_eps=float("nan"),
    )
    # measure the final student itself (reversal included) rather than trusting the bisection
    measured_eps = measure_disagreement(student.similarity(slice(0, n_shared)), teacher_sim)
    return dataclasses.replace(student, measured_eps=measured_eps)
