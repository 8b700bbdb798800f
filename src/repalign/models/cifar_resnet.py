"""``cifar_resnet:resnet20|32|44|56`` -- the CIFAR-10 ResNets of He et al. (2016, section 4.2).

Architecture (written here from the paper): a 3x3 conv with 16 channels, three stages of
``n`` basic blocks with 16, 32 and 64 channels (the first block of stages 2 and 3 strides by
2), global average pooling and a linear 64 -> 10 classifier; depth = 6n + 2, so n = 3, 5, 7, 9.
Shortcuts are "option A": identity, and where the shape changes, a stride-2 subsample
zero-padded with extra channels, which adds no parameters.

Weights: the data registry dataset ``cifar10-resnet`` (akamaster/pytorch_resnet_cifar10),
a legacy checkpoint ``{"state_dict": {"module.<key>": tensor}, "best_prec1": ...}`` loaded
with ``torch.load(weights_only=True)`` and matched strictly. Inputs are images resized to
32x32 and normalised with the ImageNet mean/std the checkpoints were trained with.
``@random[:SEED]`` gives the untrained network.
"""

from __future__ import annotations

import os
from typing import Any

from repalign._options import DEFAULT_DEVICE
from repalign.errors import InputError, unknown_name
from repalign.models import _assets
from repalign.models._layers import one_line as _one_line
from repalign.models.base import ModelSpec

SOURCE = "cifar_resnet"
DATASET = "cifar10-resnet"
#: depth -> (blocks per stage, checkpoint file in the data registry)
VARIANTS: dict[str, tuple[int, str]] = {
    "resnet20": (3, "resnet20-12fca82f.th"),
    "resnet32": (5, "resnet32-d509ac18.th"),
    "resnet44": (7, "resnet44-014dd654.th"),
    "resnet56": (9, "resnet56-4bfd9763.th"),
}
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
INPUT_SIZE = 32


def list_names() -> list[str]:
    return list(VARIANTS)


def resolve(arch: str, *, name: str, variant: str | None = None, seed: int | None = None) -> ModelSpec:
    if arch not in VARIANTS:
        raise unknown_name("CIFAR ResNet", arch, VARIANTS)
    suffix = f"@random:{seed}" if variant == "random" else ""
    return ModelSpec(
        name=name,
        source=SOURCE,
        arch=arch,
        resolved_id=f"cifar_resnet:{arch}{suffix}",
        variant=variant,
        seed=seed,
        extra={"blocks_per_stage": VARIANTS[arch][0]},
    )


def preprocess_config(spec: ModelSpec) -> dict[str, Any]:
    return {
        "resize": [INPUT_SIZE, INPUT_SIZE],
        "interpolation": "bilinear",
        "antialias": True,
        "mean": list(MEAN),
        "std": list(STD),
    }


def _weights_identity(spec: ModelSpec, weights, *, fetch: bool) -> tuple[str, Any]:
    explicit = _assets.explicit_weights(spec, weights)
    if explicit is not None:
        return explicit
    path = _assets.fetch_asset(DATASET, VARIANTS[spec.arch][1])
    return f"file-sha256:{_assets.file_sha256(path)}", path


def describe(spec: ModelSpec, *, weights=None) -> dict[str, Any]:
    weights_id, _ = _weights_identity(spec, weights, fetch=False)
    return _assets.description(spec, weights_id, preprocess_config(spec))


def weights_status(spec: ModelSpec, weights=None) -> str:
    return _assets.explicit_weights_status(spec, weights) or _assets.asset_available(DATASET, VARIANTS[spec.arch][1])


def build_network(blocks_per_stage: int, num_classes: int = 10):
    """The untrained CIFAR ResNet with ``6 * blocks_per_stage + 2`` layers."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    class ZeroPadShortcut(nn.Module):
        """Option A: subsample by 2 and zero-pad the new channels (no parameters)."""

        def __init__(self, extra_channels: int):
            super().__init__()
            self.pad = extra_channels // 2

        def forward(self, x):
            return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))

    class BasicBlock(nn.Module):
        def __init__(self, in_planes: int, planes: int, stride: int):
            super().__init__()
            self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
            changes = stride != 1 or in_planes != planes
            self.shortcut = ZeroPadShortcut(planes - in_planes) if changes else nn.Identity()

        def forward(self, x):
            out = F.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            return F.relu(out + self.shortcut(x))

    class CifarResNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 16, 3, stride=1, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(16)
            planes_in = 16
            stages = []
            for planes, stride in ((16, 1), (32, 2), (64, 2)):
                blocks = []
                for i in range(blocks_per_stage):
                    blocks.append(BasicBlock(planes_in, planes, stride if i == 0 else 1))
                    planes_in = planes
                stages.append(nn.Sequential(*blocks))
            self.layer1, self.layer2, self.layer3 = stages
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.linear = nn.Linear(64, num_classes)
            for module in self.modules():  # He init, as in the paper
                if isinstance(module, (nn.Conv2d, nn.Linear)):
                    nn.init.kaiming_normal_(module.weight)

        def features(self, x):
            """(b, 3, 32, 32) -> (b, 64) penultimate features."""
            out = F.relu(self.bn1(self.conv1(x)))
            out = self.layer3(self.layer2(self.layer1(out)))
            return torch.flatten(self.pool(out), 1)

        def forward(self, x):
            return self.linear(self.features(x))

    return CifarResNet()


def load_checkpoint(module, path: str | os.PathLike) -> None:
    """Load a checkpoint strictly: every key must match (no missing, no unexpected)."""
    state = _assets.load_state_dict_file(path, model="this CIFAR ResNet")
    # Saved from nn.DataParallel, hence the 'module.' prefix.
    state = {k.removeprefix("module."): v for k, v in state.items()}
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise InputError(f"Weights file {path} does not fit this CIFAR ResNet: {_one_line(exc)}") from exc


def load(spec: ModelSpec, *, device: str = DEFAULT_DEVICE, weights=None, precision: str = "auto", **_options):
    import torch
    from torchvision import transforms

    from repalign.models._torch_handle import TorchModelHandle

    weights_id, path = _weights_identity(spec, weights, fetch=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed or 0)
        module = build_network(VARIANTS[spec.arch][0])
    if path is not None:
        load_checkpoint(module, path)
    transform = transforms.Compose(
        [
            transforms.Resize(
                (INPUT_SIZE, INPUT_SIZE), interpolation=transforms.InterpolationMode.BILINEAR, antialias=True
            ),
            transforms.ToTensor(),
            transforms.Normalize(MEAN, STD),
        ]
    )
    return TorchModelHandle(
        spec,
        module,
        transform=transform,
        preprocess_config=preprocess_config(spec),
        identity={"resolved_id": spec.resolved_id, "weights": weights_id},
        device=device,
        precision=precision,
        classifier="linear",
        default_batch_size=256,
    )
