"""docs/ARCHITECTURE.md describes the code as it is: every module of the package is in its tree,
every module the tree names exists, and the layer table names the packages import-linter checks."""

from __future__ import annotations

import re
import sys
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
PACKAGE = PROJECT / "src" / "repalign"
DOC = PROJECT / "docs" / "ARCHITECTURE.md"


def _tree_entries() -> set[str]:
    """Paths (relative to src/repalign) named in the doc's tree block, folders with a trailing '/'."""
    text = DOC.read_text()
    block = text[text.index("```\nsrc/repalign/") + 4 :]
    block = block[: block.index("```")]
    entries: set[str] = set()
    folders: list[tuple[int, str]] = []  # (indent, folder path) of the enclosing folders
    for line in block.splitlines()[1:]:
        match = re.match(r"^( +)(\S+)", line)
        if not match or line.strip().startswith(("tests/", "benchmarks/", "docs/")):
            continue
        indent, first = len(match.group(1)), match.group(2)
        if indent > 8:
            continue  # a continuation line of a description (entries nest at most three deep)
        names = [n.strip() for n in line.strip().split("  ")[0].split(",")] if first.endswith(",") else [first]
        if not all(re.fullmatch(r"[\w.]+/?", n) for n in names):
            continue
        while folders and folders[-1][0] >= indent:
            folders.pop()
        parent = folders[-1][1] if folders else ""
        for name in names:
            entries.add(parent + name)
            if name.endswith("/"):
                folders.append((indent, parent + name))
    return entries


def _code_entries() -> set[str]:
    entries: set[str] = set()
    for path in PACKAGE.rglob("*"):
        if "__pycache__" in path.parts or path.suffix == ".pyc":
            continue
        rel = path.relative_to(PACKAGE).as_posix()
        if path.is_dir():
            if any(path.glob("*.py")) or path.name == "templates":
                entries.add(rel + "/")
        elif path.suffix == ".py" and not (path.name == "__init__.py" and rel != "__init__.py"):
            entries.add(rel)
    return entries


def test_every_module_is_in_the_architecture_tree_and_every_listed_module_exists():
    documented, actual = _tree_entries(), _code_entries()
    documented = {e for e in documented if not e.endswith("/__init__.py")}  # a package's face, optional
    # the templates folder is listed as a folder; its files are named on its line
    documented = {e for e in documented if not e.startswith("report/templates/") or e == "report/templates/"}
    actual = {e for e in actual if not e.startswith("report/templates/") or e == "report/templates/"}
    assert actual - documented == set(), "modules missing from docs/ARCHITECTURE.md"
    assert documented - actual == set(), "docs/ARCHITECTURE.md lists modules that do not exist"


def test_layer_table_matches_the_import_linter_contract():
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    contract = tomllib.loads((PROJECT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"][0]
    in_contract = {name.strip() for layer in contract["layers"] for name in re.split(r"[|:]", layer)}
    text = DOC.read_text()
    table = text[text.index("| layer (bottom to top)") : text.index("\n\n", text.index("| layer (bottom to top)"))]
    in_doc = {name.strip("`/") for name in re.findall(r"`[\w/]+`", table)}
    assert in_doc == in_contract
