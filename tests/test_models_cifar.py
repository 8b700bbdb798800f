"""CIFAR-10 ResNets written here, loaded strictly from the mirror's checkpoints."""

from __future__ import annotations

import numpy as np
import pytest

from repalign.errors import InputError, UnknownNameError
from repalign.models import PENULTIMATE, describe_model, load_model

#: He et al. (2016), table 6: 0.27M / 0.46M / 0.66M / 0.85M parameters; exact counts of the
#: option-A networks (no shortcut parameters).
PUBLISHED_PARAMETERS = {"resnet20": 269_722, "resnet32": 464_154, "resnet44": 658_586, "resnet56": 853_018}
CIFAR10 = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


@pytest.mark.parametrize("depth", list(PUBLISHED_PARAMETERS))
def test_untrained_architecture_has_the_published_parameter_count(depth):
    from repalign.models.cifar_resnet import VARIANTS, build_network

    network = build_network(VARIANTS[depth][0])
    assert sum(p.numel() for p in network.parameters()) == PUBLISHED_PARAMETERS[depth]
    n_convs = sum(1 for m in network.modules() if type(m).__name__ == "Conv2d")
    assert n_convs + 1 == int(depth.removeprefix("resnet"))  # 6n + 1 convs + the linear layer


@pytest.mark.integration
@pytest.mark.parametrize("depth", list(PUBLISHED_PARAMETERS))
def test_checkpoints_load_strictly_and_classify_the_test_images(mirror, depth):
    import torch

    from repalign.data import fetch_file
    from repalign.data.images import decode_image

    handle = load_model(f"cifar_resnet:{depth}", device="cpu")  # strict: any key mismatch raises
    assert sum(p.numel() for p in handle.module.parameters()) == PUBLISHED_PARAMETERS[depth]
    images = [decode_image(fetch_file("coral-tflite", f"test_images/{n}")) for n in ("cat.bmp", "bird.bmp")]
    batch = torch.stack([handle.transform(img) for img in images])
    out = handle.forward(batch, layers=[PENULTIMATE, "logits"])
    assert out[PENULTIMATE].shape == (2, 64) and out[PENULTIMATE].dtype == np.float32
    assert [CIFAR10[i] for i in out["logits"].argmax(1)] == ["cat", "bird"]
    np.testing.assert_array_equal(handle.forward(batch)[PENULTIMATE], out[PENULTIMATE])  # deterministic
    linear = handle.module.linear
    manual = out[PENULTIMATE] @ linear.weight.detach().numpy().T + linear.bias.detach().numpy()
    np.testing.assert_allclose(out["logits"], manual, rtol=1e-4, atol=1e-4)
    described = describe_model(f"cifar_resnet:{depth}")
    assert described["identity"] == handle.identity and described["preprocess_config"] == handle.preprocess_config
    expected_prefix = fetch_file("cifar10-resnet", f"{depth}-{handle.identity['weights'][12:20]}.th").name
    assert handle.identity["weights"].startswith("file-sha256:") and expected_prefix.startswith(depth)


@pytest.mark.integration
def test_strict_loading_names_missing_and_unexpected_keys(mirror, tmp_path):
    import torch

    from repalign.data import fetch_file

    checkpoint = torch.load(fetch_file("cifar10-resnet", "resnet20-12fca82f.th"), map_location="cpu", weights_only=True)
    state = dict(checkpoint["state_dict"])
    state.pop("module.linear.bias")
    state["module.extra.weight"] = torch.zeros(1)
    broken = tmp_path / "broken.th"
    torch.save({"state_dict": state}, broken)
    expected = r"does not fit.*Missing key\(s\).*linear.bias.*Unexpected key\(s\).*extra"
    with pytest.raises(InputError, match=expected):
        load_model("cifar_resnet:resnet20", weights=broken, device="cpu")
    with pytest.raises(InputError, match="does not fit"):  # a deeper network's weights
        load_model("cifar_resnet:resnet20", weights=fetch_file("cifar10-resnet", "resnet32-d509ac18.th"))


def test_random_variant_and_names():
    import torch

    first = load_model("cifar_resnet:resnet20@random:4", device="cpu")
    second = load_model("cifar_resnet:resnet20@random:4", device="cpu")
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    np.testing.assert_array_equal(first.forward(x)[PENULTIMATE], second.forward(x)[PENULTIMATE])
    assert first.identity["weights"] == "random:4"
    with pytest.raises(UnknownNameError, match="Did you mean: .*resnet56"):
        load_model("cifar_resnet:resnet57")
