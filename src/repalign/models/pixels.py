"""``pixels`` / ``pixels:SIZE`` -- raw resized pixels as features: the floor every model
should beat.

Each image is resized to SIZE x SIZE (default 32) with Pillow's antialiased bilinear filter,
scaled to [0, 1] and flattened to SIZE*SIZE*3 features (row-major, RGB last). No weights,
no torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from repalign._options import DEFAULT_DEVICE
from repalign.errors import InputError
from repalign.models.base import PENULTIMATE, ModelHandle, ModelSpec

SOURCE = "pixels"
DEFAULT_SIZE = 32


def list_names() -> list[str]:
    return []


def resolve(arch: str, *, name: str, variant: str | None = None, seed: int | None = None) -> ModelSpec:
    if arch and not (arch.isdigit() and 1 <= int(arch) <= 1024):
        raise InputError(f"Bad pixel size in '{name}': use 'pixels' or 'pixels:SIZE' with SIZE in 1..1024")
    size = int(arch) if arch else DEFAULT_SIZE
    return ModelSpec(name=name, source=SOURCE, arch=str(size), resolved_id=f"pixels:{size}", extra={"size": size})


def preprocess_config(spec: ModelSpec) -> dict[str, Any]:
    return {"resize": [int(spec.arch), int(spec.arch)], "interpolation": "bilinear", "scale": "0-1", "layout": "hwc"}


def describe(spec: ModelSpec, *, weights=None) -> dict[str, Any]:
    if weights is not None:
        raise InputError("The pixels baseline takes no weights file")
    return {
        "identity": {"resolved_id": spec.resolved_id, "weights": "none"},
        "preprocess_config": preprocess_config(spec),
    }


def weights_status(spec: ModelSpec, weights=None) -> str:
    return "builtin"


@dataclass(frozen=True)
class PixelTransform:
    """RGB PIL image -> (size*size*3,) float32 in [0, 1]. Picklable (DataLoader workers)."""

    size: int

    def __call__(self, image) -> np.ndarray:
        from PIL import Image

        resized = image.convert("RGB").resize((self.size, self.size), Image.Resampling.BILINEAR)
        return (np.asarray(resized, dtype=np.float32) / 255.0).reshape(-1)


class PixelsHandle(ModelHandle):
    uses_torch = False
    default_batch_size = 256

    def __init__(self, spec: ModelSpec):
        self.spec = spec
        self.device = "cpu"
        self._size = int(spec.arch)

    @property
    def identity(self) -> dict[str, Any]:
        return describe(self.spec)["identity"]

    @property
    def preprocess_config(self) -> dict[str, Any]:
        return preprocess_config(self.spec)

    @property
    def transform(self) -> PixelTransform:
        return PixelTransform(self._size)

    def forward(self, batch: Any, *, layers: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """(b, size*size*3) float32 pixel vectors."""
        requested = [PENULTIMATE] if layers is None else list(layers)
        bad = [n for n in requested if n != PENULTIMATE]
        if bad:
            raise InputError(f"The pixels baseline has only the layer '{PENULTIMATE}'; got {bad}")
        array = np.asarray(batch.numpy() if hasattr(batch, "numpy") else batch, dtype=np.float32)
        return {PENULTIMATE: array.reshape(len(array), -1)}


def load(
    spec: ModelSpec, *, device: str = DEFAULT_DEVICE, weights=None, precision: str = "auto", **_options
) -> PixelsHandle:
    describe(spec, weights=weights)  # rejects a weights file
    return PixelsHandle(spec)
