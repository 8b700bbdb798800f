"""Layers as a dimension: ``--layer`` (repeatable) on embed / align / fewshot, ``[models]
layers`` in a study, ``repalign models --layers``, the ``layer`` column of the result schema
(old stores read as penultimate), and the report's per-layer profile.

Real models on the mirror's data: cifar_resnet:resnet20 (32x32 inputs: fast on a CPU),
timm:resnet18@random, tflite:mobilenet_v2_1.0_224_quant; Peterson animals and MNIST subsets.
Oracles: scipy's Pearson correlation of the similarity upper triangles, the single-layer runs
themselves, TFLite's own AVERAGE_POOL_2D op, and pandas group means written out by hand.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from repalign.cli import main
from repalign.errors import ConfigError
from repalign.study.config import parse_config

CIFAR = "cifar_resnet:resnet20"
TFLITE = "tflite:mobilenet_v2_1.0_224_quant"


def run_json(capsys, *argv) -> list[dict]:
    assert main([*argv, "--format", "json"]) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


# ---------------------------------------------------------------------------------------
# the study config
# ---------------------------------------------------------------------------------------
BASE = '[models]\ninclude = ["pixels"]\n'


def test_layers_default_list_and_table():
    assert parse_config(BASE).models.layers_for("timm:resnet18") == ("penultimate",)
    listed = parse_config(BASE + 'layers = ["layer3", "penultimate", "layer3"]\n').models
    assert listed.layers_for("anything") == ("layer3", "penultimate")  # duplicates dropped, order kept
    table = parse_config(
        BASE + 'layers = {"timm:*" = ["layer2", "penultimate"], "timm:resnet18@random" = "layer3"}\n'
    ).models
    assert table.layers_for("timm:resnet18@random") == ("layer2", "penultimate", "layer3")  # every match
    assert table.layers_for("timm:resnet50") == ("layer2", "penultimate")
    assert table.layers_for(CIFAR) == ("penultimate",)  # no pattern matches: the default


@pytest.mark.parametrize(
    "layers",
    ['["layer3", "penultimate"]', '{"timm:*" = ["layer2"], "cifar_resnet:*" = ["layer1", "penultimate"]}'],
)
def test_layers_round_trip_through_toml_and_dict(layers):
    from repalign.study.config import StudyConfig

    config = parse_config(BASE + f"layers = {layers}\n")
    assert parse_config(config.to_toml()) == config
    assert StudyConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


@pytest.mark.parametrize(
    ("layers", "message"),
    [
        ("[]", "must list at least one entry"),
        ('[""]', "expected a list of non-empty strings"),
        ("3", "expected a list of non-empty strings"),
        ("{}", "the table names no model"),
        ('{"timm:*" = []}', "'timm:\\*': expected a non-empty list of layer names"),
        ('{"timm:*" = [1]}', "'timm:\\*': expected a non-empty list of layer names"),
    ],
)
def test_bad_layers_are_config_errors_naming_the_line(layers, message):
    with pytest.raises(ConfigError, match=rf"models\.layers \(line 3\): .*{message}"):
        parse_config(BASE + f"layers = {layers}\n")


def test_changed_layers_make_a_finished_unit_stale_and_default_layers_add_no_input(tmp_path):
    """Units written before layers existed (the default layer) stay finished; a change of
    [models] layers recomputes the unit and the plan says why."""
    from repalign.study.inputs import StudyInputs
    from repalign.study.plan import plan_units

    default = parse_config(BASE)
    (unit,) = plan_units(default, ["pixels"])
    assert unit.layers == ("penultimate",)
    assert "layers" not in StudyInputs(default, {}).for_unit(unit).get("alignment", {}).get("pixels", {})
    config = parse_config(BASE + 'layers = {"pix*" = ["penultimate", "logits"]}\n[alignment]\nhuman = ["x"]\n')
    (unit,) = plan_units(config, ["pixels"])
    assert unit.layers == ("penultimate", "logits")
    assert StudyInputs(config, {"x": ["x"]}).for_unit(unit)["alignment"]["pixels"]["layers"] == "penultimate,logits"


# ---------------------------------------------------------------------------------------
# the store: the layer column, and stores written before it
# ---------------------------------------------------------------------------------------
def _rows() -> pd.DataFrame:
    from repalign.schema import conform

    return conform(
        pd.DataFrame(
            [
                {"model": "m", "stage": "alignment", "dataset": "d", "metric": "pearson", "value": 0.5, "status": "ok"},
                {"model": "m", "stage": "fewshot", "dataset": "f", "metric": "accuracy", "value": 0.7, "status": "ok"},
                {"model": "m", "stage": "robustness", "dataset": "imagenet", "metric": "top1", "status": "skipped"},
            ]
        )
    )


def _write_old_unit(store, unit: str, rows: pd.DataFrame, *, digest_of: pd.DataFrame | None = None) -> None:
    """A unit file as repalign wrote it before the layer column: no such column, and the
    rows' digest over the columns it had."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from repalign import store as store_module

    old = rows.drop(columns=["layer"])
    table = pa.Table.from_pandas(old, preserve_index=False)
    meta = dict(table.schema.metadata or {})
    meta[store_module._ROWS_KEY] = store_module._rows_digest(old if digest_of is None else digest_of).encode()
    meta[store_module._UNIT_KEY] = unit.encode()
    meta[store_module._FINGERPRINT_KEY] = b"f"
    store.results_dir.mkdir(parents=True, exist_ok=True)
    pq.write_table(table.replace_schema_metadata(meta), store.unit_file(unit))


