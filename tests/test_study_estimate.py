"""The study cost model: images x published GMACs, few-shot grids, devices; read-only."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from repalign.errors import InputError
from repalign.study import estimate
from repalign.study.config import load_config, parse_config

PROJECT = Path(__file__).resolve().parents[1]


def _published(mirror: Path) -> dict[str, dict[str, str]]:
    path = mirror / "timm_results" / "2025-10-30" / estimate.BENCHMARK_SOURCE[1]
    with open(path, newline="") as handle:
        return {row["model"]: row for row in csv.DictReader(handle)}


def _config(tmp_path, models: str):
    text = f"""
[study]
name = "est"
output = "{tmp_path / "study"}"
[models]
include = {models}
[alignment]
human = ["peterson:animals", "peterson:fruits", "peterson:automobiles"]
[fewshot]
datasets = ["mnist"]
shots = [1, 5]
n_seeds = 2
max_eval_per_class = 10
"""
    return parse_config(text)


@pytest.mark.integration
def test_images_times_published_gmacs_and_the_fewshot_grid(mirror, tmp_path):
    config = _config(tmp_path, '["timm:resnet50", "timm:vit_base_patch16_224", "pixels"]')
    models = ["timm:resnet50", "timm:vit_base_patch16_224", "pixels"]
    result = estimate.estimate_study(config, models, throughput_gmacs_per_s=1000.0, fewshot_seconds=3.0)
    from repalign.fewshot import make_dataset_splits

    # automobiles has no images: 2 domains x 120 stimuli, plus the MNIST images the splits use
    splits = make_dataset_splits("mnist", shots=(1, 5), seeds=2, max_eval_per_class=10)
    images = 2 * 120 + len(splits.used_indices())
    table = _published(mirror)
    by_model = {cost.model: cost for cost in result.models}
    assert by_model["timm:resnet50"].images == images
    assert by_model["timm:resnet50"].gmacs_per_image == float(table["resnet50"]["infer_gmacs"])
    assert by_model["timm:vit_base_patch16_224"].gmacs_per_image == float(table["vit_base_patch16_224"]["infer_gmacs"])
    assert by_model["pixels"].gmacs_source == "unknown"
    gmacs = images * (float(table["resnet50"]["infer_gmacs"]) + float(table["vit_base_patch16_224"]["infer_gmacs"]))
    assert result.extraction_seconds == pytest.approx(gmacs / 1000.0)
    assert result.fewshot_units == 3 and result.fewshot_total_seconds == 9.0
    one = result.wall_seconds(1)
    assert one == pytest.approx(gmacs / 1000.0 + 9.0)
    # units run in parallel: N devices divide the total, but never below the longest unit
    longest = max(c.gmacs / 1000.0 + 3.0 for c in result.models)
    assert result.wall_seconds(2) == pytest.approx(max(one / 2, longest))
    assert result.wall_seconds(100) == pytest.approx(longest)
    text = "\n".join(result.lines(4))
    assert "not counted (no published GMACs): pixels" in text and "on 4 devices" in text


@pytest.mark.integration
def test_a_model_missing_from_the_benchmark_gets_its_gmacs_from_a_parameter_fit(mirror, tmp_path):
    table = _published(mirror)
    fit = estimate._parameter_fit()
    # the fit reproduces the table's GMACs within a factor of a few for typical models
    for arch in ("resnet50", "vit_base_patch16_224", "efficientnet_b0"):
        ratio = fit(float(table[arch]["param_count"])) / float(table[arch]["infer_gmacs"])
        assert 0.1 < ratio < 10, arch
    counts = estimate._param_counts()
    missing = next(arch for arch in counts if arch not in table)
    assert fit(counts[missing]) > 0


def test_throughput_from_the_gpu_check_json(mirror, tmp_path):
    table = _published(mirror)
    path = tmp_path / "gpu.json"
    speeds = {"timm:resnet18@random": 1000.0, "timm:resnet50@random": 500.0, "cifar_resnet:resnet20": 9.0}
    path.write_text(json.dumps({"throughput": {m: {"images_per_s_ready_inputs": s} for m, s in speeds.items()}}))
    rates = [1000.0 * float(table["resnet18"]["infer_gmacs"]), 500.0 * float(table["resnet50"]["infer_gmacs"])]
    assert estimate.throughput_from_gpu_check(path) == pytest.approx(sum(rates) / 2)  # median of two
    path.write_text("{not json")
    with pytest.raises(InputError, match="is not the JSON of scripts/gpu_check.sh"):
        estimate.throughput_from_gpu_check(path)
    assert math.isfinite(estimate.published_throughput()) and estimate.published_throughput() > 1000


@pytest.mark.parametrize(("option", "value"), [("throughput_gmacs_per_s", 0.0), ("fewshot_seconds", float("nan"))])
def test_bad_numbers_are_one_line_errors(tmp_path, option, value):
    config = _config(tmp_path, '["pixels"]')
    kwargs = {"throughput_gmacs_per_s": 10.0, option: value}
    with pytest.raises(InputError, match="must be a"):
        estimate.estimate_study(config, ["pixels"], **kwargs)


@pytest.mark.integration
def test_the_paper_study_estimate_reads_only(mirror, tmp_path, monkeypatch):
    monkeypatch.setenv("REPALIGN_DATA_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("REPALIGN_OFFLINE", "1")
    config = load_config(PROJECT / "configs" / "paper.toml")
    from repalign.data import read_only
    from repalign.study.plan import expand_models

    with read_only():
        models = expand_models(config)
    result = estimate.estimate_study(config, models, throughput_gmacs_per_s=estimate.published_throughput())
    assert len(result.models) == 490 and all(c.gmacs_source == "benchmark" for c in result.models)
    # 3 domains with images x 120 + CIFAR-100, MNIST, Fashion-MNIST test splits (CIFAR-100 published)
    assert {c.images for c in result.models} == {3 * 120 + 3 * 10_000}
    assert not (tmp_path / "home").exists() or not any((tmp_path / "home").rglob("*"))


@pytest.mark.integration
def test_the_cli_prints_the_estimate_for_the_paper_study(mirror, tmp_path):
    import os
    import subprocess
    import sys

    env = {**os.environ, "REPALIGN_DATA_HOME": str(tmp_path / "home"), "REPALIGN_OFFLINE": "1"}
    command = [sys.executable, "-m", "repalign", "run", str(PROJECT / "configs" / "paper.toml"), "--dry-run"]
    command += ["--output", str(tmp_path / "paper"), "--estimate", "--throughput", "100000", "--gpus", "8"]
    done = subprocess.run(command + ["--fewshot-seconds", "5"], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "estimate for 490 models at 100,000 GMAC/s (few-shot: 5 s per model and dataset):" in lines
    assert any(line.startswith("  extraction: 14,876,400 images") for line in lines)  # 490 x (360 + 30,000)
    assert "  few-shot:   1470 model x dataset grids, 2.04 device-hours" in lines
    wrong = subprocess.run(command[:5] + ["--estimate"], capture_output=True, text=True, env=env, timeout=300)
    assert wrong.returncode == 2 and "--estimate goes with --dry-run" in wrong.stderr
    assert len(wrong.stderr.strip().splitlines()) == 1
