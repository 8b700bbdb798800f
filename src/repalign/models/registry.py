"""One registry of model sources: ``source:name`` -> a source module that resolves, describes
and loads it.

A source is any object (a module, usually) with::

    SOURCE: str
    resolve(arch, *, name, variant=None, seed=None) -> ModelSpec
    describe(spec, *, weights=None) -> {"identity": ..., "preprocess_config": ...}   # no network build
    load(spec, *, device, weights, precision, **options) -> ModelHandle
    list_names() -> list[str]                       # names after "source:", for listings and globs
    weights_status(spec, weights=None) -> str       # cached | local | download | random | builtin | ...

Sources are imported on first use, so resolving a ``tflite:`` name never imports torch.
"""

from __future__ import annotations

import fnmatch
import functools
import importlib
import logging
import os
from collections.abc import Iterable, Sequence
from typing import Any

from repalign._options import DEFAULT_DEVICE
from repalign.errors import InputError, RepalignError, UnknownNameError, did_you_mean, unknown_name
from repalign.models.base import ModelHandle, ModelSpec

log = logging.getLogger(__name__)

#: source name -> "module" or "module:attribute" implementing the source protocol
SOURCES: dict[str, str] = {
    "timm": "repalign.models.timm_source",
    "torchvision": "repalign.models.torchvision_source",
    "tflite": "repalign.models.tflite_source",
    "cifar_resnet": "repalign.models.cifar_resnet",
    "pixels": "repalign.models.pixels",
    "torchscript": "repalign.models.optional_sources:TORCHSCRIPT",
    "onnx": "repalign.models.optional_sources:ONNX",
    "open_clip": "repalign.models.optional_sources:OPEN_CLIP",
    "hf": "repalign.models.optional_sources:HF",
}

#: Sources that accept the ``@random`` / ``@random:SEED`` suffix (an untrained network).
RANDOM_VARIANT_SOURCES = ("timm", "torchvision", "cifar_resnet")

#: Names usable without a ``source:`` prefix.
BARE_NAMES = {"pixels": "pixels"}

#: Everything that runs here without internet: the mirror's TFLite and CIFAR models, the
#: pixel baseline and an untrained timm network.
OFFLINE_PRESET: tuple[str, ...] = (
    "tflite:mobilenet_v1_0.25_128_quant",
    "tflite:mobilenet_v1_0.5_160_quant",
    "tflite:mobilenet_v1_0.75_192_quant",
    "tflite:mobilenet_v1_1.0_224_quant_embedding_extractor",
    "tflite:mobilenet_v2_1.0_224_quant",
    "tflite:tf2_mobilenet_v2_1.0_224_ptq",
    "cifar_resnet:resnet20",
    "cifar_resnet:resnet32",
    "cifar_resnet:resnet44",
    "cifar_resnet:resnet56",
    "pixels",
    "timm:resnet18@random",
)

PRESETS = ("paper", "offline")
_GLOB_CHARS = set("*?[")


def source_module(source: str) -> Any:
    """The object implementing ``source`` (imported on first use)."""
    target = SOURCES.get(source)
    if target is None:
        raise unknown_name("model source", source, SOURCES)
    module_name, _, attribute = target.partition(":")
    module = importlib.import_module(module_name)
    return getattr(module, attribute) if attribute else module


def parse_model_name(name: str) -> tuple[str, str, str | None, int | None]:
    """``"timm:resnet50@random:3"`` -> ``("timm", "resnet50", "random", 3)``."""
    if not isinstance(name, str) or not name.strip():
        raise InputError(f"A model name must be a non-empty string like 'timm:resnet50'; got {name!r}")
    name = name.strip()
    if name in BARE_NAMES:
        return BARE_NAMES[name], "", None, None
    if ":" not in name:
        raise UnknownNameError(
            f"Model name '{name}' has no source.{did_you_mean(name, BARE_NAMES)} Names look like source:name, e.g. 'timm:{name}'; "
            f"sources: {', '.join(SOURCES)}."
        )
    source, arch = name.split(":", 1)
    if source not in SOURCES:
        raise unknown_name("model source", source, SOURCES)
    variant = seed = None
    if source in RANDOM_VARIANT_SOURCES and "@" in arch:
        arch, suffix = arch.rsplit("@", 1)
        kind, _, seed_text = suffix.partition(":")
        if kind != "random" or (seed_text and not seed_text.isdigit()):
            raise InputError(
                f"Unknown model variant '@{suffix}' in '{name}'; use '@random' or '@random:SEED' (SEED >= 0)"
            )
        variant, seed = "random", int(seed_text or 0)
    if not arch and source != "pixels":
        raise InputError(f"Model name '{name}' names no model after '{source}:'")
    return source, arch, variant, seed


