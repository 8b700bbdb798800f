"""Files that model sources need from the data registry (TFLite graphs, CIFAR checkpoints,
the paper's model list), plus a cached sha256 of weight files for model identities.

The data registry (:mod:`repalign.data`) copies a file from ``$REPALIGN_MIRROR`` or
downloads it, and verifies its checksum. While that module is not importable (it is written
in parallel), files are read straight from the mirror folder, so the model sources keep working.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

from repalign._io import sha256_file_remembered
from repalign._paths import mirror_dir
from repalign.errors import InputError, MissingDataError, first_line

log = logging.getLogger(__name__)

#: data registry dataset name -> folder of its files inside the mirror (fallback only)
_MIRROR_FOLDERS = {
    "coral-tflite": "weights/coral_tflite",
    "cifar10-resnet": "weights/cifar10_resnet",
    "paper-models": ".",
}


def fetch_asset(dataset: str, relpath: str) -> Path:
    """Local path of ``relpath`` in a registry dataset, verified by the data layer.

    Raises:
        MissingDataError: the file is neither in the data home, the mirror, nor downloadable.
    """
    try:
        from repalign.data import fetch_file
    except ImportError:
        fetch_file = None
    if fetch_file is not None:
        return Path(fetch_file(dataset, relpath))
    mirror = mirror_dir()
    if mirror is not None:
        candidate = mirror / _MIRROR_FOLDERS.get(dataset, dataset) / relpath
        if candidate.is_file():
            return candidate
    raise MissingDataError(
        f"File '{relpath}' of dataset '{dataset}' is not available: set REPALIGN_MIRROR to a data mirror "
        f"or run `repalign data fetch {dataset}`"
    )


def asset_available(dataset: str, relpath: str) -> str:
    """Where a registry file would come from, without copying it: ``"cached"`` (data home),
    ``"local"`` (mirror) or ``"download"``."""
    from repalign._paths import data_home

    if (data_home() / dataset / relpath).is_file():
        return "cached"
    mirror = mirror_dir()
    if mirror is not None and (mirror / _MIRROR_FOLDERS.get(dataset, dataset) / relpath).is_file():
        return "local"
    return "download"


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a weights file (remembered per path, size and mtime: files can be hundreds of MB)."""
    return sha256_file_remembered(path)


def check_weights_file(weights: str | os.PathLike) -> Path:
    """A user-supplied ``--weights`` path, checked to exist."""
    path = Path(weights).expanduser()
    if not path.is_file():
        raise MissingDataError(f"Weights file not found: {path}")
    return path


def load_state_dict_file(path: str | os.PathLike, *, model: str) -> dict:
    """The state dict in a PyTorch checkpoint file, read with ``torch.load(weights_only=True)``.

    ``weights_only=True`` rebuilds tensors and plain containers only, so a checkpoint that
    names any other Python object (a pickle written to run code on load) is refused before
    anything runs. There is no fallback to a full unpickle, and the error does not suggest
    one. A checkpoint holding ``{"state_dict": ...}`` (common training scripts) is unwrapped.

    Raises:
        InputError: the file is not a readable PyTorch checkpoint (random bytes, truncated,
            a pickle of other objects), or it holds no ``{name: tensor}`` state dict.
    """
    import pickle

    import torch

    path = Path(path)
    try:
        with warnings.catch_warnings():
            # torch warns about pickle protocols of files it then refuses; the error says it all
            warnings.simplefilter("ignore", UserWarning)
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Unsupported global" in str(exc):  # the restricted unpickler met a class or function
            raise InputError(
                f"Weights file {path} holds Python objects other than tensors, which repalign never loads (it "
                f"may be malicious, or a whole model saved with torch.save(model)); save {model}'s "
                "model.state_dict() instead"
            ) from exc
        raise InputError(f"Weights file {path} is not a PyTorch checkpoint, or it is damaged ({_kind(exc)})") from exc
    except Exception as exc:  # random or truncated bytes fail anywhere in torch's zip and pickle readers
        raise InputError(f"Weights file {path} is not a PyTorch checkpoint, or it is damaged ({_kind(exc)})") from exc
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else checkpoint
    if (
        not isinstance(state, dict)
        or not state
        or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items())
    ):
        raise InputError(
            f"Weights file {path} holds {type(state).__name__}, not a state dict of named tensors; save "
            f"{model}'s model.state_dict()"
        )
    return state


def _kind(exc: BaseException) -> str:
    """An exception's type and first line, without torch's advice on how to load the file anyway."""
    text = first_line(exc, with_type=True, limit=120)
    return type(exc).__name__ if "weights" in text.lower() else text


def explicit_weights(spec, weights: str | os.PathLike | None) -> tuple[str, Path | None] | None:
    """``(identity, file)`` for weights every torch source handles alike -- an untrained
    variant (``random:<seed>``, no file) or a user's local file (``file-sha256:...``) --
    or None when the source must look its default weights up itself."""
    if spec.variant == "random":
        if weights is not None:
            raise InputError(f"'{spec.name}' is an untrained network; it takes no weights file")
        return f"random:{spec.seed}", None
    if weights is not None:
        path = check_weights_file(weights)
        return f"file-sha256:{file_sha256(path)}", path
    return None


def explicit_weights_status(spec, weights: str | os.PathLike | None) -> str | None:
    """``random`` or ``local`` for the cases of :func:`explicit_weights`, else None."""
    if spec.variant == "random":
        return "random"
    return "local" if weights is not None else None


def description(spec, weights_id: str, preprocess_config: dict) -> dict:
    """The record ``describe_model`` returns: what the embedding cache key is made of."""
    return {
        "identity": {"resolved_id": spec.resolved_id, "weights": weights_id},
        "preprocess_config": preprocess_config,
    }
