"""The ``ray`` executor: one Ray task per unit, on a private local cluster or one the user runs.

Each task asks for ``threads`` CPUs and the memory and GPU share of its model's published
size (:mod:`repalign.study.sizing`); the largest units are submitted first. A task runs in
a fresh worker process (``max_calls=1``: GPU memory and thread settings do not leak between
models). A worker or node that dies mid-unit is retried by Ray (``RAY_TASK_RETRIES`` times,
on any node), then becomes a failed row; an exception inside a unit is a failed row at once
(Ray does not retry exceptions).

Results travel only through the driver -- **no shared filesystem**: a task returns its rows
and the embeddings it computed through Ray's object store, and the driver writes the store
and puts the embeddings into its own cache. Each task works in a temporary embedding cache
seeded with the driver's cached embeddings of its model, so a study resumed on another
cluster reuses what any earlier cluster computed. Tasks are submitted a few per CPU slot at
a time, so the driver never holds every unit's embeddings at once.

Live progress: each task tells a small event actor on the head node which node it runs on
and which step it is in; the driver polls it. Losing it (e.g. the head node's worker dies)
only loses the live details.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import Any

import pandas as pd

from repalign import _options as opt
from repalign.errors import InputError, OptionalDependencyError
from repalign.study.executors import EventCallback, UnitResult, crash_row, limit_threads
from repalign.study.plan import Unit

log = logging.getLogger(__name__)

#: a task's fields of a cache entry's metadata that ``EmbeddingCache.store`` computes itself
_COMPUTED_META = ("key", "n", "d", "dtype", "sha256", "size_bytes", "created", "parts")


class _Events:
    """A Ray actor collecting the tasks' live events for the driver to poll."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, Any]] = []

    def add(self, unit_id: str, event: str, payload: Any) -> None:
        self.events.append((unit_id, event, payload))

    def drain(self) -> list[tuple[str, str, Any]]:
        out, self.events = self.events, []
        return out


def _ray_unit(unit_dict: dict, config_dict: dict, threads: int, embeddings: list[dict], events) -> dict:
    """Body of a Ray task: compute one unit; return its rows, the embeddings it computed and
    the node it ran on (through the object store)."""
    limit_threads(threads)
    import ray

    from repalign._paths import input_cache_home
    from repalign.schema import conform
    from repalign.study.config import StudyConfig
    from repalign.study.unit import run_unit

    unit = Unit.from_dict(unit_dict)
    # the IP names the machine; the id tells apart nodes sharing one (several raylets per host)
    node = f"{ray.util.get_node_ip_address()}/{ray.get_runtime_context().get_node_id()[:8]}"

    def report(event: str, payload: Any) -> None:
        if event == "stage" and events is not None:
            events.add.remote(unit.id, "stage", payload)

    if events is not None:
        events.add.remote(unit.id, "node", node)
    # inputs stay in the node's own store, shared by the tasks this node runs (content-addressed
    # and checked on every read); embeddings go to a private cache, returned to the driver
    os.environ.setdefault("REPALIGN_INPUT_CACHE_DIR", str(input_cache_home()))
    cache_dir = tempfile.mkdtemp(prefix="repalign-unit-")
    os.environ["REPALIGN_CACHE_HOME"] = cache_dir  # a fresh worker process per task: nothing else sees it
    try:
        shipped = store_embeddings(embeddings)
        rows = conform(run_unit(unit, StudyConfig.from_dict(config_dict), report))
        computed = [entry for entry in cached_embeddings(None) if entry["key"] not in shipped]
    finally:
        shutil.rmtree(cache_dir, ignore_errors=True)
    resources = ray.get_runtime_context().get_assigned_resources()
    return {"rows": rows, "embeddings": computed, "node": node, "resources": resources}


def cached_embeddings(model: str | None) -> list[dict]:
    """Every entry of this process's embedding cache (of ``model``: its name or resolved id),
    as ``{"key", "array", "parts", "info"}`` -- what travels between driver and tasks."""
    from repalign.embed import EmbeddingCache

    cache = EmbeddingCache()
    out = []
    for meta in cache.entries(model=None if model is None else glob.escape(model)):
        array = cache.load(meta["key"])  # checked against its sha256
        if array is not None:
            info = {k: v for k, v in meta.items() if k not in _COMPUTED_META}
            out.append({"key": meta["key"], "array": array, "parts": meta.get("parts", {}), "info": info})
    return out


