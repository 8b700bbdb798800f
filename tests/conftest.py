"""Shared fixtures.

Every test session gets its own data home and embedding cache under a temporary
folder, so tests never read or pollute the user's caches and always exercise the
mirror -> data home path of the data layer. ``mirror`` points at ``../shared/data``
(or ``$REPALIGN_MIRROR``); tests that need real data are marked ``integration`` and
skip with a reason when no mirror is present.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def _find_mirror() -> Path | None:
    env = os.environ.get("REPALIGN_MIRROR")
    candidates = [Path(env)] if env else []
    candidates.append(PROJECT_ROOT.parent / "shared" / "data")
    for candidate in candidates:
        if (candidate / "README.md").is_file():
            return candidate.resolve()
    return None


MIRROR = _find_mirror()


@pytest.fixture(scope="session", autouse=True)
def _isolated_homes(tmp_path_factory):
    """Point the data home and embedding cache at session-private folders."""
    root = tmp_path_factory.mktemp("repalign-homes")
    saved = {k: os.environ.get(k) for k in ("REPALIGN_DATA_HOME", "REPALIGN_CACHE_HOME", "REPALIGN_MIRROR")}
    os.environ["REPALIGN_DATA_HOME"] = str(root / "data")
    os.environ["REPALIGN_CACHE_HOME"] = str(root / "embeddings")
    if MIRROR is not None:
        os.environ["REPALIGN_MIRROR"] = str(MIRROR)
    else:
        os.environ.pop("REPALIGN_MIRROR", None)
    yield root
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def mirror() -> Path:
    """The real data mirror (../shared/data); skips the test when it is absent."""
    if MIRROR is None:
        pytest.skip("no data mirror: set REPALIGN_MIRROR or place ../shared/data beside the project")
    return MIRROR


@pytest.fixture
def rng():
    import numpy as np

    return np.random.default_rng(0)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Small torch problems on a shared 2-core machine: one thread avoids OpenMP spin contention."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
