"""Feature extraction: batched, streaming, cached.

:func:`extract_embeddings` turns an :class:`~repalign.data.images.ImageSet` into an
``(n_images, n_features)`` array of a model's features (the penultimate layer by default).

How it works, and why:

* **Cache first.** The cache key (see :mod:`repalign.embed.cache`) is computed from
  ``repalign.models.describe_model``, which reads the model's identity and preprocessing
  config *without building the network*, so a second run never loads the model.
* **Streaming.** A torch ``DataLoader`` over a dataset that decodes image ``i`` and applies
  the model's own transform, so decoding and preprocessing run in worker processes while
  the main process runs the forward pass; only ``batch_size * (workers * prefetch + 1)``
  decoded images exist at any time, whatever the number of images.
* **Numpy models on a multi-core CPU** (TFLite) use a lighter loader by default: one
  thread decodes and preprocesses the next batches (PIL releases the GIL) while the
  forward pass runs with one core fewer (the handle's ``compute_threads``), at most
  :data:`THREAD_PREFETCH_BATCHES` batches ahead (:mod:`repalign.embed._prefetch`) -- when
  preparing a batch takes longer than its forward pass on all cores (measured on the
  second batch); otherwise batches are prepared in turn and the forward pass keeps every core.
* **Shared work once** (the input cache, :mod:`repalign.embed.inputs`): a model whose
  preprocessing configuration already ran on these images reads the ready inputs; the
  first model of a configuration prepares them from pixels decoded once per image set
  (:mod:`repalign.embed.decoded`). Array datasets are preprocessed in batches where the
  model runs instead (:mod:`repalign.embed.arrays`).
* **Deterministic order.** No shuffling; the DataLoader returns batches in index order
  even with several workers, and outputs are written into a preallocated array by index.
* **Out of memory** halves the batch (and keeps the smaller size for later batches),
  retrying the same images, down to a batch of one.
* **Errors in workers** (a corrupt image) are carried back as data, not as exceptions,
  so the user sees the original one-line repalign error naming the file instead of a
  worker traceback.

The engine never special-cases a model source: everything source-specific lives behind
:class:`repalign.models.base.ModelHandle`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from repalign._device import mps_available, resolve_device
from repalign._options import DEFAULT_DEVICE, DEFAULT_EMBEDDING_DTYPE
from repalign._progress import progress_bar
from repalign.data.images import ImageSet, unwrap_subsets
from repalign.embed.cache import CACHE_DTYPES, EmbeddingCache, cache_key
from repalign.embed.decoded import decoded_images
from repalign.errors import InputError, MissingDataError, RepalignError, unknown_name
from repalign.models.base import PENULTIMATE, ModelHandle

log = logging.getLogger(__name__)

#: Version of the extraction code; part of every cache key. Bump it whenever a change here
#: could change the numbers produced (never for refactors that cannot).
#: 2: 16-bit and float images are decoded by their full range (1 clipped them at 255).
EXTRACTION_CODE_VERSION = "2"

#: Batches each DataLoader worker prepares ahead of the forward pass.
PREFETCH_FACTOR = 4

#: Batches the prefetch thread (numpy models on the CPU) may finish ahead of the forward pass.
THREAD_PREFETCH_BATCHES = 2

#: Batches prepared and run in turn before the prefetch thread is considered (_pipelined_batches).
_PROBE_BATCHES = 2

#: Scheduling niceness of DataLoader workers when the model runs on the CPU. The forward
#: pass runs on all cores with intra-op threads that wait for each other at every layer,
#: so a worker preempting one of them stalls all of them; lower-priority workers instead
#: fill the cores' idle moments (see benchmarks/bench_extraction.py).
CPU_WORKER_NICENESS = int(os.environ.get("REPALIGN_WORKER_NICENESS", "10"))

__all__ = [
    "EXTRACTION_CODE_VERSION",
    "embedding_cache_key",
    "extract_embeddings",
    "is_cached",
]


# ---------------------------------------------------------------------------------------
# public API
# ---------------------------------------------------------------------------------------
def extract_embeddings(
    model: str | ModelHandle,
    images: ImageSet,
    *,
    layer: str | Sequence[str] | None = None,
    device: str = DEFAULT_DEVICE,
    batch_size: int | None = None,
    num_workers: int | None = None,
    dtype: str = DEFAULT_EMBEDDING_DTYPE,
    cache: bool = True,
    weights: str | os.PathLike | None = None,
    progress: bool = False,
    input_cache: bool | None = None,
    batched_arrays: bool = True,
) -> np.ndarray | dict[str, np.ndarray]:
    """Features of every image, in the image set's order.

    Args:
        model: a model name (``"timm:resnet50"``, ``"tflite:..."``, ``"pixels"``) or an
            already loaded :class:`ModelHandle` (which keeps its own device).
        images: the images; decoded lazily, a batch at a time.
        layer: None for the penultimate layer, a layer name, or a list of names (all
            extracted in one forward pass). See ``handle.available_layers()``.
        device: ``"auto"`` (cuda, then mps, then cpu), ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``.
        batch_size: images per forward pass (default: the model's ``default_batch_size``).
        num_workers: decode/preprocess worker processes (default: ``min(4, CPUs)`` with a
            GPU, a quarter of the CPUs on CPU, 0 when everything fits in one batch; see
            :func:`default_num_workers`). For numpy models (TFLite) on a CPU with more
            than one core, the default (None) is a prefetch *thread* instead; an explicit
            number (0 included) always means DataLoader processes. More than the usable
            CPUs is lowered to their number, with a warning (:func:`bound_num_workers`).
        dtype: ``"float32"`` or ``"float16"``: dtype of the returned and cached arrays.
        cache: read and write the embedding cache (``$REPALIGN_CACHE_HOME``).
        weights: a local weights file for the model (see ``repalign models``).
        progress: show a progress bar (on stderr, when it is a terminal).
        input_cache: read and write the preprocessed inputs of ``images`` for the model's
            preprocessing configuration (``<cache home>/inputs``, :mod:`repalign.embed.inputs`),
            so the next model with the same configuration skips decoding and preprocessing,
            and the decoded image files (:mod:`repalign.embed.decoded`), so the first model of
            another configuration skips decoding; None (default): as ``cache``. Features are
            the same either way, bit for bit.
        batched_arrays: preprocess an array image set (MNIST, Fashion-MNIST, CIFAR) in batches
            on the model's device (numpy models such as TFLite: on the CPU, the forward pass then
            using every core) instead of one PIL call per image, when the model's transform
            is one :mod:`repalign.embed.arrays` reproduces; the inputs are bit-identical to the
            per-image path's (False: always the per-image path, the reference).

    Returns:
        ``(n_images, n_features)`` array for a single layer (``layer`` None or a string),
        or ``{layer: (n_images, n_features) array}`` when ``layer`` is a list.

    Example:
        >>> from repalign.data.human import load_human
        >>> images = load_human("peterson:animals")[0].images()
        >>> x = extract_embeddings("tflite:mobilenet_v1_1.0_224_quant_embedding_extractor", images)
        >>> x.shape
        (120, 1024)
    """
    layers, single = _normalize_layers(layer)
    dtype = _check_dtype(dtype)
    _check_images(images)
    _check_count("batch_size", batch_size, minimum=1)
    _check_count("num_workers", num_workers, minimum=0)
    num_workers = bound_num_workers(num_workers)
    if isinstance(model, ModelHandle) and weights is not None:
        raise InputError("'weights' applies to model names only; this model handle is already loaded")

    store = EmbeddingCache() if cache else None
    results: dict[str, np.ndarray] = {}
    expected_keys: dict[str, str] = {}
    if store is not None:
        description = _describe(model, weights)
        if description is not None:
            for name in layers:
                expected_keys[name] = _key_from_description(description, name, images, dtype)
                hit = store.load(expected_keys[name])
                if hit is not None:
                    log.info("Embedding cache hit: %s layer %s on %s", description["model"], name, images.name)
                    results[name] = hit

    missing = [name for name in layers if name not in results]
    if missing:
        handle = _as_handle(model, device=device, weights=weights)
        _check_layers(handle, missing)
        computed = _extract(
            handle,
            images,
            missing,
            batch_size=batch_size,
            num_workers=num_workers,
            progress=progress,
            input_cache=cache if input_cache is None else bool(input_cache),
            batched_arrays=batched_arrays,
        )
        loaded = _describe_handle(handle)
        for name, array in computed.items():
            array = array.astype(dtype, copy=False)
            results[name] = array
            if store is not None:
                key = _key_from_description(loaded, name, images, dtype)
                if name in expected_keys and key != expected_keys[name]:
                    # describe_model disagrees with the loaded handle: store under the truth
                    # (the loaded model), so a wrong description can never serve stale values.
                    log.warning(
                        "describe_model(%r) does not match the loaded model's identity; "
                        "embeddings are cached under the loaded identity and will not be found "
                        "without loading the model",
                        loaded["model"],
                    )
                store.store(
                    key, array, parts=_key_parts(loaded, name, images, dtype), info=_entry_info(loaded, name, images)
                )
    return results[layers[0]] if single else {name: results[name] for name in layers}


def is_cached(
    model: str | ModelHandle,
    images: ImageSet,
    *,
    layer: str | Sequence[str] | None = None,
    weights: str | os.PathLike | None = None,
    dtype: str = DEFAULT_EMBEDDING_DTYPE,
) -> bool:
    """True when every requested layer's embeddings are in the cache. Never loads the model."""
    layers, _ = _normalize_layers(layer)
    dtype = _check_dtype(dtype)
    description = _describe(model, weights)
    if description is None:
        return False
    store = EmbeddingCache()
    return all(store.contains(_key_from_description(description, name, images, dtype)) for name in layers)


