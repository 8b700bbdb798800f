"""Sparse input dropout of the MLP heads: the sampler's distribution, the sparse first layer
against dense autograd, and batched training against a plain per-fit dense loop."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

torch = pytest.importorskip("torch")

from repalign.fewshot._dropout import (
    KeptInputs,
    draw_kept_positions,
    masked_dense,
    sparse_input_linear,
)
from repalign.fewshot._heads import HeadSettings, standardized_training_rows
from repalign.fewshot._mlp import TaskDraws, dropout_multipliers, fit_mlp, init_mlp


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.mark.parametrize("keep_prob", [0.2, 0.7])
def test_kept_positions_are_independent_bernoulli_coins(keep_prob):
    total = 200_000
    generator = torch.Generator().manual_seed(3)
    kept = draw_kept_positions(total, keep_prob, generator, "cpu").numpy()
    assert kept[0] >= 0 and kept[-1] < total and np.all(np.diff(kept) > 0)
    # Kept count: Binomial(total, p), within 5 standard deviations.
    sd = np.sqrt(total * keep_prob * (1 - keep_prob))
    assert abs(len(kept) - total * keep_prob) < 5 * sd
    # Runs of dropped entries before each kept one: geometric on {0, 1, ...} (chi-square).
    gaps = np.diff(np.concatenate([[-1], kept])) - 1
    top = 8
    observed = np.bincount(np.minimum(gaps, top), minlength=top + 1)
    probs = stats.geom.pmf(np.arange(1, top + 1), keep_prob)
    probs = np.append(probs, 1 - probs.sum())
    assert stats.chisquare(observed, probs * len(gaps)).pvalue > 1e-3
    # Counts per column of a (rows, 50) layout: equal rates for every column.
    per_column = np.bincount(kept % 50, minlength=50)
    assert stats.chisquare(per_column).pvalue > 1e-3
    # Same generator state, same draw.
    again = draw_kept_positions(total, keep_prob, torch.Generator().manual_seed(3), "cpu")
    assert np.array_equal(again.numpy(), kept)


def test_kept_positions_edge_sizes():
    generator = torch.Generator().manual_seed(0)
    assert len(draw_kept_positions(1, 0.2, generator, "cpu")) in (0, 1)
    everything = draw_kept_positions(1000, 1 - 1e-9, generator, "cpu")
    assert np.array_equal(everything.numpy(), np.arange(1000))


def test_dense_mask_has_the_dropout_values():
    settings = HeadSettings(dropout=0.8, batch_size=300)
    draws = TaskDraws(torch.Generator().manual_seed(1), 300, 70, settings, "cpu")
    picked, kept = draws.next()
    keep = dropout_multipliers(kept, 300, 70, settings)
    assert picked is None and keep.shape == (300, 70)
    assert set(np.unique(keep.numpy())) <= {0.0, np.float32(5.0)}


@pytest.mark.parametrize(("n_rows", "dim", "n_steps"), [(40, 30, 75), (900, 50, 40)])
def test_task_draws_in_blocks_are_per_step_dropout_and_minibatches(n_rows, dim, n_steps):
    """Drawn a block of steps at a time, every step still gets its own minibatch of b rows
    and independent Bernoulli(keep) coins over its b x d inputs; the stream is reproducible."""
    settings = HeadSettings(n_steps=n_steps, batch_size=256, dropout=0.8)
    draws = TaskDraws(torch.Generator().manual_seed(4), n_rows, dim, settings, "cpu")
    batch = min(n_rows, 256)
    assert 1 <= draws.block_steps < n_steps
    kept_per_step, rows = [], []
    for _ in range(n_steps):
        picked, kept = draws.next()
        assert (picked is None) == (n_rows <= 256)
        if picked is not None:
            assert picked.shape == (batch,) and 0 <= picked.min() and picked.max() < n_rows
            rows.append(picked.numpy())
        kept = kept.numpy()
        assert kept.min() >= 0 and kept.max() < batch * dim and np.all(np.diff(kept) > 0)
        kept_per_step.append(len(kept))
    with pytest.raises(RuntimeError, match="already drawn"):
        draws.next()
    total = batch * dim * n_steps
    sd = np.sqrt(total * 0.2 * 0.8)
    assert abs(sum(kept_per_step) - 0.2 * total) < 5 * sd
    if rows:  # minibatch rows uniform over the training set (chi-square)
        counts = np.bincount(np.concatenate(rows), minlength=n_rows)
        assert stats.chisquare(counts).pvalue > 1e-3
    again = TaskDraws(torch.Generator().manual_seed(4), n_rows, dim, settings, "cpu")
    picked, kept = again.next(offset=1000)
    first = TaskDraws(torch.Generator().manual_seed(4), n_rows, dim, settings, "cpu")
    assert torch.equal(kept - 1000, first.next()[1])


def test_sparse_first_layer_matches_dense_autograd():
    n_tasks, rows, dim, width = 3, 7, 11, 5
    generator = torch.Generator().manual_seed(5)
    minibatch = torch.randn(n_tasks, rows, dim, generator=generator)
    flat = draw_kept_positions(minibatch.numel(), 0.3, generator, "cpu")
    mask = torch.zeros(minibatch.numel())
    mask[flat] = 1.0
    dense_input = minibatch * mask.view_as(minibatch)
    weight = torch.randn(n_tasks, dim, width, generator=generator, requires_grad=True)
    bias = torch.randn(n_tasks, width, generator=generator, requires_grad=True)
    upstream = torch.randn(n_tasks, rows, width, generator=generator)

    kept = KeptInputs(flat, minibatch)
    assert torch.equal(masked_dense(minibatch, flat), dense_input)
    out = sparse_input_linear(weight, bias, kept)
    (out * upstream).sum().backward()
    sparse_grads = weight.grad.clone(), bias.grad.clone()
    weight.grad = bias.grad = None
    reference = torch.baddbmm(bias[:, None, :], dense_input, weight)
    (reference * upstream).sum().backward()
    torch.testing.assert_close(out, reference, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(sparse_grads[0], weight.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(sparse_grads[1], bias.grad, rtol=1e-5, atol=1e-5)


def _plain_loop_fit(head, x, y, n_classes, seed, settings):
    """One task the plain way: dense masks from the same generator, torch.optim.AdamW."""
    generator = torch.Generator().manual_seed(seed)
    layers = init_mlp(head, x.shape[1], n_classes, settings, generator, "cpu")
    params = [p.clone().requires_grad_(True) for layer in layers for p in layer]
    optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
    draws = TaskDraws(generator, len(x), x.shape[1], settings, "cpu")
    for _ in range(settings.n_steps):
        picked, kept = draws.next()
        xb, yb = (x, y) if picked is None else (x[picked], y[picked])
        h = xb * dropout_multipliers(kept, len(xb), x.shape[1], settings)
        for j in range(0, len(params), 2):
            h = torch.addmm(params[j + 1], h, params[j])
            if j + 2 < len(params):
                h = torch.relu(h)
        loss = torch.nn.functional.cross_entropy(h, yb)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return [p.detach() for p in params]


@pytest.mark.parametrize(
    ("head", "hidden", "n_train", "precision"),
    [
        ("mlp2", 96, 40, "float32"),
        ("mlp2", 96, 20, "float32"),
        ("mlp2", 16, 40, "float32"),
        ("mlp1", 0, 70, "float32"),
        ("mlp2", 96, 40, "bfloat16"),
        ("mlp1", 0, 70, "bfloat16"),
    ],
)
def test_batched_fit_equals_each_task_alone_and_a_plain_loop(head, hidden, n_train, precision):
    """The batched training of 3 tasks gives each task the weights it gets alone, and (in
    float32) the weights of a plain per-fit float32 loop with dense masks, up to rounding.
    With bfloat16 products the weights stay close to the float32 loop's: their distance is
    a small fraction of how far training moved them."""
    n_classes = 70 if head == "mlp1" else 4  # mlp1 with 70 classes: the sparse path
    settings = HeadSettings(n_steps=25, hidden_width=hidden or 32, batch_size=32, mlp_precision=precision)
    rng = np.random.default_rng(0)
    features = torch.as_tensor(rng.normal(size=(200, 24)).astype(np.float32))
    targets = torch.as_tensor(rng.integers(0, n_classes, size=200))
    train_rows = torch.as_tensor(np.stack([rng.choice(200, n_train, replace=False) for _ in range(3)]))
    seeds = [11, 12, 13]

    def fit(rows, task_seeds):
        x, _, _ = standardized_training_rows(features, rows)
        return fit_mlp(head, x, targets[rows], n_classes, task_seeds, settings)

    batched = fit(train_rows, seeds)
    for i in range(3):
        alone = fit(train_rows[i : i + 1], seeds[i : i + 1])
        x = standardized_training_rows(features, train_rows[i : i + 1])[0][0]
        plain = _plain_loop_fit(head, x, targets[train_rows[i]], n_classes, seeds[i], settings)
        initial = init_mlp(head, 24, n_classes, settings, torch.Generator().manual_seed(seeds[i]), "cpu")
        flat_plain = iter(plain)
        flat_initial = (p for layer in initial for p in layer)
        for (weight, bias), (weight_alone, bias_alone) in zip(batched, alone):
            torch.testing.assert_close(weight[i], weight_alone[0], rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(bias[i], bias_alone[0], rtol=1e-5, atol=1e-6)
            for trained in (weight[i], bias[i]):
                reference, start = next(flat_plain), next(flat_initial)
                if precision == "float32":
                    torch.testing.assert_close(trained, reference, rtol=1e-4, atol=1e-5)
                else:
                    moved = (reference - start).norm()
                    assert moved > 0
                    assert (trained - reference).norm() < 0.25 * moved
