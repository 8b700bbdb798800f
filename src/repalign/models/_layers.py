"""The error for a layer name a model does not have."""

from __future__ import annotations

from collections.abc import Sequence

from repalign.errors import UnknownNameError, did_you_mean


def unknown_layer(model: str, layer: str, available: Sequence[str]) -> UnknownNameError:
    """``Unknown layer 'x' of MODEL. Did you mean: ...?`` (or the first few valid names)."""
    hint = did_you_mean(layer, available)
    if not hint:
        shown = ", ".join(list(available)[:8])
        more = f", ... ({len(available)} in all; see handle.available_layers())" if len(available) > 8 else ""
        hint = f" Valid: {shown}{more}."
    return UnknownNameError(f"Unknown layer '{layer}' of {model}.{hint}")


def one_line(exc: BaseException, limit: int = 600) -> str:
    """An exception's message on one line (torch's load errors span many), shortened."""
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
