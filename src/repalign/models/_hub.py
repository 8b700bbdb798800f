"""Hugging Face hub weights, pinned to the exact revision that is loaded.

Policy: a file already in the local hub cache is used as is (no network, reproducible);
otherwise it is downloaded once. The revision (commit hash) of the snapshot that holds
the file is part of the model identity, so new uploads never mix with cached embeddings.
Without internet the caller gets a :class:`MissingDataError` at once instead of the hub
client's retries (about 25 s per file).
"""

from __future__ import annotations

import functools
import logging
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

from repalign.errors import MissingDataError

log = logging.getLogger(__name__)

#: Seconds to wait for a TCP connection before calling the hub unreachable.
PROBE_TIMEOUT_S = 3.0


def hub_offline_env() -> bool:
    """True when the user switched the hub off (``HF_HUB_OFFLINE=1``)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


@functools.lru_cache(maxsize=16)
def host_reachable(url: str) -> bool:
    """Whether a TCP connection to ``url``'s host can be opened within a few seconds.

    Behind an HTTP(S) proxy the direct probe says nothing, so it reports True and leaves
    the timeouts to the download client.
    """
    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    parsed = urlparse(url)
    host, port = parsed.hostname, parsed.port or (443 if parsed.scheme == "https" else 80)
    if not host:
        return False
    try:
        with socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S):
            return True
    except OSError:
        return False


def hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co")


def hub_cache_dir() -> str | None:
    """``$HF_HUB_CACHE`` read now (huggingface_hub reads it once, at import), else its default."""
    return os.environ.get("HF_HUB_CACHE") or None


def split_hub_id(hub_id: str) -> tuple[str, str | None]:
    """``"org/repo@rev"`` -> ``("org/repo", "rev")``."""
    repo, _, revision = hub_id.partition("@")
    return repo, revision or None


def cached_hub_file(repo_id: str, filenames: tuple[str, ...], revision: str | None = None) -> tuple[Path, str] | None:
    """``(path, filename)`` of the first of ``filenames`` already in the hub cache."""
    from huggingface_hub import try_to_load_from_cache

    for filename in filenames:
        found = try_to_load_from_cache(repo_id, filename, cache_dir=hub_cache_dir(), revision=revision)
        if isinstance(found, str) and Path(found).is_file():
            return Path(found), filename
    return None


def snapshot_revision(path: Path) -> str:
    """Commit hash of the hub-cache snapshot folder that holds ``path``."""
    parts = Path(path).parts
    if "snapshots" in parts:
        return parts[parts.index("snapshots") + 1]
    return "unknown"


def fetch_hub_file(repo_id: str, filenames: tuple[str, ...], *, revision: str | None, hint: str) -> tuple[Path, str]:
    """The first of ``filenames`` present in the repo, from the cache or downloaded.

    Raises:
        MissingDataError: offline (or the hub unreachable) and not cached; ``hint`` says
            how to supply the weights another way.
    """
    cached = cached_hub_file(repo_id, filenames, revision)
    if cached is not None:
        return cached
    if hub_offline_env() or not host_reachable(hub_endpoint()):
        raise MissingDataError(
            f"Weights of '{repo_id}' are not in the Hugging Face cache and the hub is not reachable (offline). {hint}"
        )
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    last_error: Exception | None = None
    for filename in filenames:
        try:
            path = hf_hub_download(repo_id, filename, revision=revision, cache_dir=hub_cache_dir(), etag_timeout=10)
            return Path(path), filename
        except EntryNotFoundError as exc:  # try the next file name (e.g. .bin after .safetensors)
            last_error = exc
        except Exception as exc:  # network, auth or gated repo: one clear message
            raise MissingDataError(f"Could not download weights of '{repo_id}': {exc}. {hint}") from exc
    raise MissingDataError(f"No weights file ({', '.join(filenames)}) in hub repo '{repo_id}': {last_error}. {hint}")
