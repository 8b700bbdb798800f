"""scripts/gpu_check.sh: its CPU-runnable parts, on real mirror data (the GPU parts run on a GPU)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1]


@pytest.mark.integration
def test_gpu_check_runs_on_the_cpu_and_writes_its_json(mirror, tmp_path):
    out = tmp_path / "gpu_check.json"
    done = subprocess.run(
        [str(PROJECT / "scripts" / "gpu_check.sh"), "--device", "cpu", "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        env={**os.environ, "REPALIGN_MIRROR": str(mirror)},
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {
        "ok": True,
        "out": str(out),
        "seconds": pytest.approx(0, abs=600),
    }
    result = json.loads(out.read_text())
    assert set(result) == {"environment", "gpu_tests", "agreement", "throughput", "ok", "seconds"}
    # the CPU against itself: the comparison code paths run, and agree exactly
    (model,) = result["agreement"].values()
    assert model["alignment_cpu"] == model["alignment_device"] and model["alignment_max_abs_diff"] == 0.0
    assert set(model["alignment_cpu"]) == {"pearson", "spearman", "triplet"}
    assert model["fewshot_max_abs_diff_points"] == 0.0 and model["alignment_ok"] and model["fewshot_ok"]
    (speed,) = result["throughput"].values()
    assert speed["images_per_s_ready_inputs"] > 0 and speed["images_per_s_end_to_end"] > 0
    assert speed["images_per_s_from_input_cache"] > 0 and speed["input_cache_over_ready"] > 0
    assert speed["n_features"] == 512  # resnet18's penultimate layer
