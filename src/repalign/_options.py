"""The vocabularies and defaults of repalign's options, defined once.

Every valid name of an option (similarity functions, alignment metrics, few-shot heads,
devices, ...) and every default lives here. The functions, the TOML validator and the
command line all read them from this module, so they cannot drift apart.

This module imports nothing (not numpy, not torch), so validating a study config and
``repalign --help`` stay cheap.
"""

from __future__ import annotations

#: the option value that lets repalign choose (a device, the metrics a dataset supports, ...)
AUTO = "auto"

# -- alignment -----------------------------------------------------------------------------
#: how a model's (n, n) similarity matrix is computed from its embeddings
SIMILARITY_METRICS = ("cosine", "dot", "neg_euclidean", "pearson")
DEFAULT_SIMILARITY = "cosine"
#: comparisons of the upper triangles of two similarity matrices: the correlations, then
#: rsatoolbox's tau-a and rho-a (honest when a model predicts ties) and cosine
PAIRWISE_METHODS = ("pearson", "spearman", "kendall", "tau-a", "rho-a", "cosine")
#: how a triplet tied on either side counts: left out, half a match, or the paper's strict
#: bits (Definition 3.5: a tie is bit 0)
TIE_MODES = ("exclude", "half", "strict")
DEFAULT_TIES = "exclude"
#: metrics that compare two similarity matrices
MATRIX_METRICS = (*PAIRWISE_METHODS, "triplet")
#: every alignment metric, including agreement with explicit triplet judgments
ALIGNMENT_METRICS = (*MATRIX_METRICS, "triplet_accuracy")
#: the paper's three metrics. ``metrics="auto"`` (the default; ``None`` in the library)
#: means the dataset's defaults: these where it has a similarity matrix, plus
#: ``triplet_accuracy`` where it has triplet judgments.
DEFAULT_METRICS = ("pearson", "spearman", "triplet")
#: model-to-model comparison (``repalign compare``): linear CKA, debiased CKA, and RSA (a
#: pairwise correlation of the two models' similarity matrices) with each pairwise method
COMPARISON_METHODS = ("linear_cka", "debiased_cka", *(f"rsa_{method}" for method in PAIRWISE_METHODS))
DEFAULT_COMPARISON_METHODS = ("linear_cka", "debiased_cka", "rsa_spearman")
#: resamples of a bootstrap confidence interval (over stimuli for alignment, over models
#: in the report); 0 = no interval
DEFAULT_N_BOOTSTRAP = 1000
#: the most resamples accepted: a bootstrap holds (n_bootstrap, n) int64 indices at once
#: (100k resamples of 120 stimuli = 96 MB), and the CI bounds settle long before this
MAX_N_BOOTSTRAP = 100_000
#: the seed of every random computation that is not given one
DEFAULT_SEED = 0
#: seeds are non-negative and below 2**32: numpy's legacy RandomState, scikit-learn and
#: pingouin accept no more
MAX_SEED = 2**32 - 1

# -- few-shot ------------------------------------------------------------------------------
HEADS = ("linear", "mlp1", "mlp2")
#: dtype of the MLP heads' matrix products ("auto": bfloat16 where the hardware has it)
MLP_PRECISIONS = (AUTO, "float32", "bfloat16")
#: training examples per class
DEFAULT_SHOTS = (1, 5, 10, 20, 40, 80)
#: random splits (seeds 0..N-1) the few-shot accuracy is averaged over
DEFAULT_N_SEEDS = 5
#: the dataset split few-shot draws its shots and evaluation examples from
FEWSHOT_SPLITS = ("test", "train")
DEFAULT_FEWSHOT_SPLIT = "test"

