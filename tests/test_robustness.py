"""The robustness join: timm's published results on the resolved model id the study embeds.

Oracle for the integration tests: the CSV files of the mirror (``timm_results/<date>/``), read
here with plain pandas, and ``resolve_model`` -- the identity used for embedding.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd
import pytest

from repalign import robustness
from repalign.errors import InputError, MissingDataError, UnknownNameError
from repalign.models import paper_model_names, resolve_model
from repalign.schema import RESULT_COLUMNS

HAS_TIMM = importlib.util.find_spec("timm") is not None
needs_timm = pytest.mark.skipif(not HAS_TIMM, reason="timm is not installed (pip install 'repalign[torch]')")


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("25.56", 25.56),
        ("1,014.45", 1014.45),
        ("12,345,678.9", 12345678.9),
        ("3", 3.0),
        (7.5, 7.5),
        (" 480.31 ", 480.31),
    ],
)
def test_parse_param_count(text, value):
    assert robustness.parse_param_count(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["", "1,01.5", "abc", "12.3.4", "-5", True])
def test_parse_param_count_rejects_malformed(text):
    with pytest.raises(InputError, match="param_count .* is not a number"):
        robustness.parse_param_count(text)


# -- offline: a tiny snapshot written by the test ------------------------------------------------
def _write_snapshot(folder: Path, rows: dict[str, list[tuple]]) -> None:
    header = "model,img_size,top1,top1_err,top5,top5_err,param_count,crop_pct,interpolation\n"
    for dataset, file_name in robustness.DATASET_FILES.items():
        lines = [
            f'{m},{size},{t1},{100 - t1},{t5},{100 - t5},"{pc}",0.9,bicubic\n'
            for m, size, t1, t5, pc in rows.get(dataset, rows["imagenet"])
        ]
        (folder / file_name).write_text(header + "".join(lines))


BIG = "timm:vit_base_patch16_224.augreg_in1k"
SMALL = "timm:resnet18.a1_in1k"


@pytest.fixture
def tiny_snapshot(tmp_path, monkeypatch):
    """A 2025-style snapshot (``arch.tag`` rows) of two real timm ids with made-up numbers."""
    rows = {
        "imagenet": [
            ("vit_base_patch16_224.augreg_in1k", 224, 80.0, 95.0, "1,014.45"),
            ("vit_base_patch16_224.augreg_in1k", 448, 85.0, 97.0, "1,014.45"),
            ("resnet18.a1_in1k", 160, 70.0, 90.0, "5.5"),
        ],
        "imagenet-a": [
            ("vit_base_patch16_224.augreg_in1k", 448, 60.0, 80.0, "1,014.45"),
            ("vit_base_patch16_224.augreg_in1k", 224, 40.0, 70.0, "1,014.45"),
        ],
    }
    _write_snapshot(tmp_path, rows)
    monkeypatch.setattr(robustness, "snapshot_dir", lambda source=robustness.DEFAULT_SOURCE: tmp_path)
    return tmp_path


@needs_timm
def test_join_takes_default_size_rows_and_parses_param_count(tiny_snapshot):
    table = robustness.robustness_table([BIG, SMALL], source="timm-2025-10-30")
    big = table[table["model"] == BIG].set_index(["dataset", "metric"])
    assert big.loc[("imagenet", "top1"), "value"] == 80.0  # the 224 row, not the 448 one
    assert big.loc[("imagenet-a", "top1"), "value"] == 40.0  # row order in the file does not matter
    assert set(big["img_size"]) == {224}
    assert set(big["param_count"]) == {1014.45}
    assert set(big["model_id"]) == {BIG} and big["weights_match"].all()
    assert table.attrs["incomplete"] == {SMALL: ["imagenet-a"]}
    assert table.attrs["missing"] == [] and table.attrs["weights_mismatch"] == {}


@needs_timm
def test_join_reports_missing_models_by_name_with_reasons(tiny_snapshot):
    names = [BIG, "tflite:mobilenet_v2_1.0_224_quant", "pixels", f"{BIG}@random", "timm:resnet50.a1_in1k"]
    table = robustness.robustness_table(names, source="timm-2025-10-30")
    assert table.attrs["missing"] == names[1:]
    reasons = table.attrs["missing_reasons"]
    assert "not a timm model (source 'tflite')" in reasons["tflite:mobilenet_v2_1.0_224_quant"]
    assert "not a timm model (source 'pixels')" in reasons["pixels"]
    assert "random weights" in reasons[f"{BIG}@random"]
    assert reasons["timm:resnet50.a1_in1k"] == (
        "no row in the timm-2025-10-30 snapshot for timm:resnet50.a1_in1k (names tried: resnet50.a1_in1k)"
    )
    assert set(table["model"]) == {BIG}
    assert "200-class subsets" in table.attrs["note"]


@needs_timm
def test_to_result_rows_follows_the_study_schema(tiny_snapshot):
    table = robustness.robustness_table([BIG, "pixels"], source="timm-2025-10-30")
    rows = robustness.to_result_rows(table)
    assert list(rows.columns) == list(RESULT_COLUMNS)
    assert set(rows["stage"]) == {"robustness"}
    ok = rows[rows["status"] == "ok"]
    assert len(ok) == len(table) and ok["weights_match"].tolist() == [True] * len(table)
    assert set(ok["model_id"]) == {BIG}
    skipped = rows[rows["status"] == "skipped"]
    assert skipped["model"].tolist() == ["pixels"] and "not a timm model" in skipped["error"].item()
    assert skipped["weights_match"].isna().all()


@needs_timm
def test_legacy_snapshot_joins_the_row_of_the_embedded_weights(tmp_path, monkeypatch):
    """A 2022-style snapshot (legacy names): each name finds the row of its own resolved
    weights, never a row that timm's deprecation map would send it to by mistake."""
    _write_snapshot(
        tmp_path,
        {
            "imagenet": [
                ("ig_resnext101_32x8d", 224, 82.7, 96.6, "88.79"),
                ("ig_resnext101_32x16d", 224, 84.2, 97.2, "194.03"),
                ("gluon_xception65", 299, 79.7, 94.9, "39.92"),
            ]
        },
    )
    monkeypatch.setattr(robustness, "snapshot_dir", lambda source=robustness.DEFAULT_SOURCE: tmp_path)
    names = ["timm:ig_resnext101_32x16d", "timm:resnext101_32x16d.fb_wsl_ig1b_ft_in1k", "timm:gluon_xception65"]
    table = robustness.robustness_table([*names, "timm:xception65.tf_in1k"], source="timm-2022-07-27")
    first = table.drop_duplicates("model").set_index("model")
    assert first.loc[names[0], "snapshot_name"] == first.loc[names[1], "snapshot_name"] == "ig_resnext101_32x16d"
    assert first.loc[names[0], "param_count"] == 194.03
    assert first.loc[names[2], "snapshot_name"] == "gluon_xception65"
    assert first["weights_match"].to_dict() == {names[0]: True, names[1]: True, names[2]: False}
    assert set(table.attrs["weights_mismatch"]) == {"timm:gluon_xception65"}
    # the substitute's own id does not borrow gluon's row: no 2022 row has its weights
    assert table.attrs["missing"] == ["timm:xception65.tf_in1k"]
    assert "(names tried: " not in table.attrs["missing_reasons"]["timm:xception65.tf_in1k"]


