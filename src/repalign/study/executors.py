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
    One Ray task per unit on a Ray cluster (:mod:`repalign.study.ray_executor`; joining a
    cluster: :mod:`repalign.study.cluster`; what each unit asks for: :mod:`repalign.study.sizing`).
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


def make_executor(name: str, *, jobs: int = DEFAULT_JOBS, threads: int = 0, address: str = "", **ray_options):
    """``local`` or ``ray``; ``ray_options`` (connect_timeout, token_file, gpu_memory_gb) go to the
    :class:`~repalign.study.ray_executor.RayExecutor`."""
    if name == "local":
        return LocalExecutor(jobs=jobs, threads=threads)
    if name == "ray":
        from repalign.study.ray_executor import RayExecutor

        return RayExecutor(address=address, threads=threads, **ray_options)
    from repalign.errors import unknown_name

    raise unknown_name("executor", name, EXECUTORS)