def test_a_store_without_the_layer_column_reads_as_penultimate(tmp_path):
    from repalign.store import StudyStore

    store = StudyStore(tmp_path)
    _write_old_unit(store, "u", _rows())
    results = store.read_results()
    assert store.damaged == {}
    assert results["layer"].tolist()[:2] == ["penultimate", "penultimate"]
    assert results["layer"].isna().tolist() == [False, False, True]  # robustness: no layer
    assert store.unit_state("u", "f") == "finished"  # not recomputed because the schema grew


def test_an_old_unit_file_whose_rows_changed_is_still_caught(tmp_path):
    from repalign.store import StudyStore

    store = StudyStore(tmp_path)
    tampered = _rows().assign(value=[0.5, 0.9, None])
    _write_old_unit(store, "u", tampered, digest_of=_rows().drop(columns=["layer"]))
    assert len(store.read_results()) == 0
    assert "differ from the digest" in next(iter(store.damaged.values()))


# ---------------------------------------------------------------------------------------
# models: layers in network order, short TFLite aliases, spatial means
# ---------------------------------------------------------------------------------------
@pytest.mark.integration
def test_models_layers_lists_torch_layers_in_network_order(mirror, capsys):
    rows = run_json(capsys, "models", "--layers", "timm:resnet18@random")
    names = [r["layer"] for r in rows]
    assert [r["position"] for r in rows] == list(range(1, len(rows) + 1))
    # network order, not alphabetical: the stem, the four stages, the classifier, the presets last
    order = ["conv1", "layer1.0.conv1", "layer1", "layer2", "layer3", "layer4", "fc", "penultimate", "logits"]
    assert [names.index(n) for n in order] == sorted(names.index(n) for n in order)
    assert names[-2:] == ["penultimate", "logits"] and names != sorted(names)
    features = {r["layer"]: r["features"] for r in rows}
    assert (features["layer1"], features["layer2"], features["layer3"], features["penultimate"]) == (64, 128, 256, 512)
    assert features["logits"] == 1000
    # every listed name is one forward(..., layers=...) takes
    from repalign.models import load_model

    handle = load_model("timm:resnet18@random", device="cpu")
    assert set(names) <= set(handle.available_layers())


@pytest.mark.integration
def test_tflite_aliases_are_short_stable_and_in_execution_order(mirror, capsys):
    from repalign.models import load_model
    from repalign.models.tflite_source import graph_layers, read_graph

    rows = run_json(capsys, "models", "--layers", TFLITE)
    aliases = [r["layer"] for r in rows if r["kind"] != "preset"]
    assert len(set(aliases)) == len(aliases) and max(map(len, aliases)) <= 12
    assert max(len(r["name"]) for r in rows) > 80  # the tensor names they stand for are long
    assert aliases[:3] == ["conv_1", "dwconv_1", "conv_2"] and aliases[-3:] == ["conv_36", "reshape_1", "softmax_1"]
    handle = load_model(TFLITE)
    _, ops, tensors = read_graph(handle.path)
    assert [layer.alias for layer in graph_layers(ops, tensors)] == aliases  # the same graph, the same aliases
    presets = {r["layer"]: r for r in rows if r["kind"] == "preset"}
    assert presets["penultimate"]["name"] == "avgpool_1" and presets["penultimate"]["features"] == 1280


