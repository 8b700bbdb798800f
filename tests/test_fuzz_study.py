"""Fuzz: seeded random bytes, truncations and flipped bytes as every file a study reads,
fed through the command line (`repalign run`, `results`, `report`).

Each input must end cleanly: exit code 2 with exactly one line on stderr (an error), or exit
code 0 (the input was still valid, or a damaged store file was named on stderr and left out --
by `run`, moved to quarantine/). Never a traceback. And nothing wrong is ever shown: a unit
file that is not reported damaged yields exactly the rows that were written.

The study has no stage to compute (no datasets), so `repalign run` only reads, checks,
quarantines and rewrites the store: hundreds of inputs in well under a minute.
"""

from __future__ import annotations

import io
import json
import shutil

import numpy as np
import pandas as pd
import pytest

from cli_capture import run_cli
from repalign.store import StudyStore, load_study
from repalign.study.config import parse_config
from repalign.study.plan import unit_id

SEED = 20261201
#: inputs per (file kind, mutation): configs are checked in milliseconds, store files need a run each
N_CONFIGS, N_STORE = 40, 10
KINDS = ("random", "truncated", "flipped")

CONFIG = """\
[study]
name = "fuzz"
output = "{output}"
seed = 3
report = false

[models]
include = ["pixels", "pixels:16"]
exclude = []

[alignment]
similarity = ["cosine", "dot"]
ties = "strict"
n_bootstrap = 10

[fewshot]
shots = [1, 5]
heads = ["linear", "mlp1"]
seeds = 2

[robustness]
source = "none"

[execution]
executor = "local"
jobs = 1
threads = 1
device = "cpu"
"""


def mutations(data: bytes, kind: str, rng: np.random.Generator, n: int, *, text: bool = False) -> list[bytes]:
    """``n`` damaged versions of ``data``: random bytes (same length), truncations, or one to
    three bytes changed at random places -- to printable ASCII for ``text`` files, so that
    many stay well-formed and change a value instead (a key, a number, a name)."""
    low, high = (32, 127) if text else (0, 256)
    out = []
    for _ in range(n):
        if kind == "random":
            out.append(rng.bytes(len(data)))
        elif kind == "truncated":
            out.append(data[: int(rng.integers(0, len(data)))])
        else:
            damaged = bytearray(data)
            for position in rng.integers(0, len(data), size=int(rng.integers(1, 4))):
                damaged[position] = int(rng.integers(low, high))
            out.append(bytes(damaged))
    return out


def assert_clean(result, *, damaged: str | None = None):
    """Exit 0, or 2 with one line on stderr; never a traceback. ``damaged``: a store file that,
    when the command succeeds, must be named on stderr unless it was left intact."""
    assert "Traceback" not in result.err, result.err
    assert result.code in (0, 2), (result.code, result.err)
    if result.code == 2:
        assert len(result.err_lines) == 1 and result.err_lines[0].startswith("repalign"), result.err


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """A study store with two units of synthetic rows, written by repalign's own store."""
    root = tmp_path_factory.mktemp("fuzz")
    config_file = root / "fuzz.toml"
    config_file.write_text(CONFIG.format(output=root / "study"))
    config = parse_config(config_file.read_text())
    store = StudyStore(root / "study")
    rng = np.random.default_rng(SEED)
    with store.locked():
        store.write_config(config.to_toml())
        store.write_manifest({"created": "2026-12-01T00:00:00+00:00", "runs": [{"status": "finished"}]})
        for unit in (unit_id(model) for model in config.models.include):
            rows = pd.DataFrame(
                {
                    "model": "pixels",
                    "stage": ["alignment"] * 3 + ["fewshot"] * 2,
                    "dataset": ["mine"] * 3 + ["imgs"] * 2,
                    "metric": ["pearson", "spearman", "triplet", "accuracy", "accuracy"],
                    "head": [None] * 3 + ["linear", "mlp1"],
                    "shots": [None] * 3 + [1, 5],
                    "value": rng.random(5),
                    "status": "ok",
                    "unit": unit,
                }
            )
            store.write_unit(unit, rows, fingerprint="f", stage_fingerprints={}, inputs={})
    return root


def restore(pristine, path) -> None:
    """The store as written, again (a run rewrites units whose stages the config dropped)."""
    shutil.rmtree(path)
    shutil.copytree(pristine / "study", path)


@pytest.fixture
def study(pristine, tmp_path):
    shutil.copytree(pristine / "study", tmp_path / "study")
    (tmp_path / "fuzz.toml").write_text(CONFIG.format(output=tmp_path / "study"))
    return tmp_path


@pytest.mark.parametrize("kind", KINDS)
def test_fuzzed_config_file(tmp_path, monkeypatch, kind):
    monkeypatch.chdir(tmp_path)  # a config cut before its `output` would write studies/ here
    text = CONFIG.format(output="out").encode()  # relative: a flipped byte cannot send it elsewhere
    rng = np.random.default_rng([SEED, KINDS.index(kind)])
    for i, data in enumerate(mutations(text, kind, rng, N_CONFIGS, text=True)):
        config = tmp_path / f"c{i}.toml"
        config.write_bytes(data)
        assert_clean(run_cli(["run", config, "--dry-run"]))
        assert_clean(run_cli(["run", config, "--no-live"]))


@pytest.mark.parametrize("kind", KINDS)
def test_fuzzed_unit_file(pristine, study, tmp_path_factory, kind):
    path = study / "study"
    files = sorted((path / "results").glob("*.parquet"))
    good = load_study(path).results
    rng = np.random.default_rng([SEED, 1, KINDS.index(kind)])
    for i, data in enumerate(mutations(files[0].read_bytes(), kind, rng, N_STORE)):
        restore(pristine, path)
        files[0].write_bytes(data)
        shown = run_cli(["results", path, "--format", "csv"])
        assert_clean(shown)
        rows = pd.read_csv(io.StringIO(shown.out))
        if str(files[0]) in shown.err:  # named as damaged: its rows are left out, the others shown
            assert len(rows) == len(good) // 2 and "left out" in shown.err
        else:  # not damaged after all (bytes that do not matter): exactly what was written
            assert len(rows) == len(good) and rows["value"].tolist() == pytest.approx(good["value"].tolist(), abs=0)
        if i < 2:
            out = tmp_path_factory.mktemp("report") / "r.html"
            assert_clean(run_cli(["report", path, "--out", out, "--n-bootstrap", "0"]))
        assert_clean(run_cli(["run", study / "fuzz.toml", "--no-live"]))  # damaged: quarantined, rewritten
        assert not load_study(path).damaged


@pytest.mark.parametrize("name", ["manifest.json", "config.resolved.toml"])
@pytest.mark.parametrize("kind", KINDS)
def test_fuzzed_manifest_and_resolved_config(pristine, study, tmp_path_factory, name, kind):
    path = study / "study"
    target = path / name
    good = load_study(path).results
    rng = np.random.default_rng([SEED, 2, KINDS.index(kind), len(name)])
    for i, data in enumerate(mutations(target.read_bytes(), kind, rng, N_STORE, text=True)):
        restore(pristine, path)
        target.write_bytes(data)
        shown = run_cli(["results", path, "--format", "json"])
        assert_clean(shown)
        assert len(json.loads(shown.out)) == len(good)  # the rows never depend on these files
        if i < 2:
            out = tmp_path_factory.mktemp("report") / "r.html"
            assert_clean(run_cli(["report", path, "--out", out, "--n-bootstrap", "0"]))
        assert_clean(run_cli(["run", study / "fuzz.toml", "--no-live"]))
        assert not load_study(path).damaged
