"""Executors: where units run. Both yield finished units to the driver, which alone writes
the result store -- so workers never touch the study directory.

``local``
    N worker processes on this machine, one fresh process per unit ('spawn' start method:
    no state inherited from the driver, no fork of a process that holds threads). The
    worker streams its rows to the driver through a pipe as each step finishes. When a
    worker dies without finishing -- segfault in native code, ``os._exit``, the OOM
    killer -- the driver keeps the rows already received and adds a failed row naming the
    signal and the step in progress; the other workers are not affected.

``ray``
    One Ray task per unit (``max_retries=0``: a crash is a result, not a retry loop;
    ``max_calls=1``: a fresh worker process per unit, so GPU memory and thread settings do
    not leak between models). Each task asks for ``threads`` CPUs and, when the cluster has
    GPUs, one GPU. A task returns its rows as a pandas DataFrame through Ray's object store
    to the driver, which writes the store: **no shared filesystem is needed** for results.
    Embeddings are cached per node (``$REPALIGN_CACHE_HOME`` of each node) unless that
    variable points at shared storage; data is fetched per node (mirror or download).
    A task that dies (``WorkerCrashedError``) or raises becomes a failed row.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pandas as pd

from repalign._options import DEFAULT_JOBS, EXECUTORS
from repalign.errors import InputError, OptionalDependencyError
from repalign.store import STATUS_FAILED, utc_now
from repalign.study.plan import Unit

log = logging.getLogger(__name__)


@dataclass
class UnitResult:
    """A unit that ended: its rows (schema columns) and whether the process crashed."""

    unit: Unit
    rows: pd.DataFrame
    duration_s: float


#: on_event(unit, event, payload): "start" (None) and "stage" ((stage, dataset)).
EventCallback = Callable[[Unit, str, Any], None]


def default_threads(jobs: int) -> int:
    """CPU threads per unit when ``[execution] threads = 0``: the cores shared by the workers."""
    return max(1, (os.cpu_count() or 1) // max(1, jobs))


def limit_threads(threads: int) -> None:
    """Cap BLAS/OpenMP/numba/torch threads of this worker process.

    Called first thing in a fresh worker, so the environment variables take effect when
    torch or numba are imported later; torch is not imported here just for this (a
    ``pixels`` or TFLite unit never needs it).
    """
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[var] = str(threads)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(threads)


def crash_row(unit: Unit, step: tuple[str, str | None] | None, reason: str) -> dict[str, Any]:
    stage, dataset = step if step else ((unit.stages or ("alignment",))[0], None)
    where = f" during {stage}" + (f" on {dataset}" if dataset else "")
    return {
        "model": unit.model,
        "unit": unit.id,
        "stage": stage,
        "dataset": dataset,
        "status": STATUS_FAILED,
        "error": f"{reason}{where}",
        "timestamp": utc_now(),
    }


# ---------------------------------------------------------------------------------------
# local
# ---------------------------------------------------------------------------------------
def _local_worker(unit_dict: dict, config_dict: dict, threads: int, log_level: int, conn, parent_pid: int) -> None:
    """Entry point of a local worker process (runs in a fresh 'spawn' interpreter)."""
    limit_threads(threads)
    logging.basicConfig(level=log_level, format="%(levelname)s %(name)s: %(message)s")
    _exit_with_parent(parent_pid)

    from repalign.study.config import StudyConfig
    from repalign.study.unit import run_unit

    def report(event: str, payload: Any) -> None:
        conn.send((event, payload))

    try:
        run_unit(Unit.from_dict(unit_dict), StudyConfig.from_dict(config_dict), report)
        conn.send(("done", None))
    except BaseException as exc:  # noqa: BLE001 - the driver records it
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()
    # Everything is delivered; skip interpreter teardown (seconds with torch, numba and
    # TFLite loaded) so the next unit starts sooner. Cache files are already complete.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _exit_with_parent(parent_pid: int) -> None:
    """Stop this worker when the driver dies (e.g. SIGKILL): nobody would collect its rows."""

    def watch() -> None:
        while True:
            if os.getppid() != parent_pid:
                os._exit(1)
            time.sleep(1.0)

    threading.Thread(target=watch, daemon=True, name="parent-watch").start()


class LocalExecutor:
    """Run units in up to ``jobs`` concurrent worker processes on this machine."""

    name = "local"

    def __init__(self, jobs: int = DEFAULT_JOBS, threads: int = 0):
        from repalign.embed import usable_cpus

        cpus = usable_cpus()
        if jobs > cpus:  # each worker is a Python process importing torch: more than cores only thrash
            log.warning(
                "jobs = %d but this machine lets the run use %d CPUs: running %d units at once", jobs, cpus, cpus
            )
        self.jobs = max(1, min(jobs, cpus))
        self.threads = threads or default_threads(self.jobs)

    def run(self, units: list[Unit], config_dict: dict, on_event: EventCallback) -> Iterator[UnitResult]:
        import multiprocessing as mp
        from multiprocessing.connection import wait

        ctx = mp.get_context("spawn")
        pending = list(units)
        running: dict[int, _Running] = {}  # sentinel -> running unit
        log_level = logging.getLogger().getEffectiveLevel()
        try:
            while pending or running:
                while pending and len(running) < self.jobs:
                    unit = pending.pop(0)
                    receiver, sender = ctx.Pipe(duplex=False)
                    process = ctx.Process(
                        target=_local_worker,
                        args=(unit.to_dict(), config_dict, self.threads, log_level, sender, os.getpid()),
                        name=f"repalign-{unit.id}",
                        daemon=False,
                    )
                    with _main_module_importable():
                        process.start()
                    sender.close()  # the child holds the only write end: EOF when it dies
                    running[process.sentinel] = _Running(unit, process, receiver, time.perf_counter())
                    on_event(unit, "start", None)

                ready = wait([r.conn for r in running.values()] + list(running), timeout=1.0)
                for item in ready:
                    for state in running.values():
                        if item is state.conn:
                            state.drain(on_event)
                for sentinel in [s for s in running if s in ready]:
                    state = running.pop(sentinel)
                    state.drain(on_event)
                    state.process.join()
                    yield state.result()
        finally:
            for state in running.values():  # interrupted: stop the workers we started
                if state.process.is_alive():
                    state.process.terminate()
                state.process.join(timeout=10)


@contextlib.contextmanager
def _main_module_importable():
    """'spawn' re-runs the driver's ``__main__`` file in each worker; when that "file" does
    not exist (``python - <<EOF``, ``python -c``) the worker would die before starting.
    Hide such a path while starting the process, as multiprocessing does for interactive
    sessions."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if path is None or os.path.isfile(path) or getattr(main, "__spec__", None) is not None:
        yield
        return
    del main.__file__
    try:
        yield
    finally:
        main.__file__ = path


