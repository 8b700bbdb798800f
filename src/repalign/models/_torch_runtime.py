"""Device placement, autocast and feature flattening shared by the torch-based sources.

Kept in one place so every torch source makes the same choices (devices themselves are
resolved by :func:`repalign._device.resolve_device`): ``precision="auto"`` uses bf16 autocast on CUDA when supported
(else fp16), and float32 elsewhere; outputs are always float32 numpy arrays.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from repalign._options import DEFAULT_LAYER
from repalign.errors import InputError, unknown_name

PRECISIONS = ("auto", "float32", "bfloat16", "float16")
PENULTIMATE_NAME = DEFAULT_LAYER


def resolve_autocast_dtype(precision: str, device: str):
    """The autocast dtype for ``precision`` on ``device``, or None for plain float32."""
    import torch

    if precision not in PRECISIONS:
        raise unknown_name("precision", precision, PRECISIONS)
    on_gpu = device.startswith("cuda")
    if precision == "float32" or (precision == "auto" and not on_gpu):
        return None
    if precision == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if not on_gpu:
        raise InputError(f"precision={precision!r} needs a CUDA device; on {device} use precision='float32'")
    return torch.bfloat16 if precision == "bfloat16" else torch.float16


def place_module(module, device: str):
    """Eval mode on ``device``; channels_last memory format for convnets on GPU (faster
    convolutions with cuDNN; a no-op for the result values)."""
    import torch

    module = module.eval().to(device)
    if device.startswith("cuda") and any(isinstance(m, torch.nn.Conv2d) for m in module.modules()):
        module = module.to(memory_format=torch.channels_last)
    return module


def as_input_tensor(batch: Any, device: str):
    """A float (b, c, h, w) tensor on ``device`` from a collated batch (tensor or numpy)."""
    import torch

    tensor = batch if isinstance(batch, torch.Tensor) else torch.as_tensor(np.asarray(batch))
    non_blocking = device.startswith("cuda")
    tensor = tensor.to(device, non_blocking=non_blocking)
    if device.startswith("cuda") and tensor.ndim == 4:
        tensor = tensor.contiguous(memory_format=torch.channels_last)
    return tensor


def run_inference(fn: Callable[[], dict[str, Any]], device: str, autocast_dtype) -> dict[str, np.ndarray]:
    """Run ``fn`` (which returns ``{layer: tensor}``) without autograd, under autocast when
    requested, and return float32 (b, d) numpy arrays."""
    import contextlib

    import torch

    autocast = (
        torch.autocast(device_type=device.split(":")[0], dtype=autocast_dtype)
        if autocast_dtype is not None
        else contextlib.nullcontext()
    )
    with torch.inference_mode(), autocast:
        outputs = fn()
    return {name: flatten_features(value) for name, value in outputs.items()}


def flatten_features(value: Any) -> np.ndarray:
    """One (batch, n_features) float32 array from a layer output.

    4-D feature maps (b, c, h, w) are global-average-pooled to (b, c); 3-D token sequences
    (b, tokens, d) are averaged over tokens; higher dims are flattened. Averaging keeps the
    feature count independent of the image size (a flattened map of an early conv layer
    would have millions of features).
    """
    import torch

    if isinstance(value, (tuple, list)):
        value = next(v for v in value if isinstance(v, torch.Tensor))
    value = value.detach().float()
    if value.ndim == 4:
        value = value.mean(dim=(2, 3))
    elif value.ndim == 3:
        value = value.mean(dim=1)
    elif value.ndim > 4:
        value = value.flatten(1)
    elif value.ndim == 1:
        value = value[:, None]
    return value.cpu().numpy().astype(np.float32, copy=False)


class LayerHooks:
    """Forward hooks that capture the outputs of named submodules during one pass.

    Use as a context manager; ``captured`` maps module names to their outputs.
    """

    def __init__(self, module, names: Iterable[str], *, inputs: bool = False, owner: str | None = None):
        self.module = module
        self.owner = owner or type(module).__name__
        self.names = list(names)
        self.inputs = inputs
        self.captured: dict[str, Any] = {}
        self._handles: list[Any] = []

    def __enter__(self) -> LayerHooks:
        modules = dict(self.module.named_modules())
        for name in self.names:
            target = modules.get(name)
            if target is None:
                from repalign.models._layers import unknown_layer

                raise unknown_layer(self.owner, name, [PENULTIMATE_NAME, "logits", *(n for n in modules if n)])
            if self.inputs:
                self._handles.append(target.register_forward_pre_hook(self._saver_input(name)))
            else:
                self._handles.append(target.register_forward_hook(self._saver(name)))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _saver(self, name: str):
        def hook(_module, _inputs, output):
            self.captured[name] = output

        return hook

    def _saver_input(self, name: str):
        def hook(_module, inputs):
            self.captured[name] = inputs[0]

        return hook


def has_tensor(value: Any) -> bool:
    """Whether a module output holds a tensor :func:`flatten_features` can read."""
    import torch

    if isinstance(value, (tuple, list)):
        return any(isinstance(v, torch.Tensor) for v in value)
    return isinstance(value, torch.Tensor)


def module_layer_names(module) -> list[str]:
    """Names of all submodules (the ``layers`` a torch model accepts besides its presets)."""
    return [name for name, _ in module.named_modules() if name]


def split_layers(layers: Sequence[str] | None, presets: Sequence[str]) -> tuple[list[str], list[str]]:
    """``(preset layers, module-name layers)`` of a request; ``None`` means the penultimate."""
    from repalign.models.base import PENULTIMATE

    requested = [PENULTIMATE] if layers is None else list(layers)
    if not requested:
        raise InputError("'layers' must name at least one layer")
    return [n for n in requested if n in presets], [n for n in requested if n not in presets]
