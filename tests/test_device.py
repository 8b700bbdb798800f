"""The one device resolver: "auto" picks cuda, then mps, then cpu; unknown names get a
did-you-mean error; an explicit device this machine lacks is an error, never a silent switch."""

from __future__ import annotations

import pytest

from repalign._device import check_device, resolve_device
from repalign.errors import InputError, UnknownNameError

torch = pytest.importorskip("torch")


@pytest.fixture
def machine(monkeypatch):
    """Pretend this machine has the given accelerators (torch's own availability checks)."""

    def have(*, cuda: bool, mps: bool, n_gpus: int = 1):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: n_gpus if cuda else 0)
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)

    return have


@pytest.mark.parametrize(
    ("cuda", "mps", "expected"),
    [(True, True, "cuda"), (True, False, "cuda"), (False, True, "mps"), (False, False, "cpu")],
)
def test_auto_picks_cuda_then_mps_then_cpu(machine, cuda, mps, expected):
    machine(cuda=cuda, mps=mps)
    assert resolve_device("auto") == expected
    assert resolve_device(None) == expected
    assert resolve_device() == expected


def test_explicit_devices_are_kept_when_available(machine):
    machine(cuda=True, mps=True, n_gpus=2)
    for device in ("cpu", "cuda", "cuda:0", "cuda:1", "mps"):
        assert resolve_device(device) == device


@pytest.mark.parametrize(
    ("device", "match"),
    [
        ("cuda", "CUDA is not available"),
        ("cuda:0", "CUDA is not available"),
        ("mps", "MPS is not available"),
    ],
)
def test_a_missing_device_is_an_error_not_a_switch_to_cpu(machine, device, match):
    machine(cuda=False, mps=False)
    with pytest.raises(InputError, match=match):
        resolve_device(device)


def test_a_gpu_index_past_the_last_gpu_is_an_error(machine):
    machine(cuda=True, mps=False, n_gpus=2)
    with pytest.raises(InputError, match=r"has 2 CUDA device\(s\); use cuda:0\.\.cuda:1"):
        resolve_device("cuda:2")


@pytest.mark.parametrize(
    ("device", "match"),
    [
        ("tpu", r"Unknown device 'tpu'\. Did you mean: cpu\?"),
        ("cude", r"Unknown device 'cude'\. Did you mean: cuda"),
        ("Auto", r"Unknown device 'Auto'\. Did you mean: auto\?"),
        ("cuda:", "Unknown device 'cuda:'"),
        ("cuda:x", "Unknown device 'cuda:x'"),
        ("cpu:0", "Unknown device 'cpu:0'"),
        ("", "Unknown device ''"),
        (0, "Unknown device '0'"),
    ],
)
def test_unknown_names_get_a_did_you_mean_error(device, match):
    with pytest.raises(UnknownNameError, match=match):
        check_device(device)
    with pytest.raises(UnknownNameError, match=match):
        resolve_device(device)


def test_every_subsystem_uses_the_one_resolver():
    import repalign.embed
    from repalign.embed import engine
    from repalign.fewshot import evaluate
    from repalign.models import _torch_handle

    assert repalign.embed.resolve_device is resolve_device
    assert engine.resolve_device is evaluate.resolve_device is _torch_handle.resolve_device is resolve_device
