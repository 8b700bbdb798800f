"""Input dropout as sparsity: draw the kept inputs directly and train on them (private).

With input dropout 0.8 only a fifth of a minibatch's inputs survive. Drawing one uniform
number per input and multiplying by the mask spends most of a step on inputs that are then
multiplied by zero. Here each task draws only the *positions* of its kept inputs, as the
gaps of a Bernoulli process (i.i.d. geometric), which is the same distribution as an
independent keep/drop coin per input, at about a fifth of the random numbers. The first
layer then runs on the kept entries only: the forward pass is a weighted row gather-sum
(``embedding_bag`` over rows of the weight), and its weight gradient is the same operation
on the transposed entries (gather-sum of output gradients per input column).

Gathers use ``index_select``, several times faster on CPU than advanced indexing.

Imports torch at module level: import this module lazily.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def draw_kept_positions(total: int, keep_prob: float, generator, device) -> torch.Tensor:
    """Positions kept by independent Bernoulli(keep_prob) coins over ``range(total)``.

    The gap before each kept position is geometric: ``floor(log(U) / log(1 - p))`` dropped
    positions, U uniform on (0, 1]. Enough gaps for the total (mean + 6 sd) are drawn at
    once; in the rare case they fall short, more are drawn, so the result is exact.

    Returns:
        (n_kept,) int64 positions, strictly increasing, in [0, total).
    """
    mean = total * keep_prob
    chunk = int(mean + 6.0 * math.sqrt(mean * (1.0 - keep_prob)) + 16)
    scale = 1.0 / math.log1p(-keep_prob)
    parts = []
    last = -1
    while last < total:
        uniform = torch.rand(chunk, generator=generator, device=device)
        # 1 - u is uniform on (0, 1]: no log(0). (log1p(-u) would be more precise for tiny u,
        # where the gap is 0 either way, and torch's CPU log1p is ~10x slower than log.)
        # The ratio is >= 0, so the integer conversion's truncation is the floor. (Through
        # int32, about twice as fast on CPU as float32 -> int64; gaps are far below 2^31.)
        gaps = uniform.neg_().add_(1.0).log_().mul_(scale).to(torch.int32)
        gaps = gaps.to(torch.int64).add_(1)
        positions = gaps.cumsum_(0).add_(last)
        parts.append(positions)
        last = int(positions[-1])
    positions = parts[0] if len(parts) == 1 else torch.cat(parts)
    return positions[: int(torch.searchsorted(positions, total))]


class KeptInputs:
    """The kept entries of a stacked minibatch, (B tasks, b rows, d inputs) flattened.

    Attributes:
        table_index: (nnz,) int32 row of the stacked first-layer weight ``(B * d, H)``,
            ``task * d + column``, in row-major order of the minibatch.
        rows: (nnz,) int64 minibatch row ``task * b + row``.
        values: (nnz,) the kept input values.
        row_offsets: (B * b,) start of each minibatch row in the entries.
        n_tasks, n_rows: B and b.
    """

    def __init__(self, flat, minibatch) -> None:
        """``flat``: (nnz,) increasing positions in the flattened ``minibatch`` (B, b, d)."""
        n_tasks, n_rows, dim = minibatch.shape
        device = flat.device
        all_rows = torch.arange(n_tasks * n_rows, device=device)
        # Row of each entry from row boundaries (binary search + repeat), avoiding a slow
        # elementwise int64 division over all entries.
        row_starts = torch.searchsorted(flat, all_rows * dim)
        counts = torch.diff(row_starts, append=flat.new_tensor([len(flat)]))
        self.rows = torch.repeat_interleave(all_rows, counts, output_size=len(flat))
        # task * d + column = position + (task * d - row * d), a per-row constant.
        shift = (all_rows // n_rows - all_rows) * dim
        self.table_index = (flat + shift.index_select(0, self.rows)).to(torch.int32)
        self.row_offsets = row_starts.to(torch.int32)
        self.values = minibatch.reshape(-1).index_select(0, flat)
        self.n_tasks, self.n_rows = n_tasks, n_rows


def masked_dense(minibatch, flat):
    """The minibatch (B, b, d) with every entry but the kept positions ``flat`` zeroed."""
    values = minibatch.reshape(-1).index_select(0, flat)
    out = torch.zeros(minibatch.numel(), dtype=minibatch.dtype, device=minibatch.device)
    return out.index_copy_(0, flat, values).view(minibatch.shape)


class _SparseInputLinear(torch.autograd.Function):
    """``x_masked @ W`` per task from the kept entries; gradient for W only."""

    @staticmethod
    def forward(ctx, weight, kept: KeptInputs):
        n_tasks, dim, width = weight.shape
        ctx.kept = kept
        ctx.shape = weight.shape
        return F.embedding_bag(
            kept.table_index,
            weight.reshape(n_tasks * dim, width),
            kept.row_offsets,
            mode="sum",
            per_sample_weights=kept.values,
        )

    @staticmethod
    def backward(ctx, grad_output):
        kept = ctx.kept
        n_tasks, dim, width = ctx.shape
        # Group the entries by weight row (stable: rows stay in order, so sums are
        # reproducible and a task's result does not depend on the other tasks).
        by_column, order = torch.sort(kept.table_index, stable=True)
        column_starts = torch.arange(n_tasks * dim, device=by_column.device)
        offsets = torch.searchsorted(by_column, column_starts.to(torch.int32))
        grad_weight = F.embedding_bag(
            kept.rows.index_select(0, order),
            grad_output.contiguous(),
            offsets,
            mode="sum",
            per_sample_weights=kept.values.index_select(0, order),
        )
        return grad_weight.view(n_tasks, dim, width), None


def sparse_input_linear(weight, bias, kept: KeptInputs):
    """First layer on the kept inputs: (B, b, H) = masked x (B, b, d) @ weight (B, d, H) + bias (B, H)."""
    out = _SparseInputLinear.apply(weight, kept)
    return out.view(kept.n_tasks, kept.n_rows, -1) + bias[:, None, :]
