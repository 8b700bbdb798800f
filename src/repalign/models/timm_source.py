"""``timm:NAME`` -- any timm model, by current ``arch.tag`` or legacy (pre-0.9) name.

Resolution: a legacy name goes through timm's deprecation map (with the fixes in
:mod:`repalign.models._timm_legacy`) to one exact ``arch.tag``; a bare architecture gets
the tag it had in the study's 2022 timm release where timm's default changed since, else
timm's default tag. ``timm:NAME@random`` / ``@random:SEED`` is the untrained architecture
initialised with that seed (default 0): the standard control baseline.

Weights: from the Hugging Face hub (cached copy first, see :mod:`repalign.models._hub`),
or a local file given as ``weights=PATH`` (safetensors, or a torch state dict loaded with
``weights_only=True``). Preprocessing: ``timm.data.resolve_data_config`` of the pretrained
config and ``timm.data.create_transform`` in eval mode (resize, center crop, normalise).
Penultimate features: ``forward_head(forward_features(x), pre_logits=True)``.
"""

from __future__ import annotations

import functools
import logging
import os
from typing import Any

from repalign._options import DEFAULT_DEVICE
from repalign.errors import (
    InputError,
    MissingDataError,
    RepalignError,
    UnknownNameError,
    did_you_mean,
    unknown_name,
)
from repalign.models import _assets, _hub
from repalign.models import _timm_legacy as legacy
from repalign.models._layers import one_line as _one_line
from repalign.models._torch_handle import LOGITS, TorchModelHandle
from repalign.models.base import PENULTIMATE, ModelSpec

log = logging.getLogger(__name__)

SOURCE = "timm"
_HUB_FILES = ("model.safetensors", "pytorch_model.bin")
_WEIGHTS_HINT = (
    "Download the weights on a machine with internet (they land in the Hugging Face cache, "
    "~/.cache/huggingface), or pass a local file with --weights PATH (safetensors or a state dict)."
)


def _registry():
    from timm.models import _registry

    return _registry


def list_names() -> list[str]:
    """Architectures with pretrained weights, plus the legacy names timm still maps."""
    import timm

    archs = {name.split(".")[0] for name in timm.list_pretrained()}
    deprecated = {k for k, v in _registry().get_deprecated_models().items() if v}
    return sorted(archs | deprecated | set(legacy.REMOVED_SUBSTITUTES))


def list_tagged_names() -> list[str]:
    """Every ``arch.tag`` with pretrained weights."""
    import timm

    return list(timm.list_pretrained())


def resolve(arch: str, *, name: str, variant: str | None = None, seed: int | None = None) -> ModelSpec:
    """Resolve a timm name (current or legacy, with or without ``.tag``) to ``arch.tag``."""
    import timm

    registry = _registry()
    base, tag = registry.split_model_name_tag(arch)
    extra: dict[str, Any] = {}
    if base in legacy.REMOVED_SUBSTITUTES and not tag:
        target = legacy.REMOVED_SUBSTITUTES[base]
        extra.update(
            legacy_name=base, substitute=target, note=f"'{base}' was removed from timm; using the equivalent '{target}'"
        )
        base, tag = registry.split_model_name_tag(target)
    elif base in legacy.DEPRECATION_FIXES and not tag:
        extra["legacy_name"] = base
        base, tag = registry.split_model_name_tag(legacy.DEPRECATION_FIXES[base])
    else:
        deprecated = registry.get_deprecated_models()
        if base in deprecated:
            current = deprecated[base]
            if current is None:
                raise unknown_name("timm model (removed from timm, no replacement)", arch, list_names())
            extra["legacy_name"] = base
            base, current_tag = registry.split_model_name_tag(current)
            tag = tag or current_tag
    if not timm.is_model(base):
        raise unknown_name("timm model", arch, list_names())
    if not tag and base in legacy.LEGACY_DEFAULT_TAGS:
        tag = legacy.LEGACY_DEFAULT_TAGS[base]
        current = registry.get_pretrained_cfg(base)
        extra.update(
            legacy_default=True, note=f"the 2022 weights of '{base}'; timm's default is now '{base}.{current.tag}'"
        )
    cfg = _pretrained_cfg(base, tag, arch)
    if cfg is not None and not tag:
        tag = cfg.tag or ""
    timm_id = f"{base}.{tag}" if tag else base
    resolved = f"timm:{timm_id}" + (f"@random:{seed}" if variant == "random" else "")
    return ModelSpec(
        name=name, source=SOURCE, arch=timm_id, resolved_id=resolved, variant=variant, seed=seed, extra=extra
    )


