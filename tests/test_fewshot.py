"""Few-shot protocol: splits, heads (against scikit-learn), statistics, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats

from repalign.errors import InputError, UnknownNameError
from repalign.fewshot import (
    HeadSettings,
    SplitManifest,
    confidence_interval,
    evaluate_fewshot,
    labels_fingerprint,
    make_dataset_splits,
    make_splits,
)

FAST = HeadSettings(n_steps=60, hidden_width=32)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def blobs(rng, *, n_classes=5, per_class=40, dim=12, spread=1.0):
    """Gaussian classes around random means: (n, dim) float32 features and (n,) labels."""
    means = rng.normal(size=(n_classes, dim)) * 2.0
    labels = np.repeat(np.arange(n_classes), per_class)
    features = means[labels] + spread * rng.normal(size=(len(labels), dim))
    order = rng.permutation(len(labels))
    return features[order].astype(np.float32), labels[order]


# ------------------------------------------------------------------------------------ splits


def test_splits_have_exact_shots_no_overlap_and_are_reproducible(rng):
    labels = np.repeat(np.arange(4), [30, 25, 40, 22])
    rng.shuffle(labels)
    manifest = make_splits(labels, shots=(1, 5, 20), seeds=3)
    again = make_splits(labels, shots=(20, 1, 5), seeds=3)
    assert manifest.seeds == (0, 1, 2) and manifest.shots == (1, 5, 20)
    for (seed, n), split in manifest.splits.items():
        assert np.array_equal(np.bincount(labels[split.train], minlength=4), [n] * 4)
        assert not np.intersect1d(split.train, split.eval).size
        # Without a cap, evaluation is every remaining example of the split.
        assert len(split.train) + len(split.eval) == len(labels)
        assert np.array_equal(split.train, again.split(seed, n).train)
        assert np.array_equal(split.eval, again.split(seed, n).eval)
    # Training sets are nested across shots and differ across seeds.
    assert set(manifest.split(0, 1).train) <= set(manifest.split(0, 5).train)
    assert not np.array_equal(manifest.split(0, 5).train, manifest.split(1, 5).train)
    # A split depends only on (labels, seed, shots): asking for other shots changes nothing.
    alone = make_splits(labels, shots=5, seeds=[2])
    assert np.array_equal(alone.split(2, 5).train, manifest.split(2, 5).train)


def test_eval_cap_keeps_eval_sets_fixed_across_shots(rng):
    labels = np.repeat(np.arange(3), 50)
    manifest = make_splits(labels, shots=(1, 10), seeds=2, max_eval_per_class=7)
    for seed in (0, 1):
        a, b = manifest.split(seed, 1), manifest.split(seed, 10)
        assert np.array_equal(np.bincount(labels[a.eval]), [7, 7, 7])
        assert np.array_equal(a.eval, b.eval)
    assert len(manifest.used_indices()) == 2 * 3 * (10 + 7) - len(
        np.intersect1d(
            np.concatenate([manifest.split(0, 10).train, manifest.split(0, 10).eval]),
            np.concatenate([manifest.split(1, 10).train, manifest.split(1, 10).eval]),
        )
    )


@pytest.mark.parametrize("suffix", [".json", ".npz"])
def test_manifest_round_trip(tmp_path, suffix):
    labels = np.repeat(np.arange(3), 12)
    manifest = make_splits(labels, shots=(1, 4), seeds=2, max_eval_per_class=5, dataset="toy")
    path = manifest.save(tmp_path / f"splits{suffix}")
    loaded = SplitManifest.load(path)
    assert loaded.dataset == "toy" and loaded.max_eval_per_class == 5
    assert loaded.labels_fingerprint == labels_fingerprint(labels)
    assert sorted(loaded.splits) == sorted(manifest.splits)
    for key, split in manifest.splits.items():
        assert np.array_equal(loaded.splits[key].train, split.train)
        assert np.array_equal(loaded.splits[key].eval, split.eval)
    loaded.check_labels(labels)


def test_manifest_refuses_other_labels_and_leaky_files(tmp_path):
    labels = np.repeat(np.arange(3), 12)
    manifest = make_splits(labels, shots=2, seeds=1)
    with pytest.raises(InputError, match="drawn for other labels"):
        manifest.check_labels(labels[::-1].copy())
    features = np.zeros((len(labels), 2), dtype=np.float32)
    with pytest.raises(InputError, match="drawn for other labels"):
        evaluate_fewshot(features, np.roll(labels, 1), splits=manifest, heads="linear")
    # A manifest edited so that an evaluation example is also trained on is refused on load.
    path = manifest.save(tmp_path / "splits.json")
    data = json.loads(path.read_text())
    data["splits"][0]["eval"].append(data["splits"][0]["train"][0])
    path.write_text(json.dumps(data))
    with pytest.raises(InputError, match="leaky"):
        SplitManifest.load(path)
    with pytest.raises(InputError, match=r"\.json or \.npz"):
        manifest.save(tmp_path / "splits.txt")


def test_options_that_agree_with_a_manifest_change_nothing(rng):
    features, labels = blobs(rng, n_classes=3, per_class=20, dim=5)
    manifest = make_splits(labels, shots=(1, 3), seeds=2, max_eval_per_class=5)
    alone = evaluate_fewshot(features, labels, splits=manifest, heads="linear", per_seed=True)
    assert sorted(zip(alone.seed, alone.shots)) == sorted(manifest.splits)  # the manifest's grid
    # the manifest's own values, in any spelling, are accepted beside it
    same = evaluate_fewshot(
        features,
        labels,
        splits=manifest,
        heads="linear",
        per_seed=True,
        shots=[3, 1],
        seeds=[1, 0],
        max_eval_per_class=5,
    )
    # and drawing the splits from those options gives the same numbers
    drawn = evaluate_fewshot(
        features, labels, heads="linear", per_seed=True, shots=(1, 3), seeds=2, max_eval_per_class=5
    )
    assert alone.equals(same) and alone.equals(drawn)


@pytest.mark.parametrize(
    ("option", "shown"),
    [
        ({"shots": (1, 5)}, r"shots=\[1, 5\]"),
        ({"shots": 3}, r"shots=\[3\]"),  # a part of the manifest's grid is refused too
        ({"seeds": 3}, "seeds=3"),
        ({"seeds": [0, 2]}, r"seeds=\[0, 2\]"),
        ({"max_eval_per_class": 6}, "max_eval_per_class=6"),
        ({"shots": 1, "seeds": 1}, r"shots=\[1\], seeds=1"),
    ],
)
def test_an_option_that_disagrees_with_the_manifest_is_refused(rng, option, shown):
    features, labels = blobs(rng, n_classes=3, per_class=20, dim=5)
    manifest = make_splits(labels, shots=(1, 3), seeds=2, max_eval_per_class=5, dataset="toy")
    expected = rf"manifest of 'toy' has shots \[1, 3\], seeds \[0, 1\] and max_eval_per_class 5, but {shown} was given"
    with pytest.raises(InputError, match=expected) as error:
        evaluate_fewshot(features, labels, splits=manifest, heads="linear", **option)
    assert "\n" not in str(error.value) and "leave those options out" in str(error.value)


def test_a_cap_given_with_an_uncapped_manifest_is_refused(rng):
    features, labels = blobs(rng, n_classes=3, per_class=20, dim=5)
    manifest = make_splits(labels, shots=1, seeds=1)
    with pytest.raises(InputError, match="max_eval_per_class none, but max_eval_per_class=5 was given"):
        evaluate_fewshot(features, labels, splits=manifest, heads="linear", max_eval_per_class=5)


def test_run_fewshot_refuses_a_split_other_than_the_loaded_datasets_and_rows_per_seed():
    """Both refused before any model or image is touched."""
    from repalign.data.fewshot_datasets import FewShotDataset
    from repalign.data.images import ArrayImageSet
    from repalign.fewshot import fewshot_rows, run_fewshot

    data = FewShotDataset("toy", ArrayImageSet(np.zeros((4, 8, 8), dtype=np.uint8)), np.array([0, 0, 1, 1]), ("a", "b"))
    with pytest.raises(InputError, match=r"split='train' was given, but dataset 'toy' is loaded as its 'test' split"):
        run_fewshot("pixels", data, split="train", shots=1, seeds=1)
    with pytest.raises(InputError, match=r"run_fewshot\(\.\.\., per_seed=True\)"):
        fewshot_rows("pixels", data, per_seed=True)


def test_split_errors_name_the_problem():
    labels = np.array([0] * 10 + [1] * 4 + [2] * 10)
    with pytest.raises(InputError, match=r"Class 'dog' has only 4 examples, but shots=5 needs 6"):
        make_splits(labels, shots=(1, 5), seeds=1, class_names=["cat", "dog", "emu"])
    with pytest.raises(InputError, match="at least 2 classes"):
        make_splits(np.zeros(20, dtype=int), shots=1)
    with pytest.raises(InputError, match="positive integers"):
        make_splits(labels, shots=(0, 1))
    with pytest.raises(InputError, match="seeds must be at least 1"):
        make_splits(labels, shots=1, seeds=0)
    with pytest.raises(InputError, match="max_eval_per_class"):
        make_splits(labels, shots=1, max_eval_per_class=0)


def test_dataset_splits_are_make_splits_on_the_datasets_labels(tmp_path):
    from PIL import Image

    from repalign.data.fewshot_datasets import load_fewshot_dataset

    for label, count in (("cats", 4), ("dogs", 6), ("emus", 3)):
        (tmp_path / "pets" / label).mkdir(parents=True)
        for i in range(count):
            Image.new("L", (4, 4), 10 * i).save(tmp_path / "pets" / label / f"{i}.png")
    data = load_fewshot_dataset(tmp_path / "pets")
    manifest = make_dataset_splits(tmp_path / "pets", shots=(1, 2), seeds=2, max_eval_per_class=1)
    oracle = make_splits(data.labels, shots=(1, 2), seeds=2, max_eval_per_class=1)
    assert manifest.dataset == "pets" and manifest.labels_fingerprint == labels_fingerprint(data.labels)
    assert sorted(manifest.splits) == sorted(oracle.splits)
    for key, split in manifest.splits.items():
        assert np.array_equal(split.train, oracle.splits[key].train)
        assert np.array_equal(split.eval, oracle.splits[key].eval)
    # a dataset already loaded gives the same splits
    again = make_dataset_splits(data, shots=(1, 2), seeds=2, max_eval_per_class=1)
    assert all(np.array_equal(again.splits[k].train, manifest.splits[k].train) for k in manifest.splits)
    # errors name the class, not its index, and name the dataset
    with pytest.raises(InputError, match=r"Class 'emus' has only 3 examples, but shots=3 needs 4"):
        make_dataset_splits(data, shots=3, seeds=1)
    with pytest.raises(UnknownNameError, match="Did you mean: mnist"):
        make_dataset_splits("mnsit", shots=1, seeds=1)
    with pytest.raises(InputError, match="Unknown split 'val'"):
        make_dataset_splits(tmp_path / "pets", shots=1, seeds=1, split="val")


# ------------------------------------------------------------------------------ statistics


def test_confidence_interval_is_the_t_interval():
    values = [0.61, 0.64, 0.58, 0.66, 0.60]
    mean, low, high = confidence_interval(values)
    expected = stats.t.interval(0.95, 4, loc=np.mean(values), scale=stats.sem(values))
    assert mean == pytest.approx(np.mean(values))
    assert (low, high) == pytest.approx(expected)
    assert np.isnan(confidence_interval([0.5])[1])


@pytest.mark.parametrize("values", [[0.2, 1.0, 1.0], [0.0, 0.0, 0.7], [0.0, 1.0], [0.4, 0.5, 0.6]])
def test_confidence_interval_is_clipped_to_the_range_of_accuracy(values):
    mean, low, high = confidence_interval(values)
    t_low, t_high = stats.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=stats.sem(values))
    assert (low, high) == pytest.approx((max(t_low, 0.0), min(t_high, 1.0)))
    assert 0.0 <= low <= mean <= high <= 1.0
    assert confidence_interval([1.0, 1.0, 1.0]) == (1.0, 1.0, 1.0)  # no spread: the point itself


# ------------------------------------------------------------------------------------ heads


def test_linear_head_solver_matches_sklearn_coefficients(rng):
    """The batched L-BFGS reaches scikit-learn's optimum (same objective, same C)."""
    import torch
    from sklearn.linear_model import LogisticRegression

    from repalign.fewshot._linear import fit_logistic_lbfgs

    tasks = [blobs(rng, n_classes=4, per_class=15, dim=6, spread=2.0) for _ in range(3)]
    x = torch.tensor(np.stack([t[0] for t in tasks]), dtype=torch.float64)
    y = torch.tensor(np.stack([t[1] for t in tasks]))
    weight, bias = fit_logistic_lbfgs(x, y, 4, HeadSettings(C=0.5, tol=1e-9))
    for i, (features, labels) in enumerate(tasks):
        reference = LogisticRegression(C=0.5, tol=1e-10, max_iter=10_000).fit(features.astype(np.float64), labels)
        np.testing.assert_allclose(weight[i].numpy().T, reference.coef_, atol=1e-5)
        # Intercepts are defined up to a shared constant.
        np.testing.assert_allclose(
            bias[i].numpy() - bias[i].numpy().mean(),
            reference.intercept_ - reference.intercept_.mean(),
            atol=1e-5,
        )


