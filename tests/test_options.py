"""Every option's vocabulary and default is defined once, in repalign._options: the library
functions, the study config (and its documentation) and the command line all agree with it."""

from __future__ import annotations

import ast
import inspect
import json
import re
from pathlib import Path

import pytest

from repalign import _options as opt
from repalign._io import tomllib
from repalign.study.config import StudyConfig, parse_config

PROJECT = Path(__file__).resolve().parents[1]
SOURCE = PROJECT / "src" / "repalign"


def default_of(function, name):
    return inspect.signature(function).parameters[name].default


def test_library_functions_default_to_the_options():
    from repalign.alignment import bootstrap_alignment_ci, compute_alignment, similarity_matrix, triplet_alignment
    from repalign.data.fewshot_datasets import load_fewshot_dataset
    from repalign.embed import extract_embeddings
    from repalign.fewshot import HeadSettings, evaluate_fewshot, make_splits, run_fewshot
    from repalign.models import load_model
    from repalign.report.html import write_report
    from repalign.robustness import robustness_table
    from repalign.stats import adjust_pvalues, correlation_table

    assert default_of(compute_alignment, "metrics") is None  # the dataset's defaults
    assert default_of(compute_alignment, "similarity") is opt.DEFAULT_SIMILARITY
    assert default_of(similarity_matrix, "metric") is opt.DEFAULT_SIMILARITY
    assert default_of(triplet_alignment, "ties") is opt.DEFAULT_TIES
    for function in (compute_alignment, bootstrap_alignment_ci, write_report, correlation_table):
        assert default_of(function, "n_bootstrap") is opt.DEFAULT_N_BOOTSTRAP
    assert default_of(make_splits, "shots") is opt.DEFAULT_SHOTS
    assert default_of(make_splits, "seeds") is opt.DEFAULT_N_SEEDS
    # None = "not given", so that options beside a split manifest can be checked against it;
    # splits are then drawn by make_splits, with the options' defaults
    for function in (evaluate_fewshot, run_fewshot):
        assert default_of(function, "shots") is None and default_of(function, "seeds") is None
    import numpy as np

    from repalign.fewshot.evaluate import _splits_for

    drawn = _splits_for(
        np.repeat(np.arange(3), 100), None, shots=None, seeds=None, max_eval_per_class=None, dataset="x"
    )
    assert drawn.shots == opt.DEFAULT_SHOTS and len(drawn.seeds) == opt.DEFAULT_N_SEEDS
    assert default_of(evaluate_fewshot, "heads") is opt.HEADS
    assert default_of(run_fewshot, "split") is None  # the loaded dataset's split, or load_fewshot_dataset's
    assert default_of(load_fewshot_dataset, "split") is opt.DEFAULT_FEWSHOT_SPLIT
    for function in (evaluate_fewshot, run_fewshot, extract_embeddings, load_model):
        assert default_of(function, "device") is opt.DEFAULT_DEVICE
    assert default_of(extract_embeddings, "dtype") is opt.DEFAULT_EMBEDDING_DTYPE
    assert default_of(robustness_table, "source") is opt.DEFAULT_ROBUSTNESS_SOURCE
    assert default_of(adjust_pvalues, "method") is default_of(write_report, "correction") is opt.DEFAULT_CORRECTION
    assert HeadSettings().mlp_precision in opt.MLP_PRECISIONS


def test_library_vocabularies_are_the_options():
    from repalign import alignment, fewshot, robustness, stats
    from repalign.data import fewshot_datasets
    from repalign.embed import cache

    assert alignment.ALIGNMENT_METRICS is opt.ALIGNMENT_METRICS
    assert alignment.SIMILARITY_METRICS is opt.SIMILARITY_METRICS
    assert fewshot.HEADS is opt.HEADS and fewshot.DEFAULT_SHOTS is opt.DEFAULT_SHOTS
    assert fewshot_datasets.SPLITS is opt.FEWSHOT_SPLITS
    assert cache.CACHE_DTYPES is opt.EMBEDDING_DTYPES
    assert stats.CORRECTIONS is opt.CORRECTIONS
    assert tuple(robustness.SOURCES) == opt.ROBUSTNESS_SOURCES
    assert robustness.DEFAULT_SOURCE in robustness.SOURCES


def test_a_default_config_takes_the_options():
    cfg = parse_config('[models]\ninclude = ["pixels"]\n')
    assert cfg.alignment.similarity == (opt.DEFAULT_SIMILARITY,)
    assert cfg.alignment.metrics == opt.AUTO
    assert cfg.alignment.ties == opt.DEFAULT_TIES
    assert cfg.alignment.n_bootstrap == opt.DEFAULT_N_BOOTSTRAP
    assert cfg.study.seed == opt.DEFAULT_SEED
    assert cfg.fewshot.shots == opt.DEFAULT_SHOTS and cfg.fewshot.heads == opt.HEADS
    assert cfg.fewshot.n_seeds == opt.DEFAULT_N_SEEDS
    assert cfg.compare.methods == opt.DEFAULT_COMPARISON_METHODS and cfg.compare.similarity == opt.DEFAULT_SIMILARITY
    assert cfg.robustness.source == opt.NO_ROBUSTNESS
    assert cfg.execution.executor == opt.DEFAULT_EXECUTOR and cfg.execution.jobs == opt.DEFAULT_JOBS
    assert cfg.execution.device == opt.DEFAULT_DEVICE
    # the validator fills in exactly the dataclasses' defaults
    assert cfg == StudyConfig().replace("models", include=["pixels"])


