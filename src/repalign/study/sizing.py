"""What each unit asks a Ray cluster for, from its model's published size.

A unit is one model through every stage. Its peak memory is dominated by the model: its
weights (float32, 4 bytes a parameter) and the activations of a batch, both published per
timm architecture (``param_count`` and ``infer_macts`` of timm's inference benchmark, read by
:func:`repalign.study.estimate.model_sizes`, the one definition of a model's size). So:

* memory (Ray's ``memory`` resource, on every cluster): ``UNIT_BASE_MEMORY_BYTES`` (a worker
  with torch and the unit's data) + weights + every activation of ``SIZING_BATCH_IMAGES`` images;
* GPUs (on a cluster with GPUs): the smallest share in ``GPU_SHARES`` (1/8, 1/4, 1/2, 1) that
  holds weights + activations + a CUDA context in one GPU's memory (``[execution]
  gpu_memory_gb``). Many small models share a GPU; a model needing more than half a GPU
  gets a whole one, so two giants never meet on one device.

A model of unpublished size (not a timm architecture in the tables) is sized as
``UNKNOWN_MODEL_BYTES`` beyond the base and takes a whole GPU. A request larger than every
node can give is lowered to the largest node's (with a warning): Ray would otherwise keep
the unit pending forever. Units are ordered largest first, so the longest ones start first
and small ones fill the gaps at the end.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from repalign import _options as opt
from repalign.study.estimate import ModelSize, model_sizes
from repalign.study.plan import Unit

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class UnitResources:
    """The Ray resources of one unit's task, and the size they came from."""

    memory_bytes: int
    num_gpus: float
    size: ModelSize

    @property
    def order(self) -> tuple[float, float]:
        """Sort key, larger first: compute (GMACs) then memory; unknown sizes sort as large."""
        unknown = self.size.gmacs is None
        return (float("inf") if unknown else self.size.gmacs, self.memory_bytes)


def model_bytes(size: ModelSize) -> int | None:
    """Weights (float32) + every activation of a forward pass of ``SIZING_BATCH_IMAGES`` images;
    None when the size is not published."""
    if size.params_m is None:
        return None
    activations = (size.activations_m or 0.0) * 1e6 * 4 * opt.SIZING_BATCH_IMAGES
    return int(size.params_m * 1e6 * 4 + activations)


def gpu_share(size: ModelSize, gpu_memory_bytes: int) -> float:
    """The smallest of ``GPU_SHARES`` whose slice of one GPU holds the model (1 when unknown)."""
    need = model_bytes(size)
    if need is None:
        return 1.0
    need += opt.GPU_CONTEXT_BYTES
    return next((share for share in opt.GPU_SHARES if share * gpu_memory_bytes >= need), 1.0)


def unit_resources(
    units: list[Unit],
    *,
    gpus: bool,
    gpu_memory_gb: int = 0,
    node_memory_bytes: float | None = None,
) -> dict[str, UnitResources]:
    """Resources per unit id.

    Args:
        gpus: whether the cluster has GPUs (else every share is 0).
        gpu_memory_gb: memory of one GPU (0: ``DEFAULT_GPU_MEMORY_GB``).
        node_memory_bytes: the most ``memory`` any one node offers; larger requests are lowered to it.
    """
    gpu_memory = (gpu_memory_gb or opt.DEFAULT_GPU_MEMORY_GB) * (1 << 30)
    sizes = model_sizes(sorted({u.model for u in units}))
    out = {}
    for unit in units:
        size = sizes[unit.model]
        memory = opt.UNIT_BASE_MEMORY_BYTES + (model_bytes(size) or opt.UNKNOWN_MODEL_BYTES)
        if node_memory_bytes is not None and memory > node_memory_bytes:
            log.warning(
                "%s needs about %.1f GiB by its published size, more than any node offers (%.1f GiB); "
                "asking for all of one node's",
                unit.model,
                memory / (1 << 30),
                node_memory_bytes / (1 << 30),
            )
            memory = int(node_memory_bytes)
        out[unit.id] = UnitResources(memory, gpu_share(size, gpu_memory) if gpus else 0.0, size)
    return out


def largest_first(units: list[Unit], resources: dict[str, UnitResources]) -> list[Unit]:
    """Units by size, largest first (a stable sort: equal sizes keep the config's order)."""
    return sorted(units, key=lambda u: resources[u.id].order, reverse=True)
