"""repalign: representational alignment between models and humans, and what it buys.

Implements the measurements of Sucholutsky & Griffiths (NeurIPS 2023), "Alignment with
human representations supports robust few-shot learning": alignment metrics (Pearson,
Spearman, exact triplet agreement), model embeddings, few-shot transfer, robustness,
the study's statistics and its information-theoretic predictions.

Importing this package is cheap and never imports torch: public names are resolved
lazily on first access.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it (imported on first use)
_PUBLIC = {
    # alignment
    "similarity_matrix": "repalign.alignment",
    "pairwise_alignment": "repalign.alignment",
    "triplet_alignment": "repalign.alignment",
    "triplet_agreement_counts": "repalign.alignment",
    "triplet_alignment_sampled": "repalign.alignment",
    "triplet_accuracy": "repalign.alignment",
    "linear_cka": "repalign.alignment",
    "compare_models": "repalign.alignment",
    "comparison_matrix": "repalign.alignment",
    "compute_alignment": "repalign.alignment",
    "bootstrap_alignment_ci": "repalign.alignment",
    "TripletCounts": "repalign.alignment",
    "SampledEstimate": "repalign.alignment",
    "noise_ceiling": "repalign.alignment",
    "split_half_reliability": "repalign.alignment",
    "triplet_ceiling": "repalign.alignment",
    # human data
    "load_human": "repalign.data.human",
    "load_human_file": "repalign.data.matrix_file",
    "HumanSimilarity": "repalign.data.human",
    "list_human_datasets": "repalign.data.human",
    # models and embeddings
    "list_layers": "repalign.models",
    "list_models": "repalign.models",
    "resolve_model": "repalign.models",
    "load_model": "repalign.models",
    "wrap_model": "repalign.models",
    "describe_model": "repalign.models",
    "expand_model_patterns": "repalign.models",
    "extract_embeddings": "repalign.embed",
    "is_cached": "repalign.embed",
    "load_embeddings_file": "repalign.embed",
    "read_embeddings_file": "repalign.embed",
    "write_embeddings_file": "repalign.embed",
    "match_stimuli": "repalign.embed",
    "load_dataset_images": "repalign.data",
    # few-shot
    "run_fewshot": "repalign.fewshot",
    "run_fewshot_file": "repalign.fewshot",
    "evaluate_fewshot": "repalign.fewshot",
    "load_fewshot_dataset": "repalign.data.fewshot_datasets",
    # theory
    "channel_capacity": "repalign.theory",
    "query_lower_bound": "repalign.theory",
    "predicted_accuracy_shape": "repalign.theory",
    "simulate_communication_game": "repalign.theory",
    "run_theory": "repalign.theory",
    # analysis and report
    "robustness_table": "repalign.robustness",
    "write_report": "repalign.report",
    # study
    "load_study": "repalign.store",
    "run_study": "repalign.study.run",
    "load_config": "repalign.study.config",
}


#: public submodules reached as attributes (``repalign.plot.model_bars``), imported on first use
_SUBMODULES = ("plot",)

__all__ = ["__version__", *_PUBLIC, *_SUBMODULES]


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"repalign.{name}")
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'repalign' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
