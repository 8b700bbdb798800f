"""Your own torch ``nn.Module`` as a model: :func:`wrap_model` gives the
:class:`~repalign.models.base.ModelHandle` the extraction engine takes, like a named model.

Its identity -- part of the embedding cache key -- is the name given, the module's class and
a sha256 of its ``state_dict`` (every tensor's name, dtype, shape and bytes): the same weights
hit the cache again in any process, and any change to a weight misses it. The transform is
part of the key through ``preprocess_config``, by default the transform's ``repr`` (which
torchvision transforms spell out in full; a lambda's repr changes every run, so give a
``preprocess_config`` that describes it to keep its cache entries).

Example:
    >>> import torchvision
    >>> from repalign.models import wrap_model
    >>> net = torchvision.models.resnet18(num_classes=10)  # your trained network
    >>> handle = wrap_model(net, transform=my_transform, name="my-resnet18", classifier="fc")
    >>> features = extract_embeddings(handle, images)  # (n_images, 512): the input of net.fc
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from repalign._options import DEFAULT_DEVICE
from repalign.errors import InputError
from repalign.models.base import ModelHandle, ModelSpec

#: the ``source`` of a wrapped module's spec; its ``resolved_id`` is ``module:<name>``
SOURCE = "module"


def state_dict_sha256(module) -> str:
    """sha256 over a module's ``state_dict``: names, dtypes, shapes and the tensors' bytes, in
    name order. Parameters and buffers (batch-norm statistics) alike decide the features."""
    import torch

    digest = hashlib.sha256()
    for key, tensor in sorted(module.state_dict().items()):
        if not isinstance(tensor, torch.Tensor):  # extra state a module may keep: not weights
            continue
        data = tensor.detach().to("cpu").contiguous()
        digest.update(f"{key}|{data.dtype}|{tuple(data.shape)}|".encode())
        # bytes of any dtype (bfloat16 has no numpy type): reinterpret as uint8
        digest.update(data.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def wrap_model(
    module,
    *,
    transform: Callable[[Any], Any],
    name: str,
    classifier: str | None = None,
    preprocess_config: dict[str, Any] | None = None,
    device: str = DEFAULT_DEVICE,
    precision: str = "auto",
    default_batch_size: int = 32,
) -> ModelHandle:
    """A handle of an in-memory torch module, for :func:`repalign.embed.extract_embeddings`.

    Args:
        module: a ``torch.nn.Module`` taking (b, 3, h, w) float batches. It is moved to
            ``device`` and put in eval mode (the caller's module itself, not a copy).
        transform: ``PIL.Image -> (3, h, w) float tensor``; picklable when the engine decodes
            with worker processes (``num_workers`` > 0).
        name: the model's name in results (``model``; ``model_id`` is ``module:<name>``).
        classifier: the submodule whose *input* is the penultimate layer (``"fc"`` for a
            torchvision ResNet); None: the module's output is the feature vector.
        preprocess_config: JSON-serialisable description of ``transform`` for the cache key
            (default: ``{"transform": repr(transform)}``).
        device, precision: as :func:`repalign.models.load_model`.
        default_batch_size: images per forward pass unless the caller says otherwise.

    Returns:
        A handle whose ``identity`` holds the state_dict's sha256, so embeddings are cached
        per weights.
    """
    import torch

    from repalign.models._torch_handle import TorchModelHandle

    if not isinstance(module, torch.nn.Module):
        raise InputError(f"wrap_model takes a torch.nn.Module; got {type(module).__name__}")
    if not isinstance(name, str) or not name.strip() or "\n" in name:
        raise InputError(f"wrap_model needs a one-line name for the model, e.g. name='my-resnet'; got {name!r}")
    if not callable(transform):
        raise InputError(f"transform must be callable (PIL.Image -> tensor); got {type(transform).__name__}")
    if classifier is not None and classifier not in dict(module.named_modules()):
        raise InputError(
            f"classifier {classifier!r} is not a submodule of {type(module).__name__}; "
            "name the final layer (e.g. 'fc'), or leave classifier out to use the module's output"
        )
    name = name.strip()
    spec = ModelSpec(name=name, source=SOURCE, arch=type(module).__qualname__, resolved_id=f"{SOURCE}:{name}")
    identity = {
        "resolved_id": spec.resolved_id,
        "module": f"{type(module).__module__}.{type(module).__qualname__}",
        "classifier": classifier,
        "weights": f"state-sha256:{state_dict_sha256(module)}",
    }
    return TorchModelHandle(
        spec,
        module,
        transform=transform,
        preprocess_config=preprocess_config if preprocess_config is not None else {"transform": repr(transform)},
        identity=identity,
        device=device,
        precision=precision,
        classifier=classifier,
        default_batch_size=default_batch_size,
    )
