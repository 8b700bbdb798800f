"""Study config: parsing, defaults, validation errors (key + line), round trip."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from repalign.errors import ConfigError
from repalign.study.config import StudyConfig, as_config, load_config, parse_config

PROJECT = Path(__file__).resolve().parents[1]

# the example of the issue that introduced `repalign run`: these keys must keep working
ISSUE_EXAMPLE = """\
[study]
name = "quickstart"
output = "studies/quickstart"

[models]
include = ["tflite:*", "cifar_resnet:resnet20", "pixels"]   # names, globs, or presets "paper" / "offline"
exclude = []

[alignment]
human = ["peterson:animals", "peterson:fruits"]
similarity = "cosine"
metrics = ["pearson", "spearman", "triplet"]

[fewshot]
datasets = ["mnist", "fashion_mnist"]
shots = [1, 5, 10, 20, 40, 80]
heads = ["linear", "mlp1", "mlp2"]
n_seeds = 3
max_eval_per_class = 100

[robustness]
source = "timm-2022-07-27"          # or "none"

[execution]
executor = "local"                  # or "ray"
jobs = 2
"""


def test_issue_example_parses_with_its_values():
    cfg = parse_config(ISSUE_EXAMPLE)
    assert cfg.study.name == "quickstart"
    assert cfg.models.include == ("tflite:*", "cifar_resnet:resnet20", "pixels")
    assert cfg.alignment.human == ("peterson:animals", "peterson:fruits")
    assert cfg.fewshot.shots == (1, 5, 10, 20, 40, 80)
    assert cfg.fewshot.n_seeds == 3 and cfg.fewshot.max_eval_per_class == 100
    assert cfg.robustness.source == "timm-2022-07-27"
    assert cfg.execution.executor == "local" and cfg.execution.jobs == 2
    assert cfg.stages == ("alignment", "fewshot", "robustness")
    assert cfg.output_dir == (Path.cwd() / "studies/quickstart").resolve()


def test_defaults_switch_stages_off_and_name_comes_from_file(tmp_path):
    path = tmp_path / "mini.toml"
    path.write_text('[models]\ninclude = ["pixels"]\n')
    cfg = load_config(path)
    assert cfg.study.name == "mini"
    assert cfg.stages == ()
    assert cfg.execution == StudyConfig().execution
    assert cfg.output_dir.name == "mini"


def test_round_trip_through_toml_and_dict():
    cfg = parse_config(ISSUE_EXAMPLE)
    assert parse_config(cfg.to_toml()) == cfg
    assert StudyConfig.from_dict(cfg.to_dict()) == cfg
    assert as_config(cfg.to_dict()) == cfg


def test_no_eval_cap_is_none_inside_and_0_in_the_file():
    """The one translation of the file's 0 (TOML has no null): None everywhere past the config."""
    capped = parse_config('[models]\ninclude = ["pixels"]\n[fewshot]\nmax_eval_per_class = 7\n')
    zero = parse_config('[models]\ninclude = ["pixels"]\n[fewshot]\nmax_eval_per_class = 0\n')
    left_out = parse_config('[models]\ninclude = ["pixels"]\n')
    assert capped.fewshot.max_eval_per_class == 7
    assert zero.fewshot.max_eval_per_class is None and zero == left_out
    assert zero.to_dict()["fewshot"]["max_eval_per_class"] == 0
    assert "max_eval_per_class = 0" in zero.to_toml() and parse_config(zero.to_toml()) == zero
    assert StudyConfig.from_dict(zero.to_dict()) == zero
    with_fewshot = {"datasets": ["mnist"]}  # a stage that does not run sets no values
    assert zero.results_fingerprint() == capped.results_fingerprint()
    assert (
        zero.replace("fewshot", **with_fewshot).results_fingerprint()
        != capped.replace("fewshot", **with_fewshot).results_fingerprint()
    )


def test_single_string_is_a_list_of_one_and_shots_are_sorted():
    cfg = parse_config('[models]\ninclude = "pixels"\n[fewshot]\ndatasets = "mnist"\nshots = [10, 1, 5, 1]\n')
    assert cfg.models.include == ("pixels",)
    assert cfg.fewshot.datasets == ("mnist",)
    assert cfg.fewshot.shots == (1, 5, 10)


def test_fingerprint_ignores_execution_but_not_settings():
    cfg = parse_config(ISSUE_EXAMPLE)
    assert cfg.replace("execution", jobs=1, executor="ray").results_fingerprint() == cfg.results_fingerprint()
    assert cfg.replace("fewshot", n_seeds=4).results_fingerprint() != cfg.results_fingerprint()
    assert cfg.replace("study", seed=1).results_fingerprint() != cfg.results_fingerprint()


