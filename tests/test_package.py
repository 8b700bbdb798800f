"""The package's promises about itself: cheap import, a torch-free CLI help, one-line errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

from repalign.cli import SUBCOMMAND_MODULES, build_parser

_PROBE = """
import sys
from repalign.cli import main
try:
    main({argv!r}[1:])
except SystemExit:
    pass
heavy = sorted(m for m in ("torch", "timm", "ray", "matplotlib", "torchvision") if m in sys.modules)
print("HEAVY:" + ",".join(heavy))
"""


def _heavy_modules_after(argv: list[str]) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE.format(argv=argv)], capture_output=True, text=True, timeout=120
    ).stdout
    line = [l for l in out.splitlines() if l.startswith("HEAVY:")][-1]
    return [m for m in line[len("HEAVY:") :].split(",") if m]


def test_import_does_not_import_torch():
    code = "import sys, repalign; repalign.__dir__(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_top_level_help_does_not_import_heavy_libraries():
    assert _heavy_modules_after(["repalign", "--help"]) == []


@pytest.mark.parametrize("command", SUBCOMMAND_MODULES)
def test_every_subcommand_is_registered_with_torch_free_help(command):
    parser = build_parser()
    choices = parser._subparsers._group_actions[0].choices  # argparse keeps subparsers here
    assert command in choices, f"subcommand '{command}' is not registered"
    assert _heavy_modules_after(["repalign", command, "--help"]) == []


def test_unknown_subcommand_is_a_usage_error():
    result = subprocess.run([sys.executable, "-m", "repalign.cli", "no-such-command"], capture_output=True, text=True)
    assert result.returncode == 2
    assert "invalid choice" in result.stderr


def test_public_names_resolve():
    import repalign

    for name in ("similarity_matrix", "triplet_alignment", "load_human", "load_study"):
        assert callable(getattr(repalign, name))
    with pytest.raises(AttributeError, match="no attribute"):
        repalign.not_a_public_name  # noqa: B018