@pytest.mark.integration
def test_tflite_layer_maps_are_averaged_over_space(mirror):
    """The spatial mean of the last 7x7 map equals TFLite's own AVERAGE_POOL_2D of it (the
    penultimate tensor) to within the pool's quantization step; an alias and the full
    tensor name give the same features."""
    from repalign.data.human import load_human
    from repalign.models import load_model

    handle = load_model(TFLITE)
    (human,) = load_human("peterson:animals")
    images = human.images()
    batch = np.stack([handle.transform(images.load(i)) for i in range(4)])
    long_name = next(r["name"] for r in handle.layer_table() if r["layer"] == "conv_35")
    out = handle.forward(batch, layers=["conv_35", long_name, "penultimate", "avgpool_1"])
    assert out["conv_35"].shape == (4, 1280)
    np.testing.assert_array_equal(out["conv_35"], out[long_name])
    np.testing.assert_array_equal(out["penultimate"], out["avgpool_1"])  # a 1x1 map keeps its values
    step = handle._runner(frozenset([handle.penultimate_index])).outputs[handle.penultimate_index]["quantization"][0]
    assert np.abs(out["conv_35"] - out["penultimate"]).max() <= step + 1e-6


# ---------------------------------------------------------------------------------------
# the command line: --layer on embed, align and fewshot
# ---------------------------------------------------------------------------------------
@pytest.mark.integration
def test_align_scores_every_layer_given(mirror, capsys):
    from repalign.data.human import load_human
    from repalign.embed import extract_embeddings

    args = ("align", CIFAR, "--human", "peterson:animals", "--n-bootstrap", "0", "--metrics", "pearson")
    rows = run_json(capsys, *args, "--layer", "layer2", "--layer", "penultimate")
    assert [(r["layer"], r["metric"]) for r in rows] == [("layer2", "pearson"), ("penultimate", "pearson")]
    (default,) = run_json(capsys, *args)
    assert default["layer"] == "penultimate" and default["value"] == rows[1]["value"]
    (human,) = load_human("peterson:animals")
    upper = np.triu_indices(len(human.stimuli), k=1)
    for row in rows:  # oracle: scipy's Pearson r of the cosine similarities' upper triangles
        x = extract_embeddings(CIFAR, human.images(), layer=row["layer"]).astype(np.float64)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        expected = stats.pearsonr((x @ x.T)[upper], human.similarity[upper]).statistic
        assert row["value"] == pytest.approx(expected, abs=1e-6)
    assert rows[0]["value"] != rows[1]["value"]
    assert main(["align", *args[1:], "--layer", "layer2", "--layer", "penultimate"]) == 0
    table = capsys.readouterr().out
    assert "layer2" in table and "penultimate" in table


