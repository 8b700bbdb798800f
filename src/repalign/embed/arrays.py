"""Array image sets (MNIST, Fashion-MNIST, CIFAR) preprocessed in batches where the model runs.

These datasets are small uint8 arrays; the per-image path turns every image into a PIL image
and runs the model's transform on it, one Pillow call per image per model. Here the array is
uploaded once (the images a run uses) and each batch is resized, cropped and normalised with
a few tensor operations on the model's device (numpy models: numpy operations on the CPU).

The inputs are the same numbers as the per-image path's, bit for bit, on any device, which
is why the embedding cache key does not tell the two paths apart:

* the resize is Pillow's own fixed-point arithmetic as two exact matrix products
  (:mod:`repalign.embed._pil_resample`);
* the crop, ``ToTensor`` (``uint8 -> float32, / 255``) and ``Normalize`` (``- mean, / std``
  in float32) are the same IEEE operations on the same values, elementwise.

Only transforms whose every step is understood are batched: a torchvision ``Compose`` of
``Resize`` (any Pillow filter but nearest, no ``max_size``), ``CenterCrop`` (no padding),
``ToTensor`` (or timm's ``MaybeToTensor``) and ``Normalize``, in that order -- what timm's
``create_transform(is_training=False)`` with the default center crop builds, and the CIFAR
ResNets' transform -- and torchvision's ``ImageClassification`` preset. One geometry is left
to Pillow: shrinking the height while the width is resized too, where Pillow 13 may run its
vertical pass first. Anything else (``pixels``, custom transforms) takes the per-image path.

Numpy models: a transform may describe itself as batch steps with ``batch_steps()`` -- the
output size, the Pillow filter and a 256-entry lookup table of input values -- as TFLite's
does (Lanczos resize of the whole image, then the quantization table). :class:`BatchedPixels`
runs those steps on the CPU with numpy alone (the same exact float64 products, one BLAS
thread) and gives ``(b, h, w, 3)`` arrays in the model's input dtype, the per-image arrays
stacked; the engine then runs the interpreter on every core, no decode thread beside it.
On the quick start's 1,687 MNIST digits (2 cores, shared): see docs/embeddings.md, "Array
datasets".
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from repalign.data.images import ArrayImageSet, ImageSet, unwrap_subsets
from repalign.embed._pil_resample import FILTERS, resample_pass, resample_weights

log = logging.getLogger(__name__)

__all__ = ["BatchedPixels", "BatchedTransform", "array_batches", "array_images", "batched_transform", "plan_for"]


@dataclass(frozen=True)
class BatchedTransform:
    """A model's eval transform as batch operations on uint8 image tensors.

    Attributes:
        resize: the Resize size as torchvision takes it (``[shortest edge]`` or ``[h, w]``), or None.
        filter: the Pillow filter of the resize (a key of ``FILTERS``).
        crop: ``(height, width)`` of the center crop, or None.
        mean, std: the per-channel normalisation, or None.
    """

    resize: tuple[int, ...] | None
    filter: str
    crop: tuple[int, int] | None
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None

    def geometry(self, height: int, width: int) -> _Geometry | None:
        """The resampling weights and crop for ``height x width`` images; None when Pillow's
        result cannot be reproduced exactly (padding crops, a shrinking height with a resized width)."""
        out_h, out_w = _resized_size(height, width, self.resize) if self.resize is not None else (height, width)
        crop_h, crop_w = self.crop if self.crop is not None else (out_h, out_w)
        if crop_h > out_h or crop_w > out_w:
            return None  # torchvision pads; rare for eval transforms, left to the per-image path
        top, left = int(round((out_h - crop_h) / 2.0)), int(round((out_w - crop_w) / 2.0))
        resize_w, resize_h = out_w != width, out_h != height
        if resize_w and resize_h and out_h < height:
            return None  # Pillow >= 13 may run the vertical pass first here (pass order changes rounding)
        cols = resample_weights(width, out_w, self.filter)[left : left + crop_w] if resize_w else None
        rows = resample_weights(height, out_h, self.filter)[top : top + crop_h] if resize_h else None
        return _Geometry(rows=rows, cols=cols, top=top, left=left, height=crop_h, width=crop_w)

    def apply(self, batch, geometry: _Geometry):
        """``(b, h, w)`` or ``(b, h, w, 3)`` uint8 tensor -> ``(b, 3, H, W)`` float32 model inputs,
        computed on the batch's device."""
        import torch

        device = batch.device
        x = batch.to(torch.float64)
        x = x[:, None] if x.ndim == 3 else x.permute(0, 3, 1, 2)  # grayscale: one channel, replicated below
        x = _resampled(x, geometry, lambda weights: torch.tensor(weights, device=device))
        # integers 0..255, exact in float32, then ToTensor's / 255 (the same IEEE operation per value)
        x = x.to(torch.float32).div_(255)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)  # what Image.convert("RGB") does to a grayscale image
        if self.mean is None:
            return x.contiguous()
        mean = torch.as_tensor(self.mean, dtype=torch.float32, device=device).view(-1, 1, 1)
        std = torch.as_tensor(self.std, dtype=torch.float32, device=device).view(-1, 1, 1)
        return x.sub(mean).div_(std)


