"""The MLP few-shot heads, trained in batches of tasks (private).

``mlp1``: input dropout, then one linear layer. ``mlp2``: input dropout, a hidden layer with
ReLU, then a linear layer. Both train with AdamW for a fixed number of steps on minibatches
drawn with replacement (the whole training set when it is smaller than a minibatch).

B tasks train as one program: their weights are stacked along a leading dimension and each
layer is one batched product (``baddbmm``). The loss is the sum of the tasks' mean losses,
so each task gets exactly its own gradient, and AdamW's update is elementwise, so stacking
changes nothing per task; torch's fused CPU AdamW does it in one kernel.

Each task draws its randomness (initial weights, minibatches, dropout masks) from its own
generator, so its result does not depend on the other tasks of its batch, and a plain
per-fit loop with the same generators (:func:`draw_minibatch`, :func:`draw_dropout_keep`)
sees the same draws (``benchmarks/bench_fewshot.py`` compares the two).

Input dropout is drawn as the positions of the kept inputs (:mod:`repalign.fewshot._dropout`).
The first layer's product then runs one of two ways:

- bfloat16 products (``HeadSettings.mlp_precision``; the default where the hardware has them,
  see :mod:`repalign.fewshot._fast_matmul`): the masked minibatch as a dense bfloat16 batch, several
  times faster than any float32 route;
- float32: when the layer is at least ``_SPARSE_MIN_WIDTH`` wide, on the kept entries only
  (gather-sums over a fifth of the inputs instead of a dense product over 80% zeros);
  narrower ones (e.g. ``mlp1`` with 10 classes) as one dense batched product.

Imports torch at module level: import this module lazily.
"""

from __future__ import annotations

import itertools

import torch

from repalign.fewshot._dropout import (
    KeptInputs,
    draw_kept_positions,
    masked_dense,
    sparse_input_linear,
)
from repalign.fewshot._fast_matmul import mlp_matmul_dtype
from repalign.fewshot.settings import HeadSettings

# A task draws the randomness of up to _BLOCK_MAX_STEPS steps at once, fewer when that
# would hold more than about _BLOCK_KEPT kept positions (memory: 12 bytes each).
_BLOCK_MAX_STEPS = 32
_BLOCK_KEPT = 1 << 20
# float32 first layers at least this wide train on the kept inputs only; narrower ones are
# faster as one dense batched product.
_SPARSE_MIN_WIDTH = 64


def init_mlp(head: str, dim: int, n_classes: int, settings: HeadSettings, generator, device):
    """Initial layers of one task, drawn from its generator like ``torch.nn.Linear``'s default
    (uniform in +-1/sqrt(fan_in), weights then bias). Returns [(weight (d_in, d_out), bias (d_out,))]."""
    widths = [dim, n_classes] if head == "mlp1" else [dim, settings.hidden_width, n_classes]
    layers = []
    for fan_in, fan_out in itertools.pairwise(widths):
        bound = 1.0 / fan_in**0.5
        weight = (torch.rand(fan_in, fan_out, generator=generator, device=device) * 2 - 1) * bound
        bias = (torch.rand(fan_out, generator=generator, device=device) * 2 - 1) * bound
        layers.append((weight, bias))
    return layers