@pytest.mark.parametrize(
    ("section", "change", "changed"),
    [
        ("alignment", {"ties": "strict"}, {"alignment"}),
        ("alignment", {"similarity": ["cosine", "neg_euclidean"]}, {"alignment"}),
        ("study", {"seed": 1}, {"alignment"}),  # seeds the alignment bootstrap only
        ("fewshot", {"shots": [1, 5]}, {"fewshot"}),
        ("robustness", {"source": "timm-2025-10-30"}, {"robustness"}),
        ("execution", {"jobs": 4, "device": "cpu"}, set()),
        ("study", {"name": "other", "report": False}, set()),
    ],
)
def test_stage_fingerprints_change_with_their_own_settings_only(section, change, changed):
    cfg = parse_config(ISSUE_EXAMPLE)
    before, after = cfg.stage_fingerprints(), cfg.replace(section, **change).stage_fingerprints()
    assert set(before) == set(after) == {"alignment", "fewshot", "robustness"}
    assert {stage for stage in before if before[stage] != after[stage]} == changed
    assert (cfg.results_fingerprint() != cfg.replace(section, **change).results_fingerprint()) == bool(changed)


def test_similarity_is_a_sweep_and_ties_a_choice():
    base = '[models]\ninclude = ["pixels"]\n[alignment]\nhuman = ["peterson:animals"]\n'
    one = parse_config(base + 'similarity = "neg_euclidean"\n')
    assert one.alignment.similarity == ("neg_euclidean",) and one.alignment.ties == "exclude"
    both = parse_config(base + 'similarity = ["cosine", "neg_euclidean", "cosine"]\nties = "strict"\n')
    assert both.alignment.similarity == ("cosine", "neg_euclidean") and both.alignment.ties == "strict"
    assert both.to_dict()["alignment"]["similarity"] == ["cosine", "neg_euclidean"]
    assert 'similarity = ["cosine", "neg_euclidean"]' in both.to_toml() and 'ties = "strict"' in both.to_toml()
    assert parse_config(both.to_toml()) == both
    assert StudyConfig.from_dict(json.loads(json.dumps(both.to_dict()))) == both


@pytest.mark.parametrize(
    ("old", "new", "match"),
    [
        ("jobs = 2", "jobs = 0", r"execution\.jobs \(line 26\): must be >= 1, got 0"),
        ("jobs = 2", 'jobs = "2"', r"execution\.jobs \(line 26\): expected an integer, got string '2'"),
        ("jobs = 2", "jobs = true", r"execution\.jobs \(line 26\): expected an integer, got boolean"),
        ("jobs = 2", "jbos = 2", r"execution\.jbos \(line 26\): unknown key\. Did you mean: jobs\?"),
        (
            'executor = "local"',
            'executor = "slurm"',
            r"execution\.executor \(line 25\): unknown value 'slurm'.*local, ray",
        ),
        ("n_seeds = 3", "n_seeds = 0", r"fewshot\.n_seeds \(line 18\): must be >= 1"),
        (
            "shots = [1, 5, 10, 20, 40, 80]",
            "shots = [1, 0]",
            r"fewshot\.shots \(line 16\): every entry must be >= 1, got 0",
        ),
        (
            "shots = [1, 5, 10, 20, 40, 80]",
            "shots = []",
            r"fewshot\.shots \(line 16\): expected a non-empty list of integers",
        ),
        (
            "shots = [1, 5, 10, 20, 40, 80]",
            'shots = ["1"]',
            r"fewshot\.shots \(line 16\): expected a non-empty list of integers",
        ),
        (
            'heads = ["linear", "mlp1", "mlp2"]',
            'heads = ["linear", "mlp3"]',
            r"fewshot\.heads \(line 17\): unknown value 'mlp3'",
        ),
        (
            "max_eval_per_class = 100",
            "max_eval_per_class = -1",
            r"fewshot\.max_eval_per_class \(line 19\): must be >= 0",
        ),
        (
            'similarity = "cosine"',
            'similarity = "cosin"',
            r"alignment\.similarity \(line 11\): unknown value 'cosin'\. Did you mean: cosine\?",
        ),
        (
            'similarity = "cosine"',
            'similarity = ["cosine", "neg_euclidian"]',
            r"alignment\.similarity \(line 11\): unknown value 'neg_euclidian'\. Did you mean: neg_euclidean\?",
        ),
        (
            'similarity = "cosine"',
            "similarity = []",
            r"alignment\.similarity \(line 11\): must list at least one entry",
        ),
        (
            'similarity = "cosine"',
            'ties = "halve"',
            r"alignment\.ties \(line 11\): unknown value 'halve'\. Did you mean: half\?",
        ),
        ('similarity = "cosine"', "ties = true", r"alignment\.ties \(line 11\): expected a string, got boolean true"),
        ('similarity = "cosine"', 'tie = "strict"', r"alignment\.tie \(line 11\): unknown key\. Did you mean: ties\?"),
        (
            'metrics = ["pearson", "spearman", "triplet"]',
            'metrics = ["pearson", "tripplet"]',
            r"alignment\.metrics \(line 12\): unknown value 'tripplet'",
        ),
        (
            'metrics = ["pearson", "spearman", "triplet"]',
            "metrics = []",
            r"alignment\.metrics \(line 12\): must list at least one entry",
        ),
        (
            'human = ["peterson:animals", "peterson:fruits"]',
            "human = [1]",
            r"alignment\.human \(line 10\): expected a list of non-empty strings",
        ),
        (
            'source = "timm-2022-07-27"',
            'source = "imagenet"',
            r"robustness\.source \(line 22\): unknown value 'imagenet'",
        ),
        (
            'include = ["tflite:*", "cifar_resnet:resnet20", "pixels"]',
            "include = []",
            r"models\.include \(line 6\): must list at least one entry",
        ),
        ('name = "quickstart"', 'name = ""', r"study\.name \(line 2\): must not be empty"),
        ('output = "studies/quickstart"', "output = 3", r"study\.output \(line 3\): expected a string, got int 3"),
        ("[execution]", "[exekution]", r"\[exekution\] \(line 24\): unknown section"),
    ],
)
def test_invalid_values_name_key_and_line(old, new, match):
    assert old in ISSUE_EXAMPLE
    with pytest.raises(ConfigError, match=match):
        parse_config(ISSUE_EXAMPLE.replace(old, new, 1))


