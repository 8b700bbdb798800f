"""The ``repalign`` command line: a thin layer that parses, calls library functions, formats.

Each subcommand lives in its own module exposing ``register(subparsers)``, which adds
its parser and sets ``handler`` (a function ``(args) -> int``). Modules import heavy
libraries (torch, timm, ray) inside their handlers only, so ``repalign --help`` stays
fast and never imports torch.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import signal
import sys
import threading

from repalign import __version__
from repalign.errors import RepalignError

# Order here is the order in `repalign --help`.
SUBCOMMAND_MODULES = (
    "run",
    "results",
    "report",
    "align",
    "compare",
    "embed",
    "fewshot",
    "models",
    "data",
    "cache",
    "theory",
)

#: Exit codes, documented in the README.
EXIT_OK = 0
EXIT_UNITS_FAILED = 3  # `repalign run`: the study finished but some units failed
EXIT_USAGE = 2  # bad input or configuration (also argparse's own code), a file that cannot be read or written
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT)
EXIT_TERMINATED = 143  # SIGTERM (128 + SIGTERM)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like Ctrl-C's KeyboardInterrupt: the same cleanup
    runs (workers stopped, the study's manifest says "interrupted"), then exit code 143."""


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors on one line (the usage is one ``--help`` away). An unknown
    option is the exception: the (sub)command's usage comes first, since what is wrong is
    which options it takes; the error is still the last line."""

    def error(self, message: str):
        if message.startswith("unrecognized arguments"):
            self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {' '.join(message.split())} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="repalign",
        description="Measure how human-aligned model representations are, and what alignment buys "
        "for few-shot learning and robustness.",
    )
    parser.add_argument("--version", action="version", version=f"repalign {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(f"repalign.cli.{name}")
        except ModuleNotFoundError as exc:  # a subcommand not written yet must not break the others
            if exc.name == f"repalign.cli.{name}":
                continue
            raise
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # the subcommand's usage, not the top-level one: its options are the ones to fix
        _subparser(parser, args).error(f"unrecognized arguments: {' '.join(unknown)}")
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "handler", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        with _sigterm_as_interrupt():
            return int(args.handler(args) or 0)
    except RepalignError as exc:
        _error(str(exc))
        return EXIT_USAGE
    except Terminated:
        print("repalign: terminated (SIGTERM)", file=sys.stderr)
        return EXIT_TERMINATED
    except KeyboardInterrupt:
        print("repalign: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # e.g. `repalign results DIR | head`
        return EXIT_OK
    except OSError as exc:  # a file that cannot be read or written: which one, and why (errno)
        from repalign._io import describe_os_error

        logging.getLogger(__name__).debug("OS error", exc_info=True)
        where = f"{os.fsdecode(exc.filename)}: " if isinstance(exc.filename, (str, bytes, os.PathLike)) else ""
        _error(f"{where}{describe_os_error(exc)}")
        return EXIT_USAGE


def _subparser(parser: argparse.ArgumentParser, args) -> argparse.ArgumentParser:
    """The innermost (sub)command parser ``args`` came from: ``repalign data fetch``'s, say."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            chosen = getattr(args, action.dest, None)
            if chosen in action.choices:
                return _subparser(action.choices[chosen], args)
    return parser


def _error(message: str) -> None:
    """One line on stderr, whatever the message holds (a path or a parser's text may hold newlines)."""
    print(f"repalign: error: {' '.join(message.split())}", file=sys.stderr)


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """SIGTERM raises :class:`Terminated` in the main thread while a command runs (signal
    handlers can only be set there; elsewhere, e.g. a test's thread, nothing changes)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
