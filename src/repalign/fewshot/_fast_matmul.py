"""Faster matrix products for the few-shot heads, only where they cost no accuracy (private).

Two facts about CPUs that decide how fast the heads train:

- **bfloat16.** CPUs with AVX512-BF16 or AMX multiply bfloat16 matrices in hardware, about
  4-5x faster than float32 (measured: 179 vs 33 GMAC/s on one core of an AMD EPYC). The MLP
  heads train through dropout noise far larger than bfloat16 rounding, so they use
  bfloat16 products with float32 weights, optimizer and loss (mixed precision, as autocast
  does) where the hardware has it; see :func:`mlp_matmul_dtype`.
- **float32 through oneDNN.** torch sends float32 products to MKL, which runs its slower
  AVX2 code on non-Intel CPUs; oneDNN's AVX512 kernel is about 2x faster there. torch uses
  oneDNN for float32 only when its "bf16" precision mode allows down-conversion to
  bfloat16, which oneDNN does only on AMX hardware. The linear head needs float32
  precision (its solver stops at a gradient of 1e-5), so :func:`fast_float32_matmul` turns
  the mode on only after a probe product on this machine came out as accurate as float32.

Imports torch lazily.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

# A probe product whose error is above this is not float32 (float32: ~1e-7 relative to the
# largest entry for these sizes; bfloat16 inputs: ~1e-3).
_FLOAT32_PROBE_TOLERANCE = 1e-5


def native_bfloat16(device) -> bool:
    """Whether ``device`` multiplies bfloat16 matrices in hardware (CPU: AVX512-BF16 or AMX;
    CUDA: compute capability 8.0 or newer). Elsewhere bfloat16 is emulated and slower."""
    import torch

    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type != "cpu":
        return False
    try:  # private helpers of torch.cpu; if a release drops them, assume no
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:
        return False


def mlp_matmul_dtype(precision: str, device):
    """The dtype of the MLP heads' matrix products for a ``HeadSettings.mlp_precision``:
    torch.bfloat16, or None for plain float32. "auto" picks bfloat16 where it is native."""
    import torch

    if precision == "bfloat16" or (precision == "auto" and native_bfloat16(device)):
        return torch.bfloat16
    return None


@contextlib.contextmanager
def fast_float32_matmul(device) -> Iterator[None]:
    """Within the block, CPU float32 products run on oneDNN if that is exact here (see above)."""
    import torch

    if device.type != "cpu" or not _onednn_float32_is_exact():
        yield
        return
    matmul = torch.backends.mkldnn.matmul
    previous = matmul.fp32_precision
    matmul.fp32_precision = "bf16"
    try:
        yield
    finally:
        matmul.fp32_precision = previous


@functools.cache
def _onednn_float32_is_exact() -> bool:
    """Probe once per process: does oneDNN, allowed to down-convert, keep float32 accuracy?"""
    import torch

    matmul = getattr(getattr(torch.backends, "mkldnn", None), "matmul", None)
    if matmul is None or not hasattr(matmul, "fp32_precision"):
        return False  # a torch without the per-backend precision switch
    if not torch.backends.mkldnn.is_available():
        return False
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(4, 96, 256, generator=generator)
    b = torch.randn(4, 256, 80, generator=generator)
    exact = torch.bmm(a.double(), b.double())
    previous = matmul.fp32_precision
    matmul.fp32_precision = "bf16"
    try:
        fast = torch.bmm(a, b)
    finally:
        matmul.fp32_precision = previous
    error = float((fast.double() - exact).abs().max() / exact.abs().max())
    return error <= _FLOAT32_PROBE_TOLERANCE
