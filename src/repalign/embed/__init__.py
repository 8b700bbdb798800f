"""Embeddings: a model's features for a set of images, extracted in batches and cached by content.

* :mod:`~repalign.embed.engine` -- :func:`extract_embeddings` (batched, streaming, out-of-memory
  halving, deterministic order) and :func:`is_cached`;
* :mod:`~repalign.embed.cache` -- the content-addressed embedding cache;
* :mod:`~repalign.embed.inputs` -- preprocessed inputs kept once per (image set, preprocessing
  configuration), shared by every model of that configuration, and :func:`order_by_preprocessing`;
* :mod:`~repalign.embed.files` -- the embeddings file format: :func:`write_embeddings_file`,
  :func:`read_embeddings_file` (.npy / .npz, never unpickled) and :func:`match_stimuli` (rows in a
  human dataset's stimulus order);
* ``_prefetch`` -- the thread pipeline that decodes the next batches during a forward pass.

Importing this package never imports torch. See docs/embeddings.md.
"""

from __future__ import annotations

from repalign._device import resolve_device
from repalign.embed.cache import CACHE_DTYPES, EmbeddingCache, cache_key
from repalign.embed.engine import (
    EXTRACTION_CODE_VERSION,
    default_num_workers,
    embedding_cache_key,
    extract_embeddings,
    is_cached,
    usable_cpus,
)
from repalign.embed.files import (
    EmbeddingsFile,
    NoMatchingStimuliError,
    load_embeddings_file,
    match_stimuli,
    read_embeddings_file,
    write_embeddings_file,
)
from repalign.embed.inputs import InputCache, order_by_preprocessing

__all__ = [
    "CACHE_DTYPES",
    "EXTRACTION_CODE_VERSION",
    "EmbeddingCache",
    "EmbeddingsFile",
    "InputCache",
    "NoMatchingStimuliError",
    "cache_key",
    "default_num_workers",
    "embedding_cache_key",
    "extract_embeddings",
    "is_cached",
    "load_embeddings_file",
    "match_stimuli",
    "order_by_preprocessing",
    "read_embeddings_file",
    "resolve_device",
    "usable_cpus",
    "write_embeddings_file",
]