def test_linear_head_in_the_span_of_few_examples_equals_the_full_solve(rng, monkeypatch):
    """With fewer examples than half the features the solver works in the span of the
    examples; it reaches the same weights as the full-dimensional solve and scikit-learn,
    and its stopping rule is scikit-learn's, in the original coordinates."""
    import torch
    from sklearn.linear_model import LogisticRegression

    from repalign.fewshot import _linear as _fewshot_linear
    from repalign.fewshot._linear import fit_logistic_lbfgs

    tasks = [blobs(rng, n_classes=4, per_class=3, dim=40, spread=1.5) for _ in range(3)]
    x = torch.tensor(np.stack([t[0] for t in tasks]), dtype=torch.float64)
    y = torch.tensor(np.stack([t[1] for t in tasks]))
    settings = HeadSettings(C=0.5, tol=1e-9)
    calls = []
    real_qr = torch.linalg.qr
    monkeypatch.setattr(torch.linalg, "qr", lambda a: calls.append(a.shape) or real_qr(a))
    weight, bias = fit_logistic_lbfgs(x, y, 4, settings)
    assert calls == [(3, 40, 12)]  # the span of 12 examples, not the 40 dimensions
    monkeypatch.setattr(_fewshot_linear, "_ROW_SPACE_MAX_FRACTION", 0.0)
    full_weight, full_bias = fit_logistic_lbfgs(x, y, 4, settings)
    assert calls == [(3, 40, 12)]
    torch.testing.assert_close(weight, full_weight, rtol=0, atol=1e-7)
    torch.testing.assert_close(bias, full_bias, rtol=0, atol=1e-7)
    for i, (features, labels) in enumerate(tasks):
        reference = LogisticRegression(C=0.5, tol=1e-10, max_iter=10_000).fit(features.astype(np.float64), labels)
        np.testing.assert_allclose(weight[i].numpy().T, reference.coef_, atol=1e-6)

    # At a loose tolerance both stop at the first iterate whose largest gradient entry, in
    # the original coordinates, is below it: the same iterate, so the same weights.
    loose = HeadSettings(C=0.5, tol=1e-3)
    monkeypatch.setattr(_fewshot_linear, "_ROW_SPACE_MAX_FRACTION", 0.5)
    weight, _ = fit_logistic_lbfgs(x, y, 4, loose)
    monkeypatch.setattr(_fewshot_linear, "_ROW_SPACE_MAX_FRACTION", 0.0)
    full_weight, _ = fit_logistic_lbfgs(x, y, 4, loose)
    torch.testing.assert_close(weight, full_weight, rtol=0, atol=1e-9)