class _Running:
    def __init__(self, unit: Unit, process, conn, started: float):
        self.unit, self.process, self.conn, self.started = unit, process, conn, started
        self.rows: list[dict] = []
        self.step: tuple[str, str | None] | None = None
        self.finished = False
        self.error: str | None = None

    def drain(self, on_event: EventCallback) -> None:
        try:
            while self.conn.poll():
                event, payload = self.conn.recv()
                if event == "rows":
                    self.rows.extend(payload)
                elif event == "stage":
                    self.step = tuple(payload)
                    on_event(self.unit, "stage", payload)
                elif event == "done":
                    self.finished = True
                elif event == "error":
                    self.error = payload
        except (EOFError, OSError):
            pass  # the worker is gone; its sentinel reports how

    def result(self) -> UnitResult:
        rows = list(self.rows)
        if not self.finished:
            code = self.process.exitcode
            if self.error:
                reason = f"worker failed: {self.error}"
            elif code is not None and code < 0:
                reason = f"worker process killed by signal {signal.Signals(-code).name}"
            else:
                reason = f"worker process exited with code {code}"
            rows.append(crash_row(self.unit, self.step, reason))
        return UnitResult(self.unit, pd.DataFrame(rows), time.perf_counter() - self.started)


# ---------------------------------------------------------------------------------------
# ray
# ---------------------------------------------------------------------------------------
def _ray_unit(unit_dict: dict, config_dict: dict, threads: int) -> pd.DataFrame:
    """Body of a Ray task: compute one unit, return its rows (through the object store)."""
    limit_threads(threads)
    from repalign.schema import conform
    from repalign.study.config import StudyConfig
    from repalign.study.unit import run_unit

    return conform(run_unit(Unit.from_dict(unit_dict), StudyConfig.from_dict(config_dict)))


