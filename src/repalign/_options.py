"""The vocabularies and defaults of repalign's options, defined once.

Every valid name of an option (similarity functions, alignment metrics, few-shot heads,
devices, ...) and every default lives here. The functions, the TOML validator and the
command line all read them from this module, so they cannot drift apart.
"""

from __future__ import annotations

# -- alignment -----------------------------------------------------------------------------
#: how a model's (n, n) similarity matrix is computed from its embeddings
SIMILARITY_METRICS = ("cosine", "dot", "neg_euclidean", "pearson")
#: correlations of the upper triangles of two similarity matrices
PAIRWISE_METHODS = ("pearson", "spearman", "kendall")
#: how a triplet tied on either side counts: left out, half a match, or the paper's strict
#: bits (Definition 3.5: a tie is bit 0)
TIE_MODES = ("exclude", "half", "strict")
#: metrics that compare two similarity matrices
MATRIX_METRICS = (*PAIRWISE_METHODS, "triplet")
#: every alignment metric, including agreement with explicit triplet judgments
ALIGNMENT_METRICS = (*MATRIX_METRICS, "triplet_accuracy")
#: the paper's three metrics
DEFAULT_METRICS = ("pearson", "spearman", "triplet")