def embedding_cache_key(
    model: str | ModelHandle,
    images: ImageSet,
    *,
    layer: str | None = None,
    weights: str | os.PathLike | None = None,
    dtype: str = DEFAULT_EMBEDDING_DTYPE,
) -> str:
    """The cache key (sha256 hex) of one layer's embeddings, computed without loading the model."""
    layers, single = _normalize_layers(layer)
    if not single:
        raise InputError("embedding_cache_key takes a single layer name (or None); got a list")
    description = _describe(model, weights)
    if description is None:
        raise InputError(f"Cannot compute a cache key for {model!r} without loading it (no describe_model)")
    return _key_from_description(description, layers[0], images, _check_dtype(dtype))


# ---------------------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------------------
def _normalize_layers(layer: str | Sequence[str] | None) -> tuple[list[str], bool]:
    """-> (unique layer names in order, whether a single array is returned)."""
    if layer is None:
        return [PENULTIMATE], True
    if isinstance(layer, str):
        if not layer:
            raise InputError("Layer name is empty; pass None for the penultimate layer")
        return [layer], True
    names = list(layer)
    if not names or not all(isinstance(n, str) and n for n in names):
        raise InputError(f"'layer' must be None, a layer name or a non-empty list of names; got {layer!r}")
    return list(dict.fromkeys(names)), False


