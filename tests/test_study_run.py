"""The study pipeline end to end, on real data and real models (tiny studies).

Covers: a run and its values against independent computations, resume that recomputes
nothing, resume after SIGKILL giving the values of an uninterrupted run, failure isolation
(missing weights, a real segfault in a worker), concurrent runs refused, the CLI, the paper
preset's dry run, and a real local Ray cluster giving the same values as local workers.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from repalign.store import StudyStore, load_study
from repalign.study.config import parse_config
from repalign.study.plan import unit_id
from repalign.study.run import run_study

PROJECT = Path(__file__).resolve().parents[1]
SMALL_TFLITE = "tflite:mobilenet_v1_0.25_128_quant"
KEY = ["model", "stage", "dataset", "metric", "head", "shots"]
VALUES = ["model_id", "similarity", "value", "ci_low", "ci_high", "n", "status", "error"]

pytestmark = pytest.mark.integration


def tiny_config(models=("pixels", SMALL_TFLITE), *, jobs=2, output="tiny", report=False, executor="local") -> str:
    models_toml = ", ".join(f'"{m}"' for m in models)
    return f"""
[study]
name = "tiny"
output = "{output}"
report = {str(report).lower()}

[models]
include = [{models_toml}]

[alignment]
human = ["peterson:animals"]
n_bootstrap = 20

[fewshot]
datasets = ["mnist"]
shots = [1, 5]
heads = ["linear", "mlp1"]
n_seeds = 2
max_eval_per_class = 10

[robustness]
source = "timm-2022-07-27"

