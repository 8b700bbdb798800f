"""Progress of a study run: a rich live display on a terminal, plain log lines otherwise.

Both show models done / total, the step each running model is in, failures so far and an
ETA (mean duration of finished units x units left / units running at once).
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

from repalign.study.plan import Unit

#: Plain progress lines go through this logger (with its own stdout handler, so they show
#: without -v and never mix with warnings on stderr).
progress_log = logging.getLogger("repalign.study.progress")


def _escape(text: str) -> str:
    """User text (model and dataset names) shown as written inside rich markup: "[/bold]"
    would otherwise be a MarkupError, "[red]x" a red "x"."""
    from rich.markup import escape

    return escape(text)


class StudyProgress:
    """Tracks and shows the progress of one run.

    Args:
        total: units in the study (finished ones included).
        already_done: units skipped because the store has them.
        parallel: units running at once (for the ETA).
        live: True for the rich display, False for log lines, None = rich when stdout is a tty.
    """

    def __init__(self, total: int, *, already_done: int = 0, parallel: int = 1, live: bool | None = None, stream=None):
        self.total = total
        self.done = already_done
        self.skipped = already_done
        self.failed = 0
        self.parallel = max(1, parallel)
        self.stream = stream or sys.stdout
        self.live = self.stream.isatty() if live is None else live
        self.durations: list[float] = []
        self.started = time.monotonic()
        self._steps: dict[str, str] = {}
        self._nodes: dict[str, str] = {}  # ray: where each running unit runs
        self._rich = None
        if self.live:
            self._start_rich()
        else:
            self._ensure_handler()
            progress_log.info(
                "study: %d models, %d already finished, %d to run", total, already_done, total - already_done
            )

    # -- events --------------------------------------------------------------------------
    def unit_started(self, unit: Unit) -> None:
        self._steps[unit.id] = "starting"
        if self._rich:
            self._rich_tasks[unit.id] = self._rich.add_task(
                f"  {_escape(unit.model)}", total=None, step="starting", failures="", eta=""
            )
        else:
            progress_log.info("[%d/%d] start %s", self.done, self.total, unit.model)

    def unit_node(self, unit: Unit, node: str, attempt: int = 1) -> None:
        """Ray: the unit runs on ``node`` (a second attempt: Ray retries it after a lost worker or node)."""
        where = f"on {node}" + (f" (attempt {attempt})" if attempt > 1 else "")
        self._nodes[unit.id] = where
        if self._rich and unit.id in self._rich_tasks:
            self._rich.update(self._rich_tasks[unit.id], step=_escape(f"{self._steps.get(unit.id, '')} {where}"))
        elif not self._rich:
            progress_log.info("        %s: running %s", unit.model, where)

    def unit_step(self, unit: Unit, stage: str, dataset: str | None) -> None:
        step = f"{stage} {dataset}" if dataset else stage
        self._steps[unit.id] = step
        if unit.id in self._nodes:
            step = f"{step} {self._nodes[unit.id]}"
        if self._rich and unit.id in self._rich_tasks:
            self._rich.update(self._rich_tasks[unit.id], step=_escape(step))
        elif not self._rich:
            progress_log.info("        %s: %s", unit.model, step)

    def unit_finished(self, unit: Unit, *, n_failed_rows: int, duration_s: float) -> None:
        self.done += 1
        self.durations.append(duration_s)
        self.failed += bool(n_failed_rows)
        self._steps.pop(unit.id, None)
        self._nodes.pop(unit.id, None)
        status = f"FAILED ({n_failed_rows} failed rows)" if n_failed_rows else "ok"
        if self._rich:
            task = self._rich_tasks.pop(unit.id, None)
            if task is not None:
                self._rich.remove_task(task)
            self._rich.update(self._main, completed=self.done, failures=self._failure_text())
            self._refresh_eta()
            if n_failed_rows:
                self._rich.console.print(f"[red]failed[/red] {_escape(unit.model)}")
        else:
            progress_log.info(
                "[%d/%d] %s %s in %.1fs; failures %d; ETA %s",
                self.done,
                self.total,
                status,
                unit.model,
                duration_s,
                self.failed,
                self.eta_text(),
            )

    def close(self) -> None:
        if self._rich:
            self._rich.stop()
            self._rich = None

    # -- ETA -----------------------------------------------------------------------------
    def eta_seconds(self) -> float | None:
        if not self.durations:
            return None
        remaining = self.total - self.done
        mean = sum(self.durations) / len(self.durations)
        return remaining * mean / self.parallel

    def eta_text(self) -> str:
        eta = self.eta_seconds()
        if eta is None:
            return "unknown"
        minutes, seconds = divmod(int(round(eta)), 60)
        return f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"

    # -- rendering -----------------------------------------------------------------------
    def _failure_text(self) -> str:
        return f"[red]{self.failed} failed[/red]" if self.failed else "0 failed"

    def _start_rich(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        columns: list[Any] = [
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[failures]}"),
            TimeElapsedColumn(),
            TextColumn("ETA {task.fields[eta]}"),
            TextColumn("[dim]{task.fields[step]}"),
        ]
        self._rich = Progress(*columns, console=Console(file=self.stream), refresh_per_second=4, transient=False)
        self._rich_tasks: dict[str, Any] = {}
        self._main = self._rich.add_task(
            "models", total=self.total, completed=self.done, failures=self._failure_text(), eta="-", step=""
        )
        self._rich.start()
        self._refresh_eta()

    def _refresh_eta(self) -> None:
        # rich's own ETA column would count skipped units as instant work; ours does not
        if self._rich:
            self._rich.update(self._main, eta=self.eta_text())

    def _ensure_handler(self) -> None:
        for old in [h for h in progress_log.handlers if getattr(h, "_repalign_progress", False)]:
            progress_log.removeHandler(old)
        handler = logging.StreamHandler(self.stream)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", datefmt="%H:%M:%S"))
        handler._repalign_progress = True  # type: ignore[attr-defined]
        progress_log.addHandler(handler)
        progress_log.setLevel(logging.INFO)
        progress_log.propagate = False
