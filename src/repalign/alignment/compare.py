"""Model-to-model comparison: how alike several models see the same stimuli.

Alignment (:mod:`repalign.alignment.compute`) puts one model beside people; this module puts
models beside each other, with the same measures the literature uses for that: linear CKA
(Kornblith et al. 2019), its debiased form (Song et al.'s unbiased HSIC, as in Nguyen et al.
2021), and RSA, the correlation of two models' similarity matrices (any pairwise method).

Example:
    >>> import numpy as np
    >>> from repalign.alignment import compare_models, comparison_matrix
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(30, 8))
    >>> table = compare_models({"a": x, "b": x @ rng.normal(size=(8, 8)), "c": rng.normal(size=(30, 5))})
    >>> comparison_matrix(table, "linear_cka").shape
    (3, 3)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from repalign._options import COMPARISON_METHODS, DEFAULT_COMPARISON_METHODS, DEFAULT_SIMILARITY, SIMILARITY_METRICS
from repalign.alignment._checks import _as_embeddings, _check_choice, _check_pair
from repalign.alignment.cka import linear_cka
from repalign.alignment.pairwise import pairwise_alignment
from repalign.alignment.similarity import similarity_matrix
from repalign.errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

#: the columns of :func:`compare_models`' table, in order
COMPARISON_COLUMNS = ("model_a", "model_b", "method", "similarity", "value", "n")

_RSA_PREFIX = "rsa_"


def compare_models(
    embeddings: Mapping[str, object],
    *,
    methods: Sequence[str] | str = DEFAULT_COMPARISON_METHODS,
    similarity: str = DEFAULT_SIMILARITY,
    human_similarity=None,
    human_name: str = "human",
) -> pd.DataFrame:
    """Every pair of models compared with every method, as a tidy table.

    Args:
        embeddings: model name -> (n_stimuli, n_features) array; every array has its rows in
            the same stimulus order (the features may differ in number).
        methods: names from :data:`repalign._options.COMPARISON_METHODS`: ``linear_cka``,
            ``debiased_cka`` (needs 4 stimuli or more), and ``rsa_`` + any pairwise method
            (``rsa_pearson``, ``rsa_spearman``, ``rsa_kendall``, ``rsa_tau-a``, ``rsa_rho-a``,
            ``rsa_cosine``).
        similarity: the similarity function of the RSA methods' matrices (CKA uses linear kernels).
        human_similarity: optional (n_stimuli, n_stimuli) human similarity matrix of the same
            stimuli: it joins the RSA methods' tables as one more row and column, named
            ``human_name``, so "which models see the stimuli alike" sits beside "how each sees
            them like people". CKA needs features, so it has no human row.
        human_name: the name of that row (it must not clash with a model's name).

    Returns:
        A DataFrame with columns ``model_a, model_b, method, similarity, value, n``: one row per
        ordered pair (both (a, b) and (b, a), and (a, a)) and method, models in the given order;
        ``similarity`` is set on RSA rows only (null on CKA rows, whose values do not depend on
        it) and ``n`` is the number of stimuli. Each unordered pair is computed once.
    """
    import pandas as pd  # here, so importing the alignment package does not import pandas

    methods = (methods,) if isinstance(methods, str) else tuple(methods)
    if not methods:
        raise InputError(f"methods is empty; give names from {', '.join(COMPARISON_METHODS)}")
    for method in methods:
        _check_choice("comparison method", method, COMPARISON_METHODS)
    _check_choice("similarity metric", similarity, SIMILARITY_METRICS)
    if len(embeddings) < 2:
        raise InputError(f"comparing models needs at least 2 models; got {len(embeddings)}")
    arrays = {str(name): _as_embeddings(x, f"embeddings of {name}") for name, x in embeddings.items()}
    n = {a.shape[0] for a in arrays.values()}
    if len(n) != 1:
        sizes = ", ".join(f"{name}: {a.shape[0]}" for name, a in arrays.items())
        raise InputError(f"every model needs one row per stimulus of the same set; got rows {sizes}")
    (n_stimuli,) = n

    matrices: dict[str, np.ndarray] = {}
    if any(m.startswith(_RSA_PREFIX) for m in methods):
        matrices = {name: similarity_matrix(x, metric=similarity) for name, x in arrays.items()}
        if human_similarity is not None:
            if human_name in arrays:
                raise InputError(f"human_name '{human_name}' is also a model's name; pick another")
            _, human = _check_pair(next(iter(matrices.values())), human_similarity)
            matrices[human_name] = human

    records = []
    for method in methods:
        if method.startswith(_RSA_PREFIX):
            names = list(matrices)
            score = _rsa_scorer(matrices, method.removeprefix(_RSA_PREFIX))
        else:
            names = list(arrays)
            score = _cka_scorer(arrays, debiased=method == "debiased_cka")
        values = np.full((len(names), len(names)), np.nan)
        for i in range(len(names)):
            for j in range(i, len(names)):
                values[i, j] = values[j, i] = score(names[i], names[j])
        for i, a in enumerate(names):
            for j, b in enumerate(names):
                records.append(
                    {
                        "model_a": a,
                        "model_b": b,
                        "method": method,
                        "similarity": similarity if method.startswith(_RSA_PREFIX) else None,
                        "value": float(values[i, j]),
                        "n": n_stimuli,
                    }
                )
    return pd.DataFrame.from_records(records, columns=list(COMPARISON_COLUMNS))


def comparison_matrix(table: pd.DataFrame, method: str) -> pd.DataFrame:
    """One method's square matrix (model x model) from :func:`compare_models`' table.

    Rows and columns keep the order in which the models first appear in the table.
    """
    rows = table[table["method"] == method]
    if rows.empty:
        present = ", ".join(dict.fromkeys(table["method"])) or "none"
        raise InputError(f"the table has no rows of method '{method}'; it has: {present}")
    order = list(dict.fromkeys(rows["model_a"]))
    matrix = rows.pivot(index="model_a", columns="model_b", values="value").loc[order, order]
    matrix.index.name = matrix.columns.name = None
    return matrix


def _cka_scorer(arrays: dict[str, np.ndarray], *, debiased: bool):
    def score(a: str, b: str) -> float:
        return linear_cka(arrays[a], arrays[b], debiased=debiased)

    return score


def _rsa_scorer(matrices: dict[str, np.ndarray], method: str):
    def score(a: str, b: str) -> float:
        return pairwise_alignment(matrices[a], matrices[b], method=method)

    return score