def test_unknown_source_and_dataset_are_named():
    with pytest.raises(UnknownNameError, match="Unknown robustness source 'timm-2023'"):
        robustness.robustness_table(["timm:resnet50"], source="timm-2023")
    with pytest.raises(UnknownNameError, match="Unknown robustness dataset 'imagenet-c'"):
        robustness.load_results_file("timm-2022-07-27", "imagenet-c")


@pytest.mark.parametrize(
    ("name", "error", "message"),
    [
        ("  ", InputError, "A model name must be a non-empty string"),
        ("resnet50", UnknownNameError, "Model name 'resnet50' has no source.* e.g. 'timm:resnet50'"),
        ("nosuchsource:resnet50", UnknownNameError, "Unknown model source 'nosuchsource'"),
    ],
)
def test_malformed_names_fail_before_any_data_is_read(name, error, message, tmp_path, monkeypatch):
    """Names follow the models registry; no data folder is needed to reject a bad one."""
    monkeypatch.setattr(robustness, "snapshot_dir", lambda source=robustness.DEFAULT_SOURCE: tmp_path / "absent")
    with pytest.raises(error, match=message) as caught:
        robustness.robustness_table(["pixels", name])
    assert "\n" not in str(caught.value)


@needs_timm
def test_unknown_timm_model_is_an_error_with_suggestions(tiny_snapshot):
    with pytest.raises(UnknownNameError, match="Unknown timm model 'resnt50'. Did you mean: .*resnet50"):
        robustness.robustness_table(["timm:resnt50"], source="timm-2025-10-30")


