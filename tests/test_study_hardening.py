"""Bad inputs to the study pipeline, its store and the command line: each one a clean outcome.

Each test feeds exactly one kind of hostile or mistaken input and asserts what happens: a
one-line error and exit code 2 before any work, or the documented behaviour with nothing
lost or corrupted. Covered: a resume that notices changed inputs (dataset files, images,
few-shot folders, weights files) and says which; study names that are paths; CLI values out
of range, unwritable outputs, non-UTF-8 configs, unreachable Ray clusters; rich markup in
names; duplicate dataset names; a damaged store; full disks, read-only studies, SIGTERM and
killed runs; typos in dataset and model names; a device that is not here.

The studies are tiny and need no data mirror: the `pixels` model on a generated six-image
human dataset and a two-class image folder.
"""

from __future__ import annotations

import io
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cli_capture import run_cli
from repalign.errors import ConfigError
from repalign.store import StudyStore, load_study
from repalign.study.config import parse_config
from repalign.study.run import run_study

STIMULI = [f"s{i}.png" for i in range(6)]
KEY = ["model", "stage", "dataset", "metric", "similarity", "head", "shots"]


# ---------------------------------------------------------------------------------------
# tiny data, written here
# ---------------------------------------------------------------------------------------
def _png(path: Path, seed: int, size: int = 16) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def _similarity_csv(seed: int) -> str:
    x = np.random.default_rng(seed).normal(size=(len(STIMULI), 3))
    sim = x @ x.T
    rows = [",".join(["", *STIMULI])]
    rows += [",".join([name, *(repr(float(v)) for v in sim[i])]) for i, name in enumerate(STIMULI)]
    return "\n".join(rows) + "\n"


def human_dataset(root: Path, name: str = "mine", seed: int = 0) -> Path:
    """A user human dataset: six 16x16 images, a similarity CSV, a manifest."""
    for i, stimulus in enumerate(STIMULI):
        _png(root / "images" / stimulus, seed * 100 + i)
    (root / "sim.csv").write_text(_similarity_csv(seed))
    (root / "repalign.toml").write_text(f'name = "{name}"\nimages = "images"\nsimilarity = "sim.csv"\n')
    return root


def image_folder(root: Path) -> Path:
    """A few-shot ImageFolder: two classes of four images."""
    for c in range(2):
        for i in range(4):
            _png(root / f"class{c}" / f"{i}.png", 1000 + 10 * c + i, size=8)
    return root


def study_toml(tmp: Path, *, human=(), fewshot=(), models=("pixels",), name="t", extra="") -> Path:
    listed = ", ".join(json.dumps(str(h)) for h in human)
    datasets = ", ".join(json.dumps(str(f)) for f in fewshot)
    text = f"""
[study]
name = {json.dumps(name)}
output = {json.dumps(str(tmp / "study"))}
report = false

[models]
include = [{", ".join(json.dumps(m) for m in models)}]

[alignment]
human = [{listed}]
n_bootstrap = 5

[fewshot]
datasets = [{datasets}]
shots = [1]
heads = ["linear"]
n_seeds = 1

[execution]
threads = 1
{extra}
"""
    path = tmp / "study.toml"
    path.write_text(text)
    return path


