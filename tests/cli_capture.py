"""Run the ``repalign`` command line in this process and capture what a terminal would see.

``run_cli(argv)`` calls :func:`repalign.cli.main` with stdout and stderr redirected and the
root logger reset for the call, so log warnings land on the captured stderr exactly as they
would in a shell (pytest's own log handlers would otherwise take them). Much faster than a
subprocess per call, which matters for tests that try many inputs.
"""

from __future__ import annotations

import contextlib
import io
import logging
import traceback
from dataclasses import dataclass


@dataclass
class CliResult:
    code: int | str | None  # exit code; "crash" when an exception escaped main()
    out: str
    err: str

    @property
    def err_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.strip()]


def run_cli(argv: list[str]) -> CliResult:
    from repalign.cli import main

    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    for handler in saved_handlers:
        root.removeHandler(handler)
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main([str(a) for a in argv])
            except SystemExit as exc:  # argparse
                code = exc.code
            except BaseException:  # what a user would see as a traceback
                traceback.print_exc()
                code = "crash"
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved_handlers:
            root.addHandler(handler)
        root.setLevel(saved_level)
    return CliResult(code, out.getvalue(), err.getvalue())