def test_malformed_results_file_is_rejected(tmp_path, monkeypatch):
    (tmp_path / "results-imagenet.csv").write_text("name,acc\nresnet50,80\n")
    monkeypatch.setattr(robustness, "snapshot_dir", lambda source=robustness.DEFAULT_SOURCE: tmp_path)
    with pytest.raises(InputError, match="is not a timm results file"):
        robustness.load_results_file("timm-2022-07-27", "imagenet")
    with pytest.raises(MissingDataError, match="results-sketch.csv is missing"):
        robustness.load_results_file("timm-2022-07-27", "imagenet-sketch")


@needs_timm
def test_only_unexpected_missing_models_are_warned_about(tiny_snapshot, caplog):
    with caplog.at_level("INFO", logger="repalign.robustness"):
        robustness.robustness_table(["pixels", "tflite:x", "timm:resnet50.a1_in1k"], source="timm-2025-10-30")
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == ["1 of 3 models have no timm-2025-10-30 robustness results: timm:resnet50.a1_in1k"]
    assert any("pixels, tflite:x" in r.getMessage() for r in caplog.records if r.levelname == "INFO")


# -- integration: the real snapshots in the mirror ------------------------------------------------
def _csv_row(mirror: Path, date: str, row_name: str, dataset: str = "imagenet") -> pd.Series:
    """The published row, read straight from the mirror's CSV (smallest image size)."""
    frame = pd.read_csv(mirror / "timm_results" / date / robustness.DATASET_FILES[dataset], dtype={"param_count": str})
    rows = frame[frame["model"] == row_name].sort_values("img_size")
    assert len(rows), f"{row_name} is not in {date}/{robustness.DATASET_FILES[dataset]}"
    row = rows.iloc[0].copy()
    row["param_count"] = float(str(row["param_count"]).replace(",", ""))
    return row


def _first_rows(table: pd.DataFrame) -> pd.DataFrame:
    imagenet = table[(table["dataset"] == "imagenet") & (table["metric"] == "top1")]
    return imagenet.set_index("model")


@pytest.fixture(scope="module")
def paper_names(mirror):
    names = paper_model_names()
    assert len(names) == 490
    return names


@pytest.mark.integration
@needs_timm
@pytest.mark.parametrize(("source", "date"), [("timm-2022-07-27", "2022-07-27"), ("timm-2025-10-30", "2025-10-30")])
def test_ig_resnext101_32x16d_joins_its_own_results(mirror, source, date):
    """timm's deprecation map sends ig_resnext101_32x16d to the 32x8d weights (88.79 M
    parameters); the join must give the 32x16d network's results (194.03 M), as embedded."""
    name = "timm:ig_resnext101_32x16d"
    row = _first_rows(robustness.robustness_table([name], source=source)).loc[name]
    expected_name = "ig_resnext101_32x16d" if date == "2022-07-27" else "resnext101_32x16d.fb_wsl_ig1b_ft_in1k"
    published = _csv_row(mirror, date, expected_name)
    assert row["model_id"] == "timm:resnext101_32x16d.fb_wsl_ig1b_ft_in1k" == resolve_model(name).resolved_id
    assert row["snapshot_name"] == expected_name and row["weights_match"]
    assert row["param_count"] == published["param_count"] == 194.03
    assert row["value"] == pytest.approx(published["top1"]) == pytest.approx(84.17, abs=0.01)
    assert row["img_size"] == published["img_size"]