def test_tasks_the_span_solve_leaves_short_finish_in_the_original_coordinates(rng, monkeypatch):
    """When the solve in the span of the examples stops above tol (simulated: it may take
    only 3 iterations), the task continues in the original coordinates from where it stopped
    and reaches the full solve's optimum, without a warning."""
    import dataclasses

    import torch

    from repalign.fewshot import _linear as _fewshot_linear
    from repalign.fewshot._linear import fit_logistic_lbfgs

    tasks = [blobs(rng, n_classes=4, per_class=3, dim=40, spread=1.5) for _ in range(2)]
    x = torch.tensor(np.stack([t[0] for t in tasks]), dtype=torch.float64)
    y = torch.tensor(np.stack([t[1] for t in tasks]))
    settings = HeadSettings(C=0.5, tol=1e-9)
    real = _fewshot_linear._batched_lbfgs
    calls = []

    def first_call_short(objective, params, data, settings, **kwargs):
        calls.append(kwargs["warn"])
        if len(calls) == 1:
            settings = dataclasses.replace(settings, max_iter=3)
        return real(objective, params, data, settings, **kwargs)

    monkeypatch.setattr(_fewshot_linear, "_batched_lbfgs", first_call_short)
    weight, bias = fit_logistic_lbfgs(x, y, 4, settings)
    assert calls == [False, True]  # the span solve, quietly; then the original coordinates
    monkeypatch.setattr(_fewshot_linear, "_batched_lbfgs", real)
    monkeypatch.setattr(_fewshot_linear, "_ROW_SPACE_MAX_FRACTION", 0.0)
    full_weight, full_bias = fit_logistic_lbfgs(x, y, 4, settings)
    torch.testing.assert_close(weight, full_weight, rtol=0, atol=1e-6)
    torch.testing.assert_close(bias, full_bias, rtol=0, atol=1e-6)


