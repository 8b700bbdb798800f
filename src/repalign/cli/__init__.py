"""The ``repalign`` command line: a thin layer that parses, calls library functions, formats.

Each subcommand lives in its own module exposing ``register(subparsers)``, which adds
its parser and sets ``handler`` (a function ``(args) -> int``). Modules import heavy
libraries (torch, timm, ray) inside their handlers only, so ``repalign --help`` stays
fast and never imports torch.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from repalign import __version__
from repalign.errors import RepalignError

# Order here is the order in `repalign --help`.
SUBCOMMAND_MODULES = (
    "run",
    "results",
    "report",
    "align",
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
EXIT_USAGE = 2  # bad input or configuration (also argparse's own code)
EXIT_INTERRUPTED = 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="repalign",
        description="Measure how human-aligned model representations are, and what alignment buys "
        "for few-shot learning and robustness.",
    )
    parser.add_argument("--version", action="version", version=f"repalign {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
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
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "handler", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args.handler(args) or 0)
    except RepalignError as exc:
        print(f"repalign: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("repalign: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # e.g. `repalign results DIR | head`
        return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
