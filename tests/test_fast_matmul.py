"""Fast matrix-product routes of the few-shot heads: used only where they keep accuracy."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from repalign.errors import InputError  # noqa: E402
from repalign.fewshot import HeadSettings  # noqa: E402
from repalign.fewshot._fast_matmul import (  # noqa: E402
    _onednn_float32_is_exact,
    fast_float32_matmul,
    mlp_matmul_dtype,
    native_bfloat16,
)

CPU = torch.device("cpu")


def test_fast_float32_products_keep_float32_accuracy_and_restore_the_mode():
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(3, 200, 300, generator=generator)
    b = torch.randn(3, 300, 50, generator=generator)
    exact = torch.bmm(a.double(), b.double())
    before = torch.backends.mkldnn.matmul.fp32_precision
    with fast_float32_matmul(CPU):
        inside = torch.backends.mkldnn.matmul.fp32_precision
        fast = torch.bmm(a, b)
    assert torch.backends.mkldnn.matmul.fp32_precision == before
    # Where the probe allowed the oneDNN route it is on inside the block; either way the
    # products are float32-accurate (bfloat16 inputs would be off by ~1e-3 of the largest).
    assert (inside == "bf16") == _onednn_float32_is_exact()
    error = float((fast.double() - exact).abs().max() / exact.abs().max())
    assert error < 1e-5


def test_fast_float32_mode_is_restored_after_an_error():
    before = torch.backends.mkldnn.matmul.fp32_precision
    with pytest.raises(RuntimeError, match="boom"):
        with fast_float32_matmul(CPU):
            raise RuntimeError("boom")
    assert torch.backends.mkldnn.matmul.fp32_precision == before


def test_mlp_precision_choices():
    assert mlp_matmul_dtype("float32", CPU) is None
    assert mlp_matmul_dtype("bfloat16", CPU) is torch.bfloat16
    expected = torch.bfloat16 if native_bfloat16(CPU) else None
    assert mlp_matmul_dtype("auto", CPU) is expected
    with pytest.raises(InputError, match="mlp_precision must be one of auto, float32, bfloat16"):
        HeadSettings(mlp_precision="half")
    with pytest.raises(InputError, match="dropout must be in"):
        HeadSettings(dropout=1.0)
