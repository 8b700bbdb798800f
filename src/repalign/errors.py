"""Exception types of repalign.

Every error a user can cause subclasses :class:`RepalignError` *and* the builtin
exception that describes it best, so ``except ValueError`` keeps working for callers
who do not know about repalign. The CLI turns any ``RepalignError`` into a one-line
message and a non-zero exit code, without a traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class RepalignError(Exception):
    """Base class of every error repalign raises on purpose."""


class InputError(RepalignError, ValueError):
    """Bad input: wrong shape, impossible value, malformed file."""


class ConfigError(InputError):
    """A study configuration that is invalid (names the key, and the line when known)."""


class UnknownNameError(RepalignError, KeyError):
    """A model, dataset, metric or option name that does not exist."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0]) if self.args else ""


class MissingDataError(RepalignError, FileNotFoundError):
    """Data (a dataset file, images, weights) that is not available here.

    ``dataset`` names the registered dataset it belongs to, when known, so a caller can say
    where that dataset stands (e.g. "not downloaded yet") instead of repeating the message.
    """

    def __init__(self, *args: object, dataset: str | None = None):
        super().__init__(*args)
        self.dataset = dataset


class ChecksumError(RepalignError, OSError):
    """A file whose content does not match its expected checksum."""


class UnsafePickleError(RepalignError, ValueError):
    """A pickle that tries to build anything but the few plain types we allow."""


class OptionalDependencyError(RepalignError, ImportError):
    """An optional package needed for the requested feature is not installed."""

    def __init__(self, package: str, extra: str, feature: str):
        super().__init__(
            f"{feature} needs the optional package '{package}'. Install it with: pip install 'repalign[{extra}]'"
        )
        self.package = package
        self.extra = extra


def did_you_mean(name: str, choices: Iterable[str], n: int = 5) -> str:
    """Return ' Did you mean: a, b?' for the closest valid names, or '' if none is close."""
    matches = difflib.get_close_matches(name, list(choices), n=n, cutoff=0.5)
    return f" Did you mean: {', '.join(matches)}?" if matches else ""


def quote_token(text: object, limit: int = 32) -> str:
    """``text`` quoted for an error message: one line, control characters escaped, cut to ``limit``.

    Messages about a file that failed to parse identify the problem with at most a short
    token of it (a cell, a name), never more of the file's content.
    """
    text = str(text)
    cut = text if len(text) <= limit else text[: limit - 3] + "..."
    return repr(cut)  # escapes newlines, tabs and other control characters


def quote_tokens(values: Iterable[object], *, shown: int = 3, limit: int = 32) -> str:
    """The first ``shown`` values quoted by :func:`quote_token`, then how many more there are."""
    values = list(values)
    text = ", ".join(quote_token(v, limit) for v in values[:shown])
    return text + (f" and {len(values) - shown} more" if len(values) > shown else "")


def first_line(exc: BaseException, *, with_type: bool = False, limit: int = 160) -> str:
    """An exception's message for a one-line error: its first line, cut to ``limit``, or its type.

    Parsers' messages can run to many lines or quote the input at length (a decode error's
    repr holds the whole byte string); this keeps what names the problem. ``with_type``
    prefixes the exception's type (``"BadZipFile: File is not a zip file"``).
    """
    lines = str(exc).splitlines()
    if not lines or not lines[0].strip():
        return type(exc).__name__
    text = lines[0] if len(lines[0]) <= limit else lines[0][: limit - 3] + "..."
    return f"{type(exc).__name__}: {text}" if with_type else text


def unknown_name(kind: str, name: str, choices: Iterable[str]) -> UnknownNameError:
    """Build the standard "Unknown <kind> 'x'. Did you mean: ...?" error."""
    choices = list(choices)
    hint = did_you_mean(name, choices)
    if not hint and len(choices) <= 12:
        hint = f" Valid: {', '.join(sorted(choices))}."
    return UnknownNameError(f"Unknown {kind} '{name}'.{hint}")