def store_embeddings(entries: list[dict]) -> set[str]:
    """Put entries into this process's embedding cache; returns their keys."""
    from repalign.embed import EmbeddingCache

    cache = EmbeddingCache()
    for entry in entries:
        if not cache.contains(entry["key"]):
            cache.store(entry["key"], entry["array"], parts=entry["parts"], info=entry["info"])
    return {entry["key"] for entry in entries}


class RayExecutor:
    """One Ray task per unit on a Ray cluster.

    ``address``: ``""`` starts a private local cluster for this run (stopped afterwards);
    ``"auto"``, ``"HOST:PORT"`` or ``"ray://HOST:PORT"`` join a running one
    (:mod:`repalign.study.cluster`). When Ray is already initialised in this process (e.g. by a
    notebook or a test), that cluster is used.
    """

    name = "ray"

    def __init__(
        self,
        address: str = "",
        threads: int = 0,
        *,
        connect_timeout: float = opt.DEFAULT_CONNECT_TIMEOUT_S,
        token_file: str = "",
        gpu_memory_gb: int = 0,
    ):
        self.address = address
        self.threads = threads or 1
        self.connect_timeout = connect_timeout
        self.token_file = token_file
        self.gpu_memory_gb = gpu_memory_gb

    def run(self, units: list[Unit], config_dict: dict, on_event: EventCallback) -> Iterator[UnitResult]:
        try:
            import ray
        except ImportError as exc:
            raise OptionalDependencyError("ray", "ray", "The ray executor") from exc

        started_here = False
        if not ray.is_initialized():
            self._join(ray)
            started_here = True
        try:
            yield from self._run(ray, units, config_dict, on_event)
        finally:
            if started_here:
                ray.shutdown()

    def _join(self, ray) -> None:
        from repalign.study.cluster import (
            CLIENT_SERVER_ATTEMPTS,
            CLIENT_SERVER_RETRY_PAUSE_S,
            LOCAL_ADDRESSES,
            apply_auth_environment,
            auth_environment,
            client_server_died,
        )

        address = self.address or "local"
        apply_auth_environment(auth_environment(self.address, self.token_file))
        kwargs: dict[str, Any] = {"address": address, "log_to_driver": True}
        if address in LOCAL_ADDRESSES:
            kwargs["include_dashboard"] = False
        log.info("connecting to Ray (address=%s)", address)
        with _keep_sigterm_handler():
            for attempt in range(1, CLIENT_SERVER_ATTEMPTS + 1):
                try:
                    ray.init(**kwargs)
                    return
                except Exception as exc:  # ConnectionError, RuntimeError (version), ValueError (address), ...
                    # the Ray Client server started for this driver died at start: ask again.
                    # Counted, not timed: Ray takes ~30 s to report each one, so the connect
                    # timeout (which the check before the run kept) would allow none.
                    if not client_server_died(str(exc)) or attempt == CLIENT_SERVER_ATTEMPTS:
                        raise InputError(
                            f"Cannot start or join Ray at address {address!r}: {_ray_error(exc)}"
                        ) from None
                log.info("The Ray Client server for this driver died at start; asking %s again", address)
                with contextlib.suppress(Exception):
                    ray.shutdown()
                time.sleep(CLIENT_SERVER_RETRY_PAUSE_S)

    def _run(self, ray, units: list[Unit], config_dict: dict, on_event: EventCallback) -> Iterator[UnitResult]:
        from repalign.study.sizing import largest_first, unit_resources

        nodes = [n for n in ray.nodes() if n.get("Alive")]
        most_cpus = max((n["Resources"].get("CPU", 0) for n in nodes), default=0)
        if self.threads > most_cpus:  # a task asking for more would wait forever
            raise InputError(
                f"threads = {self.threads} CPUs per unit, but no node of the Ray cluster has more than "
                f"{most_cpus:g}; lower [execution] threads"
            )
        gpus = any(n["Resources"].get("GPU", 0) for n in nodes)
        most_memory = max((n["Resources"].get("memory", 0) for n in nodes), default=0) or None
        resources = unit_resources(units, gpus=gpus, gpu_memory_gb=self.gpu_memory_gb, node_memory_bytes=most_memory)
        pending = largest_first(units, resources)
        slots = sum(int(n["Resources"].get("CPU", 0) // self.threads) for n in nodes)
        window = 2 * max(1, slots)  # queued beyond the running ones: enough to keep every slot busy

        events = _start_events(ray)
        running: dict[Any, Unit] = {}
        try:
            task = ray.remote(max_retries=opt.RAY_TASK_RETRIES, max_calls=1)(_ray_unit)
            started: dict[str, float] = {}
            steps: dict[str, tuple[str, str | None]] = {}
            attempts: dict[str, int] = {}
            while pending or running:
                while pending and len(running) < window:
                    unit = pending.pop(0)
                    need = resources[unit.id]
                    ref = task.options(num_cpus=self.threads, num_gpus=need.num_gpus, memory=need.memory_bytes).remote(
                        unit.to_dict(), config_dict, self.threads, cached_embeddings(unit.model), events
                    )
                    running[ref] = unit
                    started[unit.id] = time.perf_counter()
                    on_event(unit, "start", None)
                done, _ = ray.wait(list(running), num_returns=1, timeout=1.0)
                events = self._forward_events(ray, events, running, steps, attempts, on_event)
                for ref in done:
                    unit = running.pop(ref)
                    try:
                        result = ray.get(ref)
                        rows = result["rows"]
                        store_embeddings(result["embeddings"])
                        log.info(
                            "%s ran on %s with %s; %d embedding arrays returned",
                            unit.model,
                            result["node"],
                            result["resources"],
                            len(result["embeddings"]),
                        )
                    except Exception as exc:  # RayTaskError, WorkerCrashedError, NodeDiedError, ...
                        tries = attempts.get(unit.id, 1)
                        reason = f"ray task failed: {_ray_error(exc)}" + (
                            f" (after {tries} attempts)" if tries > 1 else ""
                        )
                        rows = pd.DataFrame([crash_row(unit, steps.get(unit.id), reason)])
                    yield UnitResult(unit, rows, time.perf_counter() - started.pop(unit.id))
        finally:  # interrupted, or done: leave nothing of this run on a cluster that outlives it
            for ref in running:
                with contextlib.suppress(Exception):
                    ray.cancel(ref, force=True)
            if events is not None:
                with contextlib.suppress(Exception):
                    ray.kill(events)

    @staticmethod
    def _forward_events(ray, events, running, steps, attempts, on_event):
        """Pass the tasks' live events on; returns the event actor, or None once it is lost."""
        if events is None:
            return None
        try:
            batch = ray.get(events.drain.remote(), timeout=10)
        except Exception as exc:  # the actor's node died: go on without live details
            log.warning("live node/step details lost: %s", _ray_error(exc))
            return None
        by_id = {unit.id: unit for unit in running.values()}
        for unit_id, event, payload in batch:
            unit = by_id.get(unit_id)
            if unit is None:
                continue
            if event == "node":
                attempts[unit_id] = attempts.get(unit_id, 0) + 1
                on_event(unit, "node", (payload, attempts[unit_id]))
            elif event == "stage":
                steps[unit_id] = tuple(payload)
                on_event(unit, "stage", payload)
        return events


def _start_events(ray):
    """The live-event actor, on the head node when Ray says which that is; None if it cannot start."""
    try:
        actor = ray.remote(num_cpus=0, max_restarts=0)(_Events)
        head = {"node:__internal_head__": 0.001} if ray.cluster_resources().get("node:__internal_head__") else {}
        return actor.options(resources=head).remote()
    except Exception as exc:
        log.warning("no live node/step details: %s", _ray_error(exc))
        return None


def _ray_error(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[-1] if text else ''}"[:2000]


@contextlib.contextmanager
def _keep_sigterm_handler():
    """``ray.init`` installs its own SIGTERM handler in the driver; keep the caller's (the
    CLI turns SIGTERM into a clean interruption, exit code 143)."""
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM) if in_main else None
    try:
        yield
    finally:
        if in_main and previous is not None:
            signal.signal(signal.SIGTERM, previous)
