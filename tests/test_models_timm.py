"""timm models: seeded untrained baselines, local weights files, layers, offline errors."""

from __future__ import annotations

import numpy as np
import pytest

from repalign.errors import InputError, MissingDataError, UnknownNameError
from repalign.models import PENULTIMATE, describe_model, load_model

MODEL = "timm:resnet18@random"


@pytest.fixture(scope="module")
def handle():
    return load_model(MODEL, device="cpu")


@pytest.fixture(scope="module")
def batch(handle):
    import torch
    from PIL import Image

    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, size=(180, 240, 3), dtype=np.uint8)) for _ in range(3)]
    return torch.stack([handle.transform(img) for img in images])


def test_transform_and_preprocess_config_follow_timm(handle):
    from timm.data import resolve_data_config
    from timm.models import get_pretrained_cfg

    config = handle.preprocess_config
    expected = resolve_data_config(pretrained_cfg=get_pretrained_cfg("resnet18.tv_in1k").to_dict())
    assert config["input_size"] == list(expected["input_size"]) == [3, 224, 224]
    assert config["crop_pct"] == expected["crop_pct"] and config["interpolation"] == expected["interpolation"]
    from PIL import Image

    out = handle.transform(Image.new("RGB", (300, 200), (255, 0, 0)))
    assert tuple(out.shape) == (3, 224, 224)
    # red normalised with the ImageNet mean/std
    np.testing.assert_allclose(
        out[:, 100, 100].numpy(), (np.array([1, 0, 0]) - expected["mean"]) / expected["std"], rtol=1e-5
    )


def test_random_baseline_is_seeded_and_deterministic(handle, batch):
    first = handle.forward(batch)[PENULTIMATE]
    assert first.shape == (3, 512) and first.dtype == np.float32
    again = load_model(MODEL, device="cpu").forward(batch)[PENULTIMATE]
    np.testing.assert_array_equal(first, again)
    other_seed = load_model("timm:resnet18@random:1", device="cpu").forward(batch)[PENULTIMATE]
    assert not np.allclose(first, other_seed)
    assert handle.identity == {"resolved_id": "timm:resnet18.tv_in1k@random:0", "weights": "random:0"}


def test_describe_matches_the_loaded_handle(handle):
    described = describe_model(MODEL)
    assert described["identity"] == handle.identity
    assert described["preprocess_config"] == handle.preprocess_config
    assert described["resolved_id"] == handle.spec.resolved_id


