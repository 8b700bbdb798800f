"""evaluate_fewshot_many: several models' grids fitted together equal each model's own grid."""

from __future__ import annotations

import numpy as np
import pytest

from repalign.errors import InputError
from repalign.fewshot import HeadSettings, evaluate_fewshot, evaluate_fewshot_many, make_splits
from repalign.fewshot.evaluate import PER_SEED_COLUMNS, RESULT_COLUMNS

FAST = HeadSettings(n_steps=60, hidden_width=32)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def models(rng, *, n_classes=4, per_class=30, dims=(10, 10, 16)):
    """Features of the same examples from several 'models' (own class means and noise per model)."""
    labels = rng.permutation(np.repeat(np.arange(n_classes), per_class))
    features = {}
    for m, dim in enumerate(dims):
        means = rng.normal(size=(n_classes, dim)) * 1.5
        features[f"model{m}"] = (means[labels] + rng.normal(size=(len(labels), dim))).astype(np.float32)
    return features, labels


def assert_same_grid(many, features, labels, **options):
    for name, x in features.items():
        alone = evaluate_fewshot(x, labels, **options)
        part = many[many.model == name].drop(columns="model").reset_index(drop=True)
        keys = [c for c in alone.columns if c not in ("value", "ci_low", "ci_high")]
        assert part[keys].equals(alone[keys]), name
        difference = np.abs(part.value.to_numpy() - alone.value.to_numpy())
        for head in alone["head"].unique():
            rows = (alone["head"] == head).to_numpy()
            # Linear: the same optimum, to float rounding of the batched products. MLPs: the same
            # random draws per (model, task); bfloat16 rounding may differ with the batch size.
            limit = 1e-6 if head == "linear" else 0.005
            assert difference[rows].max() <= limit, (name, head, difference[rows].max())


def test_many_models_equal_each_models_own_grid(rng):
    features, labels = models(rng)
    options = {"shots": (1, 5), "seeds": 3, "per_seed": True, "settings": FAST, "heads": ("linear", "mlp1", "mlp2")}
    many = evaluate_fewshot_many(features, labels, **options)
    assert list(many.columns) == ["model", *PER_SEED_COLUMNS]
    assert list(many.model.unique()) == list(features)  # the order given
    assert len(many) == len(features) * 3 * 2 * 3
    assert_same_grid(many, features, labels, **options)


def test_summary_columns_and_values(rng):
    features, labels = models(rng, dims=(8, 8))
    many = evaluate_fewshot_many(features, labels, shots=(1, 3), seeds=3, heads="linear", dataset="toy")
    assert list(many.columns) == ["model", *RESULT_COLUMNS]
    assert set(many.dataset) == {"toy"} and set(many.n) == {3}
    assert_same_grid(many, features, labels, shots=(1, 3), seeds=3, heads="linear", dataset="toy")


def test_chunked_groups_and_feature_subsets_give_the_same_numbers(rng, monkeypatch):
    """Groups split into chunks by the memory bound, and features of the used examples only
    (scored per model on its own rows), change nothing."""
    import repalign.fewshot._heads as heads_module

    features, labels = models(rng, dims=(12, 12, 12))
    manifest = make_splits(labels, shots=(1, 4), seeds=3, max_eval_per_class=10)
    used = manifest.used_indices()
    assert len(used) < len(labels)
    options = {"splits": manifest, "per_seed": True, "settings": FAST, "heads": ("linear", "mlp1")}
    whole = evaluate_fewshot_many(features, labels, **options)
    # 4 shots x 4 classes x 12 dims = 192 values per task: chunks of 2 tasks out of 9.
    monkeypatch.setattr(heads_module, "_GROUP_MAX_ELEMENTS", 2 * 192)
    chunked = evaluate_fewshot_many(features, labels, **options)
    subset = evaluate_fewshot_many({k: v[used] for k, v in features.items()}, labels, feature_indices=used, **options)
    monkeypatch.undo()
    assert_same_grid(chunked, features, labels, **options)
    assert_same_grid(subset, features, labels, **options)
    assert np.allclose(whole.value, chunked.value, atol=0.005)


def test_bad_input_names_the_model(rng):
    features, labels = models(rng, dims=(6, 6))
    with pytest.raises(InputError, match="non-empty mapping"):
        evaluate_fewshot_many({}, labels, shots=1)
    with pytest.raises(InputError, match="non-empty mapping"):
        evaluate_fewshot_many(features["model0"], labels, shots=1)
    with pytest.raises(InputError, match="Model names must be non-empty strings"):
        evaluate_fewshot_many({"": features["model0"]}, labels, shots=1)
    bad = features["model1"].copy()
    bad[5, 2] = np.inf
    with pytest.raises(InputError, match="features of model 'model1' contain NaN or infinite values"):
        evaluate_fewshot_many({**features, "model1": bad}, labels, shots=1, heads="linear")
    with pytest.raises(InputError, match="features and labels differ in length"):
        evaluate_fewshot_many({**features, "short": features["model0"][:-1]}, labels, shots=1)
    used = make_splits(labels, shots=1, seeds=1, max_eval_per_class=3).used_indices()
    with pytest.raises(InputError, match="does not cover"):
        evaluate_fewshot_many(
            {k: v[used[1:]] for k, v in features.items()},
            labels,
            shots=1,
            seeds=1,
            max_eval_per_class=3,
            feature_indices=used[1:],
        )
