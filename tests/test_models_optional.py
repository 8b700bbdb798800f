"""Optional sources: TorchScript and ONNX files for real; install hints for missing packages."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

from repalign.errors import InputError, MissingDataError, OptionalDependencyError
from repalign.models import PENULTIMATE, describe_model, load_model, resolve_model


def _tiny_network(pool: int = 2):
    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, stride=2),
        torch.nn.ReLU(),
        torch.nn.Conv2d(8, 6, 3),
        torch.nn.AdaptiveAvgPool2d(pool),
    ).eval()


@pytest.fixture
def images():
    from PIL import Image

    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (70, 90, 3), dtype=np.uint8)) for _ in range(3)]


def test_torchscript_file_gives_the_networks_pooled_output(tmp_path, images):
    import torch

    network = _tiny_network()
    path = tmp_path / "tiny.pt"
    torch.jit.save(torch.jit.script(network), str(path))
    (tmp_path / "tiny.pt.json").write_text(
        json.dumps({"resize_size": 40, "crop_size": 32, "mean": [0.5] * 3, "std": [0.25] * 3})
    )
    handle = load_model(f"torchscript:{path}", device="cpu")
    batch = torch.stack([handle.transform(img) for img in images])
    assert tuple(batch.shape) == (3, 3, 32, 32)
    features = handle.forward(batch)[PENULTIMATE]
    with torch.no_grad():
        expected = network(batch).mean(dim=(2, 3)).numpy()  # (3, 6, 2, 2) map -> GAP
    np.testing.assert_allclose(features, expected, rtol=1e-5, atol=1e-6)
    described = describe_model(f"torchscript:{path}")
    assert described["identity"] == handle.identity and described["preprocess_config"] == handle.preprocess_config
    assert described["preprocess_config"]["crop_size"] == 32
    assert handle.available_layers() == [PENULTIMATE]


def test_transform_matches_torchvision(images):
    from torchvision import transforms

    from repalign.models.optional_sources import ImageNetStyleTransform

    ours = ImageNetStyleTransform()(images[0]).numpy()
    reference = transforms.Compose(
        [
            transforms.Resize(256),
            transforms.CenterCrop(224),
            transforms.ToTensor(),
            transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
        ]
    )(images[0]).numpy()
    assert ours.shape == reference.shape == (3, 224, 224)
    # same geometry; small differences from PIL vs torchvision antialiasing kernels
    assert np.abs(ours - reference).mean() < 0.05


def test_file_sources_reject_bad_input(tmp_path):
    with pytest.raises(MissingDataError, match="torchscript model file not found"):
        resolve_model(f"torchscript:{tmp_path / 'missing.pt'}")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a model")
    with pytest.raises(InputError, match="not a TorchScript file"):
        load_model(f"torchscript:{junk}", device="cpu")
    (tmp_path / "junk.pt.json").write_text('{"size": 3}')
    with pytest.raises(InputError, match=r"Unknown keys \['size'\]"):
        describe_model(f"torchscript:{junk}")


@pytest.mark.skipif(
    importlib.util.find_spec("onnxruntime") is None or importlib.util.find_spec("onnx") is None,
    reason="needs onnxruntime and onnx (pip install 'repalign[onnx]' onnx)",
)
def test_onnx_file_matches_the_torch_network(tmp_path, images):
    import warnings

    import torch

    network = _tiny_network(pool=1)  # global pooling exports to ONNX (adaptive 2x2 does not)
    path = tmp_path / "tiny.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            network,
            (torch.zeros(1, 3, 224, 224),),
            str(path),
            dynamo=False,
            input_names=["x"],
            dynamic_axes={"x": {0: "batch"}},
        )
    handle = load_model(f"onnx:{path}")
    assert handle.uses_torch is False
    batch = np.stack([handle.transform(img) for img in images])
    with torch.no_grad():
        expected = network(torch.from_numpy(batch)).mean(dim=(2, 3)).numpy()
    np.testing.assert_allclose(handle.forward(batch)[PENULTIMATE], expected, rtol=1e-4, atol=1e-5)
    assert describe_model(f"onnx:{path}")["identity"] == handle.identity


@pytest.mark.parametrize(
    "name, package, extra",
    [
        ("open_clip:ViT-B-32/laion2b_s34b_b79k", "open_clip", "open_clip"),
        ("hf:google/vit-base-patch16-224", "transformers", "hf"),
    ],
)
def test_missing_optional_packages_name_the_extra(name, package, extra):
    if importlib.util.find_spec(package) is not None:
        pytest.skip(f"{package} is installed")
    with pytest.raises(OptionalDependencyError, match=rf"pip install 'repalign\[{extra}\]'"):
        load_model(name)


def test_open_clip_names_need_arch_and_pretrained():
    with pytest.raises(InputError, match="open_clip names look like 'open_clip:ViT-B-32/laion2b"):
        resolve_model("open_clip:ViT-B-32")


def test_torchscript_has_only_its_output_layer(tmp_path):
    import torch

    from repalign.errors import UnknownNameError

    path = tmp_path / "tiny.pt"
    torch.jit.save(torch.jit.script(_tiny_network()), str(path))
    handle = load_model(f"torchscript:{path}", device="cpu")
    with pytest.raises(UnknownNameError, match=r"Unknown layer '0' of torchscript:.*Valid: penultimate\."):
        handle.forward(torch.zeros(1, 3, 224, 224), layers=["0"])
