"""One interface across subcommands: option spellings, list options, help text, usage on an
unknown option, CSV headers without rows, user text shown as typed, whole names in pipes."""

from __future__ import annotations

import argparse
import io
import re

import pytest

from cli_capture import run_cli
from repalign.cli import build_parser
from repalign.cli._output import emit


def _subparsers(parser: argparse.ArgumentParser, prefix: str = "repalign"):
    """(name, parser) of every (sub)command, nested ones included."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield f"{prefix} {name}", sub
                yield from _subparsers(sub, f"{prefix} {name}")


def _visible_options(parser) -> set[str]:
    return {o for a in parser._actions if a.help != argparse.SUPPRESS for o in a.option_strings}


def test_help_texts_show_single_percent_signs():
    for name, sub in _subparsers(build_parser()):
        text = sub.format_help()
        assert "%%" not in text, name
    assert "95% confidence intervals" in dict(_subparsers(build_parser()))["repalign align"].format_help()


def test_one_spelling_per_option():
    every = {name: _visible_options(sub) for name, sub in _subparsers(build_parser())}
    shown = set().union(*every.values())
    # counts are n_*; --seed is a seed; old spellings are hidden aliases
    assert "--bootstrap" not in shown and "--seeds" not in shown
    assert {"--n-bootstrap", "--n-seeds", "--seed"} <= shown
    for options in every.values():
        assert all(re.fullmatch(r"-\w|--[a-z0-9]+(-[a-z0-9]+)*", o) for o in options), options  # kebab-case
    assert "--n-bootstrap" in every["repalign align"] and "--n-bootstrap" in every["repalign report"]
    parser = build_parser()
    old = parser.parse_args(["align", "pixels", "--human", "x", "--bootstrap", "7"])
    new = parser.parse_args(["align", "pixels", "--human", "x", "--n-bootstrap", "7"])
    assert old.n_bootstrap == new.n_bootstrap == 7
    fewshot = parser.parse_args(["fewshot", "pixels", "--dataset", "mnist", "--n-seeds", "3"])
    assert fewshot.seeds == 3 == parser.parse_args(["fewshot", "pixels", "--dataset", "mnist", "--seeds", "3"]).seeds


@pytest.mark.parametrize(
    ("argv", "dest", "expected"),
    [
        (["align", "pixels", "--human", "a", "--human", "b,c"], "human", "a,b,c"),
        (
            ["align", "pixels", "--human", "a", "--metrics", "pearson", "--metrics", "triplet"],
            "metrics",
            "pearson,triplet",
        ),
        (["align", "pixels", "--human", "a"], "metrics", "auto"),  # the default, until replaced
        (["fewshot", "p", "--dataset", "d", "--heads", "linear", "--heads", "mlp1"], "heads", "linear,mlp1"),
        (["fewshot", "p", "--dataset", "d", "--shots", "1,5", "--shots", "10"], "shots", "1,5,10"),
        (["embed", "p", "--dataset", "d", "--layer", "a", "--layer", "b"], "layer", "a,b"),
        (
            ["compare", "p", "q", "--images", "d", "--methods", "linear_cka", "--methods", "rsa_kendall"],
            "methods",
            "linear_cka,rsa_kendall",
        ),
    ],
)
def test_list_options_take_commas_or_repetition(argv, dest, expected):
    assert getattr(build_parser().parse_args(argv), dest) == expected


@pytest.mark.parametrize(
    ("argv", "prog"),
    [
        (["results", "DIR", "--bogus"], "repalign results"),
        (["compare", "a", "b", "--images", "x", "--n-bootstrap", "3"], "repalign compare"),
        (["data", "fetch", "mnist", "--bogus"], "repalign data fetch"),
    ],
)
def test_an_unknown_option_prints_the_subcommands_usage(tmp_path, argv, prog):
    result = run_cli([str(tmp_path) if a == "DIR" else a for a in argv])
    assert result.code == 2
    assert result.err_lines[0].startswith(f"usage: {prog} ")
    assert result.err_lines[-1].startswith(f"{prog}: error: unrecognized arguments: ")


@pytest.mark.parametrize("stage", ["all", "alignment", "fewshot", "robustness", "failures"])
def test_results_csv_prints_a_header_without_rows(tmp_path, stage):
    (tmp_path / "results").mkdir()  # a study that has not finished a unit yet
    result = run_cli(["results", tmp_path, "--format", "csv", "--stage", stage])
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert len(lines) == 1 and lines[0].split(",")[:1] == ["model"] and "dataset" in lines[0].split(",")


def test_user_text_is_printed_as_typed_and_whole_in_a_pipe():
    long_name = "timm:vit_large_patch14_clip_224.openai_ft_in12k_in1k" + "_x" * 30
    stream = io.StringIO()  # not a terminal, like `| grep`
    records = [{"model": long_name, "dataset": "[red]x", "note": "[/bold] [link=http://a]b"}]
    emit(records, "table", title="[bold]title", stream=stream)
    out = stream.getvalue()
    assert any(long_name in line for line in out.splitlines())  # one line, not cut or folded
    assert "[red]x" in out and "[/bold] [link=http://a]b" in out and "[bold]title" in out
    assert "\x1b[" not in out  # no colour codes in a pipe


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_long_steps_show_progress_on_a_terminal_only_and_keep_their_values(monkeypatch, rng):
    """The stimulus bootstrap and the few-shot heads draw a bar on a terminal, nothing in a pipe,
    and the values do not depend on whether one was drawn."""
    import numpy as np

    from repalign.alignment import bootstrap_alignment_ci
    from repalign.fewshot import evaluate_fewshot

    x = rng.normal(size=(30, 5))
    model, human = np.corrcoef(x), np.corrcoef(x + rng.normal(size=x.shape))
    features = np.vstack([rng.normal(loc=k, size=(12, 4)) for k in range(3)])
    labels = np.repeat(np.arange(3), 12)

    def run(progress: bool):
        ci = bootstrap_alignment_ci(model, human, metrics=("pearson", "triplet"), n_bootstrap=450, progress=progress)
        grid = evaluate_fewshot(features, labels, shots=2, heads="linear", seeds=2, progress=progress, dataset="toy")
        return ci, grid

    terminal = _Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    drawn = run(True)
    assert "bootstrap resamples" in terminal.getvalue() and "few-shot heads on toy" in terminal.getvalue()
    pipe = io.StringIO()
    monkeypatch.setattr("sys.stderr", pipe)
    quiet = run(True)
    off = run(False)
    assert pipe.getvalue() == ""
    assert drawn[0] == quiet[0] == off[0]
    assert drawn[1].equals(quiet[1]) and quiet[1].equals(off[1])


def test_a_folder_named_like_markup_is_printed_as_typed(tmp_path):
    import numpy as np
    from PIL import Image

    folder = tmp_path / "[red]x[bold]"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, size=(20, 20, 3), dtype=np.uint8)).save(folder / f"[b]{i}.png")
    result = run_cli(["compare", "pixels", "pixels:8", "--images", folder, "--methods", "linear_cka"])
    assert result.code == 0, result.err
    assert "linear_cka on [red]x[bold] (6 images)" in result.out and "pixels:8" in result.out