@dataclass(frozen=True, eq=False)
class BatchedPixels:
    """A numpy model's transform as batch operations on uint8 arrays: the whole image resized
    to ``size`` (no crop), then each 8-bit value mapped through ``table`` -- what a transform
    exposing ``batch_steps()`` (:class:`~repalign.models.tflite_source.TfliteTransform`) does
    image by image. Runs on the CPU with numpy alone (numpy models need no torch).

    Attributes:
        size: ``(height, width)`` of the model input.
        filter: the Pillow filter of the resize (a key of ``FILTERS``).
        table: the model input value of each of the 256 pixel values, or None (the pixel itself).
    """

    size: tuple[int, int]
    filter: str
    table: np.ndarray | None

    def geometry(self, height: int, width: int) -> _Geometry | None:
        """As :meth:`BatchedTransform.geometry` for a resize straight to ``size``."""
        resize = BatchedTransform(resize=self.size, filter=self.filter, crop=None, mean=None, std=None)
        return resize.geometry(height, width)

    def apply(self, batch: np.ndarray, geometry: _Geometry) -> np.ndarray:
        """``(b, h, w)`` or ``(b, h, w, 3)`` uint8 array -> ``(b, H, W, 3)`` model inputs, the
        per-image transform's arrays stacked."""
        x = np.asarray(batch, dtype=np.float64)
        x = x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)
        with _one_blas_thread():
            resized = _resampled(x, geometry, np.asarray)
        # integers 0..255 after the passes, so the uint8 cast is exact
        values = resized.astype(np.uint8)
        if self.table is not None:
            values = self.table[values]
        planes = list(values.transpose(1, 0, 2, 3))  # per channel (b, H, W)
        if len(planes) == 1:  # grayscale: convert("RGB") replicates it, and each channel resizes alike
            planes *= 3
        return np.stack(planes, axis=-1)  # NHWC; the fastest of the copies tried (repeat, broadcast)


def _one_blas_thread():
    """numpy's BLAS limited to one thread: a batch's products are small, and OpenBLAS's threads
    cost more than they save and spin after each call on the cores the interpreter runs on
    next (2.5x slower on 2 cores, measured)."""
    return _blas_controller().limit(limits=1, user_api="blas")


@functools.cache
def _blas_controller():
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()  # finding the loaded libraries once: ~0.3 ms, each limit ~15 us


def _resampled(x, geometry: _Geometry, as_weights):
    """``(b, c, h, w)`` float64 pixels (torch or numpy) resized and cropped by ``geometry``;
    ``as_weights`` turns a weight matrix into the pixels' kind (and device)."""
    if geometry.rows is not None:
        first, stop = geometry.row_span
        x = x[:, :, first:stop]  # only the input rows the output rows read, as Pillow does
    else:
        x = x[:, :, geometry.top : geometry.top + geometry.height]
    if geometry.cols is not None:
        x = resample_pass(x, as_weights(geometry.cols), axis=-1)
    else:
        x = x[..., geometry.left : geometry.left + geometry.width]
    if geometry.rows is not None:
        x = resample_pass(x, as_weights(geometry.rows[:, first:stop]), axis=-2)
    return x


@dataclass(frozen=True)
class _Geometry:
    rows: np.ndarray | None  # (out height, in height) fixed-point weights of the vertical pass
    cols: np.ndarray | None  # (out width, in width) of the horizontal pass
    top: int
    left: int
    height: int
    width: int

    @property
    def row_span(self) -> tuple[int, int]:
        used = np.flatnonzero(self.rows.any(axis=0))
        return int(used[0]), int(used[-1]) + 1


def batched_transform(transform: Any) -> BatchedTransform | BatchedPixels | None:
    """The batch form of a model's transform, or None when a step is not one this module reproduces.

    A transform of any model source may describe itself with ``batch_steps()``:
    ``((height, width), Pillow filter name, 256-entry lookup table or None)``.
    """
    steps = getattr(transform, "batch_steps", None)
    if callable(steps):
        return _from_steps(*steps())
    kind = f"{type(transform).__module__}.{type(transform).__qualname__}"
    if kind == "torchvision.transforms._presets.ImageClassification":
        return _from_preset(transform)
    if kind != "torchvision.transforms.transforms.Compose":
        return None
    return _from_compose(list(transform.transforms))