@pytest.mark.parametrize(
    ("section", "key", "valid"),
    [
        ("alignment", "similarity", opt.SIMILARITY_METRICS),
        ("alignment", "metrics", (opt.AUTO, *opt.ALIGNMENT_METRICS)),
        ("alignment", "ties", opt.TIE_MODES),
        ("fewshot", "heads", opt.HEADS),
        ("robustness", "source", (opt.NO_ROBUSTNESS, *opt.ROBUSTNESS_SOURCES)),
        ("execution", "executor", opt.EXECUTORS),
        ("execution", "device", (*opt.DEVICES, "cuda:0", "cuda:3")),
    ],
)
def test_config_accepts_exactly_the_vocabulary(section, key, valid):
    base = '[models]\ninclude = ["pixels"]\n'
    for value in valid:
        cfg = parse_config(f"{base}[{section}]\n{key} = {json.dumps(value)}\n")
        got = getattr(getattr(cfg, section), key)
        assert got == value or got == (value,)
    from repalign.errors import ConfigError

    with pytest.raises(ConfigError, match=rf"{section}\.{key}"):
        parse_config(f'{base}[{section}]\n{key} = "{valid[0]}x"\n')


def documented_defaults() -> dict:
    text = (PROJECT / "docs" / "study.md").read_text(encoding="utf-8")
    block = re.search(r"## Config \(TOML\).*?```toml\n(.*?)```", text, re.S)
    assert block, "docs/study.md has no ```toml block under '## Config (TOML)'"
    return tomllib.loads(block.group(1))


def test_docs_list_every_key_with_its_default():
    assert documented_defaults() == StudyConfig().to_dict()


def cli_defaults(*argv: str):
    from repalign.cli import build_parser

    return build_parser().parse_args(list(argv))


def test_cli_defaults_are_the_options():

    align = cli_defaults("align", "pixels", "--human", "peterson")
    assert align.similarity == opt.DEFAULT_SIMILARITY and align.metrics == opt.AUTO
    assert align.ties == opt.DEFAULT_TIES and align.n_bootstrap == opt.DEFAULT_N_BOOTSTRAP
    assert align.seed == opt.DEFAULT_SEED and align.device == opt.DEFAULT_DEVICE
    few = cli_defaults("fewshot", "pixels", "--dataset", "mnist")
    # not given: run_fewshot draws with the options' defaults (and --splits FILE may decide)
    assert few.shots is None and few.seeds is None
    assert tuple(few.heads.split(",")) == opt.HEADS
    assert few.split == opt.DEFAULT_FEWSHOT_SPLIT and few.device == opt.DEFAULT_DEVICE
    embed = cli_defaults("embed", "pixels", "--dataset", "mnist")
    assert embed.device == opt.DEFAULT_DEVICE and embed.dtype == opt.DEFAULT_EMBEDDING_DTYPE
    compare = cli_defaults("compare", "pixels", "timm:resnet18", "--images", "peterson:animals")
    assert tuple(compare.methods.split(",")) == opt.DEFAULT_COMPARISON_METHODS
    assert compare.similarity == opt.DEFAULT_SIMILARITY and compare.device == opt.DEFAULT_DEVICE
    report = cli_defaults("report", "studies/x")
    assert report.n_bootstrap == opt.DEFAULT_N_BOOTSTRAP and report.correction == opt.DEFAULT_CORRECTION


def test_cli_choices_are_the_options():
    from repalign.cli import build_parser

    subcommands = build_parser()._subparsers._group_actions[0].choices
    choices = {
        (name, action.dest): tuple(action.choices)
        for name, parser in subcommands.items()
        for action in parser._actions
        if action.choices is not None and not isinstance(action.choices, dict)
    }
    assert choices[("align", "similarity")] == opt.SIMILARITY_METRICS
    assert choices[("align", "ties")] == opt.TIE_MODES
    assert choices[("compare", "similarity")] == opt.SIMILARITY_METRICS
    assert choices[("fewshot", "split")] == opt.FEWSHOT_SPLITS
    assert choices[("embed", "dtype")] == opt.EMBEDDING_DTYPES
    assert choices[("report", "correction")] == opt.CORRECTIONS
    assert choices[("run", "executor")] == opt.EXECUTORS
    assert choices[("results", "stage")][: len(opt.STAGES)] == opt.STAGES


VOCABULARIES = {
    name: value
    for name, value in vars(opt).items()
    if name.isupper() and isinstance(value, tuple) and len(value) > 2 and name != "MATRIX_METRICS"
}


def literal_values(tree: ast.AST):
    """Every tuple or list literal of constants in a module, and every comma-joined string
    constant (how CLI defaults were once spelled), as tuples."""
    for node in ast.walk(tree):
        if (
            isinstance(node, (ast.Tuple, ast.List))
            and node.elts
            and all(isinstance(e, ast.Constant) for e in node.elts)
        ):
            yield tuple(e.value for e in node.elts)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and "," in node.value:
            parts = tuple(node.value.split(","))
            yield tuple(int(p) if p.isdigit() else p for p in parts)


def test_no_copy_of_a_vocabulary_in_the_source():
    copies = []
    for path in sorted([*SOURCE.rglob("*.py"), *(PROJECT / "benchmarks").glob("*.py")]):
        if path.name == "_options.py":
            continue
        found = set(literal_values(ast.parse(path.read_text(encoding="utf-8"))))
        copies += [f"{path.relative_to(PROJECT)}: {name}" for name, value in VOCABULARIES.items() if value in found]
    assert not copies, f"spelled out again instead of imported from repalign._options: {copies}"
