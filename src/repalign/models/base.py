"""What every model source provides: a :class:`ModelSpec` (a parsed, resolved name) and a
:class:`ModelHandle` (a loaded model that turns preprocessed images into features).

The extraction engine (:mod:`repalign.embed`) only talks to this interface, so a new
source needs no change there.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from repalign._options import DEFAULT_LAYER

#: Name of the default feature layer: the penultimate layer (pre-logits features).
PENULTIMATE = DEFAULT_LAYER


@dataclass(frozen=True)
class ModelSpec:
    """A model name parsed and resolved by its source.

    Attributes:
        name: canonical user-facing name, e.g. ``"timm:resnet50@random"``.
        source: registry source, e.g. ``"timm"``.
        arch: the source's own name, e.g. ``"resnet50"`` or a file path for ``onnx:``.
        resolved_id: exact id of what is loaded, e.g. ``"timm:resnet50.a1_in1k"``.
        variant: ``"random"`` for an untrained architecture, else None.
        seed: initialisation seed of a random variant.
        extra: source-specific details (JSON-serialisable).
    """

    name: str
    source: str
    arch: str
    resolved_id: str
    variant: str | None = None
    seed: int | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


class ModelHandle(abc.ABC):
    """A loaded model, ready to extract features on one device.

    Subclasses set ``spec`` and ``device`` and implement the abstract members.
    """

    spec: ModelSpec
    device: str = "cpu"
    #: True when :meth:`forward` takes torch tensors (batched by a torch DataLoader);
    #: False when it takes numpy arrays (TFLite, pixels).
    uses_torch: bool = True
    #: A sensible batch size on CPU for this model.
    default_batch_size: int = 32

    @property
    @abc.abstractmethod
    def identity(self) -> dict[str, Any]:
        """JSON-serialisable identity of exactly what was loaded: resolved id plus the weights
        (file sha256, hub revision, or ``random:<seed>``). Part of the embedding cache key."""

    @property
    @abc.abstractmethod
    def preprocess_config(self) -> dict[str, Any]:
        """JSON-serialisable preprocessing settings (size, crop, mean/std, interpolation, ...).
        Part of the embedding cache key."""

    @property
    @abc.abstractmethod
    def transform(self) -> Callable[[Any], Any]:
        """A picklable callable: RGB ``PIL.Image`` -> one input (a CHW float tensor for torch
        models, a numpy array otherwise). Runs in DataLoader worker processes."""

    @abc.abstractmethod
    def forward(self, batch: Any, *, layers: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Features of a batch of transformed inputs.

        Returns ``{layer_name: (batch, n_features) float32 numpy array}``; with ``layers=None``
        the single key :data:`PENULTIMATE`. All requested layers come from one forward pass.
        """

    def available_layers(self) -> list[str]:
        """Names accepted by ``forward(..., layers=...)``."""
        return [PENULTIMATE]

    def layer_table(self) -> list[dict[str, Any]]:
        """The layers a user can ask for, in network order (input to output), each a dict:
        ``layer`` (the short name ``forward`` takes), ``kind`` (module class, op, or
        ``"preset"``), ``features`` (the feature count ``forward`` gives) and ``name`` (the
        full name, or for a preset what it stands for). Sources with more than the
        penultimate layer override it."""
        return [{"layer": PENULTIMATE, "kind": "preset", "features": None, "name": "the model's output features"}]
