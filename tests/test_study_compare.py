"""The study's [compare] option: config validation, the comparison a run writes (against
compare_models on the models' own embeddings), resume that keeps it, and the report's section.
Also the [fewshot] count's one spelling (n_seeds) with the old one still read."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest

from cli_capture import run_cli
from repalign.errors import ConfigError
from repalign.study.config import StudyConfig, parse_config

BASE = '[models]\ninclude = ["pixels"]\n'


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ('[compare]\nmethods = ["cka"]\n', r"compare\.methods \(line 5\): unknown value 'cka'"),
        ("[compare]\nmethods = []\n", r"compare\.methods \(line 5\): must list at least one entry"),
        ('[compare]\nsimilarity = "cosin"\n', r"compare\.similarity.*Did you mean: cosine"),
        ("[compare]\nimages = 3\n", r"compare\.images \(line 5\): expected a string"),
        ("[compare]\nimage = 'x'\n", r"compare\.image \(line 5\): unknown key.*images"),
        ("[fewshot]\nseeds = 2\nn_seeds = 2\n", r"fewshot\.seeds.*old spelling of n_seeds; give n_seeds only"),
    ],
)
def test_bad_compare_and_renamed_keys(text, match):
    with pytest.raises(ConfigError, match=match):
        parse_config(BASE + "\n" + text)


def test_compare_defaults_and_the_old_seeds_spelling():
    cfg = parse_config(BASE)
    assert cfg.compare.images == "" and cfg.compare.methods == ("linear_cka", "debiased_cka", "rsa_spearman")
    old = parse_config(BASE + '[fewshot]\ndatasets = ["mnist"]\nseeds = 3\n')
    new = parse_config(BASE + '[fewshot]\ndatasets = ["mnist"]\nn_seeds = 3\n')
    assert old == new and new.fewshot.n_seeds == 3
    assert StudyConfig.from_dict(new.to_dict()) == new  # round trip under the new name
    # [compare] is not a unit stage: it leaves the units' fingerprints alone
    with_compare = parse_config(BASE + '[fewshot]\ndatasets = ["mnist"]\nn_seeds = 3\n[compare]\nimages = "x"\n')
    assert with_compare.results_fingerprint() == new.results_fingerprint()


def test_fewshot_fingerprint_is_unchanged_by_the_rename():
    """A study run before `seeds` became `n_seeds` resumes without recomputing few-shot."""
    import hashlib
    import json

    cfg = parse_config(BASE + '[fewshot]\ndatasets = ["mnist"]\nn_seeds = 3\n')
    old_settings = {"fewshot": {("seeds" if k == "n_seeds" else k): v for k, v in cfg.to_dict()["fewshot"].items()}}
    expected = hashlib.sha256(json.dumps(old_settings, sort_keys=True).encode()).hexdigest()
    assert cfg.stage_fingerprints()["fewshot"] == expected


@pytest.mark.integration
def test_a_study_with_compare_writes_resumes_and_reports_it(tmp_path, mirror):
    from repalign.alignment import compare_models
    from repalign.data import load_dataset_images
    from repalign.data.human import load_human
    from repalign.embed import extract_embeddings
    from repalign.report import analyze_study
    from repalign.store import MODEL_COMPARISON_FILE, load_study
    from repalign.study.run import run_study

    models = ["pixels", "cifar_resnet:resnet20"]
    text = f"""
[study]
name = "cmp"
output = "{tmp_path / "study"}"
report = false
[models]
include = {models!r}
[alignment]
human = ["peterson:animals"]
metrics = ["spearman"]
n_bootstrap = 10
[compare]
images = "peterson:animals"
methods = ["linear_cka", "rsa_spearman"]
[execution]
threads = 1
""".replace("'", '"')
    config = tmp_path / "cmp.toml"
    config.write_text(text)
    outcome = run_study(config, live=False)
    assert outcome.exit_code == 0, outcome.failures
    study = load_study(tmp_path / "study")
    table = study.model_comparison
    images = load_dataset_images("peterson:animals").images
    (animals,) = load_human("peterson:animals")
    expected = compare_models(
        {m: extract_embeddings(m, images) for m in models},
        methods=("linear_cka", "rsa_spearman"),
        human_similarity=animals.similarity,
    )
    pd.testing.assert_frame_equal(table, expected)
    # the human row of RSA is each model's spearman alignment row of the same study
    rsa = table[(table["method"] == "rsa_spearman") & (table["model_b"] == "human")].set_index("model_a")["value"]
    aligned = study.alignment.set_index("model")["value"]
    for model in models:
        assert rsa[model] == pytest.approx(aligned[model], abs=1e-12)

    file = tmp_path / "study" / MODEL_COMPARISON_FILE
    before = file.stat().st_mtime_ns
    assert run_study(config, live=False).n_run == 0
    assert file.stat().st_mtime_ns == before  # up to date: not computed again
    config.write_text(text.replace('methods = ["linear_cka", "rsa_spearman"]', 'methods = ["rsa_kendall"]'))
    run_study(config, live=False)
    assert set(load_study(tmp_path / "study").model_comparison["method"]) == {"rsa_kendall"}

    report = analyze_study(tmp_path / "study", n_bootstrap=0)
    section = report.section("comparison")
    assert [f.name for f in section.figures] == ["comparison_rsa_kendall"]
    assert report.table("model_comparison").frame["method"].eq("rsa_kendall").all()
    assert [f.name for f in report.section("overview").figures] == ["alignment_bars_peterson_animals"]


def test_results_prints_the_comparison_table(tmp_path):
    """`repalign results DIR --stage comparison`: the table a run wrote, or its header alone."""
    from repalign.alignment import compare_models
    from repalign.store import StudyStore

    (tmp_path / "results").mkdir()
    empty = run_cli(["results", tmp_path, "--stage", "comparison", "--format", "csv"])
    assert empty.code == 0 and empty.out == "model_a,model_b,method,similarity,value,n\n"
    rng = np.random.default_rng(0)
    table = compare_models({"a": rng.normal(size=(10, 3)), "b": rng.normal(size=(10, 4))}, methods="linear_cka")
    store = StudyStore(tmp_path)
    with store.locked():
        store.write_model_comparison(table, inputs_key="k")
    assert store.model_comparison_inputs() == "k"
    shown = run_cli(["results", tmp_path, "--stage", "comparison", "--format", "csv"])
    assert shown.code == 0
    columns = ["model_a", "model_b", "method", "value", "n"]  # similarity: null on CKA rows
    read = pd.read_csv(io.StringIO(shown.out))
    assert list(read.columns) == list(table.columns)
    pd.testing.assert_frame_equal(read[columns], table[columns], check_dtype=False)


@pytest.mark.integration
def test_an_unknown_compare_image_set_stops_the_run_before_any_work(tmp_path, mirror):
    from repalign.errors import UnknownNameError
    from repalign.study.run import run_study

    config = tmp_path / "c.toml"
    config.write_text(
        f'[study]\noutput = "{tmp_path / "out"}"\n[models]\ninclude = ["pixels", "pixels:8"]\n'
        '[alignment]\nhuman = ["peterson:animals"]\n[compare]\nimages = "peterson:cats"\n'
    )
    with pytest.raises(UnknownNameError, match="peterson:cats"):
        run_study(config, live=False)
    assert not (tmp_path / "out" / "results").exists()