def test_several_layers_come_from_one_pass_and_agree_with_each_other(handle, batch):
    out = handle.forward(batch, layers=["layer4", PENULTIMATE, "logits", "fc"])
    assert list(out) == ["layer4", PENULTIMATE, "logits", "fc"]
    # resnet pre-logits = global average pool of layer4 (our flattening of a 4-D map)
    np.testing.assert_allclose(out[PENULTIMATE], out["layer4"], rtol=1e-5, atol=1e-6)
    fc = handle.module.fc
    manual = out[PENULTIMATE] @ fc.weight.detach().numpy().T + fc.bias.detach().numpy()
    np.testing.assert_allclose(out["logits"], manual, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(out["fc"], out["logits"])
    assert "layer4" in handle.available_layers() and PENULTIMATE in handle.available_layers()
    with pytest.raises(UnknownNameError, match="Unknown layer .layer9. of timm:resnet18@random. Did you mean: layer"):
        handle.forward(batch, layers=["layer9"])


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_weights_saved_to_a_local_file_reload_identically(handle, batch, tmp_path, suffix):
    import torch

    path = tmp_path / f"resnet18{suffix}"
    state = {k: v.contiguous() for k, v in handle.module.state_dict().items()}
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        torch.save(state, path)
    reloaded = load_model("timm:resnet18", weights=path, device="cpu")
    np.testing.assert_array_equal(reloaded.forward(batch)[PENULTIMATE], handle.forward(batch)[PENULTIMATE])
    from repalign._io import sha256_file

    assert reloaded.identity == {"resolved_id": "timm:resnet18.tv_in1k", "weights": f"file-sha256:{sha256_file(path)}"}
    assert describe_model("timm:resnet18", weights=path)["identity"] == reloaded.identity


def test_bad_weights_inputs(tmp_path, handle):
    import torch

    with pytest.raises(MissingDataError, match="Weights file not found"):
        load_model("timm:resnet18", weights=tmp_path / "nope.safetensors")
    wrong = tmp_path / "wrong.pth"
    torch.save({"conv.weight": torch.zeros(3)}, wrong)
    with pytest.raises(InputError, match="does not fit timm model 'resnet18.tv_in1k'"):
        load_model("timm:resnet18", weights=wrong, device="cpu")
    with pytest.raises(InputError, match="untrained network; it takes no weights file"):
        load_model(MODEL, weights=wrong)


def test_weights_in_the_hub_cache_load_offline_and_pin_the_revision(handle, batch, tmp_path, monkeypatch):
    """A hub cache laid out as huggingface_hub writes it (refs/main -> snapshots/<commit>/)."""
    from safetensors.torch import save_file

    from repalign.models import list_models, weights_status

    repo = tmp_path / "hub" / "models--timm--resnet18.tv_in1k"
    snapshot = repo / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    save_file({k: v.contiguous() for k, v in handle.module.state_dict().items()}, str(snapshot / "model.safetensors"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert weights_status("timm:resnet18") == "cached"
    assert list_models("timm:resnet18")["weights"].tolist() == ["cached"]
    cached = load_model("timm:resnet18", device="cpu")
    assert cached.identity["weights"] == "hf-hub:timm/resnet18.tv_in1k@0123abcd/model.safetensors"
    assert describe_model("timm:resnet18")["identity"] == cached.identity
    np.testing.assert_array_equal(cached.forward(batch)[PENULTIMATE], handle.forward(batch)[PENULTIMATE])


def test_no_internet_and_no_local_file_fails_fast_with_a_fix(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub-cache"))
    # how fast the error comes is measured by benchmarks/bench_offline_errors.py, not here
    with pytest.raises(MissingDataError, match=r"not in the Hugging Face cache.*--weights PATH"):
        load_model("timm:resnet18", device="cpu")
    # listing and describing still work offline, without downloading
    assert describe_model("timm:resnet18")["identity"]["weights"].endswith("@not-downloaded")


def test_precision_and_device_errors():
    with pytest.raises(UnknownNameError, match="Unknown precision 'fp8'"):
        load_model(MODEL, device="cpu", precision="fp8")
    with pytest.raises(InputError, match="needs a CUDA device"):
        load_model(MODEL, device="cpu", precision="float16")
    with pytest.raises(UnknownNameError, match="Unknown device 'tpu'. Did you mean: cpu"):
        load_model(MODEL, device="tpu")


def test_architecture_without_pretrained_weights_needs_random_or_a_file():
    import timm

    no_weights = sorted(set(timm.list_models()) - {n.split(".")[0] for n in timm.list_pretrained()})
    with pytest.raises(MissingDataError, match="@random"):
        load_model(f"timm:{no_weights[0]}", device="cpu")


@pytest.mark.gpu
def test_gpu_autocast_returns_float32_close_to_cpu(handle, batch):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    gpu = load_model(MODEL, device="cuda")
    out = gpu.forward(batch)[PENULTIMATE]
    assert out.dtype == np.float32 and gpu.device == "cuda"
    reference = handle.forward(batch)[PENULTIMATE]
    assert np.corrcoef(out.ravel(), reference.ravel())[0, 1] > 0.99
    exact = load_model(MODEL, device="cuda", precision="float32").forward(batch)[PENULTIMATE]
    np.testing.assert_allclose(exact, reference, rtol=1e-3, atol=1e-3)


@pytest.mark.network
def test_pretrained_weights_from_the_hub_classify_a_cat(mirror):
    """Where there is internet: the real hub weights, pinned to a commit, see a cat."""
    import torch

    from repalign.data import fetch_file
    from repalign.data.images import decode_image
    from repalign.models import _hub

    if _hub.hub_offline_env() or not _hub.host_reachable(_hub.hub_endpoint()):
        pytest.skip("needs internet (Hugging Face hub)")
    model = load_model("timm:resnet18", device="cpu")
    assert model.identity["weights"].startswith("hf-hub:timm/resnet18.tv_in1k@")
    image = decode_image(fetch_file("coral-tflite", "test_images/cat.bmp"))
    logits = model.forward(torch.stack([model.transform(image)]), layers=["logits"])["logits"]
    assert int(logits.argmax()) in (281, 282, 285)  # tabby, tiger cat, Egyptian cat
