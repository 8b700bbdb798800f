"""Explicit human triplet judgments, in one canonical form.

Two forms are accepted (both as CSV files with stimulus names, see :mod:`repalign.data.human`):

* ``kind="triplet"``: columns ``anchor, positive, negative`` -- "the anchor is more
  similar to *positive* than to *negative*". Chance level 1/2.
* ``kind="odd_one_out"``: columns ``i, j, k, odd`` -- of the three stimuli, ``odd`` is
  the one least like the other two. Stored as ``first, second, third`` with the odd
  one in ``third``. Chance level 1/3.

Indices refer to rows of the similarity matrix (the dataset's stimulus order).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from repalign.errors import InputError

JUDGMENT_KINDS = ("triplet", "odd_one_out")


@dataclass(frozen=True, eq=False)
class TripletJudgments:
    """Human triplet judgments as integer index arrays of equal length ``m``.

    For ``kind="triplet"``: ``a`` anchor, ``b`` positive, ``c`` negative.
    For ``kind="odd_one_out"``: ``a``, ``b`` the two stimuli judged alike, ``c`` the odd one.
    ``counts`` gives how many times each judgment was made (weights).
    """

    kind: str
    a: np.ndarray
    b: np.ndarray
    c: np.ndarray
    counts: np.ndarray
    n_stimuli: int

    def __post_init__(self) -> None:
        if self.kind not in JUDGMENT_KINDS:
            raise InputError(f"Unknown judgment kind '{self.kind}'; expected one of {JUDGMENT_KINDS}")
        arrays = [np.asarray(x) for x in (self.a, self.b, self.c, self.counts)]
        if len({len(x) for x in arrays}) != 1:
            raise InputError("Triplet judgment columns have different lengths")
        a, b, c, _ = arrays
        if len(a) and (min(a.min(), b.min(), c.min()) < 0 or max(a.max(), b.max(), c.max()) >= self.n_stimuli):
            raise InputError(f"Triplet judgment index out of range for {self.n_stimuli} stimuli")
        if np.any((a == b) | (a == c) | (b == c)):
            raise InputError("A triplet judgment names the same stimulus twice; each triplet needs 3 distinct stimuli")
        if np.any(np.asarray(self.counts) <= 0):
            raise InputError("Triplet judgment counts must be positive integers")

    @property
    def chance_level(self) -> float:
        return 0.5 if self.kind == "triplet" else 1.0 / 3.0

    def __len__(self) -> int:
        return len(self.a)