@pytest.mark.integration
@needs_timm
def test_gluon_xception65_2022_row_is_marked_as_other_weights(mirror):
    """gluon_xception65 is embedded as xception65.tf_in1k; its 2022 row is gluon's network."""
    name = "timm:gluon_xception65"
    old = robustness.robustness_table([name])
    row = _first_rows(old).loc[name]
    assert row["model_id"] == "timm:xception65.tf_in1k" == resolve_model(name).resolved_id
    assert row["snapshot_name"] == "gluon_xception65" and not row["weights_match"]
    assert row["value"] == pytest.approx(_csv_row(mirror, "2022-07-27", "gluon_xception65")["top1"])
    assert set(old["weights_match"]) == {False}
    reason = old.attrs["weights_mismatch"][name]
    assert "'gluon_xception65'" in reason and "timm:xception65.tf_in1k" in reason and "removed from timm" in reason
    assert robustness.to_result_rows(old)["weights_match"].eq(False).all()
    # the 2025 snapshot has a row of exactly the embedded weights
    new = _first_rows(robustness.robustness_table([name], source="timm-2025-10-30")).loc[name]
    assert new["snapshot_name"] == "xception65.tf_in1k" and new["weights_match"]
    assert new["value"] == pytest.approx(_csv_row(mirror, "2025-10-30", "xception65.tf_in1k")["top1"])


@pytest.mark.integration
@needs_timm
@pytest.mark.parametrize("source", list(robustness.SOURCES))
def test_every_paper_model_id_is_the_embedded_resolved_id(paper_names, source):
    """All 490 study models, both snapshots: the robustness model_id is the id embedding uses,
    and only gluon_xception65's 2022 row describes other weights."""
    table = robustness.robustness_table(paper_names, source=source)
    resolved = {name: resolve_model(name).resolved_id for name in paper_names}
    ids = table.groupby("model")["model_id"].unique()
    assert {name: list(found) for name, found in ids.items() if list(found) != [resolved[name]]} == {}
    assert table.attrs["missing"] == []
    if source == "timm-2022-07-27":
        assert table.attrs["incomplete"] == {} and len(table) == 490 * 4 * 2
    else:  # timm's 2025 results-imagenet-a.csv has no resnet50.tv_in1k row (its -clean file does)
        assert table.attrs["incomplete"] == {"timm:tv_resnet50": ["imagenet-a"]} and len(table) == 490 * 4 * 2 - 2
    mismatched = sorted(set(table.loc[~table["weights_match"], "model"]))
    assert mismatched == (["timm:gluon_xception65"] if source == "timm-2022-07-27" else [])
    assert sorted(table.attrs["weights_mismatch"]) == mismatched
    if source == "timm-2025-10-30":  # keyed by the resolved id itself
        assert (("timm:" + table["snapshot_name"]) == table["model_id"]).all()


@pytest.mark.integration
def test_every_paper_model_is_in_all_four_2022_files(paper_names):
    table = robustness.robustness_table(paper_names)
    counts = table.groupby("model").size()
    assert set(counts) == {8} and len(counts) == 490
    # published numbers (timm results-*.csv @ e987e29)
    value = table.set_index(["model", "dataset", "metric"])["value"]
    assert value[("timm:resnet50", "imagenet", "top1")] == pytest.approx(80.374)
    assert value[("timm:swsl_resnext101_32x8d", "imagenet-r", "top1")] == pytest.approx(75.583)
    assert value[("timm:swsl_resnext101_32x8d", "imagenet-sketch", "top5")] == pytest.approx(78.939)
    assert value[("timm:swsl_resnext101_32x8d", "imagenet-a", "top1")] == pytest.approx(51.227)


#: 2022 names whose 2025 re-evaluation of the same weights lands nearer another tag of the
#: architecture (see REEVALUATED in test_models_timm_names.py).
_REEVALUATED_2022 = {"convnext_base_384_in22ft1k": "fb_in22k_ft_in1k_384 86.54 vs 86.83; clip_laiona_* 86.26"}