def _check_dtype(dtype: Any) -> str:
    try:
        name = np.dtype(dtype).name
    except TypeError:
        name = None
    if name not in CACHE_DTYPES:
        raise InputError(f"Unsupported embedding dtype {dtype!r}; expected one of {', '.join(CACHE_DTYPES)}")
    return name


def _check_images(images: Any) -> None:
    if not isinstance(images, ImageSet):
        raise InputError(
            f"'images' must be a repalign ImageSet (FileImageSet, ArrayImageSet, ...); got {type(images).__name__}"
        )
    if len(images) == 0:
        raise InputError(f"Image set '{images.name}' is empty; nothing to extract")


def _check_count(name: str, value: Any, *, minimum: int) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise InputError(f"'{name}' must be an integer >= {minimum}; got {value!r}")


def _check_layers(handle: ModelHandle, layers: list[str]) -> None:
    available = handle.available_layers()
    for name in layers:
        if name not in available:
            raise unknown_name(f"layer of {handle.spec.name}", name, available)


# ---------------------------------------------------------------------------------------
# identity and cache keys
# ---------------------------------------------------------------------------------------
def _describe(model: str | ModelHandle, weights: Any) -> dict[str, Any] | None:
    """``{"model", "model_id", "identity", "preprocess_config"}`` without loading the network.

    None when the model source cannot describe itself cheaply (then there are no cache
    hits: the model is loaded and the result stored under the loaded identity).
    """
    if isinstance(model, ModelHandle):
        return _describe_handle(model)
    if not isinstance(model, str) or not model:
        raise InputError(f"'model' must be a model name or a loaded ModelHandle; got {model!r}")
    from repalign import models

    describe = getattr(models, "describe_model", None)
    if describe is None:
        log.warning("repalign.models.describe_model is unavailable: cache lookups need the model to be loaded")
        return None
    info = describe(model, weights=None if weights is None else str(weights))
    identity = info["identity"]
    return {
        "model": model,
        "model_id": _model_id(identity, fallback=info.get("resolved_id", model)),
        "identity": identity,
        "preprocess_config": info["preprocess_config"],
    }


