"""Few-shot transfer: how well a model's embeddings support learning classes from few examples.

The study's protocol: from a dataset's test split, for each number of shots n, draw n
examples per class to train a head on the (frozen) embeddings and evaluate on the remaining
examples; repeat over seeds and report the mean accuracy with a 95% t-interval over seeds.

* :mod:`~repalign.fewshot.splits` -- :func:`make_splits` / :class:`SplitManifest`, the
  leak-checked, reproducible splits; :func:`make_dataset_splits` draws them for a dataset;
* :mod:`~repalign.fewshot.evaluate` -- :func:`evaluate_fewshot` (the whole grid from
  precomputed features), :func:`run_fewshot` (embeds what the splits use, then evaluates)
  and :func:`fewshot_rows` (the same as rows of the study's result store);
* :mod:`~repalign.fewshot.files` -- :func:`run_fewshot_file`, the same grid on an embeddings file;
* :mod:`~repalign.fewshot.many` -- :func:`evaluate_fewshot_many`, the grid of several models
  on the same splits, their fits batched together (for a study's runner);
* :mod:`~repalign.fewshot.settings` -- :class:`HeadSettings`, the heads' hyperparameters;
* private: ``_heads`` (batching tasks into groups, scoring), ``_linear`` (batched L-BFGS
  logistic regression), ``_mlp`` (MLP heads), ``_dropout`` (input dropout as sparsity),
  ``_fast_matmul`` (bfloat16 / oneDNN products where they keep accuracy).

Importing this package never imports torch. See docs/fewshot.md.
"""

from __future__ import annotations

from repalign._options import DEFAULT_SHOTS, HEADS, MLP_PRECISIONS
from repalign.fewshot.evaluate import confidence_interval, evaluate_fewshot, fewshot_rows, run_fewshot, summarize
from repalign.fewshot.files import run_fewshot_file
from repalign.fewshot.many import evaluate_fewshot_many
from repalign.fewshot.settings import HeadSettings
from repalign.fewshot.splits import (
    Split,
    SplitManifest,
    check_labels,
    labels_fingerprint,
    make_dataset_splits,
    make_splits,
)

__all__ = [
    "DEFAULT_SHOTS",
    "HEADS",
    "MLP_PRECISIONS",
    "HeadSettings",
    "Split",
    "SplitManifest",
    "check_labels",
    "confidence_interval",
    "evaluate_fewshot",
    "evaluate_fewshot_many",
    "fewshot_rows",
    "labels_fingerprint",
    "make_dataset_splits",
    "make_splits",
    "run_fewshot",
    "run_fewshot_file",
    "summarize",
]
