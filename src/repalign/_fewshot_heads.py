"""Batched training of the few-shot heads (private; used by :mod:`repalign.fewshot`).

Every (seed, shots) pair of the protocol is one *task*: standardize the features with the
statistics of the task's training shots, fit a head, score the task's evaluation examples.
Tasks with the same training-set size (all seeds of one ``shots``) are stacked along a
leading batch dimension and trained as one tensor program (``bmm`` over a batch of weight
matrices), instead of a Python loop of independent fits.

Heads:
- ``linear``: multinomial logistic regression with an L2 penalty, scikit-learn's objective
  ``C * sum_i CE_i + ||W||^2 / 2`` (intercepts unpenalized), solved by a batched L-BFGS
  (history 10) with a backtracking line search, to ``max |gradient| <= tol`` of the
  per-example-averaged objective, scikit-learn's ``lbfgs`` criterion, with tol 1e-5 rather than
  scikit-learn's default 1e-4, which stops short of the optimum on few-shot problems.
- ``mlp1``: input dropout, then one linear layer.
- ``mlp2``: input dropout, a hidden layer with ReLU, then a linear layer.
  Both MLPs train with AdamW for a fixed number of steps on minibatches drawn with
  replacement (the whole training set when it is smaller than a minibatch). Input dropout
  is drawn as the positions of the kept inputs (:mod:`repalign._fewshot_sparse`); first
  layers at least ``_SPARSE_MIN_WIDTH`` wide run on those entries only (gather-sums instead
  of a dense product over 80% zeros), and AdamW uses torch's fused CPU kernel (the same
  update, one kernel for all parameters instead of a dozen per tensor).

Each task draws its randomness (initial weights, minibatches, dropout masks) from its own
generator seeded by (seed, shots, head), so a task's result does not depend on which
other tasks share its batch: one cell of the grid can be reproduced alone, and a plain
per-task loop with the same generators gives the same numbers (see
``benchmarks/bench_fewshot.py``).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

HEADS = ("linear", "mlp1", "mlp2")
# First layers at least this wide train on the kept inputs only (see _fewshot_sparse);
# narrower ones (e.g. mlp1 with 10 classes) are faster as one dense batched product.
_SPARSE_MIN_WIDTH = 64
_HEAD_CODES = {"linear": 0, "mlp1": 1, "mlp2": 2}


@dataclass(frozen=True)
class HeadSettings:
    """Hyperparameters of the heads (see docs/fewshot.md for why these values).

    Attributes:
        C: inverse L2 strength of the linear head (scikit-learn's ``C``).
        tol: stop the linear head when every gradient entry of the averaged objective is <= tol.
        max_iter: L-BFGS iterations at most (linear head).
        lbfgs_history: L-BFGS memory (scipy's default, 10).
        dropout: input dropout probability of the MLP heads.
        hidden_width: hidden units of ``mlp2``.
        n_steps: optimizer steps of the MLP heads.
        batch_size: minibatch size of the MLP heads.
        lr: AdamW learning rate.
        weight_decay: AdamW (decoupled) weight decay.
    """

    C: float = 1.0
    tol: float = 1e-5
    max_iter: int = 1000
    lbfgs_history: int = 10
    dropout: float = 0.8
    hidden_width: int = 256
    n_steps: int = 300
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-4


@dataclass(frozen=True)
class Task:
    """One fit: rows of the feature matrix to train on and to evaluate, (n_train,) and (n_eval,)."""

    seed: int
    shots: int
    train_rows: np.ndarray
    eval_rows: np.ndarray


def task_generator_seed(seed: int, shots: int, head: str) -> int:
    """The seed of a task's private torch generator, from (seed, shots, head)."""
    state = np.random.SeedSequence(
        [int(seed), int(shots), _HEAD_CODES[head], 0xF5]
    ).generate_state(2)
    return int(state[0]) << 32 | int(state[1])


@contextlib.contextmanager
def deterministic_torch() -> Iterator[None]:
    """Ask torch for deterministic kernels for the duration, then restore the previous mode."""
    import torch

    previous = torch.are_deterministic_algorithms_enabled()
    previous_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    previous_fill = torch.utils.deterministic.fill_uninitialized_memory
    torch.use_deterministic_algorithms(True, warn_only=True)
    # Deterministic mode also fills every new buffer with NaN, a debugging aid that costs a
    # pass over memory per allocation; nothing here reads a buffer before writing it.
    torch.utils.deterministic.fill_uninitialized_memory = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous, warn_only=previous_warn)
        torch.utils.deterministic.fill_uninitialized_memory = previous_fill


def fit_and_score(
    head: str,
    features,
    targets,
    tasks: Sequence[Task],
    *,
    n_classes: int,
    settings: HeadSettings = HeadSettings(),
) -> np.ndarray:
    """Train ``head`` on every task and return each task's evaluation accuracy.

    Args:
        head: "linear", "mlp1" or "mlp2".
        features: (n_rows, d) float32 torch tensor on the compute device.
        targets: (n_rows,) int64 torch tensor of class indices 0..n_classes-1, same device.
        tasks: the fits; tasks with equal training-set size are batched together.
        n_classes: number of classes.

    Returns:
        (len(tasks),) float64 accuracies in [0, 1], in the order of ``tasks``.
    """
    accuracies = np.full(len(tasks), np.nan)
    groups: dict[int, list[int]] = {}
    for i, task in enumerate(tasks):
        groups.setdefault(len(task.train_rows), []).append(i)
    with deterministic_torch():
        for n_train, members in sorted(groups.items()):
            batch = [tasks[i] for i in members]
            rows = min(n_train, settings.batch_size) if head != "linear" else n_train
            width = settings.hidden_width if head == "mlp2" else n_classes
            with _threads_for(
                features.device, len(batch) * rows * features.shape[1] * width
            ):
                accuracies[members] = _fit_group(
                    head, features, targets, batch, n_classes, settings
                )
    return accuracies


@contextlib.contextmanager
def _threads_for(device, work: int) -> Iterator[None]:
    """One CPU thread for small per-step work: there, thread start-up and spinning cost more
    than they save (badly so on a busy machine). Restores the previous thread count."""
    import torch

    if device.type != "cpu" or work >= 20_000_000 or torch.get_num_threads() == 1:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _fit_group(head, features, targets, tasks, n_classes, settings) -> np.ndarray:
    import torch

    device = features.device
    train_rows = torch.as_tensor(
        np.stack([t.train_rows for t in tasks]), device=device
    )  # (B, N)
    mean, inv_scale = standardization(features, train_rows)
    y_train = targets[train_rows]  # (B, N)
    if head == "linear":
        x = (features[train_rows] - mean[:, None, :]) * inv_scale[:, None, :]
        weight, bias = fit_logistic_lbfgs(x, y_train, n_classes, settings)
        layers = [(weight, bias)]
    else:
        seeds = [task_generator_seed(t.seed, t.shots, head) for t in tasks]
        layers = fit_mlp(
            head,
            features,
            train_rows,
            y_train,
            mean,
            inv_scale,
            n_classes,
            seeds,
            settings,
        )
    # Fold the standardization into the first layer so raw evaluation rows can be scored.
    first_w, first_b = layers[0]
    folded_w = inv_scale[:, :, None] * first_w
    folded_b = first_b - torch.bmm((mean * inv_scale)[:, None, :], first_w)[:, 0, :]
    layers = [(folded_w, folded_b), *layers[1:]]
    return _score(features, targets, tasks, layers)


def standardization(features, train_rows):
    """Per-task mean and inverse standard deviation of the training rows.

    Args:
        features: (n_rows, d); train_rows: (B, N) row indices.

    Returns:
        mean (B, d) and inv_scale (B, d). Columns that are constant on a task's training rows
        get inv_scale 0: they carry no information for the classifier, and zeroing them keeps
        evaluation rows (where they may vary) from reaching untrained weights.
    """
    x = features.index_select(0, train_rows.reshape(-1)).view(*train_rows.shape, -1)
    mean = x.mean(dim=1)
    # Two plain passes: several times faster on CPU than torch's one-pass std over dim 1.
    std = (x - mean[:, None, :]).square_().mean(dim=1).sqrt_()
    constant = x.amax(dim=1) == x.amin(dim=1)  # exact, unlike a threshold on std
    inv_scale = (1.0 / std.clamp_min(1e-30)).masked_fill(constant, 0.0)
    return mean, inv_scale


def _score(features, targets, tasks, layers) -> np.ndarray:
    """Accuracy of each task on its evaluation rows; layers hold (B, d_in, d_out) weights."""
    import torch

    union = np.unique(np.concatenate([t.eval_rows for t in tasks]))
    accuracies = np.empty(len(tasks))
    chunk = 8192
    predictions = []
    with torch.no_grad():
        for start in range(0, len(union), chunk):
            rows = torch.as_tensor(union[start : start + chunk], device=features.device)
            h = features[rows][None].expand(len(tasks), -1, -1)
            for i, (w, b) in enumerate(layers):
                h = torch.baddbmm(b[:, None, :], h, w)
                if i < len(layers) - 1:
                    h = torch.relu(h)
            predictions.append(h.argmax(dim=-1))
        predicted = torch.cat(predictions, dim=1).cpu().numpy()  # (B, n_union)
        truth = targets[torch.as_tensor(union, device=features.device)].cpu().numpy()
    for i, task in enumerate(tasks):
        positions = np.searchsorted(union, task.eval_rows)
        accuracies[i] = float(np.mean(predicted[i, positions] == truth[positions]))
    return accuracies


# ------------------------------------------------------------------------------- linear head


def fit_logistic_lbfgs(x, y, n_classes: int, settings: HeadSettings = HeadSettings()):
    """Batched multinomial logistic regression, L2-penalized like scikit-learn's.

    Minimizes, per task, ``mean_i CE(x_i W + b, y_i) + ||W||^2 / (2 C N)`` (scikit-learn's
    objective divided by N) with L-BFGS.

    Args:
        x: (B, N, d) standardized training features; y: (B, N) int64 class indices.

    Returns:
        weight (B, d, K) and bias (B, K).
    """
    import torch

    n_tasks, n_rows, dim = x.shape
    k = n_classes
    lam = 1.0 / (settings.C * n_rows)
    n_weight = dim * k
    one_hot = torch.nn.functional.one_hot(y, k).to(x.dtype)

    def objective(params, x, one_hot):
        weight = params[:, :n_weight].view(-1, dim, k)
        bias = params[:, n_weight:]
        logits = torch.baddbmm(bias[:, None, :], x, weight)
        log_norm = torch.logsumexp(logits, dim=-1)  # (B, N)
        picked = (logits * one_hot).sum(-1)
        loss = (log_norm - picked).mean(dim=1) + 0.5 * lam * weight.square().sum(
            dim=(1, 2)
        )
        residual = (torch.exp(logits - log_norm[..., None]) - one_hot) / n_rows
        grad_w = torch.bmm(x.transpose(1, 2), residual) + lam * weight
        grad = torch.cat([grad_w.reshape(len(params), -1), residual.sum(dim=1)], dim=1)
        return loss, grad

    params = torch.zeros(n_tasks, n_weight + k, dtype=x.dtype, device=x.device)
    solution = params.clone()
    solved = _batched_lbfgs(objective, params, (x, one_hot), settings, out=solution)
    log.debug("linear head: L-BFGS iterations per task %s", solved)
    return solution[:, :n_weight].view(n_tasks, dim, k), solution[:, n_weight:]


def _batched_lbfgs(
    objective, params, data, settings: HeadSettings, *, out
) -> list[int]:
    """Minimize B independent smooth convex objectives with one batched L-BFGS.

    ``objective(params (B, P), *data) -> (loss (B,), grad (B, P))``; ``data`` tensors have the
    task as their first dimension. Converged tasks leave the batch (their rows are written to
    ``out``), so the remaining ones stop paying for them. Returns iterations per task.
    """
    import torch

    active = np.arange(len(params))
    iterations = [0] * len(params)
    loss, grad = objective(params, *data)
    s_hist: list = []
    y_hist: list = []
    rho_hist: list = []
    gamma = torch.ones(len(params), dtype=params.dtype, device=params.device)
    for iteration in range(settings.max_iter):
        done = (grad.abs().amax(dim=1) <= settings.tol).cpu().numpy()
        if done.any():
            out[torch.as_tensor(active[done], device=out.device)] = params[
                torch.as_tensor(done, device=params.device)
            ]
            keep = torch.as_tensor(~done, device=params.device)
            active = active[~done]
            if not len(active):
                return iterations
            params, loss, grad, gamma = (
                params[keep],
                loss[keep],
                grad[keep],
                gamma[keep],
            )
            data = tuple(t[keep] for t in data)
            s_hist = [s[keep] for s in s_hist]
            y_hist = [y[keep] for y in y_hist]
            rho_hist = [r[keep] for r in rho_hist]
        for i in active:
            iterations[i] += 1
        direction = -_two_loop(grad, s_hist, y_hist, rho_hist, gamma)
        slope = (grad * direction).sum(dim=1)
        uphill = (
            slope >= 0
        )  # lost curvature information (rounding): restart on the gradient
        if uphill.any():
            direction[uphill] = -grad[uphill]
            slope = (grad * direction).sum(dim=1)
        if iteration == 0:  # as scipy: the first step has unit length
            step = 1.0 / direction.norm(dim=1).clamp_min(1e-30)
        else:
            step = torch.ones_like(slope)
        accepted = torch.zeros_like(slope, dtype=torch.bool)
        for _ in range(40):
            trial = params + step[:, None] * direction
            new_loss, new_grad = objective(trial, *data)
            new_slope = (new_grad * direction).sum(dim=1)
            armijo = new_loss <= loss + 1e-4 * step * slope
            # Approximate Wolfe (Hager & Zhang): near the optimum float32 losses cannot resolve
            # the decrease, but the directional derivative still can.
            approx_wolfe = (new_loss <= loss + 1e-6 * loss.abs()) & (
                new_slope <= -0.8 * slope
            )
            accepted = armijo | approx_wolfe
            if bool(accepted.all()):
                break
            step = torch.where(accepted, step, 0.5 * step)
        stalled = ~accepted
        if (
            stalled.any()
        ):  # no decrease along any step: as good as float precision allows
            log.debug("L-BFGS line search stalled for %d task(s)", int(stalled.sum()))
            step = step.masked_fill(stalled, 0.0)
            trial = params + step[:, None] * direction
            new_loss, new_grad = objective(trial, *data)
        s = trial - params
        y = new_grad - grad
        sy = (s * y).sum(dim=1)
        yy = (y * y).sum(dim=1)
        valid = sy > 1e-10 * yy.sqrt() * s.norm(dim=1)
        rho = torch.where(valid, 1.0 / sy.clamp_min(1e-30), torch.zeros_like(sy))
        gamma = torch.where(valid, sy / yy.clamp_min(1e-30), gamma)
        s_hist.append(s)
        y_hist.append(y)
        rho_hist.append(rho)
        if len(s_hist) > settings.lbfgs_history:
            s_hist.pop(0), y_hist.pop(0), rho_hist.pop(0)
        params, loss, grad = trial, new_loss, new_grad
        if stalled.all():
            break
    log.warning(
        "linear head: L-BFGS stopped after %d iterations with max |gradient| %.2e > tol %.0e for %d task(s)",
        settings.max_iter, float(grad.abs().amax()), settings.tol, len(active),
    )  # fmt: skip
    out[torch.as_tensor(active, device=out.device)] = params
    return iterations


def _two_loop(grad, s_hist, y_hist, rho_hist, gamma):
    """L-BFGS two-loop recursion, batched: returns H @ grad for each task. (B, P)."""
    q = grad.clone()
    alphas = []
    for s, y, rho in zip(reversed(s_hist), reversed(y_hist), reversed(rho_hist)):
        alpha = rho * (s * q).sum(dim=1)
        q -= alpha[:, None] * y
        alphas.append(alpha)
    r = gamma[:, None] * q
    for s, y, rho, alpha in zip(s_hist, y_hist, rho_hist, reversed(alphas)):
        beta = rho * (y * r).sum(dim=1)
        r += s * (alpha - beta)[:, None]
    return r


# --------------------------------------------------------------------------------- MLP heads


def init_mlp(
    head: str, dim: int, n_classes: int, settings: HeadSettings, generator, device
):
    """Initial layers of one task, drawn from its generator like ``torch.nn.Linear``'s default
    (uniform in +-1/sqrt(fan_in), weights then bias). Returns [(weight (d_in, d_out), bias (d_out,))]."""
    import torch

    widths = (
        [dim, n_classes] if head == "mlp1" else [dim, settings.hidden_width, n_classes]
    )
    layers = []
    for fan_in, fan_out in itertools.pairwise(widths):
        bound = 1.0 / fan_in**0.5
        weight = (
            torch.rand(fan_in, fan_out, generator=generator, device=device) * 2 - 1
        ) * bound
        bias = (torch.rand(fan_out, generator=generator, device=device) * 2 - 1) * bound
        layers.append((weight, bias))
    return layers


def draw_minibatch(n_rows: int, settings: HeadSettings, generator, device):
    """Positions (b,) of one minibatch in a task's training set, or None for the full set."""
    import torch

    if n_rows <= settings.batch_size:
        return None
    return torch.randint(
        n_rows, (settings.batch_size,), generator=generator, device=device
    )


def draw_dropout_keep(n_rows: int, dim: int, settings: HeadSettings, generator, device):
    """Input-dropout multipliers (n_rows, d): 0 with probability ``dropout``, else 1/(1-dropout).

    Independent coins per entry, drawn as the positions of the kept entries (row-major; see
    :func:`repalign._fewshot_sparse.draw_kept_positions`), so a per-fit loop that uses this
    dense mask sees exactly the dropout of the batched sparse training of the same task.
    """
    import torch

    from repalign._fewshot_sparse import draw_kept_positions

    keep_prob = 1.0 - settings.dropout
    kept = draw_kept_positions(n_rows * dim, keep_prob, generator, device)
    keep = torch.zeros(n_rows * dim, device=device)
    keep.index_fill_(0, kept, 1.0 / keep_prob)
    return keep.view(n_rows, dim)


def fit_mlp(
    head, features, train_rows, y_train, mean, inv_scale, n_classes, seeds, settings
):
    """Train the MLP head of B tasks together.

    Args:
        features: (n_rows, d); train_rows, y_train: (B, N); mean, inv_scale: (B, d);
        seeds: (B,) generator seeds, one per task.

    Returns:
        [(weight (B, d_in, d_out), bias (B, d_out))] per layer.
    """
    import torch

    from repalign._fewshot_sparse import (
        KeptInputs,
        draw_kept_positions,
        sparse_input_linear,
    )

    device = features.device
    n_tasks, n_rows = train_rows.shape
    dim = features.shape[1]
    generators = [torch.Generator(device=device).manual_seed(s) for s in seeds]
    per_task = [init_mlp(head, dim, n_classes, settings, g, device) for g in generators]
    params = []
    for layer in range(len(per_task[0])):
        for part in range(2):
            params.append(
                torch.stack([t[layer][part] for t in per_task]).requires_grad_(True)
            )
    # One fused kernel per step for all parameters (the same AdamW update, elementwise).
    optimizer = torch.optim.AdamW(
        params,
        lr=settings.lr,
        weight_decay=settings.weight_decay,
        fused=device.type == "cpu" or None,
    )
    batch = min(n_rows, settings.batch_size)
    keep_prob = 1.0 - settings.dropout
    positions = torch.empty(n_tasks, batch, dtype=torch.long, device=device)
    # Standardized once per task, (B, N, d): a step only gathers its minibatch.
    x_train = features.index_select(0, train_rows.reshape(-1)).view(
        n_tasks, n_rows, dim
    )
    x_train = x_train.sub_(mean[:, None, :]).mul_(inv_scale[:, None, :])
    row_base = torch.arange(n_tasks, device=device)[:, None] * n_rows
    # The first layer runs on the kept inputs (a fifth) when its output is wide enough for
    # a gather-sum per entry to beat a dense product; narrow ones use the dense masked batch.
    sparse_first = params[0].shape[2] >= _SPARSE_MIN_WIDTH
    task_offset = torch.arange(n_tasks, device=device) * (batch * dim)
    for _ in range(settings.n_steps):
        kept_parts = []
        for i, generator in enumerate(generators):
            picked = draw_minibatch(n_rows, settings, generator, device)
            if picked is not None:
                positions[i] = picked
            kept_parts.append(
                draw_kept_positions(batch * dim, keep_prob, generator, device).add_(
                    task_offset[i]
                )
            )
        flat = torch.cat(kept_parts)  # positions in the (B, b, d) minibatch, increasing
        if batch == n_rows:  # full batch: no sampling
            minibatch, targets = x_train, y_train
        else:  # whole rows first: the entry gather below then stays in cache
            picked_rows = (positions + row_base).view(-1)
            minibatch = x_train.view(-1, dim).index_select(0, picked_rows)
            minibatch = minibatch.view(n_tasks, batch, dim)
            targets = y_train.gather(1, positions)
        kept = KeptInputs(flat, minibatch)
        kept.values.mul_(1.0 / keep_prob)  # inverted dropout
        if sparse_first:
            h = sparse_input_linear(params[0], params[1], kept)
        else:
            h = torch.baddbmm(params[1][:, None, :], kept.dense(), params[0])
        for j in range(2, len(params), 2):
            h = torch.baddbmm(params[j + 1][:, None, :], torch.relu(h), params[j])
        # Sum over tasks of each task's mean loss: every task gets its own gradient.
        loss = torch.nn.functional.cross_entropy(
            h.reshape(-1, n_classes), targets.reshape(-1), reduction="sum"
        )
        optimizer.zero_grad(set_to_none=True)
        (loss / batch).backward()
        optimizer.step()
    return [
        (params[j].detach(), params[j + 1].detach()) for j in range(0, len(params), 2)
    ]