class RayExecutor:
    """One Ray task per unit on a Ray cluster.

    ``address``: ``""`` starts a private local cluster for this run (stopped afterwards);
    ``"auto"`` joins the cluster of this node; ``"HOST:PORT"`` joins a remote one. When Ray
    is already initialised in this process (e.g. by a notebook or a test), that cluster is used.
    """

    name = "ray"

    def __init__(self, address: str = "", threads: int = 0):
        self.address = address
        self.threads = threads or 1

    def run(self, units: list[Unit], config_dict: dict, on_event: EventCallback) -> Iterator[UnitResult]:
        try:
            import ray
        except ImportError as exc:
            raise OptionalDependencyError("ray", "ray", "The ray executor") from exc

        started_here = False
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": True}
            kwargs["address"] = self.address or "local"
            log.info("connecting to Ray (address=%s)", kwargs["address"])
            check_ray_address(kwargs["address"])
            with _keep_sigterm_handler():
                try:
                    ray.init(**kwargs)
                except Exception as exc:  # ConnectionError ("no running Ray instance"), ValueError (address), ...
                    raise InputError(
                        f"Cannot start or join Ray at address {kwargs['address']!r}: {_ray_error(exc)}"
                    ) from None
            started_here = True
        try:
            resources = ray.cluster_resources()
            if self.threads > resources.get("CPU", 0):  # a task asking for more would wait forever
                raise InputError(
                    f"threads = {self.threads} CPUs per unit, but the Ray cluster has {resources.get('CPU', 0):g}; "
                    "lower [execution] threads"
                )
            gpus = resources.get("GPU", 0)
            remote = ray.remote(num_cpus=self.threads, num_gpus=1 if gpus else 0, max_retries=0, max_calls=1)(_ray_unit)
            refs = {}
            starts = {}
            for unit in units:
                ref = remote.remote(unit.to_dict(), config_dict, self.threads)
                refs[ref] = unit
                starts[ref] = time.perf_counter()
                on_event(unit, "start", None)
            while refs:
                done, _ = ray.wait(list(refs), num_returns=1, timeout=1.0)
                for ref in done:
                    unit = refs.pop(ref)
                    try:
                        rows = ray.get(ref)
                    except Exception as exc:  # RayTaskError, WorkerCrashedError, ...
                        rows = pd.DataFrame([crash_row(unit, None, f"ray task failed: {_ray_error(exc)}")])
                    yield UnitResult(unit, rows, time.perf_counter() - starts.pop(ref))
        finally:
            if started_here:
                ray.shutdown()


def _ray_error(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[-1] if text else ''}"[:2000]


#: seconds to wait for a Ray cluster's port to answer before saying it is unreachable
RAY_CONNECT_TIMEOUT_S = 5.0


def check_ray_address(address: str, *, timeout: float = RAY_CONNECT_TIMEOUT_S) -> None:
    """Before any work: a Ray cluster named by ``HOST:PORT`` (or ``ray://HOST:PORT``) answers
    on its port within ``timeout`` seconds. Ray itself waits minutes for an address where
    nothing listens; ``""``/``"local"`` (a private cluster) and ``"auto"`` are left to it.

    Raises:
        InputError: naming the address and why it cannot be reached.
    """
    import socket

    if address in ("", "local", "auto"):
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InputError(f"Ray address {address!r} is not HOST:PORT (or auto, or ray://HOST:PORT)")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as exc:
        from repalign._io import describe_os_error

        reason = f"no answer within {timeout:g} s" if isinstance(exc, TimeoutError) else describe_os_error(exc)
        raise InputError(
            f"No Ray cluster answers at {address} ({reason}); start one with `ray start --head`, "
            "or fix --address / [execution] address"
        ) from None


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


def make_executor(name: str, *, jobs: int = DEFAULT_JOBS, threads: int = 0, address: str = ""):
    if name == "local":
        return LocalExecutor(jobs=jobs, threads=threads)
    if name == "ray":
        return RayExecutor(address=address, threads=threads)
    from repalign.errors import unknown_name

    raise unknown_name("executor", name, EXECUTORS)
