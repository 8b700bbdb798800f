"""``torchvision:NAME[.WEIGHTS]`` -- torchvision's ImageNet classifiers and their weights enums.

``torchvision:resnet18`` means ``ResNet18_Weights.DEFAULT`` (reported as the exact member,
e.g. ``torchvision:resnet18.IMAGENET1K_V1``); ``torchvision:resnet50.IMAGENET1K_V2`` picks
one. Preprocessing is the enum's own ``weights.transforms()``. Penultimate features are the
input of the final classifier layer (the last ``nn.Linear``; the last ``nn.Conv2d`` for
SqueezeNet), global-average-pooled if spatial.

Weights come from torch hub's cache (``~/.cache/torch/hub/checkpoints``), downloaded once
where there is internet, or from ``weights=PATH`` (a state dict, ``weights_only=True``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from repalign._options import DEFAULT_DEVICE
from repalign.errors import InputError, MissingDataError, unknown_name
from repalign.models import _assets, _hub
from repalign.models._layers import one_line as _one_line
from repalign.models.base import ModelSpec

SOURCE = "torchvision"
_WEIGHTS_HINT = (
    "Download them on a machine with internet (torch hub cache, ~/.cache/torch/hub/checkpoints) "
    "or pass a local state dict with --weights PATH."
)
#: Builder arguments that torchvision sets itself when it loads pretrained weights; a local
#: weights file needs the same network.
_PRETRAINED_KWARGS = {
    "inception_v3": {"aux_logits": True, "transform_input": True, "init_weights": False},
    "googlenet": {"aux_logits": True, "transform_input": True, "init_weights": False},
}


def _models():
    import torchvision.models

    return torchvision.models


def list_names() -> list[str]:
    models = _models()
    return list(models.list_models(module=models))


def resolve(arch: str, *, name: str, variant: str | None = None, seed: int | None = None) -> ModelSpec:
    models = _models()
    base, _, member = arch.partition(".")
    names = list_names()
    if base not in names:
        raise unknown_name("torchvision model", base, names)
    enum = models.get_model_weights(base)
    members = [m for m in enum.__members__ if m != "DEFAULT"]
    member = member or "DEFAULT"
    if member not in enum.__members__:
        raise unknown_name(f"weights of torchvision:{base}", member, members)
    chosen = enum[member].name  # DEFAULT -> the actual member
    suffix = f"@random:{seed}" if variant == "random" else ""
    return ModelSpec(
        name=name,
        source=SOURCE,
        arch=f"{base}.{chosen}",
        resolved_id=f"torchvision:{base}.{chosen}{suffix}",
        variant=variant,
        seed=seed,
        extra={"weights_enum": f"{enum.__name__}.{chosen}"},
    )


def _weights_enum(spec: ModelSpec):
    base, member = spec.arch.split(".", 1)
    return _models().get_model_weights(base)[member]


def _cache_file(weights) -> Path:
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)


def preprocess_config(spec: ModelSpec) -> dict[str, Any]:
    import torchvision

    t = _weights_enum(spec).transforms()
    return {
        "transform": "torchvision weights.transforms()",
        "torchvision_version": torchvision.__version__,
        "resize_size": list(t.resize_size),
        "crop_size": list(t.crop_size),
        "mean": list(t.mean),
        "std": list(t.std),
        "interpolation": t.interpolation.value,
        "antialias": bool(t.antialias),
    }


def _weights_identity(spec: ModelSpec, weights) -> tuple[str, Path | None]:
    explicit = _assets.explicit_weights(spec, weights)
    if explicit is not None:
        return explicit
    # torchvision verifies the file against the hash prefix in its name on download.
    return f"url:{os.path.basename(_weights_enum(spec).url)}", None


def describe(spec: ModelSpec, *, weights=None) -> dict[str, Any]:
    weights_id, _ = _weights_identity(spec, weights)
    return _assets.description(spec, weights_id, preprocess_config(spec))


def weights_status(spec: ModelSpec, weights=None) -> str:
    if explicit := _assets.explicit_weights_status(spec, weights):
        return explicit
    return "cached" if _cache_file(_weights_enum(spec)).is_file() else "download"


def classifier_name(module) -> str | None:
    """Name of the final classifier layer: the last ``nn.Linear``, else the last ``nn.Conv2d``."""
    from torch import nn

    named = list(module.named_modules())
    for kind in (nn.Linear, nn.Conv2d):
        found = [name for name, m in named if isinstance(m, kind)]
        if found:
            return found[-1]
    return None


def build_module(spec: ModelSpec, weights=None):
    import torch

    models = _models()
    base = spec.arch.split(".", 1)[0]
    weights_id, path = _weights_identity(spec, weights)
    if spec.variant == "random":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(spec.seed or 0)
            return models.get_model(base, weights=None), weights_id
    enum = _weights_enum(spec)
    if path is not None:
        module = models.get_model(
            base, weights=None, num_classes=len(enum.meta["categories"]), **_PRETRAINED_KWARGS.get(base, {})
        )
        state = _assets.load_state_dict_file(path, model=spec.name)
        try:
            module.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise InputError(f"Weights file {path} does not fit torchvision model '{base}': {_one_line(exc)}") from exc
        return module, weights_id
    if not _cache_file(enum).is_file() and not _hub.host_reachable(enum.url):
        raise MissingDataError(
            f"Weights {enum} are not cached and download.pytorch.org is unreachable. {_WEIGHTS_HINT}"
        )
    return models.get_model(base, weights=enum), weights_id


def load(spec: ModelSpec, *, device: str = DEFAULT_DEVICE, weights=None, precision: str = "auto", **_options):
    from repalign.models._torch_handle import TorchModelHandle

    module, weights_id = build_module(spec, weights)
    return TorchModelHandle(
        spec,
        module,
        transform=_weights_enum(spec).transforms(),
        preprocess_config=preprocess_config(spec),
        identity={"resolved_id": spec.resolved_id, "weights": weights_id},
        device=device,
        precision=precision,
        classifier=classifier_name(module),
    )