def test_linear_head_accuracy_matches_sklearn_on_the_same_splits(rng):
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    features, labels = blobs(rng, n_classes=6, per_class=60, dim=30, spread=3.0)
    features[:, 3] = 1.5  # a constant column: must not break standardization
    manifest = make_splits(labels, shots=(2, 10, 30), seeds=2)
    ours = evaluate_fewshot(features, labels, heads="linear", splits=manifest, per_seed=True)
    for row in ours.itertuples():
        split = manifest.split(row.seed, row.shots)
        scaler = StandardScaler().fit(features[split.train])
        model = LogisticRegression(C=1.0, tol=1e-6, max_iter=5000).fit(
            scaler.transform(features[split.train]), labels[split.train]
        )
        reference = model.score(scaler.transform(features[split.eval]), labels[split.eval])
        assert abs(row.value - reference) <= 0.005, (row, reference)


@pytest.mark.parametrize("head", ["linear", "mlp1", "mlp2"])
def test_separable_data_is_learned_and_shuffled_labels_are_at_chance(rng, head):
    n_classes = 4
    features, labels = blobs(rng, n_classes=n_classes, per_class=60, dim=32, spread=0.05)
    result = evaluate_fewshot(features, labels, heads=head, shots=5, seeds=2)  # default settings
    assert result.value.iloc[0] >= 0.99
    # Labels shuffled against their features: nothing to learn, accuracy at chance.
    features, labels = blobs(rng, n_classes=n_classes, per_class=250, dim=16, spread=0.05)
    shuffled = rng.permutation(labels)
    chance = evaluate_fewshot(features, shuffled, heads=head, shots=10, seeds=3, settings=FAST)
    assert abs(chance.value.iloc[0] - 1 / n_classes) < 0.04