def test_other_errors():
    with pytest.raises(ConfigError, match=r"models\.include: is required"):
        parse_config('[study]\nname = "x"\n')
    with pytest.raises(ConfigError, match=r"not valid TOML"):
        parse_config("[models\ninclude = 1")
    with pytest.raises(ConfigError, match=r"study\.report \(line 2\): expected true or false"):
        parse_config('[study]\nreport = "yes"\n[models]\ninclude = ["pixels"]\n')
    with pytest.raises(ConfigError, match=r"execution\.device \(line 4\): Unknown device 'gpu'\. Did you mean: cpu\?"):
        parse_config('[models]\ninclude = ["pixels"]\n[execution]\ndevice = "gpu"\n')
    for device in ("cuda:", "cuda:x", "cpu:0"):
        with pytest.raises(ConfigError, match=rf"execution\.device \(line 4\): Unknown device '{device}'"):
            parse_config(f'[models]\ninclude = ["pixels"]\n[execution]\ndevice = "{device}"\n')
    with pytest.raises(ConfigError, match=r'alignment\.metrics \(line 2\): "auto" stands alone'):
        parse_config('[alignment]\nmetrics = ["auto", "kendall"]\n[models]\ninclude = ["pixels"]\n')
    with pytest.raises(ConfigError, match=r"\[study\]: must be a table"):
        parse_config('study = 3\n[models]\ninclude = ["pixels"]\n')
    with pytest.raises(ConfigError, match=r"Config file not found: .*nope\.toml"):
        load_config("nope.toml")
    with pytest.raises(ConfigError, match=r"Expected a StudyConfig, a dict or a path"):
        as_config(42)


@pytest.mark.parametrize("name", ["quickstart", "paper"])
def test_presets_are_valid(name):
    cfg = load_config(PROJECT / "configs" / f"{name}.toml")
    assert cfg.stages == ("alignment", "fewshot", "robustness")
    assert cfg.robustness.source == "timm-2022-07-27"
    assert set(cfg.fewshot.heads) == {"linear", "mlp1", "mlp2"}


def test_paper_preset_is_the_published_study():
    cfg = load_config(PROJECT / "configs" / "paper.toml")
    assert cfg.models.include == ("paper",)
    assert cfg.alignment.human == ("peterson",)
    assert set(cfg.fewshot.datasets) == {"cifar100", "mnist", "fashion_mnist"}
    assert cfg.fewshot.shots == (1, 5, 10, 20, 40, 80)
    assert cfg.fewshot.n_seeds == 5
    # the paper's tie rule (Definition 3.5), and both readings of its unstated similarity function
    assert cfg.alignment.ties == "strict"
    assert cfg.alignment.similarity == ("cosine", "neg_euclidean")
