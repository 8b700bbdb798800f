"""One unit of work (one model through every stage), run in this process on real data.

Its rows must equal what the library functions give when called directly (the documented
return shapes of ``compute_alignment``, ``run_fewshot`` and ``robustness_table`` mapped to
the store's columns by hand), and its data must flow once: each few-shot dataset is loaded
once and its splits are drawn once per unit.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd
import pytest

from repalign.schema import RESULT_COLUMNS, conform
from repalign.study.config import parse_config
from repalign.study.plan import plan_units
from repalign.study.unit import run_unit

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("one_torch_thread")]

# the quick start's kind of unit, made small: pixels, Peterson animals, a few-shot subset of MNIST
QUICK = """
[study]
name = "unit"
seed = 3

[models]
include = ["pixels"]

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
device = "cpu"
"""

# duration and time of day differ between any two runs
COMPARED = [c for c in RESULT_COLUMNS if c not in ("duration_s", "timestamp")]
ORDER = ["stage", "dataset", "metric", "head", "shots"]


def _expected_rows(config, unit) -> pd.DataFrame:
    """The rows of the unit, computed by calling the library functions directly."""
    from repalign.alignment import compute_alignment
    from repalign.data.human import load_human
    from repalign.embed import extract_embeddings
    from repalign.fewshot import run_fewshot
    from repalign.models import resolve_model
    from repalign.robustness import robustness_table, to_result_rows

    rows = []
    human = load_human("peterson:animals")[0]
    embeddings = extract_embeddings("pixels", human.images(), device="cpu", num_workers=0)
    for r in compute_alignment(
        embeddings,
        human,
        similarity="cosine",
        metrics=("pearson", "spearman", "triplet"),
        n_bootstrap=20,
        random_state=3,
    ).to_dict(orient="records"):
        rows.append(
            {
                "stage": "alignment",
                "layer": "penultimate",  # the default layer, recorded on every row
                "dataset": r["dataset"],
                "metric": r["metric"],
                "similarity": r["similarity"],
                "ties": r["ties"],
                "value": r["value"],
                "ci_low": r["ci_low"],
                "ci_high": r["ci_high"],
                "n": r["n"],
            }
        )
    table = run_fewshot(
        "pixels",
        "mnist",
        shots=(1, 5),
        heads=("linear", "mlp1"),
        seeds=2,
        max_eval_per_class=10,
        device="cpu",
        num_workers=0,
    )
    for r in table.to_dict(orient="records"):
        rows.append(
            {
                "stage": "fewshot",
                "layer": "penultimate",
                "dataset": r["dataset"],
                "metric": r["metric"],
                "head": r["head"],
                "shots": r["shots"],
                "value": r["value"],
                "ci_low": r["ci_low"],
                "ci_high": r["ci_high"],
                "n": r["n"],
            }
        )
    robust = to_result_rows(robustness_table(["pixels"], source="timm-2022-07-27"))
    rows.extend(robust.drop(columns=["model", "model_id", "unit"]).to_dict(orient="records"))
    frame = pd.DataFrame(rows).assign(model="pixels", model_id=resolve_model("pixels").resolved_id, unit=unit.id)
    frame["status"] = frame["status"].fillna("ok") if "status" in frame else "ok"
    return _comparable(frame)


def _comparable(frame: pd.DataFrame) -> pd.DataFrame:
    return conform(frame).sort_values(ORDER, na_position="first").reset_index(drop=True)[COMPARED]


def test_unit_rows_equal_the_library_functions_called_directly(mirror):
    config = parse_config(QUICK)
    (unit,) = plan_units(config)
    got = _comparable(run_unit(unit, config))
    expected = _expected_rows(config, unit)
    assert len(got) == 3 + 2 * 2 + 1  # metrics, heads x shots, one skipped robustness row
    assert set(got["status"]) == {"ok", "skipped"}
    pd.testing.assert_frame_equal(got, expected, check_exact=True)


def test_each_fewshot_dataset_is_loaded_and_split_once_per_unit(mirror, monkeypatch):
    """Counted with wrappers around the real functions, wherever a unit may call them from."""
    import repalign.data.fewshot_datasets as fewshot_datasets
    import repalign.fewshot as fewshot
    import repalign.fewshot.evaluate as evaluate

    loads: Counter = Counter()
    draws: Counter = Counter()
    real_load, real_draw = fewshot_datasets.load_fewshot_dataset, fewshot.make_splits

    def counting_load(name, *args, **kwargs):
        loads[str(name)] += 1
        return real_load(name, *args, **kwargs)

    def counting_draw(labels, *args, **kwargs):
        draws[len(labels), kwargs.get("dataset")] += 1
        return real_draw(labels, *args, **kwargs)

    monkeypatch.setattr(fewshot_datasets, "load_fewshot_dataset", counting_load)
    for module in (fewshot, evaluate):
        monkeypatch.setattr(module, "make_splits", counting_draw)

    config = parse_config(QUICK).replace(
        "fewshot", datasets=["mnist", "fashion_mnist"], shots=[1], heads=["linear"], n_seeds=1, max_eval_per_class=3
    )
    config = config.replace("alignment", human=[]).replace("robustness", source="none")
    (unit,) = plan_units(config)
    rows = run_unit(unit, config)
    assert list(rows["status"]) == ["ok", "ok"] and sorted(rows["dataset"]) == ["fashion_mnist", "mnist"]
    assert loads == {"mnist": 1, "fashion_mnist": 1}
    assert draws == {(10_000, "mnist"): 1, (10_000, "fashion_mnist"): 1}
    assert np.isfinite(rows["value"].astype(float)).all()


def test_similarity_sweep_strict_ties_and_a_domain_without_images(mirror):
    """Two similarity functions give rows for both, from one extraction; the strict tie rule
    reaches the triplet metric (same value as ``triplet_alignment(..., ties="strict")`` on the
    same embeddings); a domain without images is one skipped row, not a failure."""
    from repalign.alignment import similarity_matrix, triplet_alignment
    from repalign.data.human import load_human
    from repalign.embed import extract_embeddings

    config = parse_config(QUICK)
    config = config.replace(
        "alignment",
        human=["peterson:animals", "peterson:automobiles"],
        similarity=["cosine", "neg_euclidean"],
        ties="strict",
    )
    config = config.replace("fewshot", datasets=[]).replace("robustness", source="none")
    (unit,) = plan_units(config)
    rows = run_unit(unit, config)

    animals = rows[rows["dataset"] == "peterson:animals"]
    assert list(animals["status"]) == ["ok"] * 6
    assert sorted(zip(animals["similarity"], animals["metric"])) == sorted(
        (s, m) for s in ("cosine", "neg_euclidean") for m in ("pearson", "spearman", "triplet")
    )
    triplet = animals[animals["metric"] == "triplet"].set_index("similarity")
    assert set(triplet["ties"]) == {"strict"} and animals.loc[animals["metric"] != "triplet", "ties"].isna().all()

    human = load_human("peterson:animals")[0]
    x = extract_embeddings("pixels", human.images(), device="cpu", num_workers=0)
    for similarity in ("cosine", "neg_euclidean"):
        model = similarity_matrix(x, metric=similarity)
        assert triplet.loc[similarity, "value"] == triplet_alignment(model, human.similarity, ties="strict")
    assert triplet.loc["cosine", "value"] != triplet.loc["neg_euclidean", "value"]

    (automobiles,) = rows[rows["dataset"] == "peterson:automobiles"].to_dict(orient="records")
    assert automobiles["status"] == "skipped" and automobiles["stage"] == "alignment"
    assert "Images of Peterson domain 'automobiles' are not available" in automobiles["error"]