def _describe_handle(handle: ModelHandle) -> dict[str, Any]:
    identity = handle.identity
    return {
        "model": handle.spec.name,
        "model_id": _model_id(identity, fallback=handle.spec.resolved_id),
        "identity": identity,
        "preprocess_config": handle.preprocess_config,
    }


def _model_id(identity: Any, *, fallback: str) -> str:
    if isinstance(identity, dict) and isinstance(identity.get("resolved_id"), str):
        return identity["resolved_id"]
    return fallback


#: layers whose features are a vector already (their cache keys are unchanged since the first version)
_VECTOR_LAYERS = (PENULTIMATE, "logits")
#: how every other layer's (b, h, w, c) / (b, c, h, w) maps become features: averaged over
#: space by every source (TFLite flattened them before; its keys must not meet those entries)
LAYER_FEATURES = "spatial-mean"


def _key_parts(description: dict[str, Any], layer: str, images: ImageSet, dtype: str) -> dict[str, Any]:
    parts = {
        "model": description["identity"],
        "preprocess": description["preprocess_config"],
        "layer": layer,
        "images": images.fingerprint(),
        "code_version": EXTRACTION_CODE_VERSION,
        "dtype": dtype,
    }
    if layer not in _VECTOR_LAYERS:
        parts["layer_features"] = LAYER_FEATURES
    return parts


def _key_from_description(description: dict[str, Any], layer: str, images: ImageSet, dtype: str) -> str:
    return cache_key(_key_parts(description, layer, images, dtype))


def _entry_info(description: dict[str, Any], layer: str, images: ImageSet) -> dict[str, Any]:
    return {"model": description["model"], "model_id": description["model_id"], "layer": layer, "images": images.name}


def _as_handle(model: str | ModelHandle, *, device: str, weights: Any) -> ModelHandle:
    if isinstance(model, ModelHandle):
        return model
    from repalign import models

    log.info("Loading model %s", model)
    return models.load_model(model, device=resolve_device(device), weights=weights)


# ---------------------------------------------------------------------------------------
# the extraction loop
# ---------------------------------------------------------------------------------------
class _ItemFailure:
    """An error raised while decoding/preprocessing one image, carried as data across the
    worker-process boundary (torch would otherwise re-raise it wrapped in a traceback)."""

    def __init__(self, missing: bool, message: str):
        self.missing = missing
        self.message = message

    def error(self) -> RepalignError:
        return MissingDataError(self.message) if self.missing else InputError(self.message)


class _PreparedImages:
    """Map-style dataset: index -> the model's input for image ``index`` (runs in workers)."""

    def __init__(self, images: ImageSet, transform):
        self.images = images
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        try:
            return self.transform(self.images.load(index))
        except RepalignError as exc:  # already names the file
            return _ItemFailure(isinstance(exc, FileNotFoundError), str(exc))
        except Exception as exc:  # noqa: BLE001 - any transform failure becomes a clean error naming the image
            where = _image_label(self.images, index)
            return _ItemFailure(False, f"Could not preprocess {where}: {type(exc).__name__}: {exc}")


def _image_label(images: ImageSet, index: int) -> str:
    """'image file /path/x.png' when the image has a file, else "image 3 of 'name'"."""
    base, indices = unwrap_subsets(images)
    i = index if indices is None else int(indices[index])
    paths = getattr(base, "paths", None)
    if paths is not None:
        return f"image file {paths[i]}"
    return f"image {index} of '{images.name}'"


def _collate_torch(items: list):
    import torch.utils.data

    failure = next((x for x in items if isinstance(x, _ItemFailure)), None)
    return failure if failure is not None else torch.utils.data.default_collate(items)


