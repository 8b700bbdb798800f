"""The one device resolver: every part of repalign that places tensors asks it.

``"auto"`` picks cuda, then mps, then cpu. An explicit device that is not available here
is an error, never a silent switch to the CPU. Checking a device *name* needs no torch
(:func:`check_device`, used by the config validator); resolving it imports torch.
"""

from __future__ import annotations

import re

from repalign._options import AUTO, DEFAULT_DEVICE, DEVICES
from repalign.errors import InputError, unknown_name

_DEVICE_NAME = re.compile(r"(auto|cpu|mps|cuda(:\d+)?)")
#: how the valid names are spelled in messages
DEVICE_NAMES = (*DEVICES, "cuda:N")


def check_device(device: object) -> str:
    """``device`` if it names a device (``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps``).

    Raises:
        UnknownNameError: naming the closest valid names.
    """
    if isinstance(device, str) and _DEVICE_NAME.fullmatch(device):
        return device
    raise unknown_name("device", device if isinstance(device, str) else repr(device), DEVICE_NAMES)


def resolve_device(device: str | None = DEFAULT_DEVICE) -> str:
    """A concrete torch device string (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``).

    Args:
        device: ``"auto"`` (or ``None``) picks cuda, then mps, then cpu; any other name
            must be available here.

    Raises:
        UnknownNameError: not a device name.
        InputError: a device that this machine does not have.
    """
    device = check_device(AUTO if device is None else device)
    import torch

    kind, _, index = device.partition(":")
    if kind == AUTO:
        if torch.cuda.is_available():
            return "cuda"
        return "mps" if mps_available() else "cpu"
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"Device '{device}' requested but CUDA is not available here; use --device cpu or auto")
        if index and int(index) >= torch.cuda.device_count():
            raise InputError(
                f"Device '{device}' requested but this machine has {torch.cuda.device_count()} CUDA device(s); "
                f"use cuda:0..cuda:{torch.cuda.device_count() - 1}"
            )
    if kind == "mps" and not mps_available():
        raise InputError("Device 'mps' requested but Apple MPS is not available here; use --device cpu or auto")
    return device


def require_device(device: str | None) -> None:
    """Raise unless an explicitly named device (cuda, cuda:N, mps) exists here.

    For callers that may end up running nothing on the device -- every embedding cached --
    and would otherwise accept ``--device cuda`` on a machine without CUDA in silence.
    ``auto`` and ``cpu`` always exist, and are checked without importing torch.

    Raises:
        UnknownNameError: not a device name.
        InputError: a device this machine does not have.
    """
    if check_device(AUTO if device is None else device) not in (AUTO, "cpu"):
        resolve_device(device)


def mps_available() -> bool:
    """True when torch can run on Apple's Metal (MPS) backend."""
    import torch

    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())