@pytest.mark.integration
@needs_timm
def test_every_2022_row_joined_as_matching_is_of_the_resolved_tag(mirror):
    """Every row of the 2022 tables, not only the study's 490: where the join says
    weights_match, no other 2025 tag of the same architecture at the same image size is
    nearer to the 2022 top-1 and top-5 than the tag the name resolves to (same weights give
    the same numbers). This catches a legacy name sent to weights timm made default later."""
    from repalign.errors import RepalignError

    def imagenet(date: str) -> pd.DataFrame:
        frame = pd.read_csv(mirror / "timm_results" / date / "results-imagenet.csv", dtype={"param_count": str})
        return frame.assign(arch=frame["model"].str.split(".").str[0])

    old, new = imagenet("2022-07-27").set_index("model"), imagenet("2025-10-30")
    names, unresolvable = [], []
    for legacy in old.index:
        try:
            resolve_model(f"timm:{legacy}")
            names.append(f"timm:{legacy}")
        except RepalignError:  # timm lost them: e.g. the *_sam entries of its deprecation map
            unresolvable.append(legacy)
    assert len(unresolvable) <= 3, unresolvable
    table = robustness.robustness_table(names)
    joined = _first_rows(table)
    assert set(joined.index[~joined["weights_match"]]) == {"timm:gluon_xception65"}
    nearer = {}
    for name, row in joined[joined["weights_match"]].iterrows():
        published = old.loc[row["snapshot_name"]]
        arch_tag = row["model_id"].split(":", 1)[1]
        rivals = new[(new["arch"] == arch_tag.split(".")[0]) & (new["img_size"] == published["img_size"])]
        distance = (rivals["top1"] - published["top1"]).abs() + (rivals["top5"] - published["top5"]).abs()
        best = rivals["model"].iloc[distance.argmin()] if len(rivals) else arch_tag
        if best != arch_tag and row["snapshot_name"] not in _REEVALUATED_2022:
            nearer[row["snapshot_name"]] = (arch_tag, best)
    assert nearer == {}


@pytest.mark.integration
@needs_timm
def test_legacy_and_tagged_names_resolve_both_ways(mirror):
    old = robustness.robustness_table(
        ["timm:resnet50.fb_ssl_yfcc100m_ft_in1k", "timm:resnet50.a1_in1k", "timm:ssl_resnet50", "timm:resnet18"]
    )
    first = old.drop_duplicates("model").set_index("model")
    assert first.loc["timm:resnet50.fb_ssl_yfcc100m_ft_in1k", "snapshot_name"] == "ssl_resnet50"
    assert first.loc["timm:resnet50.a1_in1k", "snapshot_name"] == "resnet50"  # the arch's default tag
    assert first.loc["timm:ssl_resnet50", "model_id"] == "timm:resnet50.fb_ssl_yfcc100m_ft_in1k"
    assert first.loc["timm:resnet18", "model_id"] == "timm:resnet18.tv_in1k"  # the 2022 default tag
    # the current default's weights did not exist in 2022: no legacy row stands in for them
    missing = robustness.robustness_table(["timm:resnet18.a1_in1k"]).attrs["missing_reasons"]
    assert missing == {
        "timm:resnet18.a1_in1k": "no row in the timm-2022-07-27 snapshot for timm:resnet18.a1_in1k "
        "(no pre-0.9 timm name has these weights)"
    }
    new = robustness.robustness_table(
        ["timm:ssl_resnet50", "timm:resnet50", "timm:xception", "timm:vit_base_patch16_224_miil", "timm:resnet18"],
        source="timm-2025-10-30",
    )
    first = new.drop_duplicates("model").set_index("model")
    assert first.loc["timm:ssl_resnet50", "snapshot_name"] == "resnet50.fb_ssl_yfcc100m_ft_in1k"
    assert first.loc["timm:resnet50", "snapshot_name"] == "resnet50.a1_in1k"
    assert first.loc["timm:resnet50", "img_size"] == 224  # default size, not the 288 test size
    assert first.loc["timm:xception", "snapshot_name"] == "legacy_xception.tf_in1k"
    assert first.loc["timm:vit_base_patch16_224_miil", "snapshot_name"] == "vit_base_patch16_224_miil.in21k_ft_in1k"
    assert first.loc["timm:resnet18", "snapshot_name"] == "resnet18.tv_in1k"
    assert new.attrs["missing"] == [] and new["weights_match"].all()


