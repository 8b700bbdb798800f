"""Pillow's 8-bit resampling, reproduced as two integer-valued matrix products.

``Image.resize`` on an 8-bit image (Pillow's ``Resample.c``) is separable: a horizontal pass
then a vertical pass, each a weighted sum over a window of input pixels. The weights come
from the filter (bilinear, bicubic with a = -0.5, ...) stretched by the scale factor when
downsampling (the antialiasing), normalised to sum 1 and rounded to fixed point with
:data:`PRECISION_BITS` fractional bits; each output pixel is
``clip8((sum(weight * pixel) + 2**21) >> 22)`` and the horizontal pass is stored as 8-bit
pixels before the vertical pass reads it.

Here each pass's fixed-point weights form an ``(out, in)`` matrix and the pass is a float64
matrix product: weights are integers below 2**23 and pixels below 256, so every product and
every partial sum is an integer below 2**53, exact in float64 whatever the summation order
(BLAS, cuBLAS). The rounding is the same shift (a floor) and the same clipping, so the
result equals Pillow's pixel for pixel, on any device -- checked in tests/test_array_inputs.py.
"""

from __future__ import annotations

import functools
import math

import numpy as np

#: Pillow's fixed-point precision for 8-bit images (``32 - 8 - 2``).
PRECISION_BITS = 22


def _box(x: float) -> float:
    return 1.0 if -0.5 < x <= 0.5 else 0.0


def _bilinear(x: float) -> float:
    x = abs(x)
    return 1.0 - x if x < 1.0 else 0.0


def _hamming(x: float) -> float:
    x = abs(x)
    if x == 0.0:
        return 1.0
    if x >= 1.0:
        return 0.0
    x = x * math.pi
    return math.sin(x) / x * (0.54 + 0.46 * math.cos(x))


def _bicubic(x: float) -> float:
    a = -0.5  # Pillow's choice (torch's non-antialiased bicubic uses -0.75)
    x = abs(x)
    if x < 1.0:
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1
    if x < 2.0:
        return (((x - 5) * x + 8) * x - 4) * a
    return 0.0


def _sinc(x: float) -> float:
    if x == 0.0:
        return 1.0
    x = x * math.pi
    return math.sin(x) / x


def _lanczos(x: float) -> float:
    return _sinc(x) * _sinc(x / 3) if -3.0 <= x < 3.0 else 0.0


#: filter name -> (support, filter function), as in Pillow's Resample.c
FILTERS = {
    "box": (0.5, _box),
    "bilinear": (1.0, _bilinear),
    "hamming": (1.0, _hamming),
    "bicubic": (2.0, _bicubic),
    "lanczos": (3.0, _lanczos),
}


@functools.lru_cache(maxsize=64)
def resample_weights(in_size: int, out_size: int, filter_name: str) -> np.ndarray:
    """``(out_size, in_size)`` float64 matrix of Pillow's fixed-point weights (integers).

    Row ``i`` holds the weights of output pixel ``i`` over the input pixels, times
    ``2**PRECISION_BITS`` and rounded half away from zero, as ``precompute_coeffs`` and
    ``normalize_coeffs_8bpc`` compute them. Read-only (it is cached).
    """
    support, kernel = FILTERS[filter_name]
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = support * filterscale
    inverse = 1.0 / filterscale
    weights = np.zeros((out_size, in_size), dtype=np.float64)
    for i in range(out_size):
        center = (i + 0.5) * scale
        first = max(int(center - support + 0.5), 0)  # int(): truncation, as the C cast
        stop = min(int(center + support + 0.5), in_size)
        row = np.array([kernel((x - center + 0.5) * inverse) for x in range(first, stop)])
        total = 0.0
        for w in row:  # summed in order, as the C loop (numpy's pairwise sum may round differently)
            total += w
        if total != 0.0:
            row = row / total
        weights[i, first:stop] = np.trunc(row * (1 << PRECISION_BITS) + np.where(row < 0, -0.5, 0.5))
    weights.flags.writeable = False
    return weights


def resample_pass(pixels, weights, *, axis: int):
    """One pass of Pillow's resampling along ``axis`` (-1: width, -2: height) of float64 8-bit
    values, with ``weights`` from :func:`resample_weights`: the weighted sums, shifted and
    clipped to 8-bit values as Pillow stores them. Takes torch tensors (the weights a tensor on
    the same device) or numpy arrays (numpy models, which need no torch)."""
    # (sum + 2**21) >> 22 on integers is a floor of the exact quotient (power-of-two scaling is exact)
    if isinstance(pixels, np.ndarray):
        # one matrix product over the whole batch (numpy's stacked matmul of a 4-d array by a
        # matrix was ~12x slower here, measured), the output axis moved back into place
        sums = np.moveaxis(np.tensordot(pixels, weights, axes=([pixels.ndim + axis], [1])), -1, axis)
        sums += float(1 << (PRECISION_BITS - 1))
        sums *= 1.0 / (1 << PRECISION_BITS)
        return np.clip(np.floor(sums, out=sums), 0.0, 255.0, out=sums)
    import torch

    sums = torch.matmul(pixels, weights.T) if axis == -1 else torch.matmul(weights, pixels)
    return sums.add_(float(1 << (PRECISION_BITS - 1))).mul_(1.0 / (1 << PRECISION_BITS)).floor_().clamp_(0.0, 255.0)
