"""torchvision classifiers: weights enums, transforms, classifier-input features."""

from __future__ import annotations

import numpy as np
import pytest

from repalign.errors import InputError
from repalign.models import PENULTIMATE, describe_model, load_model, resolve_model


def test_names_resolve_to_weights_enum_members():
    assert resolve_model("torchvision:resnet18").resolved_id == "torchvision:resnet18.IMAGENET1K_V1"
    assert resolve_model("torchvision:resnet50").resolved_id == "torchvision:resnet50.IMAGENET1K_V2"  # DEFAULT
    spec = resolve_model("torchvision:resnet50.IMAGENET1K_V1")
    assert spec.extra["weights_enum"] == "ResNet50_Weights.IMAGENET1K_V1"


def test_preprocessing_is_the_enums_transform():
    from torchvision.models import ResNet50_Weights

    config = describe_model("torchvision:resnet50")["preprocess_config"]
    transform = ResNet50_Weights.IMAGENET1K_V2.transforms()
    assert config["resize_size"] == list(transform.resize_size) == [232]
    assert config["crop_size"] == [224] and config["mean"] == list(transform.mean)


def test_local_state_dict_roundtrip_and_classifier_input(tmp_path):
    import torch
    from PIL import Image

    untrained = load_model("torchvision:resnet18@random:2", device="cpu")
    path = tmp_path / "resnet18.pth"
    torch.save(untrained.module.state_dict(), path)
    loaded = load_model("torchvision:resnet18", weights=path, device="cpu")
    assert loaded.classifier == "fc"
    rng = np.random.default_rng(1)
    images = [Image.fromarray(rng.integers(0, 256, (100, 120, 3), dtype=np.uint8)) for _ in range(2)]
    batch = torch.stack([loaded.transform(img) for img in images])
    out = loaded.forward(batch, layers=[PENULTIMATE, "logits", "avgpool"])
    np.testing.assert_array_equal(out[PENULTIMATE], untrained.forward(batch)[PENULTIMATE])
    np.testing.assert_allclose(out[PENULTIMATE], out["avgpool"], rtol=1e-6)  # fc input = pooled features
    assert out[PENULTIMATE].shape == (2, 512) and out["logits"].shape == (2, 1000)
    assert describe_model("torchvision:resnet18", weights=path)["identity"] == loaded.identity


@pytest.mark.parametrize(
    "name, classifier",
    [("squeezenet1_0", "classifier.1"), ("alexnet", "classifier.6"), ("mobilenet_v3_small", "classifier.3")],
)
def test_classifier_layer_is_found(name, classifier):
    from torchvision import models

    from repalign.models.torchvision_source import classifier_name

    assert classifier_name(models.get_model(name, weights=None)) == classifier


def test_offline_without_cached_weights_is_a_clear_error(monkeypatch, tmp_path):
    from repalign.errors import MissingDataError

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty torch hub cache
    from repalign.models import _hub

    if _hub.host_reachable("https://download.pytorch.org"):
        pytest.skip("has internet: would download")
    with pytest.raises(MissingDataError, match="--weights PATH"):
        load_model("torchvision:resnet18", device="cpu")
    with pytest.raises(InputError, match="untrained network"):
        load_model("torchvision:resnet18@random", weights=tmp_path / "x.pth")


@pytest.mark.network
def test_pretrained_weights_download_and_classify_a_cat(mirror):
    import torch

    from repalign.data import fetch_file
    from repalign.data.images import decode_image
    from repalign.models import _hub

    if not _hub.host_reachable("https://download.pytorch.org"):
        pytest.skip("needs internet (download.pytorch.org)")
    model = load_model("torchvision:resnet18", device="cpu")
    assert model.identity["weights"] == "url:resnet18-f37072fd.pth"
    image = decode_image(fetch_file("coral-tflite", "test_images/cat.bmp"))
    logits = model.forward(torch.stack([model.transform(image)]), layers=["logits"])["logits"]
    assert int(logits.argmax()) in (281, 282, 285)  # tabby, tiger cat, Egyptian cat
