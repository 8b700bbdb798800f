"""The :class:`~repalign.models.base.ModelHandle` shared by torch sources (timm,
torchvision, CIFAR ResNets, TorchScript).

A source supplies the module, its transform, preprocessing config and identity; this class
does device placement, autocast, and returns ``{layer: (b, d) float32}`` from one pass.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from repalign._device import resolve_device
from repalign.models import _torch_runtime as rt
from repalign.models.base import PENULTIMATE, ModelHandle, ModelSpec

#: Preset layer names every torch handle accepts besides its module names.
LOGITS = "logits"


class TorchModelHandle(ModelHandle):
    """A torch ``nn.Module`` whose penultimate features are the input of its classifier.

    Args:
        spec: the resolved name.
        module: the network (moved to ``device`` and put in eval mode here).
        transform: picklable ``PIL.Image -> (3, h, w) float tensor``.
        preprocess_config: JSON-serialisable settings that define ``transform``.
        identity: JSON-serialisable identity of the loaded weights.
        device: a concrete device ("cpu", "cuda", "cuda:1", "mps").
        precision: "auto", "float32", "bfloat16" or "float16".
        classifier: name of the final classifier submodule; its *input* is the penultimate
            layer and its output the logits. None: the module's output is the feature vector
            (then there are no separate logits). Subclasses that compute the penultimate
            differently (timm) override :meth:`_run`.
        named_layers: whether submodules can be requested by name (forward hooks); False for
            scripted modules, which take no hooks.
    """

    uses_torch = True

    def __init__(
        self,
        spec: ModelSpec,
        module,
        *,
        transform: Callable[[Any], Any],
        preprocess_config: dict[str, Any],
        identity: dict[str, Any],
        device: str = "cpu",
        precision: str = "auto",
        classifier: str | None = None,
        default_batch_size: int = 32,
        named_layers: bool = True,
    ):
        self.spec = spec
        self.device = resolve_device(device)
        self._autocast = rt.resolve_autocast_dtype(precision, self.device)
        self.precision = precision
        self.module = rt.place_module(module, self.device)
        self._transform = transform
        self._preprocess_config = preprocess_config
        self._identity = identity
        self.classifier = classifier
        self.named_layers = named_layers
        # GPUs want larger batches; the extraction engine halves the batch on out-of-memory.
        self.default_batch_size = default_batch_size if self.device == "cpu" else max(default_batch_size, 128)

    @property
    def identity(self) -> dict[str, Any]:
        return dict(self._identity)

    @property
    def preprocess_config(self) -> dict[str, Any]:
        return dict(self._preprocess_config)

    @property
    def transform(self) -> Callable[[Any], Any]:
        return self._transform

    def _presets(self) -> tuple[str, ...]:
        """Layer names besides module names: a model without a classifier has no logits."""
        return (PENULTIMATE,) if self.classifier is None else (PENULTIMATE, LOGITS)

    def available_layers(self) -> list[str]:
        modules = rt.module_layer_names(self.module) if self.named_layers else []
        return [*self._presets(), *modules]

    def layer_table(self) -> list[dict[str, Any]]:
        """Submodules in the order one forward pass finishes them (a block after its last
        child), then the presets. Found by running a gray probe image through the network:
        registration order is not always the order of the computation."""
        from PIL import Image

        probe = self.transform(Image.new("RGB", (256, 256), (128, 128, 128)))
        x = rt.as_input_tensor(probe[None], self.device)
        presets = list(self._presets())
        modules = dict(self.module.named_modules())
        named = rt.module_layer_names(self.module) if self.named_layers else []

        def compute() -> dict[str, Any]:
            with rt.LayerHooks(self.module, named, owner=self.spec.name) as hooks:
                out = self._run(x, presets, hooks)
            # dict order: a name enters when its module first finishes, i.e. network order
            tensors = {name: value for name, value in hooks.captured.items() if rt.has_tensor(value)}
            return {**tensors, **{name: out[name] for name in presets}}

        features = rt.run_inference(compute, self.device, self._autocast)
        rows = [
            {
                "layer": name,
                "kind": type(modules[name]).__name__,
                "features": int(features[name].shape[1]),
                "name": name,
            }
            for name in features
            if name not in presets
        ]
        stands_for = {PENULTIMATE: "input of the classifier", LOGITS: "output of the classifier"}
        if self.classifier is not None:
            stands_for = {PENULTIMATE: f"input of {self.classifier}", LOGITS: f"output of {self.classifier}"}
        if self.classifier is None and LOGITS not in presets:
            stands_for[PENULTIMATE] = "the network's output"
        rows += [
            {"layer": name, "kind": "preset", "features": int(features[name].shape[1]), "name": stands_for[name]}
            for name in presets
        ]
        return rows

    def forward(self, batch: Any, *, layers: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Features of a (b, 3, h, w) batch: ``{layer: (b, d) float32}``; conv maps of named
        layers are global-average-pooled, token sequences averaged over tokens."""
        presets, named = rt.split_layers(layers, self._presets())
        if named and not self.named_layers:
            from repalign.models._layers import unknown_layer

            raise unknown_layer(self.spec.name, named[0], self.available_layers())
        x = rt.as_input_tensor(batch, self.device)

        def compute() -> dict[str, Any]:
            with rt.LayerHooks(self.module, named, owner=self.spec.name) as hooks:
                out = self._run(x, presets, hooks)
            out.update(hooks.captured)
            return out

        result = rt.run_inference(compute, self.device, self._autocast)
        requested = [PENULTIMATE] if layers is None else list(layers)
        return {name: result[name] for name in requested}

    def _run(self, x, presets: list[str], hooks: rt.LayerHooks) -> dict[str, Any]:
        """One full forward pass; the classifier's input is captured by a pre-hook."""
        if self.classifier is None:  # the module's output is the feature vector itself
            return {PENULTIMATE: self.module(x)}
        with rt.LayerHooks(self.module, [self.classifier], inputs=True) as classifier_input:
            logits = self.module(x)
        return {PENULTIMATE: classifier_input.captured[self.classifier], LOGITS: logits}