class TaskDraws:
    """One task's random draws for training, from its own generator, a block of steps at a time.

    For each block of k steps (k depends only on the task's sizes) the generator gives, in
    this order, the k minibatches (one ``randint`` of shape (k, b); none when the whole
    training set is the minibatch) and the kept dropout positions of the k steps, as one
    Bernoulli process over the k * b * d inputs (independent coins, as drawn per step).
    A block costs the same dozen small tensor operations that one step would, so blocks make
    the per-step cost of drawing the volume of random numbers alone.
    """

    def __init__(self, generator, n_rows: int, dim: int, settings: HeadSettings, device):
        self.generator, self.device, self.n_rows = generator, device, n_rows
        self.batch = min(n_rows, settings.batch_size)
        self.keep_prob = 1.0 - settings.dropout
        self.inputs_per_step = self.batch * dim
        kept_per_step = max(1.0, self.inputs_per_step * self.keep_prob)
        self.block_steps = int(min(_BLOCK_MAX_STEPS, max(1, _BLOCK_KEPT // kept_per_step)))
        self.steps_left = settings.n_steps
        # The current block: minibatches (k, b) or None, kept positions, step boundaries.
        self._picked, self._kept, self._bounds = None, None, [0]
        self._step = 0  # next step within the block

    def next(self, offset: int = 0):
        """The next step's (minibatch positions (b,) or None, kept positions + ``offset``).

        Kept positions index the step's flattened (b, d) minibatch, increasing.
        """
        if self._step == len(self._bounds) - 1:
            self._draw_block()
        j = self._step
        self._step += 1
        part = self._kept[self._bounds[j] : self._bounds[j + 1]]
        picked = None if self._picked is None else self._picked[j]
        return picked, part.add_(offset - j * self.inputs_per_step)

    def _draw_block(self) -> None:
        steps = min(self.block_steps, self.steps_left)
        if steps <= 0:
            raise RuntimeError("TaskDraws: all training steps were already drawn")
        self.steps_left -= steps
        self._picked = None
        if self.batch < self.n_rows:
            self._picked = torch.randint(self.n_rows, (steps, self.batch), generator=self.generator, device=self.device)
        size = self.inputs_per_step
        self._kept = draw_kept_positions(steps * size, self.keep_prob, self.generator, self.device)
        starts = torch.arange(steps + 1, device=self._kept.device) * size
        self._bounds = torch.searchsorted(self._kept, starts).tolist()
        self._step = 0


def dropout_multipliers(kept, n_rows: int, dim: int, settings: HeadSettings):
    """A step's input-dropout multipliers (n_rows, d) from its kept positions (see
    :class:`TaskDraws`): 1/(1-dropout) where kept, else 0. For a plain per-fit loop."""
    keep_prob = 1.0 - settings.dropout
    keep = torch.zeros(n_rows * dim, device=kept.device)
    keep.index_fill_(0, kept, 1.0 / keep_prob)
    return keep.view(n_rows, dim)


def fit_mlp(head, x_train, y_train, n_classes, seeds, settings):
    """Train the MLP head of B tasks together.

    Args:
        x_train: (B, N, d) standardized training rows (consumed: scaled in place);
        y_train: (B, N) class indices; seeds: (B,) generator seeds, one per task.

    Returns:
        [(weight (B, d_in, d_out), bias (B, d_out))] per layer, float32.
    """
    device = x_train.device
    n_tasks, n_rows, dim = x_train.shape
    generators = [torch.Generator(device=device).manual_seed(s) for s in seeds]
    per_task = [init_mlp(head, dim, n_classes, settings, g, device) for g in generators]
    params = []
    for layer in range(len(per_task[0])):
        for part in range(2):
            params.append(torch.stack([t[layer][part] for t in per_task]).requires_grad_(True))
    # One fused kernel per step for all parameters (the same AdamW update, elementwise).
    optimizer = torch.optim.AdamW(
        params,
        lr=settings.lr,
        weight_decay=settings.weight_decay,
        fused=device.type == "cpu" or None,
    )
    batch = min(n_rows, settings.batch_size)
    keep_prob = 1.0 - settings.dropout
    low = mlp_matmul_dtype(settings.mlp_precision, device)
    # A step only gathers its minibatch from these rows. The inverted-dropout scale
    # 1/keep_prob is applied here once rather than per step.
    x_train = x_train.mul_(1.0 / keep_prob)
    if low is not None:
        x_train = x_train.to(low)
    # In float32 the first layer runs on the kept inputs (a fifth) when its output is wide
    # enough for a gather-sum per entry to beat a dense product; narrow ones, and all in
    # bfloat16 (where the dense product is several times faster), use the masked batch.
    sparse_first = low is None and params[0].shape[2] >= _SPARSE_MIN_WIDTH
    draws = [TaskDraws(g, n_rows, dim, settings, device) for g in generators]
    for _ in range(settings.n_steps):
        flat, picked_rows = _step_draws(draws, n_rows)
        if picked_rows is None:  # full batch: no sampling
            minibatch, targets = x_train, y_train
        else:
            minibatch = x_train.view(-1, dim).index_select(0, picked_rows)
            minibatch = minibatch.view(n_tasks, batch, dim)
            targets = y_train.view(-1).index_select(0, picked_rows).view(n_tasks, batch)
        if sparse_first:
            h = sparse_input_linear(params[0], params[1], KeptInputs(flat, minibatch))
        else:
            h = torch.baddbmm(
                _cast(params[1], low)[:, None, :],
                masked_dense(minibatch, flat),
                _cast(params[0], low),
            )
        for j in range(2, len(params), 2):
            h = torch.baddbmm(
                _cast(params[j + 1], low)[:, None, :],
                torch.relu(h),
                _cast(params[j], low),
            )
        # Sum over tasks of each task's mean loss: every task gets its own gradient.
        loss = torch.nn.functional.cross_entropy(h.float().reshape(-1, n_classes), targets.reshape(-1), reduction="sum")
        optimizer.zero_grad(set_to_none=True)
        (loss / batch).backward()
        optimizer.step()
    return [(params[j].detach(), params[j + 1].detach()) for j in range(0, len(params), 2)]


def _step_draws(draws: list[TaskDraws], n_rows: int):
    """One training step's draws for all tasks: the kept positions of the stacked (B, b, d)
    minibatch (increasing), and its rows in the stacked (B * N) training set, or None when
    each task's whole training set is its minibatch."""
    kept_parts, picked_parts = [], []
    for i, task in enumerate(draws):
        picked, kept = task.next(offset=i * task.inputs_per_step)
        kept_parts.append(kept)
        if picked is not None:
            picked_parts.append(picked + i * n_rows)
    picked_rows = torch.cat(picked_parts) if picked_parts else None
    return torch.cat(kept_parts), picked_rows


def _cast(tensor, dtype):
    return tensor if dtype is None else tensor.to(dtype)