def _from_steps(size, filter_name: str, table) -> BatchedPixels | None:
    if filter_name not in FILTERS:
        return None
    lookup = None if table is None else np.asarray(table)
    if lookup is not None and lookup.shape != (256,):
        return None
    return BatchedPixels(size=_pair(size), filter=filter_name, table=lookup)


def _from_compose(steps: list) -> BatchedTransform | None:
    from torchvision import transforms as tv

    resize, filter_name, crop, mean, std = None, "bilinear", None, None, None
    if steps and type(steps[0]) is tv.Resize:
        step = steps.pop(0)
        filter_name = _filter(step.interpolation)
        if filter_name is None or step.max_size is not None:
            return None
        resize = _size(step.size)
    if steps and type(steps[0]) is tv.CenterCrop:
        crop = _pair(steps.pop(0).size)
    if not steps or not _is_to_tensor(steps.pop(0)):
        return None
    if steps and type(steps[0]) is tv.Normalize:
        step = steps.pop(0)
        mean, std = _channels(step.mean), _channels(step.std)
    if steps or (resize is None and crop is None and mean is None):
        return None  # steps left over, or nothing worth batching
    return BatchedTransform(resize=resize, filter=filter_name, crop=crop, mean=mean, std=std)


def _from_preset(preset) -> BatchedTransform | None:
    filter_name = _filter(preset.interpolation)
    if filter_name is None:
        return None
    return BatchedTransform(
        resize=_size(preset.resize_size),
        filter=filter_name,
        crop=_pair(preset.crop_size),
        mean=_channels(preset.mean),
        std=_channels(preset.std),
    )


def _is_to_tensor(step) -> bool:
    from torchvision import transforms as tv

    kind = f"{type(step).__module__}.{type(step).__qualname__}"
    return type(step) is tv.ToTensor or kind == "timm.data.transforms.MaybeToTensor"


def _filter(mode) -> str | None:
    """The Pillow filter of a torchvision InterpolationMode (its value is the filter's name);
    None for nearest, which has no weights to reproduce."""
    name = str(getattr(mode, "value", mode))
    return name if name in FILTERS else None


def _size(size) -> tuple[int, ...]:
    return (int(size),) if isinstance(size, (int, np.integer)) else tuple(int(s) for s in size)


def _pair(size) -> tuple[int, int]:
    size = _size(size)
    return (size[0], size[0]) if len(size) == 1 else (size[0], size[1])


def _channels(values) -> tuple[float, ...]:
    return tuple(float(v) for v in np.asarray(values, dtype=np.float64).reshape(-1))


def _resized_size(height: int, width: int, size: Sequence[int]) -> tuple[int, int]:
    """torchvision's output size of Resize(size) for a ``height x width`` image."""
    if len(size) == 2:
        return size[0], size[1]
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = size[0], int(size[0] * long / short)
    return (new_long, new_short) if width <= height else (new_short, new_long)


def array_images(images: ImageSet) -> tuple[np.ndarray, np.ndarray | None] | None:
    """``(uint8 array, indices or None)`` behind an array image set (or a subset of one);
    None for images that are files."""
    base, indices = unwrap_subsets(images)
    if not isinstance(base, ArrayImageSet) or type(base).load is not ArrayImageSet.load:
        return None
    return base.images, indices


def array_batches(
    plan: BatchedTransform | BatchedPixels, geometry: _Geometry, images: ImageSet, batch_size: int, device: str
) -> Iterator[Any]:
    """The model inputs of ``images``, ``batch_size`` at a time, prepared on ``device``.

    The used images are uploaded once as uint8 (MNIST's 10,000 test digits are 7.8 MB); MPS
    has no float64, so there the batches are prepared on the CPU. A :class:`BatchedPixels`
    plan (numpy models) gives numpy batches, prepared on the CPU."""
    array, indices = array_images(images)
    used = array if indices is None else array[indices]
    if isinstance(plan, BatchedPixels):
        for start in range(0, len(used), batch_size):
            yield plan.apply(used[start : start + batch_size], geometry)
        return
    import torch

    where = "cpu" if str(device).startswith("mps") else str(device)
    uploaded = torch.from_numpy(np.ascontiguousarray(used)).to(where)
    for start in range(0, len(uploaded), batch_size):
        yield plan.apply(uploaded[start : start + batch_size], geometry)


def plan_for(transform: Any, images: ImageSet) -> tuple[BatchedTransform | BatchedPixels, _Geometry] | None:
    """``(batch transform, geometry)`` when ``images`` can be preprocessed in batches for
    ``transform``, else None."""
    source = array_images(images)
    if source is None:
        return None
    plan = batched_transform(transform)
    if plan is None:
        return None
    array = source[0]
    geometry = plan.geometry(int(array.shape[1]), int(array.shape[2]))
    return None if geometry is None else (plan, geometry)