def _collate_numpy(items: list):
    # Stacked into a tensor so worker -> main transfer uses shared memory, not a pickle copy;
    # the main process turns it back into a numpy array without copying.
    import torch

    failure = next((x for x in items if isinstance(x, _ItemFailure)), None)
    return failure if failure is not None else torch.from_numpy(np.stack([np.asarray(x) for x in items]))


def default_num_workers(n_images: int, batch_size: int, device: str = "cuda") -> int:
    """Decode/preprocess worker processes when the caller does not say.

    * none when all images fit in one batch: starting workers costs more than they save;
    * with an accelerator, ``min(4, usable CPUs)``: the CPUs are free to feed the device;
    * on the CPU, a quarter of the CPUs (at most 4): the forward pass already runs on every
      core, so workers only help where it scales poorly (many cores). On 2 cores this is 0:
      measured in benchmarks/bench_extraction.py, workers there gave no more throughput
      (same CPU work on the same cores) but cost process start-up, and on a machine shared
      with other jobs their lower priority can starve them.
    """
    if n_images <= batch_size:
        return 0
    if str(device).startswith("cpu"):
        return min(4, usable_cpus() // 4)
    return min(4, usable_cpus())


def bound_num_workers(num_workers: int | None) -> int | None:
    """``num_workers``, lowered to the usable CPUs when it asks for more.

    Each worker is a process holding a copy of the dataset and prefetched batches; beyond
    one per CPU they add no decoding throughput, only start-up time and memory, and a typo
    (``--workers 100000``) would fork until the machine runs out of processes. Lowering with
    a warning keeps a run that asked for a few too many going; None (the default) passes.
    """
    if num_workers is None:
        return None
    cpus = usable_cpus()
    if num_workers > cpus:
        log.warning(
            "num_workers=%d is more than the %d CPUs this process may use; using %d worker processes",
            num_workers,
            cpus,
            cpus,
        )
        return cpus
    return int(num_workers)


def usable_cpus() -> int:
    """CPUs this process may run on (the affinity mask, e.g. a container or Slurm allocation)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _extract(
    handle: ModelHandle,
    images: ImageSet,
    layers: list[str],
    *,
    batch_size: int | None,
    num_workers: int | None,
    progress: bool,
    input_cache: bool = False,
    batched_arrays: bool = False,
) -> dict[str, np.ndarray]:
    """Run the model over every image; ``{layer: (n_images, n_features) float32}``."""
    n = len(images)
    batch_size = int(batch_size or handle.default_batch_size)
    if batched_arrays:  # torch models on their device; numpy models (TFLite) on the CPU
        from repalign.embed.arrays import array_batches, plan_for

        plan = plan_for(handle.transform, images)
        if plan is not None:  # cheaper than the input cache's read: never stored there
            log.info(
                "Extracting %s from %d array images of '%s' on %s (batch %d, preprocessed in batches there)",
                ", ".join(layers),
                n,
                images.name,
                handle.device,
                batch_size,
            )
            batches = array_batches(*plan, images, batch_size, handle.device)
            return _run_batches(handle, images, layers, batches, batch_size, progress=progress)
    recorder = None
    cached_inputs = _input_entry(handle, images) if input_cache else None
    if cached_inputs is not None:
        store, key, parts = cached_inputs
        ready = store.load(key)
        if ready is not None:
            log.info("Preprocessed inputs of '%s' read from the input cache (%s)", images.name, key[:12])
            batches = _ready_batches(handle, ready, batch_size)
            return _run_batches(handle, images, layers, batches, batch_size, progress=progress)
        recorder = store.recorder(key, n, parts=parts, info={"images": images.name, "source": handle.spec.source})
        # the first model of this configuration: prepare from pixels decoded once for all configurations
        source = decoded_images(images, store, code_version=EXTRACTION_CODE_VERSION, threads=usable_cpus())
    else:
        source = images
    threaded = num_workers is None and _use_thread_pipeline(handle, n, batch_size)
    forward_seconds: list[float] = []  # each batch's forward time, read by the pipeline's choice
    if threaded:
        log.info(
            "Extracting %s from %d images of '%s' on %s (batch %d, decoding in a prefetch thread when it pays)",
            ", ".join(layers),
            n,
            images.name,
            handle.device,
            batch_size,
        )
        batches = _pipelined_batches(handle, _PreparedImages(source, handle.transform), batch_size, forward_seconds)
    else:
        workers = default_num_workers(n, batch_size, handle.device) if num_workers is None else int(num_workers)
        batches = _loader_batches(handle, source, layers, batch_size, workers)
    return _run_batches(
        handle,
        images,
        layers,
        batches,
        batch_size,
        progress=progress,
        recorder=recorder,
        forward_seconds=forward_seconds,
    )


def _input_entry(handle: ModelHandle, images: ImageSet):
    """``(InputCache, key, key parts)`` for this handle's preprocessed inputs of ``images``, or
    None when they cannot be cached: the store is off, or the preprocessing config is empty
    or not JSON (then it cannot tell configurations apart, and sharing inputs would be unsafe)."""
    from repalign.embed.inputs import InputCache, input_key_parts

    store = InputCache()
    config = handle.preprocess_config
    if not store.enabled or not isinstance(config, dict) or not config:
        return None
    transform = type(handle.transform)
    try:
        parts = input_key_parts(
            source=handle.spec.source,
            transform=f"{transform.__module__}.{transform.__qualname__}",
            preprocess_config=config,
            images=images.fingerprint(),
            code_version=EXTRACTION_CODE_VERSION,
        )
        key = cache_key(parts)
    except InputError as exc:  # a config that is not JSON
        log.debug("Preprocessed inputs of %s are not cached: %s", handle.spec.name, exc)
        return None
    return store, key, parts


def _ready_batches(handle: ModelHandle, ready: np.ndarray, batch_size: int):
    """Batches of already preprocessed inputs (a memory map), as the loaders would give them."""
    if not handle.uses_torch:
        for start in range(0, len(ready), batch_size):
            yield np.asarray(ready[start : start + batch_size])
        return
    import torch

    pin = str(handle.device).startswith("cuda")
    for start in range(0, len(ready), batch_size):
        batch = torch.from_numpy(np.array(ready[start : start + batch_size]))  # a writable copy of the map
        yield batch.pin_memory() if pin else batch


def _loader_batches(handle: ModelHandle, images: ImageSet, layers: list[str], batch_size: int, workers: int):
    """Batches from a torch DataLoader (``workers`` processes; 0: decoded here, in turn)."""
    import torch.utils.data

    n = len(images)
    pin = str(handle.device).startswith("cuda") and handle.uses_torch
    loader = torch.utils.data.DataLoader(
        _PreparedImages(images, handle.transform),
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=_collate_torch if handle.uses_torch else _collate_numpy,
        pin_memory=pin,
        prefetch_factor=PREFETCH_FACTOR if workers > 0 else None,
        persistent_workers=False,
        worker_init_fn=_lower_priority if str(handle.device) == "cpu" and CPU_WORKER_NICENESS > 0 else None,
    )
    log.info(
        "Extracting %s from %d images of '%s' on %s (batch %d, %d workers)",
        ", ".join(layers),
        n,
        images.name,
        handle.device,
        batch_size,
        workers,
    )
    return _batches(loader, in_process=workers == 0)


def _run_batches(
    handle: ModelHandle,
    images: ImageSet,
    layers: list[str],
    batches,
    batch_size: int,
    *,
    progress: bool,
    recorder=None,
    forward_seconds: list[float] | None = None,
) -> dict[str, np.ndarray]:
    """Forward every batch, writing features by position; ``{layer: (n_images, n_features)}``.

    ``recorder`` (an :class:`~repalign.embed.inputs.InputRecorder`) receives every input batch
    and commits them to the input cache once all images went through. ``forward_seconds``,
    when given, gets each batch's forward time appended as it finishes.
    """
    try:
        outputs = _forward_all(handle, images, layers, batches, batch_size, progress, recorder, forward_seconds)
    except BaseException:
        if recorder is not None:
            recorder.abort()
        raise
    if recorder is not None:
        recorder.commit()
    return outputs


def _forward_all(
    handle, images, layers, batches, batch_size, progress, recorder, forward_seconds
) -> dict[str, np.ndarray]:
    n = len(images)
    runner = _BatchRunner(handle, layers, batch_size)
    outputs: dict[str, np.ndarray] = {}
    done = 0
    with (
        contextlib.closing(batches),
        progress_bar(f"{handle.spec.name} on {images.name}", n, enabled=progress) as advance,
    ):
        for batch in batches:
            if isinstance(batch, _ItemFailure):
                raise batch.error()
            if not handle.uses_torch and not isinstance(batch, np.ndarray):
                batch = batch.numpy()
            if recorder is not None:
                recorder.add(batch)
            started = time.perf_counter()
            for offset, features in runner.run(batch):
                for name in layers:
                    block = np.asarray(features[name])
                    if name not in outputs:
                        outputs[name] = np.empty((n, block.shape[1]), dtype=np.float32)
                    outputs[name][done + offset : done + offset + len(block)] = block
            if forward_seconds is not None:
                forward_seconds.append(time.perf_counter() - started)
            size = _batch_len(batch)
            done += size
            advance(size)
    if done != n:  # pragma: no cover - the DataLoader guarantees this; a cheap guard all the same
        raise RepalignError(f"Extraction produced {done} of {n} embeddings")
    return outputs


def _use_thread_pipeline(handle: ModelHandle, n_images: int, batch_size: int) -> bool:
    """Whether the default loader for this run is the prefetch thread (:mod:`repalign.embed._prefetch`).

    Yes for numpy models (``uses_torch`` False, e.g. TFLite) on the CPU with more than one
    batch and more than one usable CPU: decoding (PIL, which releases the GIL) overlaps the
    forward pass, which runs on the remaining cores (see :func:`_forward_threads`).
    Torch models keep the DataLoader: their transforms hold the GIL for longer.
    """
    return (
        not handle.uses_torch and str(handle.device).startswith("cpu") and n_images > batch_size and usable_cpus() > 1
    )


def _pipelined_batches(handle: ModelHandle, dataset: _PreparedImages, batch_size: int, forward_seconds: list[float]):
    """Collated numpy batches of ``dataset``; prepared by a thread ahead of the consumer when that pays.

    The thread takes a core from the forward pass (:func:`_forward_threads`). With ``p`` the
    time to prepare a batch and ``f`` its forward time on all ``c`` cores, preparing in turn
    costs ``p + f`` a batch and the thread ``max(p, f * c / (c - 1))``: the thread wins only
    when ``p > f / (c - 1)`` (on 2 cores: preparing is slower than the forward pass). Both
    are measured on the second batch, prepared and run in turn (the first forward pass
    includes one-off set-up such as XNNPACK packing its weights). Measured on 2 cores:
    1,687 MNIST digits for a 224-pixel TFLite MobileNet, 18.2 s with the thread against
    11.1 s in turn (forward 8.7 s); 120 Peterson fruits for a 128-pixel one, the thread wins.

    At most :data:`THREAD_PREFETCH_BATCHES` finished batches wait (plus one in the making),
    so memory does not grow with the number of images.
    """
    from repalign.embed._prefetch import prefetched

    n = len(dataset)
    count = -(-n // batch_size)

    def batch(k: int):
        return _stack_numpy([dataset[i] for i in range(k * batch_size, min(n, (k + 1) * batch_size))])

    prepare_seconds = 0.0
    for k in range(min(_PROBE_BATCHES, count)):
        started = time.perf_counter()
        ready = batch(k)
        prepare_seconds = time.perf_counter() - started
        yield ready
    if count <= _PROBE_BATCHES:
        return
    if prepare_seconds <= forward_seconds[-1] / max(1, usable_cpus() - 1):
        log.debug("Preparing in turn: %.3f s a batch against %.3f s forward", prepare_seconds, forward_seconds[-1])
        for k in range(_PROBE_BATCHES, count):
            yield batch(k)
        return
    log.debug("Preparing in a thread: %.3f s a batch against %.3f s forward", prepare_seconds, forward_seconds[-1])
    with _forward_threads(handle):
        yield from prefetched(
            lambda k: batch(k + _PROBE_BATCHES), count - _PROBE_BATCHES, depth=THREAD_PREFETCH_BATCHES
        )


def _stack_numpy(items: list):
    failure = next((x for x in items if isinstance(x, _ItemFailure)), None)
    return failure if failure is not None else np.stack([np.asarray(x) for x in items])


@contextlib.contextmanager
def _forward_threads(handle: ModelHandle):
    """While a decode thread is busy on one core, run the forward pass on the others.

    Handles that manage their own compute threads (TFLite) expose ``compute_threads(n)``, a
    context manager; an interpreter with as many threads as cores would fight the decode
    thread for a core at every layer's barrier (measured in benchmarks/bench_extraction.py).
    """
    compute_threads = getattr(handle, "compute_threads", None)
    if compute_threads is None:
        yield
        return
    with compute_threads(max(1, usable_cpus() - 1)):
        yield


def _lower_priority(worker_id: int) -> None:
    """DataLoader worker initialiser: yield the CPU to the forward pass (see CPU_WORKER_NICENESS)."""
    try:
        os.nice(CPU_WORKER_NICENESS)
    except OSError:  # not permitted on this platform: run at normal priority
        pass


def _batches(loader, *, in_process: bool):
    """Iterate the loader. Without workers, decoding and preprocessing run here with one
    torch thread: their per-image tensor ops are far too small to split across threads, and
    on a busy machine the thread hand-offs made timm's transform ~10x slower (measured)."""
    import torch

    if not in_process:
        yield from loader
        return
    iterator = iter(loader)
    threads = torch.get_num_threads()
    while True:
        torch.set_num_threads(1)
        try:
            batch = next(iterator)
        except StopIteration:
            return
        finally:
            torch.set_num_threads(threads)
        yield batch


class _BatchRunner:
    """Forward passes with out-of-memory recovery: halve the batch, retry the same images."""

    def __init__(self, handle: ModelHandle, layers: list[str], batch_size: int):
        self.handle = handle
        self.layers = layers
        self.limit = batch_size  # current largest batch the device can take

    def run(self, batch):
        """Yield ``(offset in batch, {layer: (b, d) array})`` covering the whole batch in order."""
        total = _batch_len(batch)
        start = 0
        while start < total:
            size = min(self.limit, total - start)
            chunk = batch if (start == 0 and size == total) else _slice(batch, start, start + size)
            try:
                features = self._forward(chunk)
            except Exception as exc:
                if not _is_out_of_memory(exc):
                    raise
                _release_device_memory(self.handle.device)
                if size == 1:
                    raise RepalignError(
                        f"Out of memory on {self.handle.device} running {self.handle.spec.name} even with a batch "
                        "of 1 image; use a smaller model or --device cpu"
                    ) from exc
                self.limit = size // 2
                log.warning(
                    "Out of memory on %s with a batch of %d; retrying with %d", self.handle.device, size, self.limit
                )
                continue
            yield start, features
            start += size

    def _forward(self, chunk) -> dict[str, np.ndarray]:
        wanted = None if self.layers == [PENULTIMATE] else self.layers
        out = self.handle.forward(chunk, layers=wanted)
        size = _batch_len(chunk)
        for name in self.layers:
            if name not in out:
                raise RepalignError(f"{self.handle.spec.name} returned no features for layer '{name}'")
            block = out[name]
            if getattr(block, "ndim", 0) != 2 or block.shape[0] != size:
                raise RepalignError(
                    f"{self.handle.spec.name} returned layer '{name}' with shape {getattr(block, 'shape', None)}; "
                    f"expected ({size}, n_features)"
                )
        return out


def _batch_len(batch) -> int:
    if isinstance(batch, dict):
        return _batch_len(next(iter(batch.values())))
    if isinstance(batch, (list, tuple)):
        return _batch_len(batch[0])
    return int(batch.shape[0])


def _slice(batch, start: int, stop: int):
    if isinstance(batch, dict):
        return {k: _slice(v, start, stop) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(_slice(v, start, stop) for v in batch)
    return batch[start:stop]


def _is_out_of_memory(exc: BaseException) -> bool:
    import torch

    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def _release_device_memory(device: str) -> None:
    import torch

    if str(device).startswith("cuda") and torch.cuda.is_available():
        torch.cuda.empty_cache()
    elif str(device) == "mps" and mps_available():
        torch.mps.empty_cache()