[execution]
executor = "{executor}"
jobs = {jobs}
threads = 1
"""


def sorted_values(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values(KEY, na_position="first").reset_index(drop=True)[KEY + VALUES]


def cli(*args: str, env: dict | None = None, **kwargs) -> subprocess.CompletedProcess:
    command = [sys.executable, "-c", "import sys; from repalign.cli import main; sys.exit(main())", *args]
    return subprocess.run(
        command, capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=600, **kwargs
    )


@pytest.fixture(scope="module")
def reference(tmp_path_factory, mirror):
    """One uninterrupted tiny study (2 local workers): the values every other run must equal."""
    out = tmp_path_factory.mktemp("reference") / "study"
    outcome = run_study(parse_config(tiny_config(output=str(out))), live=False)
    return outcome, load_study(out)


def test_run_produces_every_row_with_the_schema(reference):
    outcome, study = reference
    assert outcome.exit_code == 0 and outcome.n_run == 2 and outcome.n_skipped == 0
    assert outcome.failures.empty
    assert study.alignment.groupby("model")["metric"].apply(sorted).to_dict() == {
        "pixels": ["pearson", "spearman", "triplet"],
        SMALL_TFLITE: ["pearson", "spearman", "triplet"],
    }
    assert (study.alignment["n"] == 120).all() and (study.alignment["dataset"] == "peterson:animals").all()
    assert (study.alignment["ci_low"] <= study.alignment["value"]).all()
    assert (study.alignment["value"] <= study.alignment["ci_high"]).all()
    fewshot = study.fewshot
    assert len(fewshot) == 2 * 2 * 2  # models x shots x heads
    assert set(fewshot["head"]) == {"linear", "mlp1"} and set(fewshot["shots"]) == {1, 5}
    assert fewshot["value"].between(0, 1).all() and (fewshot["n"] == 2).all()
    # offline models have no published robustness rows: recorded as skipped, not failed
    robust = study.results[study.results["stage"] == "robustness"]
    assert sorted(robust["status"]) == ["skipped", "skipped"]
    assert robust["error"].notna().all()
    manifest = study.manifest
    assert manifest["runs"][-1]["status"] == "finished" and manifest["runs"][-1]["units_run"] == 2
    assert manifest["packages"]["numpy"] == np.__version__
    assert (outcome.path / "config.resolved.toml").is_file()


def test_pixels_alignment_equals_an_independent_computation(reference):
    """The stored Pearson/Spearman of `pixels` equal scipy on the cached embeddings."""
    from scipy.stats import pearsonr, spearmanr

    from repalign.data.human import load_human
    from repalign.embed import extract_embeddings

    _, study = reference
    human = load_human("peterson:animals")[0]
    x = extract_embeddings("pixels", human.images()).astype(np.float64)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    model_sim = x @ x.T
    upper = np.triu_indices(len(x), k=1)
    rows = study.alignment.set_index(["model", "metric"])["value"]
    assert rows["pixels", "pearson"] == pytest.approx(pearsonr(model_sim[upper], human.similarity[upper])[0], abs=1e-6)
    assert rows["pixels", "spearman"] == pytest.approx(
        spearmanr(model_sim[upper], human.similarity[upper])[0], abs=1e-6
    )


def test_rerun_skips_finished_units_without_touching_them(reference):
    outcome, study = reference
    files = sorted((outcome.path / "results").glob("*.parquet"))
    mtimes = [f.stat().st_mtime_ns for f in files]
    again = run_study(outcome.path / "config.resolved.toml", live=False)
    assert again.n_run == 0 and again.n_skipped == 2 and again.exit_code == 0
    assert [f.stat().st_mtime_ns for f in files] == mtimes
    pd.testing.assert_frame_equal(sorted_values(load_study(outcome.path).results), sorted_values(study.results))
    assert len(load_study(outcome.path).manifest["runs"]) == 2


@pytest.mark.slow
def test_resume_after_sigkill_equals_uninterrupted_run(reference, tmp_path):
    _, expected = reference
    config = tmp_path / "tiny.toml"
    config.write_text(tiny_config(jobs=1, output=str(tmp_path / "study")))
    results = tmp_path / "study" / "results"
    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys; from repalign.cli import main; sys.exit(main())", "run", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not list(results.glob("*.parquet")):
        assert proc.poll() is None, "the run ended before it could be killed"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and its worker, mid-run
    proc.wait()
    finished = {f.name: f.stat().st_mtime_ns for f in results.glob("*.parquet")}
    assert len(finished) == 1, "kill landed after the second unit; the test needs it mid-run"

    outcome = run_study(config, live=False)
    assert outcome.n_skipped == 1 and outcome.n_run == 1 and outcome.exit_code == 0
    assert {name: (results / name).stat().st_mtime_ns for name in finished} == finished  # not recomputed
    resumed = load_study(tmp_path / "study")
    pd.testing.assert_frame_equal(sorted_values(resumed.results), sorted_values(expected.results), check_exact=True)
    statuses = [run["status"] for run in resumed.manifest["runs"]]
    # the killed run never got to record its end; the next run, holding the lock, marked it
    assert statuses == ["killed", "finished"]


@pytest.mark.slow
def test_failures_are_isolated_rows_and_exit_code_3(tmp_path, mirror):
    """A worker that segfaults in native code and a model without weights become failed
    rows; the other model completes; the exit code says some units failed."""
    config = tmp_path / "faulty.toml"
    models = ("pixels", SMALL_TFLITE, "timm:resnet18")  # resnet18's pretrained weights are not offline
    config.write_text(tiny_config(models, jobs=2, output=str(tmp_path / "study")))
    env = {"REPALIGN_TEST_FAULT": "pixels:fewshot:segfault", "HF_HUB_OFFLINE": "1"}
    done = cli("run", str(config), env=env)
    assert done.returncode == 3, done.stderr
    assert "failures" in done.stdout and "SIGSEGV" in done.stdout

    study = load_study(tmp_path / "study")
    failures = study.failures.set_index(["model", "stage"])
    segv = failures.loc[("pixels", "fewshot"), "error"]
    assert segv == "worker process killed by signal SIGSEGV during fewshot on mnist"
    run = study.manifest["runs"][-1]
    assert run["units_failed"] == 2
    assert {"model": "pixels", "stage": "fewshot", "dataset": "mnist", "error": segv} in run["failures"]
    # the rows pixels finished before the crash are kept
    assert sorted(study.alignment.loc[study.alignment["model"] == "pixels", "metric"]) == [
        "pearson",
        "spearman",
        "triplet",
    ]
    # missing weights: failed alignment and few-shot rows, but the published robustness rows are there
    resnet = study.results[study.results["model"] == "timm:resnet18"]
    assert set(resnet.loc[resnet["stage"] != "robustness", "status"]) == {"failed"}
    assert resnet.loc[resnet["stage"] != "robustness", "error"].str.len().min() > 0
    assert set(resnet.loc[resnet["stage"] == "robustness", "dataset"]) == {
        "imagenet",
        "imagenet-a",
        "imagenet-r",
        "imagenet-sketch",
    }
    # the healthy model is complete
    healthy = study.results[study.results["model"] == SMALL_TFLITE]
    assert set(healthy["status"]) <= {"ok", "skipped"} and len(healthy) == 3 + 4 + 1

    # rerun without the fault (and without resnet18): only the failed unit runs again,
    # and its rows are replaced
    pixels_file = StudyStore(tmp_path / "study").unit_file(unit_id("pixels"))
    healthy_file = StudyStore(tmp_path / "study").unit_file(unit_id(SMALL_TFLITE))
    healthy_mtime = healthy_file.stat().st_mtime_ns
    config.write_text(tiny_config(models[:2], jobs=2, output=str(tmp_path / "study")))
    again = run_study(config, live=False)
    assert again.n_run == 1 and again.n_skipped == 1 and again.exit_code == 0
    assert healthy_file.stat().st_mtime_ns == healthy_mtime
    rows = pd.read_parquet(pixels_file)
    assert set(rows["status"]) == {"ok", "skipped"} and (rows["stage"] == "fewshot").sum() == 4
    # the first run's failures stay on record in the manifest after the rows are replaced
    runs = load_study(tmp_path / "study").manifest["runs"]
    assert len(runs) == 2 and runs[0]["failures"] == run["failures"] and runs[1]["failures"] == []


def test_python_exception_in_a_step_is_a_failed_row(tmp_path, monkeypatch, mirror):
    monkeypatch.setenv("REPALIGN_TEST_FAULT", "pixels:alignment:oom")
    config = parse_config(tiny_config(("pixels",), jobs=1, output=str(tmp_path / "s")))
    outcome = run_study(config.replace("fewshot", datasets=[]), live=False)
    assert outcome.exit_code == 3
    assert outcome.failures["error"].tolist() == ["MemoryError: injected out-of-memory in alignment"]
    assert load_study(tmp_path / "s").results.set_index("stage").loc["robustness", "status"] == "skipped"


def test_second_run_on_a_locked_study_is_refused(tmp_path, mirror):
    config = tmp_path / "tiny.toml"
    config.write_text(tiny_config(("pixels",), output=str(tmp_path / "study")))
    with StudyStore(tmp_path / "study").locked():
        done = cli("run", str(config))
    assert done.returncode == 2
    assert f"is being written by another run (pid {os.getpid()})" in done.stderr
    assert not (tmp_path / "study" / "results").exists()


def test_cli_errors_dry_run_and_results_formats(reference, tmp_path):
    outcome, study = reference
    bad = tmp_path / "bad.toml"
    bad.write_text('[models]\ninclude = ["pixels"]\n[fewshot]\nn_seeds = 0\n')
    done = cli("run", str(bad))
    assert done.returncode == 2 and "fewshot.n_seeds (line 4): must be >= 1, got 0" in done.stderr

    done = cli("run", str(outcome.path / "config.resolved.toml"), "--dry-run")
    assert done.returncode == 0, done.stderr
    assert "done (skip)" in done.stdout and "2 units" in done.stdout
    assert "note: Alignment will be computed on the study's one domain: animals" in done.stdout

    done = cli("results", str(outcome.path), "--format", "csv", "--stage", "all")
    assert done.returncode == 0, done.stderr
    from io import StringIO

    csv = pd.read_csv(StringIO(done.stdout))
    assert list(csv.columns) == list(study.results.columns) and len(csv) == len(study.results)
    done = cli("results", str(outcome.path), "--format", "json", "--stage", "alignment")
    records = json.loads(done.stdout)
    assert len(records) == len(study.alignment)
    assert sorted(r["value"] for r in records) == pytest.approx(sorted(study.alignment["value"]))
    done = cli("results", str(tmp_path / "missing"))
    assert done.returncode == 2 and "No study directory" in done.stderr


def test_paper_preset_dry_run_reads_only_what_is_present(tmp_path, mirror, monkeypatch, capsys):
    """With an empty data home and downloads off, the dry run of the published study copies
    nothing (the mirror is read in place), writes nothing, never touches the network, and says
    which domains alignment will be averaged over and that CIFAR-100 is not downloaded."""
    import socket

    from repalign.cli import main

    home = tmp_path / "data-home"
    home.mkdir()
    monkeypatch.setenv("REPALIGN_DATA_HOME", str(home))
    monkeypatch.setenv("REPALIGN_OFFLINE", "1")
    attempts = []

    def no_network(*args, **kwargs):
        attempts.append(args[1:] or kwargs)
        raise OSError("a dry run tried the network")

    for name in ("connect", "connect_ex"):
        monkeypatch.setattr(socket.socket, name, no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)

    assert main(["run", str(PROJECT / "configs" / "paper.toml"), "--dry-run", "--output", str(tmp_path / "p")]) == 0
    out = capsys.readouterr().out
    assert attempts == []
    assert list(home.iterdir()) == []  # nothing copied, extracted or stamped
    assert not (tmp_path / "p").exists()  # a dry run writes nothing
    assert "490 units (one per model); stages: alignment, fewshot, robustness" in out
    notes = [line for line in out.splitlines() if line.startswith("note: ")]
    assert notes[0] == (
        "note: Alignment will be averaged over 3 of the 6 domains of the study: animals, fruits, vegetables; "
        "missing images for automobiles, furniture, various; supply them as a user dataset (see docs/data.md)"
    )
    assert notes[1].startswith("note: cifar100: not downloaded yet (169 MB from upstream); downloads are off")
    # images are present (in the mirror) for 3 domains, MNIST and Fashion-MNIST; CIFAR-100's are not
    assert "not known for cifar100" in notes[2]
    assert out.count("│ to run │ 0/5 ") == 490


def test_changed_ties_or_added_similarity_recompute_alignment_only(tmp_path, mirror, capsys):
    """Resume after changing [alignment]: each unit recomputes its alignment rows (equal to
    the library's values under the new settings) and keeps its few-shot and robustness rows
    untouched; switching a stage off drops its rows without computing anything."""
    from repalign.alignment import compute_alignment
    from repalign.cli import main
    from repalign.data.human import load_human
    from repalign.embed import extract_embeddings

    path = tmp_path / "s"
    config = parse_config(tiny_config(("pixels",), jobs=1, output=str(path)))
    config = config.replace("alignment", human=["peterson:animals", "peterson:automobiles"])
    config = config.replace("fewshot", shots=[1], heads=["linear"])
    first = run_study(config, live=False)
    assert first.exit_code == 0 and first.n_run == 1
    assert first.notes[0] == (
        "Alignment will be averaged over 1 of the 2 domains of the study: animals; missing images for "
        "automobiles; supply them as a user dataset (see docs/data.md)"
    )
    before = load_study(path).results

    changed = config.replace("alignment", ties="strict", similarity=["cosine", "neg_euclidean"])
    assert [r["state"] for r in run_study(changed, dry_run=True).plan] == ["stale (rerun alignment)"]
    second = run_study(changed, live=False)
    assert second.exit_code == 0 and second.n_run == 1
    after = load_study(path).results

    def other_stages(frame):
        return frame[frame["stage"] != "alignment"].sort_values(KEY, na_position="first").reset_index(drop=True)

    # few-shot and robustness rows are the first run's, every column (timestamps too): not recomputed
    pd.testing.assert_frame_equal(other_stages(after), other_stages(before))
    human = load_human("peterson:animals")[0]
    x = extract_embeddings("pixels", human.images())
    aligned = after[(after["stage"] == "alignment") & (after["status"] == "ok")]
    assert len(aligned) == 2 * 3
    for similarity in ("cosine", "neg_euclidean"):
        table = compute_alignment(x, human, similarity=similarity, ties="strict", n_bootstrap=20)
        for record in table.to_dict(orient="records"):
            row = aligned[(aligned["similarity"] == similarity) & (aligned["metric"] == record["metric"])].iloc[0]
            assert (row["value"], row["ci_low"], row["ci_high"]) == (
                record["value"],
                record["ci_low"],
                record["ci_high"],
            )
            assert (row["ties"] if pd.notna(row["ties"]) else None) == record["ties"]
    skipped = after[(after["stage"] == "alignment") & (after["status"] == "skipped")]
    assert skipped["dataset"].tolist() == ["peterson:automobiles"]  # no images: said, not failed

    assert run_study(changed, live=False).n_run == 0  # finished under the new settings

    main(["results", str(path), "--stage", "alignment"])
    assert (
        "note: alignment rows cover 1 of the 2 domains of the study: peterson:animals; "
        "no images: peterson:automobiles" in capsys.readouterr().out
    )

    # a stage switched off: nothing is computed, its rows are dropped, the others stay
    off = run_study(changed.replace("robustness", source="none"), live=False)
    assert off.n_run == 0 and off.n_skipped == 1
    final = load_study(path).results
    assert "robustness" not in set(final["stage"])
    pd.testing.assert_frame_equal(
        sorted_values(final[final["stage"] != "robustness"]), sorted_values(after[after["stage"] != "robustness"])
    )


@pytest.mark.ray
@pytest.mark.slow
def test_ray_local_cluster_gives_the_same_values_as_local(reference, tmp_path, monkeypatch):
    """A real local Ray cluster on 127.0.0.1; its workers start from an empty embedding
    cache, so they really compute, and must still match the local run value for value.
    A task whose worker segfaults becomes a failed row."""
    ray = pytest.importorskip("ray")
    _, expected = reference
    # Ray's workers inherit the environment of the cluster, fixed at ray.init
    monkeypatch.setenv("REPALIGN_CACHE_HOME", str(tmp_path / "ray-cache"))
    monkeypatch.setenv("REPALIGN_TEST_FAULT", "cifar_resnet:resnet20:alignment:segfault")
    ray.init(address="local", num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1")
    try:
        config = parse_config(tiny_config(output=str(tmp_path / "ray-study"), executor="ray"))
        outcome = run_study(config, live=False)
        crashing = parse_config(tiny_config(("cifar_resnet:resnet20",), output=str(tmp_path / "crash"), executor="ray"))
        crashed = run_study(crashing.replace("fewshot", datasets=[]), live=False)
    finally:
        ray.shutdown()
    assert outcome.exit_code == 0 and outcome.n_run == 2
    assert len(list((tmp_path / "ray-cache").rglob("*"))) > 0  # the Ray workers computed embeddings
    got = load_study(tmp_path / "ray-study")
    pd.testing.assert_frame_equal(sorted_values(got.results), sorted_values(expected.results), check_exact=True)

    assert crashed.exit_code == 3
    error = crashed.failures["error"].tolist()
    assert len(error) == 1 and error[0].startswith("ray task failed:") and "Crash" in error[0]
