"""The built-in datasets: where each comes from upstream, its license and citation, and its
checksums (bundled in ``repalign/resources/checksums``). Importing this module registers them."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import Any

from repalign._io import sha256_file
from repalign.data._checksums import _content_sha256
from repalign.data.specs import ArchiveSpec, DatasetSpec, FileSpec, register_dataset

logger = logging.getLogger(__name__)


def _table(name: str) -> dict[str, dict]:
    """The bundled checksum table of a dataset: relpath -> {sha256, content_sha256, size}."""
    path = resources.files("repalign").joinpath("resources", "checksums", f"{name}.json")
    return json.loads(path.read_text())["files"]


def checksum_record(path: str | os.PathLike, relpath: str) -> dict:
    """The checksum-table entry of one file (used to write ``resources/checksums/*.json``)."""
    path = Path(path)
    record: dict[str, Any] = {"sha256": sha256_file(path), "size": path.stat().st_size}
    if relpath.endswith((".gz", ".npz")):
        record["content_sha256"] = _content_sha256(path, relpath)
    return record


def _files_from_table(name: str, url_for: Callable[[str], tuple[str, ...]], **extra: Any) -> tuple[FileSpec, ...]:
    return tuple(
        FileSpec(
            relpath,
            sha256=rec["sha256"],  # the mirror's bytes; upstream gzips may differ, then content decides
            content_sha256=rec.get("content_sha256"),
            size=rec.get("size"),
            urls=url_for(relpath),
            **extra,
        )
        for relpath, rec in sorted(_table(name).items())
    )


_GITHUB_RAW = "https://raw.githubusercontent.com"
_MEMGRID = f"{_GITHUB_RAW}/AhmedAlSunbati712/memgrid/834e08e677cf4ac316d7076065ef5609ce5d58b3/handoff/data"
_TIMM_RESULTS = {
    "2022-07-27": "e987e29036507b014bb2aef0bf3b3f5c7bcff273",
    "2025-10-30": "4e5207c7bb6592474ca56e28b2cf85be8f1a550f",
}
_CORAL = f"{_GITHUB_RAW}/google-coral/test_data/104342d2d3480b3e66203073dac24f4e2dbb4c41"
_CIFAR_RESNET = f"{_GITHUB_RAW}/akamaster/pytorch_resnet_cifar10/d5489e8995e81e91ce6b1d69dcc98ad579b0b153"
_MNIST_MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist", "http://yann.lecun.com/exdb/mnist")
_FASHION = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com"
_CIFAR = "https://www.cs.toronto.edu/~kriz"

_PETERSON_CITATION = (
    "Peterson, J. C., Abbott, J. T., & Griffiths, T. L. (2018). Evaluating (and improving) the "
    "correspondence between deep neural networks and human representations. Cognitive Science, 42(8), 2648-2669."
)
_CIFAR_CITATION = (
    "Krizhevsky, A. (2009). Learning multiple layers of features from tiny images. Tech. report, U. Toronto."
)
_TIMM_CITATION = "Wightman, R. (2019). PyTorch Image Models. GitHub, doi:10.5281/zenodo.4414861."


def _builtin_datasets() -> list[DatasetSpec]:
    specs = [
        DatasetSpec(
            "peterson-similarity",
            "Peterson et al. (2018) human similarity matrices, 6 domains x 120 stimuli",
            license="none stated; research use only",
            citation=_PETERSON_CITATION,
            homepage="https://github.com/AhmedAlSunbati712/memgrid",
            mirror_path="peterson",
            # Upstream ships a pickle; it is read with the restricted unpickler and stored as
            # .npz, verified by the content hash of its arrays.
            files=_files_from_table(
                "peterson-similarity",
                lambda rel: (f"{_MEMGRID}/datasets_peterson.pkl",),
                convert="repalign.data.human:convert_peterson_pickle",
            ),
        ),
    ]
    for domain, kind in (
        ("animals", "PNG images, 300x300"),
        ("fruits", "PNG images, 500x500"),
        ("vegetables", "JPEG images, 500x500"),
    ):
        specs.append(
            DatasetSpec(
                f"peterson-images-{domain}",
                f"Peterson et al. (2018) {domain} stimuli: 120 {kind}",
                license="none stated; research use only",
                citation=_PETERSON_CITATION,
                homepage="https://github.com/AhmedAlSunbati712/memgrid",
                mirror_path=f"peterson/images/{domain}",
                files=_files_from_table(f"peterson-images-{domain}", lambda rel, d=domain: (f"{_MEMGRID}/{d}/{rel}",)),
            )
        )
    specs += [
        DatasetSpec(
            "mnist",
            "MNIST handwritten digits, IDX format (60k train / 10k test)",
            license="CC BY-SA 3.0 (Yann LeCun and Corinna Cortes)",
            citation="LeCun, Y., Bottou, L., Bengio, Y., & Haffner, P. (1998). Gradient-based learning applied "
            "to document recognition. Proc. IEEE 86(11), 2278-2324.",
            homepage="http://yann.lecun.com/exdb/mnist/",
            mirror_path="mnist",
            files=_files_from_table("mnist", lambda rel: tuple(f"{base}/{rel}" for base in _MNIST_MIRRORS)),
        ),
        DatasetSpec(
            "fashion_mnist",
            "Fashion-MNIST clothing images, IDX format (60k train / 10k test)",
            license="MIT",
            citation="Xiao, H., Rasul, K., & Vollgraf, R. (2017). Fashion-MNIST: a novel image dataset for "
            "benchmarking machine learning algorithms. arXiv:1708.07747.",
            homepage="https://github.com/zalandoresearch/fashion-mnist",
            mirror_path="fashion_mnist",
            files=_files_from_table("fashion_mnist", lambda rel: (f"{_FASHION}/{rel}",)),
        ),
        DatasetSpec(
            "cifar10",
            "CIFAR-10, python pickle batches (50k train / 10k test, 10 classes)",
            license="none stated; research use",
            citation=_CIFAR_CITATION,
            homepage="https://www.cs.toronto.edu/~kriz/cifar.html",
            mirror_path="cifar10",
            # sha256 as pinned by Keras/torchvision datasets; md5 as published by torchvision.
            archive=ArchiveSpec(
                "cifar-10-python.tar.gz",
                sha256="6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
                md5="c58f30108f718f92721af3b95e74349a",
                size=170498071,
                extract_to="cifar-10-batches-py",
                urls=(f"{_CIFAR}/cifar-10-python.tar.gz",),
            ),
        ),
        DatasetSpec(
            "cifar100",
            "CIFAR-100, python pickle files (50k train / 10k test, 100 classes)",
            license="none stated; research use",
            citation=_CIFAR_CITATION,
            homepage="https://www.cs.toronto.edu/~kriz/cifar.html",
            mirror_path="cifar100",
            archive=ArchiveSpec(
                "cifar-100-python.tar.gz",
                sha256="85cd44d02ba6437773c5bbd22e183051d648de2e7d6b014e1ef29b855ba677a7",
                md5="eb9058c3a382ffc7106e4002c42a8d85",
                size=169001437,
                extract_to="cifar-100-python",
                urls=(f"{_CIFAR}/cifar-100-python.tar.gz",),
            ),
        ),
    ]
    for date, commit in _TIMM_RESULTS.items():
        base = f"{_GITHUB_RAW}/huggingface/pytorch-image-models/{commit}/results"
        specs.append(
            DatasetSpec(
                f"timm-results-{date}",
                f"timm published ImageNet / OOD results @ {commit[:7]} ({date})",
                license="Apache-2.0",
                citation=_TIMM_CITATION,
                homepage="https://github.com/huggingface/pytorch-image-models/tree/main/results",
                mirror_path=f"timm_results/{date}",
                files=_files_from_table(f"timm-results-{date}", lambda rel, b=base: (f"{b}/{rel}",)),
            )
        )
    specs += [
        DatasetSpec(
            "paper-models",
            "The 490 timm model names of Sucholutsky & Griffiths (2023), legacy names",
            license="list of names (facts); no license needed",
            citation="Sucholutsky, I., & Griffiths, T. L. (2023). Alignment with human representations supports "
            "robust few-shot learning. NeurIPS 2023.",
            homepage="https://arxiv.org/abs/2301.11990",
            mirror_path="",
            files=_files_from_table("paper-models", lambda rel: ()),  # curated list: mirror only
        ),
        DatasetSpec(
            "coral-tflite",
            "6 uint8-quantized ImageNet MobileNet TFLite models, labels and test images (Coral)",
            license="Apache-2.0",
            citation="Howard, A. G., et al. (2017). MobileNets. arXiv:1704.04861; Sandler, M., et al. (2018). "
            "MobileNetV2. CVPR.",
            homepage="https://github.com/google-coral/test_data",
            mirror_path="weights/coral_tflite",
            files=_files_from_table("coral-tflite", lambda rel: (f"{_CORAL}/{PurePosixPath(rel).name}",)),
        ),
        DatasetSpec(
            "cifar10-resnet",
            "CIFAR-10 ResNet-20/32/44/56 checkpoints (He et al. 2016 CIFAR variant)",
            license="BSD-2-Clause",
            citation="Idelbayev, Y. Proper ResNet implementation for CIFAR10/CIFAR100 in PyTorch. GitHub, "
            "akamaster/pytorch_resnet_cifar10; He, K., et al. (2016). Deep residual learning. CVPR.",
            homepage="https://github.com/akamaster/pytorch_resnet_cifar10",
            mirror_path="weights/cifar10_resnet",
            files=_files_from_table("cifar10-resnet", lambda rel: (f"{_CIFAR_RESNET}/pretrained_models/{rel}",)),
        ),
    ]
    return specs


for _spec in _builtin_datasets():
    register_dataset(_spec)
del _spec