#: Sources whose names are file paths: the file can change, so their resolution is not cached.
_FILE_SOURCES = ("torchscript", "onnx")


def resolve_model(name: str) -> ModelSpec:
    """Parse and resolve a model name without loading anything heavy.

    Example:
        >>> resolve_model("timm:ssl_resnet50").resolved_id
        'timm:resnet50.fb_ssl_yfcc100m_ft_in1k'
    """
    source, arch, variant, seed = parse_model_name(name)
    if source in _FILE_SOURCES:
        return source_module(source).resolve(arch, name=name.strip(), variant=variant, seed=seed)
    return _resolve_cached(name.strip())


@functools.lru_cache(maxsize=4096)
def _resolve_cached(name: str) -> ModelSpec:
    source, arch, variant, seed = parse_model_name(name)
    return source_module(source).resolve(arch, name=name, variant=variant, seed=seed)


def _spec(name: str | ModelSpec) -> ModelSpec:
    return name if isinstance(name, ModelSpec) else resolve_model(name)


def load_model(
    name: str | ModelSpec,
    *,
    device: str = DEFAULT_DEVICE,
    weights: str | os.PathLike | None = None,
    precision: str = "auto",
    **options: Any,
) -> ModelHandle:
    """Load a model, ready for :meth:`ModelHandle.forward`.

    Args:
        name: ``source:name`` (see ``repalign models``).
        device: "auto" (cuda, then mps, then cpu), "cpu", "cuda", "cuda:N" or "mps".
        weights: a local weights file, for sources that take one (timm, torchvision, cifar_resnet).
        precision: "auto" (bf16/fp16 autocast on CUDA, float32 elsewhere) or "float32",
            "bfloat16", "float16". Outputs are float32 in every case.
        options: source-specific, e.g. ``num_threads`` for tflite.
    """
    if not isinstance(name, (str, ModelSpec)) and hasattr(name, "state_dict"):
        raise InputError(
            "load_model takes a model name; wrap an in-memory torch module with "
            "repalign.wrap_model(module, transform=..., name=...)"
        )
    spec = _spec(name)
    return source_module(spec.source).load(spec, device=device, weights=weights, precision=precision, **options)


def describe_model(name: str | ModelSpec, *, weights: str | os.PathLike | None = None) -> dict[str, Any]:
    """``{"resolved_id", "identity", "preprocess_config"}`` exactly as the loaded handle would
    report them, without building the network (used for embedding-cache lookups)."""
    spec = _spec(name)
    info = source_module(spec.source).describe(spec, weights=weights)
    return {"resolved_id": spec.resolved_id, **info}


def list_layers(name: str | ModelSpec, *, weights: str | os.PathLike | None = None, device: str = DEFAULT_DEVICE):
    """The layers of a model, in network order (input to output): what ``--layer`` and
    ``extract_embeddings(..., layer=...)`` take.

    Loads the model (a torch model runs one probe image, which is how the order of its
    computation is found). Returns a DataFrame with columns ``position`` (1 = nearest the
    input), ``layer`` (the short name to pass), ``kind`` (module class, TFLite op, or
    ``preset`` for ``penultimate``/``logits``, listed last), ``features`` (the feature count
    extracted: maps are averaged over space) and ``name`` (the full name, or what a preset
    stands for).
    """
    import pandas as pd

    rows = load_model(name, device=device, weights=weights).layer_table()
    frame = pd.DataFrame(rows, columns=["layer", "kind", "features", "name"])
    frame.insert(0, "position", range(1, len(frame) + 1))
    return frame.astype({"features": "Int64"})


def weights_status(name: str | ModelSpec, *, weights: str | os.PathLike | None = None) -> str:
    spec = _spec(name)
    return source_module(spec.source).weights_status(spec, weights)


# ---------------------------------------------------------------------------------------
# listing, globs and presets
# ---------------------------------------------------------------------------------------
def paper_model_names() -> list[str]:
    """The study's 490 timm names (``paper_models.txt`` of the data registry) as ``timm:NAME``."""
    from repalign.models._assets import fetch_asset

    path = fetch_asset("paper-models", "paper_models.txt")
    names = [line.strip() for line in path.read_text().splitlines()]
    return [f"timm:{n}" for n in names if n and not n.startswith("#")]


def preset_names(preset: str) -> list[str]:
    if preset == "paper":
        return paper_model_names()
    if preset == "offline":
        return list(OFFLINE_PRESET)
    raise unknown_name("model preset", preset, PRESETS)


def known_names(source: str | None = None, *, tagged: bool = False) -> list[str]:
    """``source:name`` of every listable model (of one source, or all)."""
    sources = [source] if source else list(SOURCES)
    names: list[str] = []
    for src in sources:
        module = source_module(src)
        if src in BARE_NAMES:  # listed by its bare name ("pixels")
            names.append(src)
            continue
        listed = module.list_names()
        if tagged and hasattr(module, "list_tagged_names"):
            listed = sorted(set(listed) | set(module.list_tagged_names()))
        names.extend(f"{src}:{n}" for n in listed)
    return names


