"""The one progress bar: drawn on stderr only when asked to and stderr is a terminal."""

from __future__ import annotations

import io

import pytest

from repalign._progress import progress_bar
from repalign.errors import InputError


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("unit", ["items", "bytes"])
def test_draws_on_a_terminal(unit):
    stream = Terminal()
    with progress_bar("photos on pixels", 40, stream=stream, unit=unit) as advance:
        for _ in range(4):
            advance(10)
    assert "photos on pixels" in stream.getvalue()


def test_silent_when_not_a_terminal_or_not_enabled(capsys):
    pipe = io.StringIO()
    with progress_bar("quiet", 3, stream=pipe) as advance:
        advance()
        advance(2)
    assert pipe.getvalue() == ""
    with progress_bar("off", 3, enabled=False, stream=Terminal()) as advance:
        advance(3)
    with progress_bar("stderr", 3) as advance:  # pytest's captured stderr is not a terminal
        advance(3)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_unknown_total_and_errors_inside_the_bar():
    stream = Terminal()
    with (
        pytest.raises(RuntimeError, match="boom"),
        progress_bar("download", None, stream=stream, unit="bytes") as advance,
    ):
        advance(1024)
        raise RuntimeError("boom")


def test_unit_must_be_known():
    with pytest.raises(InputError, match="unit must be one of items, bytes"), progress_bar("x", 1, unit="files"):
        pass
