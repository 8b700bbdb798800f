"""The robustness join: timm's published results on canonical model ids."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd
import pytest

from repalign import robustness
from repalign.errors import InputError, MissingDataError, UnknownNameError
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


@pytest.mark.parametrize(
    ("name", "parts"),
    [
        ("timm:resnet50", ("timm", "resnet50", None)),
        ("resnet50.a1_in1k", ("timm", "resnet50.a1_in1k", None)),
        ("timm:resnet50@random", ("timm", "resnet50", "random")),
        ("pixels", ("pixels", "pixels", None)),
        ("tflite:mobilenet_v2_1.0_224_quant", ("tflite", "mobilenet_v2_1.0_224_quant", None)),
    ],
)
def test_split_model_name(name, parts):
    assert robustness.split_model_name(name) == parts


# -- offline: a tiny snapshot written by the test ------------------------------------------------
def _write_snapshot(folder: Path, rows: dict[str, list[tuple]]) -> None:
    header = "model,img_size,top1,top1_err,top5,top5_err,param_count,crop_pct,interpolation\n"
    for dataset, file_name in robustness.DATASET_FILES.items():
        lines = [
            f'{m},{size},{t1},{100 - t1},{t5},{100 - t5},"{pc}",0.9,bicubic\n'
            for m, size, t1, t5, pc in rows.get(dataset, rows["imagenet"])
        ]
        (folder / file_name).write_text(header + "".join(lines))


@pytest.fixture
def tiny_snapshot(tmp_path, monkeypatch):
    rows = {
        "imagenet": [
            ("big_vit.tag_in1k", 224, 80.0, 95.0, "1,014.45"),
            ("big_vit.tag_in1k", 448, 85.0, 97.0, "1,014.45"),
            ("small_net.a_in1k", 160, 70.0, 90.0, "5.5"),
        ],
        "imagenet-a": [
            ("big_vit.tag_in1k", 448, 60.0, 80.0, "1,014.45"),
            ("big_vit.tag_in1k", 224, 40.0, 70.0, "1,014.45"),
        ],
    }
    _write_snapshot(tmp_path, rows)
    monkeypatch.setattr(robustness, "snapshot_dir", lambda source=robustness.DEFAULT_SOURCE: tmp_path)
    return tmp_path


def test_join_takes_default_size_rows_and_parses_param_count(tiny_snapshot):
    table = robustness.robustness_table(["timm:big_vit.tag_in1k", "timm:small_net.a_in1k"], source="timm-2025-10-30")
    big = table[table["model"] == "timm:big_vit.tag_in1k"].set_index(["dataset", "metric"])
    assert big.loc[("imagenet", "top1"), "value"] == 80.0  # the 224 row, not the 448 one
    assert big.loc[("imagenet-a", "top1"), "value"] == 40.0  # row order in the file does not matter
    assert set(big["img_size"]) == {224}
    assert set(big["param_count"]) == {1014.45}
    assert table.attrs["incomplete"] == {"timm:small_net.a_in1k": ["imagenet-a"]}
    assert table.attrs["missing"] == []


def test_join_reports_missing_models_by_name_with_reasons(tiny_snapshot):
    names = [
        "timm:big_vit.tag_in1k",
        "tflite:mobilenet_v2_1.0_224_quant",
        "pixels",
        "timm:big_vit.tag_in1k@random",
        "timm:nope.x_in1k",
    ]
    table = robustness.robustness_table(names, source="timm-2025-10-30")
    assert table.attrs["missing"] == names[1:]
    reasons = table.attrs["missing_reasons"]
    assert "not a timm model (source 'tflite')" in reasons["tflite:mobilenet_v2_1.0_224_quant"]
    assert "not a timm model (source 'pixels')" in reasons["pixels"]
    assert "random weights" in reasons["timm:big_vit.tag_in1k@random"]
    assert "no row in the timm-2025-10-30 snapshot (names tried: nope.x_in1k)" == reasons["timm:nope.x_in1k"]
    assert set(table["model"]) == {"timm:big_vit.tag_in1k"}
    assert "200-class subsets" in table.attrs["note"]


def test_to_result_rows_follows_the_study_schema(tiny_snapshot):
    table = robustness.robustness_table(["timm:big_vit.tag_in1k", "pixels"], source="timm-2025-10-30")
    rows = robustness.to_result_rows(table)
    assert list(rows.columns) == list(RESULT_COLUMNS)
    assert set(rows["stage"]) == {"robustness"}
    assert (rows["status"] == "ok").sum() == len(table)
    skipped = rows[rows["status"] == "skipped"]
    assert skipped["model"].tolist() == ["pixels"] and "not a timm model" in skipped["error"].item()


def test_unknown_source_and_dataset_are_named():
    with pytest.raises(UnknownNameError, match="Unknown robustness source 'timm-2023'"):
        robustness.robustness_table(["resnet50"], source="timm-2023")
    with pytest.raises(UnknownNameError, match="Unknown robustness dataset 'imagenet-c'"):
        robustness.load_results_file("timm-2022-07-27", "imagenet-c")
    with pytest.raises(InputError, match="Empty model name"):
        robustness.split_model_name("  ")


def test_malformed_results_file_is_rejected(tmp_path, monkeypatch):
    (tmp_path / "results-imagenet.csv").write_text("name,acc\nresnet50,80\n")
    monkeypatch.setattr(robustness, "snapshot_dir", lambda source=robustness.DEFAULT_SOURCE: tmp_path)
    with pytest.raises(InputError, match="is not a timm results file"):
        robustness.load_results_file("timm-2022-07-27", "imagenet")
    with pytest.raises(MissingDataError, match="results-sketch.csv is missing"):
        robustness.load_results_file("timm-2022-07-27", "imagenet-sketch")


# -- integration: the real snapshots in the mirror ------------------------------------------------
def _paper_models(mirror: Path) -> list[str]:
    return [line.strip() for line in (mirror / "paper_models.txt").read_text().splitlines() if line.strip()]


@pytest.mark.integration
def test_every_paper_model_is_in_all_four_2022_files(mirror):
    names = _paper_models(mirror)
    assert len(names) == 490
    table = robustness.robustness_table(names)
    assert table.attrs["missing"] == [] and table.attrs["incomplete"] == {}
    assert len(table) == 490 * 4 * 2
    counts = table.groupby("model").size()
    assert set(counts) == {8} and len(counts) == 490
    # published numbers (timm results-*.csv @ e987e29)
    value = table.set_index(["model", "dataset", "metric"])["value"]
    assert value[("resnet50", "imagenet", "top1")] == pytest.approx(80.374)
    assert value[("swsl_resnext101_32x8d", "imagenet-r", "top1")] == pytest.approx(75.583)
    assert value[("swsl_resnext101_32x8d", "imagenet-sketch", "top5")] == pytest.approx(78.939)
    assert value[("swsl_resnext101_32x8d", "imagenet-a", "top1")] == pytest.approx(51.227)


@pytest.mark.integration
@needs_timm
def test_legacy_and_tagged_names_resolve_both_ways(mirror):
    old = robustness.robustness_table(
        ["timm:resnet50.fb_ssl_yfcc100m_ft_in1k", "timm:resnet50.a1_in1k", "ssl_resnet50"]
    )
    first = old.drop_duplicates("model").set_index("model")
    assert first.loc["timm:resnet50.fb_ssl_yfcc100m_ft_in1k", "snapshot_name"] == "ssl_resnet50"
    assert first.loc["timm:resnet50.a1_in1k", "snapshot_name"] == "resnet50"  # the arch's default tag
    assert first.loc["ssl_resnet50", "model_id"] == "timm:resnet50.fb_ssl_yfcc100m_ft_in1k"
    new = robustness.robustness_table(
        ["ssl_resnet50", "resnet50", "xception", "vit_base_patch16_224_miil", "gluon_xception65"],
        source="timm-2025-10-30",
    )
    first = new.drop_duplicates("model").set_index("model")
    assert first.loc["ssl_resnet50", "snapshot_name"] == "resnet50.fb_ssl_yfcc100m_ft_in1k"
    assert first.loc["resnet50", "snapshot_name"] == "resnet50.a1_in1k"
    assert first.loc["resnet50", "img_size"] == 224  # default size, not the 288 test size
    assert first.loc["xception", "snapshot_name"] == "legacy_xception.tf_in1k"
    assert first.loc["vit_base_patch16_224_miil", "snapshot_name"] == "vit_base_patch16_224_miil.in21k_ft_in1k"
    assert new.attrs["missing"] == ["gluon_xception65"]
    assert "removed from timm" in new.attrs["missing_reasons"]["gluon_xception65"]


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


def test_only_unexpected_missing_models_are_warned_about(tiny_snapshot, caplog):
    with caplog.at_level("INFO", logger="repalign.robustness"):
        robustness.robustness_table(["pixels", "tflite:x", "timm:nope.x_in1k"], source="timm-2025-10-30")
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == ["1 of 3 models have no timm-2025-10-30 robustness results: timm:nope.x_in1k"]
    assert any("pixels, tflite:x" in r.getMessage() for r in caplog.records if r.levelname == "INFO")
