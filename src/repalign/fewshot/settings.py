"""Hyperparameters of the few-shot heads (private; exported by :mod:`repalign.fewshot`)."""

from __future__ import annotations

from dataclasses import dataclass

from repalign._options import AUTO, HEADS, MLP_PRECISIONS
from repalign.errors import InputError

__all__ = ["HEADS", "MLP_PRECISIONS", "HeadSettings"]


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
        mlp_precision: dtype of the MLP heads' matrix products: "float32", "bfloat16"
            (weights, optimizer and loss stay float32), or "auto": bfloat16 where the
            hardware multiplies it natively, float32 elsewhere.
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
    mlp_precision: str = AUTO

    def __post_init__(self) -> None:
        if self.mlp_precision not in MLP_PRECISIONS:
            raise InputError(f"mlp_precision must be one of {', '.join(MLP_PRECISIONS)}; got {self.mlp_precision!r}.")
        if not 0.0 <= self.dropout < 1.0:
            raise InputError(f"dropout must be in [0, 1); got {self.dropout}.")