def legacy_names(timm_id: str) -> dict[str, bool]:
    """Pre-0.9 timm names that :func:`resolve` sends to ``timm_id`` (an ``arch.tag``), in order of
    preference, each mapped to whether its 2022 weights *are* ``timm_id``.

    ``False`` marks a removed name resolved to a substitute (``gluon_xception65`` ->
    ``xception65.tf_in1k``): timm's 2022 results under that name describe other weights.
    This is the reverse of :func:`resolve`, computed by resolving every candidate forward,
    so the legacy tables of :mod:`repalign.models._timm_legacy` stay the one source of truth.
    Explicit aliases (deprecation map, fixes) come before the bare architecture, whose meaning
    rests on a default tag. Offline and cheap: timm's registry only, nothing is downloaded.

    Example:
        >>> legacy_names("resnet50.fb_ssl_yfcc100m_ft_in1k")
        {'ssl_resnet50': True}
    """
    return dict(_legacy_names(str(timm_id).strip()))


@functools.lru_cache(maxsize=4096)
def _legacy_names(timm_id: str) -> tuple[tuple[str, bool], ...]:
    base = _registry().split_model_name_tag(timm_id)[0]
    found: list[tuple[str, bool]] = []
    for candidate in [*_legacy_index().get(base, ()), base]:
        try:
            spec = resolve(candidate, name=f"{SOURCE}:{candidate}")
        except RepalignError:  # a legacy entry whose target this timm no longer has
            continue
        if spec.arch == timm_id and candidate != timm_id:
            found.append((candidate, "substitute" not in spec.extra))
    return tuple(found)


@functools.lru_cache(maxsize=1)
def _legacy_index() -> dict[str, list[str]]:
    """Target architecture -> legacy names pointing at it (timm's deprecation map and our tables)."""
    targets = {k: v for k, v in _registry().get_deprecated_models().items() if v}
    targets.update(legacy.DEPRECATION_FIXES)  # overrides timm's entry (its 32x8d slip)
    targets.update(legacy.REMOVED_SUBSTITUTES)
    index: dict[str, list[str]] = {}
    for name, target in sorted(targets.items()):
        index.setdefault(_registry().split_model_name_tag(target)[0], []).append(name)
    return index


def _pretrained_cfg(base: str, tag: str, given: str):
    registry = _registry()
    try:
        return registry.get_pretrained_cfg(f"{base}.{tag}" if tag else base)
    except RuntimeError:
        tags = [t.split(".", 1)[1] for t in registry.get_arch_pretrained_cfgs(base) if "." in t]
        hint = did_you_mean(tag, tags) or f" Valid tags: {', '.join(tags)}."
        raise UnknownNameError(f"Unknown pretrained tag '{tag}' of timm:{base} (in '{given}').{hint}") from None


def _cfg_of(spec: ModelSpec):
    return _registry().get_pretrained_cfg(spec.arch)


def data_config(spec: ModelSpec) -> dict[str, Any]:
    """timm's eval data config (input_size, interpolation, mean, std, crop_pct, crop_mode)."""
    from timm.data import resolve_data_config

    cfg = _cfg_of(spec)
    return resolve_data_config(pretrained_cfg=cfg.to_dict() if cfg is not None else {})


def preprocess_config(spec: ModelSpec) -> dict[str, Any]:
    import timm

    config = {k: list(v) if isinstance(v, tuple) else v for k, v in data_config(spec).items()}
    return {"transform": "timm.data.create_transform(is_training=False)", "timm_version": timm.__version__, **config}


def _weights_identity(spec: ModelSpec, weights: str | os.PathLike | None, *, fetch: bool) -> tuple[str, Any]:
    """``(identity string, local file or None)`` of the weights that load uses.

    With ``fetch=False`` nothing is downloaded: weights not in the cache are described as
    ``hf-hub:<repo>@not-downloaded`` (a key that no stored embedding can have).
    """
    explicit = _assets.explicit_weights(spec, weights)
    if explicit is not None:
        return explicit
    cfg = _cfg_of(spec)
    if cfg is None or not cfg.has_weights:
        raise MissingDataError(
            f"timm model '{spec.arch}' has no pretrained weights; use 'timm:{spec.arch.split('.')[0]}@random' "
            "for an untrained network or pass --weights PATH"
        )
    if cfg.hf_hub_id:
        repo, revision = _hub.split_hub_id(cfg.hf_hub_id)
        files = (cfg.hf_hub_filename,) if cfg.hf_hub_filename else _HUB_FILES
        if fetch:
            path, filename = _hub.fetch_hub_file(repo, files, revision=revision, hint=_WEIGHTS_HINT)
        else:
            cached = _hub.cached_hub_file(repo, files, revision)
            if cached is None:
                return f"hf-hub:{repo}@not-downloaded", None
            path, filename = cached
        return f"hf-hub:{repo}@{_hub.snapshot_revision(path)}/{filename}", path
    if cfg.url:
        return _url_weights(cfg.url, fetch=fetch)
    raise MissingDataError(f"timm model '{spec.arch}' names no weights source. {_WEIGHTS_HINT}")