def test_results_are_deterministic_and_independent_of_batching(rng):
    features, labels = blobs(rng, n_classes=3, per_class=40, dim=10, spread=2.5)
    kwargs = {
        "heads": ("linear", "mlp1", "mlp2"),
        "shots": (1, 5),
        "seeds": 3,
        "per_seed": True,
        "settings": FAST,
    }
    first = evaluate_fewshot(features, labels, **kwargs)
    second = evaluate_fewshot(features, labels, **kwargs)
    assert first.equals(second)
    # One seed alone (a batch of one task) reproduces the cell computed inside a batch of three.
    alone = evaluate_fewshot(features, labels, **{**kwargs, "seeds": [1], "shots": 5})
    for row in alone.itertuples():
        batched = first[(first["head"] == row.head) & (first.shots == 5) & (first.seed == 1)].value.item()
        assert row.value == pytest.approx(batched, abs=1.5 / 117)


def test_feature_subset_gives_the_same_numbers(rng):
    features, labels = blobs(rng, n_classes=3, per_class=30, dim=8, spread=2.0)
    manifest = make_splits(labels, shots=(1, 3), seeds=2, max_eval_per_class=5)
    used = manifest.used_indices()
    assert len(used) < len(labels)
    full = evaluate_fewshot(features, labels, splits=manifest, heads="linear")
    subset = evaluate_fewshot(features[used], labels, splits=manifest, heads="linear", feature_indices=used)
    assert full.equals(subset)
    with pytest.raises(InputError, match="does not cover"):
        evaluate_fewshot(
            features[used[1:]],
            labels,
            splits=manifest,
            heads="linear",
            feature_indices=used[1:],
        )