@pytest.mark.integration
def test_align_unknown_layer_is_one_line(mirror, capsys):
    code = main(["align", CIFAR, "--human", "peterson:animals", "--n-bootstrap", "0", "--layer", "layer9"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and "'layer9'" in err and "Did you mean: layer3" in err


@pytest.mark.integration
def test_fewshot_scores_every_layer_on_the_same_splits(mirror, capsys):
    args = ("fewshot", CIFAR, "--dataset", "mnist", "--shots", "1,5", "--seeds", "2", "--heads", "linear")
    args += ("--max-eval-per-class", "10", "--device", "cpu")
    rows = run_json(capsys, *args, "--layer", "layer1", "--layer", "penultimate")
    assert [(r["layer"], r["shots"]) for r in rows] == [
        ("layer1", 1),
        ("layer1", 5),
        ("penultimate", 1),
        ("penultimate", 5),
    ]
    single = run_json(capsys, *args)
    assert [r["layer"] for r in single] == ["penultimate", "penultimate"]
    assert [r["value"] for r in single] == [r["value"] for r in rows[2:]]
    alone = run_json(capsys, *args, "--layer", "layer1")
    assert [r["value"] for r in alone] == [r["value"] for r in rows[:2]]


@pytest.mark.integration
def test_embed_writes_one_array_per_layer(mirror, tmp_path, capsys):
    out = tmp_path / "e.npz"
    args = ("embed", CIFAR, "--dataset", "peterson:animals", "--layer", "layer1", "--layer", "layer3")
    rows = run_json(capsys, *args, "--out", str(out))
    assert [(r["layer"], r["d"]) for r in rows] == [("layer1", 16), ("layer3", 64)]
    from repalign.embed import read_embeddings_file

    saved = {layer: read_embeddings_file(out, layer=layer) for layer in ("layer1", "layer3")}
    assert saved["layer1"].embeddings.shape == (120, 16) and saved["layer3"].embeddings.shape == (120, 64)
    assert saved["layer1"].layers == ("layer1", "layer3") and saved["layer3"].layer == "layer3"
    rows = run_json(capsys, *args)
    assert {r["cache"] for r in rows} == {"hit"}  # each layer cached under its own key


# ---------------------------------------------------------------------------------------
# a study over layers, and its report
# ---------------------------------------------------------------------------------------
STUDY = """
[study]
output = "{out}"
report = false

[models]
include = ["{cifar}", "pixels"]
layers = {{"cifar_resnet:*" = ["layer1", "layer2", "penultimate"]}}

[alignment]
human = ["peterson:animals"]
metrics = ["pearson"]
n_bootstrap = 0

[fewshot]
datasets = ["mnist"]
shots = [1]
heads = ["linear"]
seeds = 2
max_eval_per_class = 5

[execution]
device = "cpu"
"""


@pytest.mark.integration
@pytest.mark.slow
def test_a_study_over_layers_and_its_report(mirror, tmp_path):
    from repalign.fewshot import run_fewshot
    from repalign.report import analyze_study
    from repalign.store import load_study
    from repalign.study.run import run_study

    config = parse_config(STUDY.format(out=tmp_path / "s", cifar=CIFAR))
    outcome = run_study(config)
    assert (outcome.n_run, outcome.n_failed_units) == (2, 0)
    study = load_study(tmp_path / "s")
    got = study.alignment.groupby("model", sort=False)["layer"].agg(list).to_dict()
    assert got == {CIFAR: ["layer1", "layer2", "penultimate"], "pixels": ["penultimate"]}  # no pattern: the default
    assert study.fewshot.groupby("model", sort=False)["layer"].agg(list).to_dict() == got
    # the unit's few-shot rows are the library's, layer by layer
    direct = run_fewshot(CIFAR, "mnist", shots=1, heads="linear", seeds=2, max_eval_per_class=5, layer="layer1")
    stored = study.fewshot[(study.fewshot["model"] == CIFAR) & (study.fewshot["layer"] == "layer1")]
    assert stored["value"].tolist() == direct["value"].tolist()
    # a second run finds every unit finished
    again = run_study(config)
    assert (again.n_skipped, again.n_run) == (2, 0)
    # a change of one model's layers recomputes that unit only
    changed = parse_config(STUDY.format(out=tmp_path / "s", cifar=CIFAR).replace('"layer1", ', ""))
    assert (run_study(changed).n_run, run_study(changed).n_run) == (1, 0)
    rows = load_study(tmp_path / "s").alignment
    assert rows.groupby("model", sort=False)["layer"].agg(list).to_dict()[CIFAR] == ["layer2", "penultimate"]
    study = load_study(tmp_path / "s")

    report = analyze_study(study)
    layers = report.section("layers")
    profile = report.table("layer_profile").frame
    assert len(profile) == 3 and profile.groupby("model")["depth"].max().to_dict() == {CIFAR: 2, "pixels": 1}
    assert [f.name for f in layers.figures] == ["layer_profile"]
    # the statistics across models see the penultimate rows only
    per_model = report.table("alignment_per_model").frame
    penultimate = study.alignment[study.alignment["layer"] == "penultimate"].set_index("model")["value"]
    assert dict(zip(per_model["model"], per_model["pearson"], strict=True)) == penultimate.to_dict()
    assert any("several layers" in notice for notice in report.notices)


# ---------------------------------------------------------------------------------------
# the report's per-layer profile, on rows whose answer is known
# ---------------------------------------------------------------------------------------
def _study(tmp_path, layers_by_model: dict[str, list[str]]):
    """Synthetic alignment (two domains, two similarity functions) and few-shot rows."""
    from repalign.schema import conform
    from repalign.store import StudyResults

    rng = np.random.default_rng(0)
    rows = []
    for model, layers in layers_by_model.items():
        for layer in layers:
            for dataset in ("peterson:animals", "peterson:fruits"):
                for similarity in ("cosine", "dot"):
                    for metric in ("pearson", "spearman"):
                        rows.append(
                            dict(
                                model=model,
                                layer=layer,
                                stage="alignment",
                                dataset=dataset,
                                metric=metric,
                                similarity=similarity,
                                value=rng.uniform(),
                                status="ok",
                            )
                        )
            for dataset in ("mnist", "cifar10"):
                for shots in (1, 5):
                    rows.append(
                        dict(
                            model=model,
                            layer=layer,
                            stage="fewshot",
                            dataset=dataset,
                            metric="accuracy",
                            head="linear",
                            shots=shots,
                            value=rng.uniform(),
                            status="ok",
                        )
                    )
    config = {"alignment": {"similarity": ["cosine", "dot"]}, "fewshot": {"datasets": ["mnist", "cifar10"]}}
    return StudyResults(path=tmp_path, results=conform(pd.DataFrame(rows)), config=config, manifest={})


def test_layer_profile_equals_group_means_written_out(tmp_path):
    from repalign.report.layers import layer_profile, layer_summary

    study = _study(tmp_path, {"a": ["penultimate", "layer2", "layer1"], "b": ["stage3", "penultimate"]})
    profile = layer_profile(study.alignment, study.fewshot, similarity="cosine", head="linear", shots=1)
    assert profile.attrs["metric"] == "pearson"
    # depth: named layers as listed, penultimate last (whatever the config's order)
    assert list(zip(profile["model"], profile["layer"], profile["depth"], strict=True)) == [
        ("a", "layer2", 1),
        ("a", "layer1", 2),
        ("a", "penultimate", 3),
        ("b", "stage3", 1),
        ("b", "penultimate", 2),
    ]
    a = study.alignment
    for row in profile.itertuples():
        mine = a[(a.model == row.model) & (a.layer == row.layer) & (a.similarity == "cosine") & (a.metric == "pearson")]
        assert row.alignment == pytest.approx(mine["value"].mean()) and row.n_domains == 2
        f = study.fewshot
        acc = f[(f.model == row.model) & (f.layer == row.layer) & (f.shots == 1)]["value"].mean()
        assert row.accuracy == pytest.approx(acc)
    summary = layer_summary(profile).set_index("model")
    for model, frame in profile.groupby("model"):
        assert summary.loc[model, "most_aligned_layer"] == frame.loc[frame["alignment"].idxmax(), "layer"]
        assert summary.loc[model, "best_transfer_layer"] == frame.loc[frame["accuracy"].idxmax(), "layer"]
        same = summary.loc[model, "most_aligned_layer"] == summary.loc[model, "best_transfer_layer"]
        assert bool(summary.loc[model, "same_layer"]) == same


def test_report_of_one_layer_is_unchanged_and_several_layers_add_the_profile(tmp_path):
    from repalign.report import analyze_study

    models = {f"m{i}": ["penultimate"] for i in range(4)}
    single = analyze_study(_study(tmp_path, models), n_bootstrap=0)
    assert "layers" not in [s.key for s in single.sections]
    assert not any("layers" in notice for notice in single.notices)

    several = _study(tmp_path, {m: ["layer2", "penultimate"] for m in models})
    report = analyze_study(several, n_bootstrap=0)
    assert report.section("layers").tables[0].name == "layer_summary"
    # every other section sees the penultimate layer only: the same tables as a study of it alone
    alone = dataclasses_replace(several, several.results[several.results["layer"] == "penultimate"])
    expected = analyze_study(alone, n_bootstrap=0)
    for name in ("alignment_per_model", "fewshot_per_model"):
        pd.testing.assert_frame_equal(report.table(name).frame, expected.table(name).frame)


def dataclasses_replace(study, results):
    import dataclasses

    return dataclasses.replace(study, results=results.reset_index(drop=True))


def test_per_model_summaries_never_average_layers(tmp_path):
    """Rows of several layers given straight to the per-model tables: the penultimate only."""
    from repalign.report import summaries, tables

    study = _study(tmp_path, {"a": ["layer1", "penultimate"], "b": ["penultimate", "stage2"]})
    table = tables.alignment_per_model(study.alignment, similarity="cosine")
    a = study.alignment
    mine = a[(a.layer == "penultimate") & (a.similarity == "cosine") & (a.metric == "pearson")]
    assert table["pearson"].to_dict() == pytest.approx(mine.groupby("model")["value"].mean().to_dict())
    accuracy = summaries.fewshot_per_model(study.fewshot).set_index(["model", "dataset"])["1-shot"]
    f = study.fewshot
    expected = f[(f.layer == "penultimate") & (f.shots == 1)].set_index(["model", "dataset"])["value"]
    assert accuracy.to_dict() == expected.to_dict()  # the penultimate's values, not a mean over layers
