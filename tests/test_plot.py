"""repalign.plot: what each figure draws (the data in its artists), bad input, and that the
public alias is cheap (no torch, no matplotlib at import)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from scipy.cluster.hierarchy import leaves_list, linkage
from scipy.spatial.distance import squareform

from repalign import plot
from repalign.alignment import compare_models, comparison_matrix
from repalign.errors import InputError


def test_similarity_matrix_shows_both_matrices_in_one_order(rng):
    x = rng.normal(size=(12, 5))
    model = np.corrcoef(x)
    human = np.corrcoef(x + rng.normal(size=x.shape))
    order = rng.permutation(12)
    fig = plot.similarity_matrix(model, human, order=order, labels=[f"s{i}" for i in range(12)])
    left, right = (ax.images[0].get_array() for ax in fig.axes[:2])
    np.testing.assert_array_equal(left, model[np.ix_(order, order)])
    np.testing.assert_array_equal(right, human[np.ix_(order, order)])
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == [f"s{i}" for i in order]
    # the default order: average-linkage leaves of the human dissimilarities, the same on both panels
    clustered = plot.similarity_matrix(model, human)
    leaves = leaves_list(linkage(squareform(human.max() - human, checks=False), method="average"))
    np.testing.assert_array_equal(clustered.axes[1].images[0].get_array(), human[np.ix_(leaves, leaves)])
    np.testing.assert_array_equal(clustered.axes[0].images[0].get_array(), model[np.ix_(leaves, leaves)])


def test_model_bars_draws_values_cis_and_the_ceiling_band():
    frame = pd.DataFrame(
        {
            "model": ["timm:vit_large_patch14_clip_224.openai_ft_in12k_in1k", "pixels", "[red]x"],
            "value": [0.6, 0.1, 0.3],
            "ci_low": [0.5, np.nan, 0.2],
            "ci_high": [0.7, np.nan, 0.45],
        }
    )
    fig = plot.model_bars(frame, ceiling=(0.62, 0.71))
    (ax,) = fig.axes
    widths = [bar.get_width() for bar in ax.patches if bar.get_height() < 1]  # the bars, not the band
    assert widths == [0.1, 0.3, 0.6]  # sorted, the highest on top
    assert [t.get_text() for t in ax.get_yticklabels()] == ["pixels", "[red]x", frame["model"][0]]
    (band,) = [p for p in ax.patches if p.get_height() >= 1]  # axvspan spans the axes' height
    assert band.get_x() == pytest.approx(0.62) and band.get_x() + band.get_width() == pytest.approx(0.71)
    (whiskers,) = ax.collections  # one errorbar collection: two rows with CIs, NaN bounds drawn none
    assert len(whiskers.get_segments()) == 2
    line = plot.model_bars(frame, ceiling=0.65, ci=None)
    assert [ln.get_xdata()[0] for ln in line.axes[0].lines] == [0.65] and not line.axes[0].collections


def test_comparison_heatmap_annotates_the_matrix(rng):
    x = rng.normal(size=(20, 4))
    matrix = comparison_matrix(compare_models({"a": x, "b": x + rng.normal(size=x.shape)}), "linear_cka")
    fig = plot.comparison_heatmap(matrix, title="cka")
    np.testing.assert_array_equal(fig.axes[0].images[0].get_array(), matrix.to_numpy())
    assert sorted(t.get_text() for t in fig.axes[0].texts) == sorted(f"{v:.2f}" for v in matrix.to_numpy().ravel())


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: plot.similarity_matrix(np.eye(3), np.eye(4)), "same stimuli"),
        (lambda: plot.similarity_matrix(np.eye(3), np.eye(3), order="random"), "cluster, given"),
        (lambda: plot.similarity_matrix(np.eye(3), np.eye(3), order=[0, 0, 1]), "permutation"),
        (lambda: plot.similarity_matrix(np.eye(3), np.eye(3), labels=["a"]), "1 names for 3"),
        (lambda: plot.similarity_matrix(np.ones(3), np.eye(3)), "square"),
        (lambda: plot.model_bars(pd.DataFrame({"model": ["a"]})), "missing value"),
        (lambda: plot.model_bars(pd.DataFrame({"model": [], "value": []})), "no rows"),
        (lambda: plot.model_bars(pd.DataFrame({"model": ["a"], "value": [1.0]}), ceiling=(0.9, 0.8)), "low > high"),
        (lambda: plot.comparison_heatmap(pd.DataFrame(np.ones((2, 3)))), "square"),
    ],
)
def test_bad_input(call, match):
    with pytest.raises(InputError, match=match):
        call()


def test_public_alias_imports_neither_torch_nor_matplotlib():
    code = (
        "import sys, repalign; p = repalign.plot; "
        "assert p.model_bars is __import__('repalign.report.plots', fromlist=['x']).model_bars; "
        "print(sorted(m for m in ('torch', 'matplotlib') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