def test_result_columns(rng):
    features, labels = blobs(rng, n_classes=3, per_class=20, dim=5)
    result = evaluate_fewshot(
        features,
        labels,
        heads=("linear", "mlp1"),
        shots=(1, 2),
        seeds=2,
        dataset="toy",
        settings=FAST,
    )
    assert list(result.columns) == [
        "dataset",
        "head",
        "shots",
        "metric",
        "value",
        "ci_low",
        "ci_high",
        "n",
    ]
    assert len(result) == 4 and set(result.dataset) == {"toy"} and set(result.n) == {2}
    assert set(result.metric) == {"accuracy"}
    assert ((result.ci_low <= result.value) & (result.value <= result.ci_high)).all()


# -------------------------------------------------------------------------------- bad input


def test_bad_input_errors(rng):
    features, labels = blobs(rng, n_classes=3, per_class=10, dim=4)
    with pytest.raises(InputError, match="10 feature rows but 9 labels|30 feature rows but 29 labels"):
        evaluate_fewshot(features, labels[:-1])
    with pytest.raises(InputError, match="at least 2 classes"):
        evaluate_fewshot(features, np.zeros(len(features), dtype=int))
    with pytest.raises(InputError, match="only 10 examples, but shots=80 needs 81"):
        evaluate_fewshot(features, labels)
    with pytest.raises(UnknownNameError, match="Did you mean: linear"):
        evaluate_fewshot(features, labels, shots=1, heads="linaer")
    with pytest.raises(InputError, match="non-empty 2-D"):
        evaluate_fewshot(features[:, 0], labels, shots=1)
    bad = features.copy()
    bad[3, 1] = np.nan
    with pytest.raises(InputError, match="NaN"):
        evaluate_fewshot(bad, labels, shots=1, heads="linear")
    with pytest.raises(InputError, match="integer class indices"):
        evaluate_fewshot(features, labels + 0.5, shots=1)
    with pytest.raises(InputError, match="CUDA is not available|Unknown device"):
        import torch

        if torch.cuda.is_available():
            raise InputError("Unknown device (skip: CUDA is present)")
        evaluate_fewshot(features, labels, shots=1, heads="linear", device="cuda")


def test_linear_head_reports_non_convergence(rng, caplog):
    import torch

    from repalign.fewshot._linear import fit_logistic_lbfgs

    features, labels = blobs(rng, n_classes=3, per_class=10, dim=5, spread=1.0)
    x = torch.tensor(features)[None].repeat(2, 1, 1)
    y = torch.tensor(labels)[None].repeat(2, 1)
    with caplog.at_level("WARNING", logger="repalign.fewshot._linear"):
        weight, _bias = fit_logistic_lbfgs(x, y, 3, HeadSettings(max_iter=2, tol=1e-12))
    assert "L-BFGS stopped after 2 iterations" in caplog.text
    assert torch.isfinite(weight).all() and weight.abs().sum() > 0
    assert torch.equal(weight[0], weight[1])  # identical tasks, identical batched results
