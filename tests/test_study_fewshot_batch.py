"""A local study fits the few-shot heads of several units together (repalign.study.fewshot_batch).

The oracle is each model's own few-shot rows (``fewshot_rows`` on the study's splits), the
path a single unit takes: batched fits must give them to float rounding (linear head) and
within bfloat16 rounding (MLP head), and a unit's failure must stay its own.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from repalign.store import load_study
from repalign.study.config import parse_config
from repalign.study.run import run_study

pytestmark = pytest.mark.integration

MODELS = ("cifar_resnet:resnet20", "cifar_resnet:resnet32", "pixels")  # two of one dimension (64)


def config(output, models=MODELS, executor="local", batch="true", extra_models=""):
    listed = ", ".join(f'"{m}"' for m in models)
    return parse_config(f"""
[study]
name = "batched-fewshot"
output = "{output}"
report = false

[models]
include = [{listed}]
{extra_models}

[alignment]
human = []

[fewshot]
datasets = ["mnist"]
shots = [1, 5]
heads = ["linear", "mlp1"]
n_seeds = 2
max_eval_per_class = 10

[robustness]
source = "none"

[execution]
executor = "{executor}"
jobs = 2
threads = 1
batch_fewshot = {batch}
""")


@pytest.fixture
def batches(monkeypatch):
    """The unit lists the run fitted together."""
    from repalign.study import fewshot_batch

    seen = []
    original = fewshot_batch.batched_fewshot_rows

    def spy(units, failed_steps, cfg):
        seen.append(sorted(u.model for u in units))
        return original(units, failed_steps, cfg)

    monkeypatch.setattr(fewshot_batch, "batched_fewshot_rows", spy)
    return seen


def test_units_fitted_together_give_each_models_own_rows(tmp_path, mirror, batches):
    from repalign.fewshot import fewshot_rows
    from repalign.study.plan import fewshot_inputs

    cfg = config(tmp_path / "study")
    outcome = run_study(cfg, live=False)
    assert outcome.exit_code == 0 and outcome.n_run == 3
    assert batches == [sorted(MODELS)]  # one batch, all three units
    got = load_study(tmp_path / "study").results.set_index(["model", "head", "shots"]).sort_index()
    assert set(got["status"]) == {"ok"} and set(got["stage"]) == {"fewshot"}

    data, splits = fewshot_inputs("mnist", cfg)
    for model in MODELS:
        alone = fewshot_rows(model, data, splits=splits, heads=("linear", "mlp1"), num_workers=0)
        alone = alone.set_index(["model", "head", "shots"]).sort_index()
        mine = got.loc[alone.index]
        assert (mine["n"].to_numpy() == alone["n"].to_numpy()).all()
        assert (mine["model_id"] == alone["model_id"]).all() and (mine["dataset"] == "mnist").all()
        difference = np.abs(mine["value"].to_numpy() - alone["value"].to_numpy())
        linear = alone.index.get_level_values("head") == "linear"
        assert difference[linear].max() <= 1e-6, (model, difference)
        assert difference[~linear].max() <= 0.005, (model, difference)  # bfloat16 products, batch-size dependent


def test_a_units_failure_stays_its_own(tmp_path, mirror, batches, monkeypatch):
    monkeypatch.setenv("REPALIGN_TEST_FAULT", "cifar_resnet:resnet32:fewshot:raise")
    outcome = run_study(config(tmp_path / "study"), live=False)
    assert outcome.exit_code == 3
    assert batches == [sorted(MODELS)]
    results = load_study(tmp_path / "study").results
    failed = results[results["status"] == "failed"]
    assert failed[["model", "stage", "dataset"]].values.tolist() == [["cifar_resnet:resnet32", "fewshot", "mnist"]]
    assert failed["error"].iloc[0] == "RuntimeError: injected failure in fewshot"
    healthy = results[results["model"] != "cifar_resnet:resnet32"]
    assert set(healthy["status"]) == {"ok"} and len(healthy) == 2 * 2 * 2  # 2 models x 2 heads x 2 shots


def test_a_single_unit_or_ray_fits_its_own_heads(tmp_path, mirror, batches):
    from repalign.study.plan import plan_units
    from repalign.study.run import _with_batched_fewshot

    one = config(tmp_path / "one", models=("pixels",))
    assert run_study(one, live=False).exit_code == 0 and batches == []
    assert not any(u.batch_fewshot for u in _with_batched_fewshot(one, plan_units(one)))
    ray = config(tmp_path / "ray", executor="ray")
    assert not any(u.batch_fewshot for u in _with_batched_fewshot(ray, plan_units(ray)))
    local = config(tmp_path / "local")
    assert all(u.batch_fewshot for u in _with_batched_fewshot(local, plan_units(local)))
    # opt-in: by default every unit fits its own heads (bit-identical on resume)
    default = config(tmp_path / "default", batch="false")
    assert not any(u.batch_fewshot for u in _with_batched_fewshot(default, plan_units(default)))
    # a unit reading other layers or a local weights file fits its own heads
    layered = config(tmp_path / "layered", extra_models='layers = {"pixels" = ["logits"]}')
    flags = {u.model: u.batch_fewshot for u in _with_batched_fewshot(layered, plan_units(layered))}
    assert flags == {"cifar_resnet:resnet20": True, "cifar_resnet:resnet32": True, "pixels": False}
    assert pd.read_parquet(next((tmp_path / "one").rglob("*.parquet")))["status"].eq("ok").all()
