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


def unknown_name(kind: str, name: str, choices: Iterable[str]) -> UnknownNameError:
    """Build the standard "Unknown <kind> 'x'. Did you mean: ...?" error."""
    choices = list(choices)
    hint = did_you_mean(name, choices)
    if not hint and len(choices) <= 12:
        hint = f" Valid: {', '.join(sorted(choices))}."
    return UnknownNameError(f"Unknown {kind} '{name}'.{hint}")