def _is_glob(pattern: str) -> bool:
    return bool(_GLOB_CHARS & set(pattern))


def _pattern_source(pattern: str) -> str | None:
    """The source a pattern is limited to (``"timm:res*"`` -> ``"timm"``), else None."""
    prefix = pattern.split(":", 1)[0] if ":" in pattern else None
    return prefix if prefix in SOURCES else None


def _match(pattern: str, names: Iterable[str]) -> list[str]:
    """Names matching a glob; a pattern without ``source:`` also matches the part after it."""
    has_source = ":" in pattern
    return [
        n
        for n in names
        if fnmatch.fnmatchcase(n, pattern) or (not has_source and fnmatch.fnmatchcase(n.split(":", 1)[-1], pattern))
    ]


def expand_model_patterns(include: Sequence[str] | str, exclude: Sequence[str] | str = ()) -> list[str]:
    """Model names from names, globs and presets, in order, without repeats.

    ``include`` items: a model name (checked to resolve), a glob over listable names
    (``"timm:resnet*"``, ``"tflite:*"``), or a preset: ``"paper"`` (the study's 490 timm
    models) or ``"offline"`` (every model that runs here without internet). ``exclude``
    items remove names (globs and presets allowed).

    Raises:
        UnknownNameError: a name that does not resolve, or a glob that matches nothing.
    """
    include = [include] if isinstance(include, str) else list(include)
    exclude = [exclude] if isinstance(exclude, str) else list(exclude)
    chosen: list[str] = []
    for item in include:
        chosen.extend(_expand_one(item))
    chosen = list(dict.fromkeys(chosen))
    removed: set[str] = set()
    for item in exclude:
        if item in PRESETS:
            removed.update(preset_names(item))
        else:
            removed.update(_match(item, chosen))
    return [n for n in chosen if n not in removed]


def _expand_one(item: str) -> list[str]:
    item = item.strip()
    if item in PRESETS:
        return preset_names(item)
    if _is_glob(item):
        tagged = "." in item.split(":", 1)[-1]
        matches = _match(item, known_names(_pattern_source(item), tagged=tagged))
        if not matches:
            raise UnknownNameError(f"Model pattern '{item}' matches no model. Try `repalign models` to list names.")
        return matches
    resolve_model(item)  # fail early on a bad name, with suggestions
    return [item]


def list_models(pattern: str | None = None, *, source: str | None = None, paper: bool = False):
    """Models with their resolved id and where their weights come from.

    Returns:
        DataFrame with columns ``name, source, resolved_id, weights, note``; ``weights`` is
        ``cached`` (already downloaded), ``local`` (in the data mirror / a local file),
        ``download`` (needs internet), ``random`` (untrained), ``builtin`` (no weights), or
        ``error`` (with the reason in ``note``).
    """
    import pandas as pd

    if source is not None and source not in SOURCES:
        raise unknown_name("model source", source, SOURCES)
    if paper:
        candidates = paper_model_names()
    elif pattern and not _is_glob(pattern) and pattern not in PRESETS:
        candidates = [pattern]
    elif pattern in PRESETS:
        candidates = preset_names(pattern)
    else:
        tagged = bool(pattern) and "." in pattern.split(":", 1)[-1]
        candidates = known_names(source or (_pattern_source(pattern) if pattern else None), tagged=tagged)
    if pattern and (paper or _is_glob(pattern)):
        candidates = _match(pattern, candidates)
    if source is not None:
        candidates = [c for c in candidates if c.split(":", 1)[0] == source or c == source]
    single = bool(pattern) and not paper and not _is_glob(pattern) and pattern not in PRESETS
    rows = [_describe_row(name, strict=single) for name in candidates]
    if pattern and not rows:
        hint = did_you_mean(pattern, known_names(source))
        raise UnknownNameError(f"No model matches '{pattern}'.{hint}")
    return pd.DataFrame(rows, columns=["name", "source", "resolved_id", "weights", "note"])


def _describe_row(name: str, *, strict: bool) -> dict[str, Any]:
    """One listing row; with ``strict`` a bad name raises, else it becomes an ``error`` row."""
    try:
        spec = resolve_model(name)
        status = weights_status(spec)
        return {
            "name": name,
            "source": spec.source,
            "resolved_id": spec.resolved_id,
            "weights": status,
            "note": spec.extra.get("note", ""),
        }
    except RepalignError as exc:
        if strict:
            raise
        return {
            "name": name,
            "source": name.split(":", 1)[0],
            "resolved_id": None,
            "weights": "error",
            "note": str(exc),
        }
