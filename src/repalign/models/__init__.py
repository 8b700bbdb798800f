"""Model sources behind one registry of ``source:name`` model names.

Sources: ``timm:NAME[@random[:SEED]]``, ``torchvision:NAME[.WEIGHTS]``, ``tflite:NAME``,
``cifar_resnet:resnet20|32|44|56``, ``pixels[:SIZE]``, and behind extras ``open_clip:ARCH/PRETRAINED``,
``hf:REPO``, ``onnx:PATH``, ``torchscript:PATH``; an in-memory torch module through
:func:`wrap_model`. See docs/models.md.

Importing this package never imports torch; sources are imported when first used.
"""

from __future__ import annotations

from repalign.models.base import PENULTIMATE, ModelHandle, ModelSpec
from repalign.models.module_source import state_dict_sha256, wrap_model
from repalign.models.registry import (
    OFFLINE_PRESET,
    PRESETS,
    SOURCES,
    describe_model,
    expand_model_patterns,
    list_layers,
    list_models,
    load_model,
    paper_model_names,
    parse_model_name,
    resolve_model,
    weights_status,
)

__all__ = [
    "OFFLINE_PRESET",
    "PENULTIMATE",
    "PRESETS",
    "SOURCES",
    "ModelHandle",
    "ModelSpec",
    "describe_model",
    "expand_model_patterns",
    "list_layers",
    "list_models",
    "load_model",
    "paper_model_names",
    "parse_model_name",
    "resolve_model",
    "state_dict_sha256",
    "weights_status",
    "wrap_model",
]