def one_error_line(result, *, contains: str) -> str:
    """The run failed cleanly: exit code 2 and exactly one line on stderr, holding ``contains``."""
    assert result.code == 2, (result.code, result.err)
    assert "Traceback" not in result.err
    assert len(result.err_lines) == 1, result.err
    assert contains in result.err_lines[0], result.err
    return result.err_lines[0]


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished study: `pixels` on a user human dataset (alignment) and an image folder (few-shot)."""
    tmp = tmp_path_factory.mktemp("finished")
    config = study_toml(tmp, human=[human_dataset(tmp / "mine")], fewshot=[image_folder(tmp / "fs")])
    outcome = run_study(config, live=False)
    assert outcome.exit_code == 0 and outcome.n_run == 1, outcome.failures
    return tmp


@pytest.fixture
def study(finished, tmp_path) -> Path:
    """A private copy of the finished study directory and its config (the data is shared:
    tests that change data make their own, see :func:`private_study`)."""
    shutil.copytree(finished / "study", tmp_path / "study")
    config = tmp_path / "study.toml"
    config.write_text((finished / "study.toml").read_text().replace(str(finished / "study"), str(tmp_path / "study")))
    return tmp_path


def private_study(finished: Path, tmp_path: Path) -> Path:
    """A copy of the finished study with its own data: its units run again once (their inputs moved)."""
    shutil.copytree(finished, tmp_path, dirs_exist_ok=True)
    config = tmp_path / "study.toml"
    config.write_text(config.read_text().replace(str(finished), str(tmp_path)))
    outcome = run_study(config, live=False)
    assert outcome.exit_code == 0 and outcome.n_run == 1
    return tmp_path


def plan_states(config: Path) -> list[str]:
    return [record["state"] for record in run_study(config, dry_run=True).plan]


# ---------------------------------------------------------------------------------------
# 1. a resume notices changed inputs, reruns exactly the stages that read them, says why
# ---------------------------------------------------------------------------------------
def test_changed_inputs_rerun_exactly_the_stages_that_read_them(finished, tmp_path):
    from repalign.alignment import compute_alignment
    from repalign.data.human import load_human
    from repalign.embed import extract_embeddings

    study = private_study(finished, tmp_path)
    config = study / "study.toml"
    assert plan_states(config) == ["done (skip)"]
    before = load_study(study / "study").results

    (study / "mine" / "sim.csv").write_text(_similarity_csv(seed=7))  # new human judgments
    assert plan_states(config) == ["stale (rerun alignment; mine changed: sim.csv)"]
    again = run_study(config, live=False)
    assert again.exit_code == 0 and again.n_run == 1
    after = load_study(study / "study").results
    # few-shot rows are the first run's, every column (timestamps too): not recomputed
    fewshot = [frame[frame["stage"] == "fewshot"].reset_index(drop=True) for frame in (before, after)]
    pd.testing.assert_frame_equal(fewshot[0], fewshot[1])
    # alignment rows are those of the new matrix, value for value
    human = load_human(study / "mine")[0]
    x = extract_embeddings("pixels", human.images())
    expected = compute_alignment(x, human, n_bootstrap=5, random_state=0).set_index("metric")["value"].to_dict()
    aligned = [frame[frame["stage"] == "alignment"].set_index("metric")["value"].to_dict() for frame in (before, after)]
    assert aligned[1] == expected and aligned[0] != expected
    assert plan_states(config) == ["done (skip)"]

    _png(study / "mine" / "images" / STIMULI[2], seed=99)  # one stimulus image replaced
    assert plan_states(config) == ["stale (rerun alignment; mine changed: images/)"]
    _png(study / "fs" / "class1" / "2.png", seed=98, size=8)  # and one few-shot image
    assert plan_states(config) == [f"stale (mine changed: images/; {study / 'fs'} changed: files)"]


def test_changed_weights_file_is_named_and_old_files_are_recomputed(tmp_path):
    """A `torchscript:` model file (its weights) replaced: its unit is stale, the dry run says
    so. Unit files of an older repalign (no recorded inputs) are computed once more."""
    from repalign.study.datacheck import check_human_data
    from repalign.study.inputs import StudyInputs
    from repalign.study.plan import plan_units

    weights = tmp_path / "net.pt"
    weights.write_bytes(b"first weights")
    config = parse_config(study_toml(tmp_path, human=[human_dataset(tmp_path / "mine")]).read_text())
    config = config.replace("models", include=[f"torchscript:{weights}", "pixels"])
    units = plan_units(config)
    inputs = StudyInputs(config, check_human_data(config, fetch=False).names)
    store = StudyStore(config.output_dir)
    with store.locked():
        for unit, recorded in zip(units, (inputs.for_unit(units[0]), None)):
            rows = pd.DataFrame({"model": [unit.model], "stage": ["alignment"], "status": ["ok"], "unit": [unit.id]})
            store.write_unit(
                unit.id,
                rows,
                fingerprint=config.results_fingerprint(),
                stage_fingerprints=config.stage_fingerprints(),
                inputs=recorded,
            )
    assert [r["state"] for r in run_study(config, dry_run=True).plan] == [
        "done (skip)",
        "stale (inputs not recorded by the repalign that wrote it)",
    ]
    weights.write_bytes(b"other weights, same model name")
    assert run_study(config, dry_run=True).plan[0]["state"] == f"stale (torchscript:{weights} changed: weights)"


# ---------------------------------------------------------------------------------------
# 2. a study name is one path component
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["../../x", "a/b", "..", ".", "x\\y", " padded", "tab\there", "x" * 256])
def test_study_name_that_is_a_path_is_refused(tmp_path, name):
    with pytest.raises(ConfigError, match=r"study\.name \(line 2\): .* is not a plain name.*\[study\] output"):
        parse_config(f'[study]\nname = {json.dumps(name)}\n[models]\ninclude = ["pixels"]\n')


def test_study_name_escaping_studies_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path / "..")
    config = tmp_path / "c.toml"
    config.write_text('[study]\nname = "../../escaped"\n[models]\ninclude = ["pixels"]\n')
    one_error_line(run_cli(["run", config]), contains="study.name (line 2): '../../escaped' is not a plain name")
    assert not (tmp_path / ".." / ".." / "escaped").exists() and not (tmp_path / ".." / "studies").exists()
    assert parse_config('[study]\nname = "my study (v2)"\n[models]\ninclude = ["pixels"]\n').study.name


# ---------------------------------------------------------------------------------------
# 3. command-line values that used to end in tracebacks
# ---------------------------------------------------------------------------------------
def _closed_port() -> int:
    with socket.socket() as s:  # bound, then closed: nothing listens there
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["align", "pixels", "--human", "x", "--n-bootstrap", "100000000000"], "<= 100000, got 100000000000"),
        (["align", "pixels", "--human", "x", "--seed", "-5"], "argument --seed: expected a whole number >= 0"),
        (["report", "DIR", "--seed", "-5"], "argument --seed: expected a whole number >= 0"),
        (["report", "DIR", "--n-bootstrap", "100000000000"], "argument --n-bootstrap"),
        (["theory", "--seed", "-5"], "argument --seed"),
        (["theory", "--seed", "99999999999999999999"], "<= 4294967295"),
        (["theory", "--quick", "--out", "/proc/x"], "--out /proc/x: cannot create the folder"),
        (["run", "CONFIG", "--jobs", "0"], "argument --jobs: expected a whole number >= 1, got 0"),
    ],
)
def test_cli_values_out_of_range_are_one_line_errors(tmp_path, argv, message):
    argv = [str(tmp_path) if a == "DIR" else str(study_toml(tmp_path)) if a == "CONFIG" else a for a in argv]
    one_error_line(run_cli(argv), contains=message)


def test_jobs_and_threads_cannot_start_a_process_or_thread_storm(caplog):
    from repalign.embed import usable_cpus
    from repalign.study.executors import LocalExecutor

    with pytest.raises(ConfigError, match=r"execution.threads \(line 4\): must be <= 1024, got 100000"):
        parse_config('[models]\ninclude = ["pixels"]\n[execution]\nthreads = 100000\n')
    assert LocalExecutor(jobs=100_000).jobs == usable_cpus()  # lowered, with a warning
    assert f"jobs = 100000 but this machine lets the run use {usable_cpus()} CPUs" in caplog.text


def test_config_that_is_not_utf8_is_one_line_error(tmp_path):
    config = tmp_path / "latin1.toml"
    raw = '[study]\nname = "caf\u00e9"\n[models]\ninclude = ["pixels"]\n'.encode("latin-1")
    config.write_bytes(raw)
    one_error_line(run_cli(["run", config]), contains=f"not UTF-8 text (byte 0xe9 at offset {raw.index(0xE9)})")


@pytest.mark.parametrize(
    ("address", "message"),
    [
        ("foo", "execution.address: 'foo' is not a Ray address"),
        ("http://x:80", "is not a Ray address"),
        ("127.0.0.1:99999", "is not a Ray address"),
        ("127.0.0.1:CLOSED", "No Ray cluster answers at 127.0.0.1:"),
        ("ray://127.0.0.1:CLOSED", "No Ray cluster answers at ray://127.0.0.1:"),
    ],
)
def test_ray_address_malformed_or_unreachable_fails_before_any_work(tmp_path, address, message):
    config = study_toml(tmp_path, human=[human_dataset(tmp_path / "mine")])
    result = run_cli(["run", config, "--address", address.replace("CLOSED", str(_closed_port()))])
    one_error_line(result, contains=message)
    assert not (tmp_path / "study").exists()  # nothing ran, nothing was written


# ---------------------------------------------------------------------------------------
# 4. names holding rich markup are shown as written
# ---------------------------------------------------------------------------------------
MARKUP = ["[/bold]", "[link=x]y", "[red]x", "[bold"]


def test_markup_in_names_is_text_in_tables_progress_and_bars():
    from repalign._progress import progress_bar
    from repalign.cli._output import emit
    from repalign.study.plan import Unit
    from repalign.study.progress import StudyProgress

    table = io.StringIO()
    emit([{"model": name, "dataset": name, "value": 0.5} for name in MARKUP], "table", title=MARKUP[0], stream=table)
    text = table.getvalue()
    assert all(name in text for name in MARKUP)

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    screen = Terminal()
    progress = StudyProgress(2, live=True, stream=screen)
    for name in MARKUP:
        unit = Unit(id="u", model=name, stages=("alignment",))
        progress.unit_started(unit)
        progress.unit_step(unit, "alignment", name)
        progress.unit_finished(unit, n_failed_rows=1, duration_s=1.0)
    progress.close()
    assert all(name in screen.getvalue() for name in MARKUP)
    with progress_bar(f"images of {MARKUP[1]}", 2, stream=Terminal()) as advance:
        advance(2)


# ---------------------------------------------------------------------------------------
# 5. two datasets of one name are refused before any unit runs
# ---------------------------------------------------------------------------------------
def test_duplicate_human_dataset_names_are_refused_before_any_work(tmp_path):
    a, b = human_dataset(tmp_path / "a", name="same"), human_dataset(tmp_path / "b", name="same", seed=1)
    config = study_toml(tmp_path, human=[a, b])
    for argv in (["run", config], ["run", config, "--dry-run"]):
        one_error_line(run_cli(argv), contains=f"'{a}' and '{b}' both give a dataset named 'same'")
    assert not (tmp_path / "study").exists()

    builtin = human_dataset(tmp_path / "c", name="peterson:animals")
    with pytest.raises(ConfigError, match="is named 'peterson:animals', the name of a built-in dataset"):
        run_study(study_toml(tmp_path, human=[builtin]), dry_run=True)
    with pytest.raises(ConfigError, match="'peterson' and 'peterson:animals' both give .* 'peterson:animals'"):
        run_study(study_toml(tmp_path, human=["peterson", "peterson:animals"]), dry_run=True)


def test_duplicate_fewshot_dataset_names_are_refused(tmp_path):
    one, two = image_folder(tmp_path / "x" / "imgs"), image_folder(tmp_path / "y" / "imgs")
    with pytest.raises(ConfigError, match="fewshot.datasets: .* are both named 'imgs'"):
        run_study(study_toml(tmp_path, fewshot=[one, two]), dry_run=True)
    with pytest.raises(ConfigError, match="both named 'mnist'"):
        run_study(study_toml(tmp_path, fewshot=["mnist", image_folder(tmp_path / "mnist")]), dry_run=True)


# ---------------------------------------------------------------------------------------
# 6. a damaged store: named, skipped by readers, quarantined and recomputed by a run
# ---------------------------------------------------------------------------------------
def _other_schema(file: Path) -> None:
    pd.DataFrame({"a": [1, 2], "b": ["x", "y"]}).to_parquet(file)


def _other_schema_same_unit(file: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"model": ["pixels"], "value": ["not a number"]})
    pq.write_table(table.replace_schema_metadata({b"repalign.unit": file.stem.encode()}), file)


DAMAGE = {
    "random bytes": lambda f: f.write_bytes(np.random.default_rng(0).bytes(f.stat().st_size)),
    "truncated": lambda f: f.write_bytes(f.read_bytes()[: f.stat().st_size // 2]),
    "empty": lambda f: f.write_bytes(b""),
    "other schema": _other_schema,
    "other schema, same unit id": _other_schema_same_unit,
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_unit_file_is_named_skipped_then_quarantined_and_recomputed(study, damage, tmp_path_factory):
    path = study / "study"
    good = load_study(path).results
    (unit_file,) = (path / "results").glob("*.parquet")
    DAMAGE[damage](unit_file)

    shown = run_cli(["results", path, "--format", "csv"])
    assert shown.code == 0 and "Traceback" not in shown.err
    assert len(shown.err_lines) == 1 and str(unit_file) in shown.err and "left out" in shown.err
    assert pd.read_csv(io.StringIO(shown.out)).empty  # its rows are not shown rather than shown wrong

    report = run_cli(["report", path, "--out", tmp_path_factory.mktemp("r") / "r.html", "--n-bootstrap", "0"])
    assert report.code == 0 and str(unit_file) in report.err and "Traceback" not in report.err

    assert plan_states(study / "study.toml") == ["damaged (rerun)"]
    rerun = run_cli(["run", study / "study.toml", "--no-live"])
    assert rerun.code == 0, rerun.err
    assert f"note: results/{unit_file.name} was damaged" in rerun.out
    (quarantined,) = (path / "quarantine").iterdir()
    assert quarantined.name.startswith(unit_file.stem) and quarantined.suffix == ".parquet"
    again = load_study(path).results
    pd.testing.assert_frame_equal(
        again.sort_values(KEY).reset_index(drop=True)[KEY + ["value", "ci_low", "ci_high"]],
        good.sort_values(KEY).reset_index(drop=True)[KEY + ["value", "ci_low", "ci_high"]],
    )


@pytest.mark.parametrize("stray", ["a copy", "foreign"])
def test_stray_parquet_file_neither_duplicates_nor_drops_rows(study, stray):
    path = study / "study"
    good = load_study(path).results
    (unit_file,) = (path / "results").glob("*.parquet")
    extra = path / "results" / "extra.parquet"
    if stray == "a copy":  # a unit's file under another name: its rows would count twice
        shutil.copy(unit_file, extra)
    else:
        _other_schema(extra)

    shown = load_study(path)
    assert len(shown.results) == len(good) and list(shown.damaged) == [str(extra)]
    rerun = run_cli(["run", study / "study.toml", "--no-live"])
    assert rerun.code == 0 and "1 already finished, 0 run" in rerun.out
    assert not extra.exists() and len(list((path / "quarantine").iterdir())) == 1
    assert len(load_study(path).results) == len(good)


@pytest.mark.parametrize("file", ["manifest.json", "config.resolved.toml"])
@pytest.mark.parametrize("damage", ["truncated", "random bytes"])
def test_damaged_manifest_or_config_is_named_and_set_aside(study, file, damage):
    path = study / "study"
    good = load_study(path).results
    target = path / file
    if damage == "truncated":  # cut just before a quote: a value or string cut short, neither TOML nor JSON
        text = target.read_bytes()
        target.write_bytes(text[: text.index(b'"', len(text) // 2)])
    else:
        DAMAGE[damage](target)

    shown = run_cli(["results", path])
    assert shown.code == 0 and str(target) in shown.err and "Traceback" not in shown.err
    assert load_study(path).results.equals(good)
    rerun = run_cli(["run", study / "study.toml", "--no-live"])
    assert rerun.code == 0 and f"note: {file} was damaged" in rerun.out
    assert json.loads((path / "manifest.json").read_text())["runs"][-1]["status"] == "finished"
    assert len(list((path / "quarantine").iterdir())) == 1 and load_study(path).damaged == {}


def test_resolved_config_edited_to_values_of_the_wrong_kind_is_reported_around(study, tmp_path_factory):
    """Valid TOML, but a hand edit gave keys the report reads values of another kind."""
    target = study / "study" / "config.resolved.toml"
    text = target.read_text()
    for key, value in [("seed", '"abc"'), ("seed", "-4"), ("similarity", "3"), ("human", "[1, 2]"), ("name", "5")]:
        target.write_text(
            "\n".join(f"{key} = {value}" if line.startswith(f"{key} =") else line for line in text.split("\n"))
        )
        out = tmp_path_factory.mktemp("r") / "r.html"
        report = run_cli(["report", study / "study", "--out", out, "--n-bootstrap", "0"])
        assert report.code == 0 and out.is_file() and "Traceback" not in report.err, (key, value, report.err)
        assert f"config.resolved.toml: [{'study' if key in ('seed', 'name') else 'alignment'}] {key}" in report.err


# ---------------------------------------------------------------------------------------
# 7. full and read-only file systems, SIGTERM, killed runs
# ---------------------------------------------------------------------------------------
def _cli_process(*args, **kwargs) -> subprocess.Popen:
    command = [sys.executable, "-c", "import sys; from repalign.cli import main; sys.exit(main())", *map(str, args)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def test_full_disk_is_one_line_naming_the_file_and_errno(study):
    """A file size limit (as `ulimit -f`) lets the manifest be written but not a unit file."""
    shutil.rmtree(study / "study" / "results")

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (8192, 8192))

    process = _cli_process("run", study / "study.toml", "--no-live", preexec_fn=small_files)
    out, err = process.communicate(timeout=300)
    assert process.returncode == 2 and "Traceback" not in err
    (line,) = [line for line in err.splitlines() if line.strip()]
    assert line.startswith(f"repalign: error: {study / 'study' / 'results'}/") and "(EFBIG, errno 27)" in line
    run = json.loads((study / "study" / "manifest.json").read_text())["runs"][-1]
    assert run["status"] == "failed" and "File too large" in run["error"]  # not left "running"
    assert not list((study / "study" / "results").glob("*"))  # no partial file


def test_report_of_a_finished_study_reads_only(study, tmp_path_factory):
    path = study / "study"
    before = snapshot(path)
    out = tmp_path_factory.mktemp("elsewhere") / "report.html"
    read_only = os.geteuid() != 0  # root ignores file modes: then only "nothing changed" is checked
    if read_only:
        for p in [path, *path.rglob("*")]:
            p.chmod(p.stat().st_mode & ~0o222)
    try:
        assert run_cli(["report", path, "--out", out, "--n-bootstrap", "0"]).code == 0
        assert run_cli(["results", path]).code == 0
        if read_only:  # a write into the study fails with one line naming the file
            one_error_line(run_cli(["report", path, "--n-bootstrap", "0"]), contains=str(path / "report"))
    finally:
        for p in [path, *path.rglob("*")]:
            p.chmod(p.stat().st_mode | 0o200)
    assert out.is_file() and snapshot(path) == before


def test_sigterm_is_an_interruption_with_exit_code_143(study):
    shutil.rmtree(study / "study" / "results")
    env = {**os.environ, "REPALIGN_TEST_FAULT": "pixels:alignment:hang"}
    process = _cli_process("run", study / "study.toml", "--no-live", env=env)
    for line in process.stdout:  # the worker is in its step (and will hang there)
        if "pixels: alignment" in line:
            break
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 143 and err.strip().endswith("repalign: terminated (SIGTERM)")
    runs = json.loads((study / "study" / "manifest.json").read_text())["runs"]
    assert runs[-1]["status"] == "interrupted" and runs[-1]["end"] is not None


def test_run_left_running_by_a_killed_process_is_marked_killed(study):
    manifest_file = study / "study" / "manifest.json"
    manifest = json.loads(manifest_file.read_text())
    manifest["runs"].append({"start": "2026-01-01T00:00:00+00:00", "end": None, "status": "running"})
    manifest_file.write_text(json.dumps(manifest))
    assert run_cli(["run", study / "study.toml", "--no-live"]).code == 0
    runs = json.loads(manifest_file.read_text())["runs"]
    assert [r["status"] for r in runs[-2:]] == ["killed", "finished"]
    assert "ended without recording its end" in runs[-2]["note"]


# ---------------------------------------------------------------------------------------
# 8. names resolved and devices checked before any work
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("section", "value", "message"),
    [
        (
            "human",
            "peterson:animls",
            "alignment.human: 'peterson:animls': Unknown Peterson domain 'animls'. Did you mean: animals?",
        ),
        # a path is the config file's: the error names where it looked
        ("human", "no/such/folder", "/no/such/folder': Human dataset path not found"),
        ("fewshot", "mnsit", "fewshot.datasets: 'mnsit': Unknown few-shot dataset 'mnsit'. Did you mean: mnist?"),
        ("models", "pixles", "Model name 'pixles' has no source. Did you mean: pixels?"),
    ],
)
@pytest.mark.parametrize("dry_run", [False, True])
def test_unknown_names_stop_the_run_before_any_unit(tmp_path, section, value, message, dry_run):
    kwargs = {"human": [value]} if section == "human" else {"fewshot": [value]} if section == "fewshot" else {}
    config = study_toml(tmp_path, models=[value] if section == "models" else ["pixels"], **kwargs)
    one_error_line(run_cli(["run", config, *(["--dry-run"] if dry_run else [])]), contains=message)
    assert not (tmp_path / "study").exists()


def test_device_that_is_not_here_is_an_error_even_when_everything_is_cached(study, finished):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    config = study / "study.toml"
    config.write_text(config.read_text() + 'device = "cuda"\n')
    message = "Device 'cuda' requested but CUDA is not available here"
    one_error_line(run_cli(["run", config]), contains=message)  # every unit is finished
    one_error_line(run_cli(["embed", "pixels", "--dataset", finished / "mine", "--device", "cuda"]), contains=message)
    assert run_cli(["run", config, "--dry-run"]).code == 0  # a plan may be made for another machine
