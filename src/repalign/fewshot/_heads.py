"""Batched training and scoring of the few-shot heads (private; used by :mod:`repalign.fewshot`).

Every (seed, shots) pair of the protocol is one *task*: standardize the features with the
statistics of the task's training shots, fit a head, score the task's evaluation examples.
Tasks with the same training-set size (all seeds of one ``shots``) are stacked along a
leading batch dimension and trained as one tensor program instead of a Python loop of
independent fits: the linear head in :mod:`repalign.fewshot._linear`, the MLP heads in
:mod:`repalign.fewshot._mlp`. Matrix products use the fastest route that keeps each head's
accuracy (:mod:`repalign.fewshot._fast_matmul`).

A task's result does not depend on which other tasks share its batch: one cell of the grid
can be reproduced alone (see ``benchmarks/bench_fewshot.py`` for the comparison with a plain
loop of independent fits). That is also what lets the tasks of several models share groups
(:func:`repalign.fewshot.evaluate_fewshot_many`): their feature matrices are stacked row-wise,
each task indexes its own model's rows, and ``Task.source`` tells scoring which rows belong
together.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from repalign.fewshot.settings import HeadSettings

log = logging.getLogger(__name__)

_HEAD_CODES = {"linear": 0, "mlp1": 1, "mlp2": 2}
# Groups whose per-step product (tasks x rows x inputs x outputs) is below this train on one
# CPU thread. Measured on 2 idle cores, 2 threads already pay off for MNIST's mlp1 (1-10M);
# below this size, results were the same either way.
_MULTITHREAD_MIN_WORK = 500_000
# A group trains on (tasks x rows x inputs) standardized training values at once; larger
# groups are split into chunks of at most this many (2^27 float32 = 512 MiB). One model's
# largest group, 5 seeds of 80 shots x 100 classes on 2048-d, holds 82M and stays whole;
# ten models' would hold 820M (3.3 GB) and train in chunks of 8 tasks, where a task's work
# is large enough that a smaller batch costs nothing measurable.
_GROUP_MAX_ELEMENTS = 1 << 27


@dataclass(frozen=True)
class Task:
    """One fit: rows of the feature matrix to train on and to evaluate, (n_train,) and (n_eval,).

    ``source`` names the block of rows the task's rows lie in (one model's features when
    several models' are stacked); tasks of one source are scored on the union of their
    evaluation rows, never on another source's.
    """

    seed: int
    shots: int
    train_rows: np.ndarray
    eval_rows: np.ndarray
    source: int = 0


def task_generator_seed(seed: int, shots: int, head: str) -> int:
    """The seed of a task's private torch generator, from (seed, shots, head)."""
    state = np.random.SeedSequence([int(seed), int(shots), _HEAD_CODES[head], 0xF5]).generate_state(2)
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
        tasks: the fits; tasks with equal training-set size are batched together (in chunks
            of at most ``_GROUP_MAX_ELEMENTS`` training values).
        n_classes: number of classes.

    Returns:
        (len(tasks),) float64 accuracies in [0, 1], in the order of ``tasks``.
    """
    from repalign.fewshot._fast_matmul import fast_float32_matmul

    accuracies = np.full(len(tasks), np.nan)
    groups: dict[int, list[int]] = {}
    for i, task in enumerate(tasks):
        groups.setdefault(len(task.train_rows), []).append(i)
    with deterministic_torch(), fast_float32_matmul(features.device):
        for n_train, group in sorted(groups.items()):
            per_chunk = max(1, _GROUP_MAX_ELEMENTS // (n_train * features.shape[1]))
            for chunk in np.array_split(group, -(-len(group) // per_chunk)):  # chunks of equal size
                members = chunk.tolist()
                batch = [tasks[i] for i in members]
                rows = min(n_train, settings.batch_size) if head != "linear" else n_train
                width = settings.hidden_width if head == "mlp2" else n_classes
                with _threads_for(features.device, len(batch) * rows * features.shape[1] * width):
                    accuracies[members] = _fit_group(head, features, targets, batch, n_classes, settings)
    return accuracies


@contextlib.contextmanager
def _threads_for(device, work: int) -> Iterator[None]:
    """One CPU thread for small per-step work: there, thread start-up and spinning cost more
    than they save (badly so on a busy machine). Restores the previous thread count."""
    import torch

    if device.type != "cpu" or work >= _MULTITHREAD_MIN_WORK or torch.get_num_threads() == 1:
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

    from repalign.fewshot._linear import fit_logistic_lbfgs
    from repalign.fewshot._mlp import fit_mlp

    device = features.device
    train_rows = torch.as_tensor(np.stack([t.train_rows for t in tasks]), device=device)  # (B, N)
    x_train, mean, inv_scale = standardized_training_rows(features, train_rows)
    y_train = targets[train_rows]  # (B, N)
    if head == "linear":
        weight, bias = fit_logistic_lbfgs(x_train, y_train, n_classes, settings)
        layers = [(weight, bias)]
    else:
        seeds = [task_generator_seed(t.seed, t.shots, head) for t in tasks]
        layers = fit_mlp(head, x_train, y_train, n_classes, seeds, settings)
    # Fold the standardization into the first layer so raw evaluation rows can be scored.
    first_w, first_b = layers[0]
    folded_w = inv_scale[:, :, None] * first_w
    folded_b = first_b - torch.bmm((mean * inv_scale)[:, None, :], first_w)[:, 0, :]
    layers = [(folded_w, folded_b), *layers[1:]]
    return _score(features, targets, tasks, layers)


def standardized_training_rows(features, train_rows):
    """Each task's training rows, standardized with their own statistics.

    Args:
        features: (n_rows, d); train_rows: (B, N) row indices.

    Returns:
        x (B, N, d) standardized rows (a new tensor), mean (B, d) and inv_scale (B, d), with
        ``x = (features[train_rows] - mean) * inv_scale``. Columns that are constant on a
        task's training rows get inv_scale 0: they carry no information for the classifier,
        and zeroing them keeps evaluation rows (where they may vary) from reaching untrained
        weights.
    """
    x = features.index_select(0, train_rows.reshape(-1)).view(*train_rows.shape, -1)
    # Separate reductions: torch.aminmax over dim 1 is 7x slower on CPU.
    low, high = x.amin(dim=1), x.amax(dim=1)
    mean = x.mean(dim=1)
    x -= mean[:, None, :]
    # Two plain passes (mean, then mean square of the centred rows): several times faster
    # on CPU than torch's one-pass std over dim 1.
    std = x.square().mean(dim=1).sqrt_()
    inv_scale = (1.0 / std.clamp_min(1e-30)).masked_fill(high == low, 0.0)  # exact test
    x *= inv_scale[:, None, :]
    return x, mean, inv_scale


def _score(features, targets, tasks, layers) -> np.ndarray:
    """Accuracy of each task on its evaluation rows; layers hold (B, d_in, d_out) weights.

    Tasks are scored per source, each on the union of its own tasks' evaluation rows.
    """
    import torch

    accuracies = np.empty(len(tasks))
    sources: dict[int, list[int]] = {}
    for i, task in enumerate(tasks):
        sources.setdefault(task.source, []).append(i)
    for members in sources.values():
        if len(members) < len(tasks):
            which = torch.as_tensor(members, device=features.device)
            part = [(w.index_select(0, which), b.index_select(0, which)) for w, b in layers]
        else:
            part = layers
        accuracies[members] = _score_source(features, targets, [tasks[i] for i in members], part)
    return accuracies


def _score_source(features, targets, tasks, layers) -> np.ndarray:
    """:func:`_score` for tasks of one source."""
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