@pytest.mark.integration
@pytest.mark.slow
@needs_timm
def test_2025_smallest_size_is_timms_default_input_size(mirror):
    """The documented rule for the 2025 snapshot, checked for every model with several sizes."""
    import timm

    frame = robustness.load_results_file("timm-2025-10-30", "imagenet")
    sizes = frame.groupby("model")["img_size"].agg(["min", "count"])
    several = sizes[sizes["count"] > 1]
    assert len(several) > 200
    mismatched = [m for m, row in several.iterrows() if timm.models.get_pretrained_cfg(m).input_size[-1] != row["min"]]
    assert mismatched == []


@pytest.mark.integration
def test_2025_param_counts_with_thousands_commas(mirror):
    frame = robustness.load_results_file("timm-2025-10-30", "imagenet")
    assert frame["param_count"].dtype == float
    assert frame["param_count"].max() > 1000  # "1,014.45"-style cells parsed, not NaN
    assert pd.notna(frame["param_count"]).all()


@pytest.mark.integration
@needs_timm
def test_study_keeps_weights_match_and_the_report_leaves_other_weights_out(tmp_path, mirror):
    """Through the pipeline: run_unit records weights_match, the store keeps it, and the report's
    robustness statistics leave gluon_xception65 (2022 row of other weights) out and name it."""
    import numpy as np

    from repalign.report import tables
    from repalign.report.html import write_report
    from repalign.store import StudyStore, load_study, new_manifest
    from repalign.study.config import parse_config
    from repalign.study.plan import Unit, unit_id
    from repalign.study.unit import run_unit

    models = ["timm:gluon_xception65", "timm:resnet50", "timm:ssl_resnet50", "timm:ig_resnext101_32x16d"]
    models += ["timm:resnet18", "timm:vit_base_patch16_224", "timm:tf_efficientnet_b0"]
    include = ", ".join(f'"{m}"' for m in models)
    config_text = f'[study]\nname = "w"\nseed = 0\n\n[models]\ninclude = [{include}]\n\n'
    config_text += '[robustness]\nsource = "timm-2022-07-27"\n'
    config = parse_config(config_text)
    rng = np.random.default_rng(0)
    store = StudyStore(tmp_path / "study")
    with store.locked():
        store.write_config(config_text)
        store.write_manifest(new_manifest())
        for model in models:
            unit = Unit(id=unit_id(model), model=model, stages=("robustness",))
            rows = run_unit(unit, config)
            alignment = pd.DataFrame(
                [
                    {"model": model, "model_id": rows["model_id"].iloc[0], "stage": "alignment", "dataset": d,
                     "metric": "pearson", "similarity": "cosine", "value": rng.uniform(), "status": "ok"}
                    for d in ("peterson:animals", "peterson:fruits")
                ]
            )  # fmt: skip
            store.write_unit(unit.id, pd.concat([rows, alignment], ignore_index=True), fingerprint="test")
    study = load_study(store.path)
    robust = study.robustness
    assert len(robust) == 7 * 8 and set(robust["status"]) == {"ok"}
    assert robust.groupby("model")["weights_match"].unique().map(list).to_dict() == {
        m: [m != "timm:gluon_xception65"] for m in models
    }
    assert tables.weights_mismatched(study.results) == ["timm:gluon_xception65"]
    assert sorted(tables.robustness_per_model(robust).index) == sorted(models[1:])
    assert len(tables.robustness_per_model(robust, include_mismatched=True)) == 7

    path = write_report(store.path, n_bootstrap=0)
    text = path.read_text()
    assert "(weights_match = False): timm:gluon_xception65." in text
    table2 = pd.read_csv(path.parent / "table2_robustness_correlations.csv")
    assert set(table2["n"]) == {6}  # the 7 aligned models less gluon_xception65