def _url_weights(url: str, *, fetch: bool) -> tuple[str, Any]:
    """Weights published as a plain URL (torch hub cache); identity is the file's sha256."""
    from pathlib import Path

    import torch.hub

    cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url.split("?")[0])
    if not cached.is_file():
        if not fetch:
            return f"url:{url}@not-downloaded", None
        if not _hub.host_reachable(url):
            raise MissingDataError(f"Weights at {url} are not cached and the host is unreachable. {_WEIGHTS_HINT}")
        torch.hub.download_url_to_file(url, str(cached), progress=False)
    return f"file-sha256:{_assets.file_sha256(cached)}", cached


def weights_status(spec: ModelSpec, weights: str | os.PathLike | None = None) -> str:
    """``random``, ``local`` (a weights file), ``cached`` (hub cache) or ``download``."""
    if explicit := _assets.explicit_weights_status(spec, weights):
        return explicit
    try:
        identity, _ = _weights_identity(spec, None, fetch=False)
    except MissingDataError:
        return "none"
    return "download" if identity.endswith("@not-downloaded") else "cached"


def describe(spec: ModelSpec, *, weights: str | os.PathLike | None = None) -> dict[str, Any]:
    weights_id, _ = _weights_identity(spec, weights, fetch=False)
    return _assets.description(spec, weights_id, preprocess_config(spec))


def build_module(spec: ModelSpec, weights: str | os.PathLike | None = None):
    """``(nn.Module, weights identity)``: the network with the weights load would use."""
    import timm
    import torch

    weights_id, path = _weights_identity(spec, weights, fetch=True)
    if spec.variant == "random":
        # Seeded init without disturbing the caller's global RNG state.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(spec.seed or 0)
            module = timm.create_model(spec.arch, pretrained=False)
        return module, weights_id
    if _cfg_of(spec) is None:  # an architecture without any pretrained config
        module = timm.create_model(spec.arch, pretrained=False)
        try:
            timm.models.load_checkpoint(module, str(path), strict=True, weights_only=True)
        except Exception as exc:  # garbage, truncated or hostile files fail anywhere in torch's readers
            raise _weights_error(path, spec.arch, exc) from exc
        return module, weights_id
    try:
        # timm's own loader: safetensors or weights_only torch.load, checkpoint filters
        # (original-format checkpoints), strict key matching.
        module = timm.create_model(spec.arch, pretrained=True, pretrained_cfg_overlay={"file": str(path)})
    except Exception as exc:  # garbage, truncated or hostile files fail anywhere in torch's readers
        raise _weights_error(path, spec.arch, exc) from exc
    return module, weights_id


#: what torch and timm say when a readable state dict has other keys or shapes than the network
_MISFIT_MARKERS = ("size mismatch", "Missing key", "Unexpected key", "Error(s) in loading state_dict")


def _weights_error(path, arch: str, exc: BaseException) -> InputError:
    """One line for a weights file that failed to load: it does not fit the network, or it is not
    a readable weights file. torch's own message for the latter suggests weights_only=False, a
    full unpickle that can run code; it is never passed on."""
    if isinstance(exc, KeyError) or any(marker in str(exc) for marker in _MISFIT_MARKERS):
        return InputError(f"Weights file {path} does not fit timm model '{arch}': {_one_line(exc)}")
    return InputError(
        f"Weights file {path} is not a readable weights file for timm model '{arch}' (safetensors, or a PyTorch "
        f"state dict of tensors only), or it is damaged ({type(exc).__name__})"
    )


class TimmModelHandle(TorchModelHandle):
    """A timm model; penultimate = ``forward_head(..., pre_logits=True)``."""

    def _presets(self) -> tuple[str, ...]:
        return (PENULTIMATE, LOGITS) if hasattr(self.module, "forward_head") else super()._presets()

    def _run(self, x, presets, hooks):
        module = self.module
        if not hasattr(module, "forward_head"):
            return super()._run(x, presets, hooks)
        features = module.forward_features(x)
        out = {PENULTIMATE: module.forward_head(features, pre_logits=True)}
        # Hooks inside the classifier only fire on the full head.
        if LOGITS in presets or any(name not in hooks.captured for name in hooks.names):
            out[LOGITS] = module.forward_head(features)
        return out


def load(
    spec: ModelSpec, *, device: str = DEFAULT_DEVICE, weights=None, precision: str = "auto", **_options
) -> TimmModelHandle:
    from timm.data import create_transform

    module, weights_id = build_module(spec, weights)
    cfg = _cfg_of(spec)
    return TimmModelHandle(
        spec,
        module,
        transform=create_transform(**data_config(spec), is_training=False),
        preprocess_config=preprocess_config(spec),
        identity={"resolved_id": spec.resolved_id, "weights": weights_id},
        device=device,
        precision=precision,
        classifier=(cfg.classifier if cfg is not None and isinstance(cfg.classifier, str) else None),
    )