# -- embeddings and devices ----------------------------------------------------------------
#: device kinds; ``cuda:N`` names one GPU. ``auto`` picks cuda, then mps, then cpu.
DEVICES = (AUTO, "cpu", "cuda", "mps")
DEFAULT_DEVICE = AUTO
#: dtypes of extracted (and cached) embeddings
EMBEDDING_DTYPES = ("float32", "float16")
DEFAULT_EMBEDDING_DTYPE = "float32"
#: the layer features are read from unless told otherwise: the input of the classifier (the
#: paper's choice). Result rows, the report's statistics across models and every ``--layer``
#: option default to it, so analyses never mix layers by accident.
DEFAULT_LAYER = "penultimate"
#: size limit of the input cache (``<cache home>/inputs``: decoded image files once per image
#: set, and preprocessed inputs once per preprocessing configuration; least recently used
#: entries go first); 0 = off ($REPALIGN_INPUT_CACHE_BYTES). 2 GiB holds the decoded Peterson
#: images and about eight 224-pixel configurations of them (217 MB each); array datasets
#: (MNIST, CIFAR) are never stored there (docs/embeddings.md).
DEFAULT_INPUT_CACHE_BYTES = 2 << 30

# -- robustness ----------------------------------------------------------------------------
#: snapshots of timm's published ImageNet robustness results
ROBUSTNESS_SOURCES = ("timm-2022-07-27", "timm-2025-10-30")
#: the paper's snapshot: what ``robustness_table`` reads unless told otherwise
DEFAULT_ROBUSTNESS_SOURCE = "timm-2022-07-27"
#: the study config's ``[robustness] source`` that switches the stage off (its default)
NO_ROBUSTNESS = "none"

# -- statistics ----------------------------------------------------------------------------
#: p-value adjustments across a grid of correlations (pingouin's names)
CORRECTIONS = ("holm", "fdr_bh", "bonf", "none")
DEFAULT_CORRECTION = "holm"

# -- study --------------------------------------------------------------------------------
#: the stages of a study, in the order a unit runs them
STAGES = ("alignment", "fewshot", "robustness")

# -- study execution -----------------------------------------------------------------------
EXECUTORS = ("local", "ray")
DEFAULT_EXECUTOR = "local"
#: local worker processes
DEFAULT_JOBS = 1
#: the most CPU threads a unit may ask for (``[execution] threads``): BLAS, OpenMP and torch
#: would each start that many; more is a typo, not a machine
MAX_THREADS = 1024

# -- Ray clusters (docs/cluster.md) ----------------------------------------------------------
#: seconds to join a Ray cluster (``--connect-timeout``, ``[execution] connect_timeout``):
#: an unreachable address, a refused token or a version mismatch is an error within this
#: bound (Ray itself waits 20-30 s per attempt and then retries)
DEFAULT_CONNECT_TIMEOUT_S = 30
#: [execution] batch_fewshot: a local run fits the few-shot heads of several models together
#: (faster; MLP accuracies then depend on which models share a batch, within bfloat16 rounding,
#: so a resumed run is not bit-identical): off unless asked for
DEFAULT_BATCH_FEWSHOT = False
#: times Ray runs a unit again when its worker or node died (a crash, a lost node); after
#: that the unit is a failed row. An exception inside a unit is a failed row at once.
RAY_TASK_RETRIES = 2
#: what a unit asks a Ray cluster for (study/sizing.py): a worker with torch and the unit's
#: data, plus the model's weights (float32) and every activation of a forward pass of this
#: many images (inference frees most activations as it goes, so this bounds a larger batch)
UNIT_BASE_MEMORY_BYTES = 1 << 30
SIZING_BATCH_IMAGES = 8
#: a model of unpublished size (not in timm's tables) is sized as this much beyond the base
#: and takes a whole GPU: never two unknown giants on one device
UNKNOWN_MODEL_BYTES = 1 << 30
#: the CUDA context and allocator slack of a process using a GPU
GPU_CONTEXT_BYTES = 512 << 20
#: the GPU shares a unit may ask for: a power of two keeps shares packing exactly
GPU_SHARES = (0.125, 0.25, 0.5, 1.0)
#: GPU memory assumed per GPU when ``[execution] gpu_memory_gb = 0`` (a small data-centre
#: GPU: a larger real GPU then holds its share with room to spare)
DEFAULT_GPU_MEMORY_GB = 16
