"""Tests of the extraction engine (repalign.embed).

Engine behaviour is checked with a real (tiny, seeded) torch CNN behind the ModelHandle
interface, against an independent oracle: the same network run image by image outside the
engine. Real model sources (pixels, timm @random, TFLite) are exercised further below.
"""

from __future__ import annotations

import contextlib
import threading
import time

import numpy as np
import pytest
import torch
from PIL import Image

from repalign.data.images import ArrayImageSet, FileImageSet, SubsetImageSet
from repalign.embed import (
    embedding_cache_key,
    extract_embeddings,
    is_cached,
    resolve_device,
)
from repalign.embed import engine as embed
from repalign.embed.cache import EmbeddingCache
from repalign.errors import (
    InputError,
    MissingDataError,
    RepalignError,
    UnknownNameError,
)
from repalign.models.base import PENULTIMATE, ModelHandle, ModelSpec


# ---------------------------------------------------------------------------------------
# a real tiny model behind the handle interface
# ---------------------------------------------------------------------------------------
class ResizeToTensor:
    """Picklable transform: RGB PIL -> (3, size, size) float tensor in [0, 1] minus ``mean``."""

    def __init__(self, size: int, mean: float):
        self.size = size
        self.mean = mean

    def __call__(self, img):
        array = np.asarray(img.resize((self.size, self.size), Image.BILINEAR), dtype=np.float32) / 255.0
        return torch.from_numpy(array - self.mean).permute(2, 0, 1).contiguous()


class TinyConvHandle(ModelHandle):
    """conv(3->8) -> relu -> avgpool(2x2) -> flatten (32, 'penultimate') -> linear (6, 'logits').

    ``oom_above`` makes forward raise CUDA's out-of-memory error for batches larger than
    that, as a device with little memory would. ``forward_calls`` counts forward passes.
    """

    constructed = 0

    def __init__(self, seed: int = 0, *, size: int = 16, mean: float = 0.5, oom_above: int | None = None):
        type(self).constructed += 1
        torch.manual_seed(seed)
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.head = torch.nn.Linear(32, 6)
        self.seed, self.size, self.mean, self.oom_above = seed, size, mean, oom_above
        self.spec = ModelSpec(name="test:tinyconv", source="test", arch="tinyconv", resolved_id="test:tinyconv")
        self.device = "cpu"
        self.default_batch_size = 4
        self.forward_calls = 0
        self.batch_sizes: list[int] = []

    @property
    def identity(self):
        return {"resolved_id": "test:tinyconv", "weights": f"random:{self.seed}"}

    @property
    def preprocess_config(self):
        return {"size": self.size, "mean": self.mean}

    @property
    def transform(self):
        return ResizeToTensor(self.size, self.mean)

    def available_layers(self):
        return ["conv", PENULTIMATE, "logits"]

    @torch.no_grad()
    def forward(self, batch, *, layers=None):
        if self.oom_above is not None and len(batch) > self.oom_above:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        self.forward_calls += 1
        self.batch_sizes.append(len(batch))
        conv = torch.relu(self.conv(batch))
        pooled = torch.nn.functional.adaptive_avg_pool2d(conv, 2).flatten(1)
        feats = {"conv": conv.mean(dim=(2, 3)), PENULTIMATE: pooled, "logits": self.head(pooled)}
        wanted = layers or [PENULTIMATE]
        return {name: feats[name].numpy().astype(np.float32) for name in wanted}


def oracle_features(handle: TinyConvHandle, images, layer=PENULTIMATE) -> np.ndarray:
    """The same network, one image at a time, outside the engine."""
    transform = handle.transform
    rows = []
    with torch.no_grad():
        for i in range(len(images)):
            x = transform(images.load(i))[None]
            conv = torch.relu(handle.conv(x))
            pooled = torch.nn.functional.adaptive_avg_pool2d(conv, 2).flatten(1)
            feats = {"conv": conv.mean(dim=(2, 3)), PENULTIMATE: pooled, "logits": handle.head(pooled)}
            rows.append(feats[layer].numpy()[0])
    return np.stack(rows)


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Each test gets an empty embedding cache (images with equal content share keys)."""
    monkeypatch.setenv("REPALIGN_CACHE_HOME", str(tmp_path / "embeddings"))


@pytest.fixture
def image_files(tmp_path):
    """Eleven small PNG files with distinct random content (RGB, RGBA and grayscale)."""
    rng = np.random.default_rng(1)
    paths = []
    for i in range(11):
        array = rng.integers(0, 256, size=(20 + i, 24, 3), dtype=np.uint8)
        img = Image.fromarray(array)
        if i % 3 == 1:
            img = img.convert("RGBA")
        elif i % 3 == 2:
            img = img.convert("L")
        path = tmp_path / f"img{i:02d}.png"
        img.save(path)
        paths.append(path)
    return FileImageSet(paths, name="eleven")


@pytest.fixture
def handle():
    return TinyConvHandle(seed=0)


# ---------------------------------------------------------------------------------------
# values and order
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("batch_size, workers", [(4, 0), (3, 2), (11, 0), (1, 1)])
def test_matches_image_by_image_oracle(handle, image_files, batch_size, workers):
    got = extract_embeddings(handle, image_files, batch_size=batch_size, num_workers=workers, cache=False)
    assert got.dtype == np.float32 and got.shape == (11, 32)
    np.testing.assert_allclose(got, oracle_features(handle, image_files), rtol=1e-5, atol=1e-6)


def test_order_follows_image_set_and_values_are_deterministic(handle, image_files):
    reversed_set = FileImageSet(list(reversed(image_files.paths)), name="reversed")
    forward = extract_embeddings(handle, image_files, batch_size=3, num_workers=2, cache=False)
    backward = extract_embeddings(handle, reversed_set, batch_size=3, num_workers=2, cache=False)
    again = extract_embeddings(handle, image_files, batch_size=3, num_workers=2, cache=False)
    np.testing.assert_array_equal(forward, again)
    np.testing.assert_allclose(backward, forward[::-1], rtol=1e-5, atol=1e-6)


def test_several_layers_come_from_one_forward_pass(handle, image_files):
    got = extract_embeddings(handle, image_files, layer=["logits", "conv"], batch_size=4, num_workers=0, cache=False)
    assert list(got) == ["logits", "conv"]
    assert handle.forward_calls == 3  # ceil(11 / 4) passes for both layers together
    for name in ("logits", "conv"):
        np.testing.assert_allclose(got[name], oracle_features(handle, image_files, name), rtol=1e-5, atol=1e-6)


def test_single_layer_name_returns_array(handle, image_files):
    got = extract_embeddings(handle, image_files, layer="conv", num_workers=0, cache=False)
    assert isinstance(got, np.ndarray) and got.shape == (11, 8)


def test_array_and_subset_image_sets(handle, rng):
    pixels = rng.integers(0, 256, size=(7, 10, 10), dtype=np.uint8)
    base = ArrayImageSet(pixels, name="digits")
    subset = SubsetImageSet(base, [5, 0, 3])
    full = extract_embeddings(handle, base, num_workers=0, cache=False)
    part = extract_embeddings(handle, subset, num_workers=0, cache=False)
    np.testing.assert_allclose(part, full[[5, 0, 3]], rtol=1e-5, atol=1e-6)


def test_float16_request_returns_and_caches_float16(handle, image_files):
    half = extract_embeddings(handle, image_files, dtype="float16", num_workers=0)
    assert half.dtype == np.float16
    np.testing.assert_allclose(half, oracle_features(handle, image_files), rtol=2e-3, atol=2e-3)
    assert is_cached(handle, image_files, dtype="float16") and not is_cached(handle, image_files)


# ---------------------------------------------------------------------------------------
# out of memory
# ---------------------------------------------------------------------------------------
def test_out_of_memory_halves_batch_and_keeps_values(image_files, caplog):
    small = TinyConvHandle(seed=0, oom_above=2)
    with caplog.at_level("WARNING", logger="repalign.embed"):
        got = extract_embeddings(small, image_files, batch_size=8, num_workers=0, cache=False)
    np.testing.assert_allclose(got, oracle_features(small, image_files), rtol=1e-5, atol=1e-6)
    assert max(small.batch_sizes) == 2 and sum(small.batch_sizes) == 11
    assert "retrying with 4" in caplog.text and "retrying with 2" in caplog.text


def test_out_of_memory_at_batch_one_raises(image_files):
    hopeless = TinyConvHandle(seed=0, oom_above=0)
    with pytest.raises(RepalignError, match="Out of memory .* even with a batch of 1"):
        extract_embeddings(hopeless, image_files, batch_size=4, num_workers=0, cache=False)


def test_other_runtime_errors_are_not_retried(image_files):
    class Broken(TinyConvHandle):
        def forward(self, batch, *, layers=None):
            self.forward_calls += 1
            raise RuntimeError("shape mismatch in conv")

    broken = Broken()
    with pytest.raises(RuntimeError, match="shape mismatch"):
        extract_embeddings(broken, image_files, batch_size=4, num_workers=0, cache=False)
    assert broken.forward_calls == 1


# ---------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("workers", [0, 2])
def test_corrupt_image_error_names_the_file_across_workers(handle, image_files, workers):
    bad = image_files.paths[6]
    bad.write_bytes(b"this is not a png")
    with pytest.raises(InputError, match=f"Corrupt or unreadable image file: {bad}") as info:
        extract_embeddings(handle, image_files, batch_size=2, num_workers=workers, cache=False)
    assert "Traceback" not in str(info.value) and "\n" not in str(info.value)


def test_image_deleted_after_listing_is_a_missing_data_error(handle, image_files):
    image_files.paths[3].unlink()
    with pytest.raises(MissingDataError, match="img03.png"):
        extract_embeddings(handle, image_files, batch_size=2, num_workers=2, cache=False)


def test_transform_failure_names_the_file(image_files):
    class BadTransform:
        def __call__(self, img):
            raise ValueError("cannot resize")

    class BadHandle(TinyConvHandle):
        @property
        def transform(self):
            return BadTransform()

    with pytest.raises(InputError, match=r"Could not preprocess image file .*img00.png: ValueError: cannot resize"):
        extract_embeddings(BadHandle(), image_files, num_workers=1, cache=False)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"layer": "fc9"}, UnknownNameError, "Unknown layer of test:tinyconv 'fc9'"),
        ({"layer": []}, InputError, "non-empty list"),
        ({"layer": ""}, InputError, "Layer name is empty"),
        ({"dtype": "int8"}, InputError, "Unsupported embedding dtype"),
        ({"batch_size": 0}, InputError, "'batch_size' must be an integer >= 1"),
        ({"num_workers": -1}, InputError, "'num_workers' must be an integer >= 0"),
        ({"weights": "w.pt"}, InputError, "'weights' applies to model names only"),
    ],
)
def test_bad_options(handle, image_files, kwargs, error, match):
    with pytest.raises(error, match=match):
        extract_embeddings(handle, image_files, cache=False, **kwargs)


def test_bad_images(handle):
    with pytest.raises(InputError, match="must be a repalign ImageSet"):
        extract_embeddings(handle, ["a.png"], cache=False)
    with pytest.raises(InputError, match="is empty"):
        extract_embeddings(handle, ArrayImageSet(np.zeros((0, 4, 4), np.uint8), name="none"), cache=False)


def test_bad_model_argument(image_files):
    with pytest.raises(InputError, match="must be a model name or a loaded ModelHandle"):
        extract_embeddings(42, image_files)


@pytest.mark.parametrize(
    "n_images, device, cpus, expected",
    [
        (8, "cuda", 16, 0),  # one batch: no workers
        (100, "cuda", 16, 4),
        (100, "cuda:1", 2, 2),
        (100, "cpu", 2, 0),  # the forward pass already uses both cores
        (100, "cpu", 8, 2),
        (100, "cpu", 64, 4),
    ],
)
def test_default_num_workers(monkeypatch, n_images, device, cpus, expected):
    monkeypatch.setattr(embed, "usable_cpus", lambda: cpus)
    assert embed.default_num_workers(n_images, 8, device) == expected


def test_resolve_device():
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") in ("cuda", "mps", "cpu")
    if not torch.cuda.is_available():
        assert resolve_device("auto") != "cuda"
        with pytest.raises(InputError, match="CUDA is not available"):
            resolve_device("cuda:0")
    with pytest.raises(UnknownNameError, match="Unknown device 'tpu'"):
        resolve_device("tpu")


# ---------------------------------------------------------------------------------------
# cache: hits, and a change of any key part is a miss
# ---------------------------------------------------------------------------------------
def test_second_run_hits_cache_without_forward(handle, image_files):
    first = extract_embeddings(handle, image_files, num_workers=0)
    calls = handle.forward_calls
    assert is_cached(handle, image_files)
    second = extract_embeddings(handle, image_files, num_workers=0)
    assert handle.forward_calls == calls
    np.testing.assert_array_equal(first, second)
    assert len(EmbeddingCache().entries(model="test:tinyconv")) >= 1


def test_partial_layer_hit_computes_only_missing_layers(handle, image_files):
    extract_embeddings(handle, image_files, layer="conv", num_workers=0)
    handle.forward_calls = 0
    got = extract_embeddings(handle, image_files, layer=["conv", "logits"], batch_size=11, num_workers=0)
    assert handle.forward_calls == 1 and set(got) == {"conv", "logits"}
    assert is_cached(handle, image_files, layer=["conv", "logits"])


def _misses(handle_a, images_a, handle_b, images_b, **kw_b) -> bool:
    """Extract with (a), then with (b); True when (b) needed a forward pass (a cache miss)."""
    extract_embeddings(handle_a, images_a, num_workers=0)
    before = handle_b.forward_calls
    extract_embeddings(handle_b, images_b, num_workers=0, **kw_b)
    return handle_b.forward_calls > before


def test_each_key_part_change_misses(image_files, tmp_path, monkeypatch):
    base = TinyConvHandle(seed=0)
    assert not _misses(base, image_files, base, image_files)  # control: same everything hits
    assert _misses(base, image_files, TinyConvHandle(seed=1), image_files)  # other weights
    assert _misses(base, image_files, TinyConvHandle(seed=0, size=12), image_files)  # preprocessing
    assert _misses(base, image_files, TinyConvHandle(seed=0, mean=0.4), image_files)
    assert _misses(base, image_files, base, image_files, layer="logits")  # layer
    assert _misses(base, image_files, base, image_files, dtype="float16")  # dtype

    # images content: same names, one pixel changed
    changed = tmp_path / "changed"
    changed.mkdir()
    paths = []
    for path in image_files.paths:
        target = changed / path.name
        target.write_bytes(path.read_bytes())
        paths.append(target)
    array = np.asarray(Image.open(paths[0]).convert("RGB")).copy()
    array[0, 0, 0] ^= 1
    Image.fromarray(array).save(paths[0])
    assert _misses(base, image_files, base, FileImageSet(paths, name="eleven"))

    # extraction code version (entries of the old version exist from the control above)
    before = base.forward_calls
    monkeypatch.setattr(embed, "EXTRACTION_CODE_VERSION", "test-bump")
    extract_embeddings(base, image_files, num_workers=0)
    assert base.forward_calls > before


def test_cache_disabled_neither_reads_nor_writes(handle, image_files):
    key = embedding_cache_key(handle, image_files, layer="logits")
    extract_embeddings(handle, image_files, layer="logits", cache=False, num_workers=0)
    assert not EmbeddingCache().contains(key)


def test_embedding_cache_key_is_stable_and_layer_specific(handle, image_files):
    key = embedding_cache_key(handle, image_files)
    assert key == embedding_cache_key(TinyConvHandle(seed=0), image_files)
    assert key == embedding_cache_key(handle, image_files, layer=PENULTIMATE)
    assert key != embedding_cache_key(handle, image_files, layer="conv")
    with pytest.raises(InputError, match="single layer"):
        embedding_cache_key(handle, image_files, layer=["conv"])


# ---------------------------------------------------------------------------------------
# real model sources through the registry (pixels, TFLite, timm)
# ---------------------------------------------------------------------------------------
TFLITE_EMBEDDER = "tflite:mobilenet_v1_1.0_224_quant_embedding_extractor"


def _forbid_model_loading(monkeypatch):
    """Make any model load fail loudly: a cache hit must not need the network."""
    import repalign.models
    import repalign.models.registry

    def refuse(*args, **kwargs):
        raise AssertionError(f"model was loaded: {args}")

    monkeypatch.setattr(repalign.models, "load_model", refuse)
    monkeypatch.setattr(repalign.models.registry, "load_model", refuse)


def _count_model_loads(monkeypatch) -> list:
    """Record every load_model call (and still load)."""
    import repalign.models

    calls = []
    real = repalign.models.load_model

    def counting(name, **kwargs):
        calls.append(name)
        return real(name, **kwargs)

    monkeypatch.setattr(repalign.models, "load_model", counting)
    return calls


def _direct_features(handle, images, layers=None) -> dict:
    """Oracle: the handle's forward on each image alone, outside the engine."""
    rows = []
    for i in range(len(images)):
        x = handle.transform(images.load(i))
        batch = x[None] if handle.uses_torch else np.asarray(x)[None]
        rows.append(handle.forward(batch, layers=layers))
    return {name: np.concatenate([r[name] for r in rows]) for name in rows[0]}


@pytest.fixture
def small_photos(rng):
    """Six 64x48 RGB images with smooth content (a real model's features differ per image)."""
    yy, xx = np.mgrid[0:48, 0:64]
    images = []
    for k in range(6):
        phase = rng.uniform(0, 2 * np.pi, size=3)
        freq = rng.uniform(0.05, 0.3, size=3)
        channels = [127 + 120 * np.sin(freq[c] * (xx + k * yy) / 2 + phase[c]) for c in range(3)]
        images.append(np.stack(channels, axis=-1).astype(np.uint8))
    return ArrayImageSet(np.stack(images), name="smooth6")


def test_pixels_second_run_hits_cache_without_loading(small_photos, monkeypatch):
    from repalign.models import load_model

    first = extract_embeddings("pixels", small_photos, num_workers=0)
    oracle = _direct_features(load_model("pixels", device="cpu"), small_photos)[PENULTIMATE]
    np.testing.assert_array_equal(first, oracle)
    _forbid_model_loading(monkeypatch)
    assert is_cached("pixels", small_photos)
    np.testing.assert_array_equal(extract_embeddings("pixels", small_photos), first)


def test_pixels_numpy_batches_through_workers_match(small_photos):
    serial = extract_embeddings("pixels", small_photos, batch_size=4, num_workers=0, cache=False)
    parallel = extract_embeddings("pixels", small_photos, batch_size=4, num_workers=2, cache=False)
    np.testing.assert_array_equal(serial, parallel)


def test_description_disagreeing_with_loaded_model_never_serves_stale_values(small_photos, monkeypatch, caplog):
    import repalign.models

    real = repalign.models.describe_model

    def stale(name, *, weights=None):  # a description that misses a weights change
        info = real(name, weights=weights)
        return {**info, "identity": {**info["identity"], "weights": "an-older-file"}}

    monkeypatch.setattr(repalign.models, "describe_model", stale)
    with caplog.at_level("WARNING", logger="repalign.embed"):
        extract_embeddings("pixels", small_photos, num_workers=0)
    assert "does not match the loaded model's identity" in caplog.text
    assert not is_cached("pixels", small_photos)  # nothing stored under the wrong description
    monkeypatch.setattr(repalign.models, "describe_model", real)
    assert is_cached("pixels", small_photos)  # stored under the loaded identity


def test_progress_bar_does_not_change_results(handle, image_files):
    quiet = extract_embeddings(handle, image_files, num_workers=0, cache=False)
    shown = extract_embeddings(handle, image_files, num_workers=0, cache=False, progress=True)
    np.testing.assert_array_equal(quiet, shown)


def test_unknown_model_name_is_an_error(small_photos):
    with pytest.raises(UnknownNameError, match="Unknown"):
        extract_embeddings("timm:resnett18", small_photos)


def test_timm_random_layers_match_direct_forward(small_photos):
    from repalign.models import load_model

    handle = load_model("timm:resnet18@random", device="cpu")
    got = extract_embeddings(handle, small_photos, layer=[PENULTIMATE, "layer3"], batch_size=4, num_workers=2)
    oracle = _direct_features(handle, small_photos, layers=[PENULTIMATE, "layer3"])
    assert got[PENULTIMATE].shape == (6, 512) and got["layer3"].shape == (6, 256)
    for name in (PENULTIMATE, "layer3"):
        np.testing.assert_allclose(got[name], oracle[name], rtol=1e-4, atol=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_extraction_matches_cpu(small_photos):
    """Pinned-memory batches, autocast on the GPU, float32 outputs close to the CPU values."""
    cpu = extract_embeddings("timm:resnet18@random", small_photos, device="cpu", num_workers=2, cache=False)
    gpu = extract_embeddings("timm:resnet18@random", small_photos, device="cuda", num_workers=2, cache=False)
    assert gpu.dtype == np.float32 and gpu.shape == cpu.shape
    cosine = np.sum(cpu * gpu, axis=1) / (np.linalg.norm(cpu, axis=1) * np.linalg.norm(gpu, axis=1))
    assert cosine.min() > 0.99  # bf16/fp16 autocast rounding only


def test_timm_weights_file_is_part_of_the_key(small_photos, tmp_path, monkeypatch):
    import timm

    files = {}
    for seed in (1, 2):
        torch.manual_seed(seed)
        files[seed] = tmp_path / f"resnet18-seed{seed}.pth"
        torch.save(timm.create_model("resnet18", pretrained=False).state_dict(), files[seed])
    loads = _count_model_loads(monkeypatch)
    a = extract_embeddings("timm:resnet18", small_photos, weights=files[1], num_workers=0)
    b = extract_embeddings("timm:resnet18", small_photos, weights=files[2], num_workers=0)
    assert len(loads) == 2 and not np.allclose(a, b)  # other weights: a miss, other values
    # same file content under another name: same identity (sha256), a hit without loading
    renamed = tmp_path / "copy-of-seed1.pth"
    renamed.write_bytes(files[1].read_bytes())
    again = extract_embeddings("timm:resnet18", small_photos, weights=renamed, num_workers=0)
    assert len(loads) == 2
    np.testing.assert_array_equal(again, a)


@pytest.mark.integration
def test_tflite_embedder_alignment_on_peterson_animals(mirror, monkeypatch):
    """Real-data check: the independent measurement gave Spearman 0.52; shuffling ~0."""
    from scipy.stats import spearmanr

    from repalign.alignment import pairwise_alignment, similarity_matrix
    from repalign.data.human import load_human

    human = load_human("peterson:animals")[0]
    images = human.images()
    embeddings = extract_embeddings(TFLITE_EMBEDDER, images)
    assert embeddings.shape == (120, 1024) and embeddings.dtype == np.float32
    rho = pairwise_alignment(similarity_matrix(embeddings, metric="cosine"), human.similarity, method="spearman")
    print(f"tflite embedder on peterson:animals: Spearman alignment {rho:.4f}")
    assert 0.40 <= rho <= 0.62

    # independent oracle for the whole chain: cosine by hand, scipy's Spearman on the upper triangle
    unit = embeddings.astype(np.float64) / np.linalg.norm(embeddings.astype(np.float64), axis=1, keepdims=True)
    upper = np.triu_indices(120, k=1)
    expected = spearmanr((unit @ unit.T)[upper], human.similarity[upper]).statistic
    assert rho == pytest.approx(expected, abs=1e-9)

    # shuffled stimulus order (embeddings permuted, human matrix not): alignment collapses
    for seed in range(3):
        order = np.random.default_rng(seed).permutation(120)
        shuffled = pairwise_alignment(similarity_matrix(embeddings[order]), human.similarity, method="spearman")
        assert abs(shuffled) < 0.1

    # the second run is a cache hit that never builds the interpreter
    _forbid_model_loading(monkeypatch)
    assert is_cached(TFLITE_EMBEDDER, images)
    np.testing.assert_array_equal(extract_embeddings(TFLITE_EMBEDDER, images), embeddings)


@pytest.mark.integration
def test_tflite_workers_and_batches_match_direct_forward(mirror):
    from repalign.data.human import load_human
    from repalign.models import load_model

    images = SubsetImageSet(load_human("peterson:animals")[0].images(), [3, 50, 7, 119, 0])
    handle = load_model(TFLITE_EMBEDDER, device="cpu")
    got = extract_embeddings(handle, images, batch_size=2, num_workers=2, cache=False)
    np.testing.assert_allclose(got, _direct_features(handle, images)[PENULTIMATE], rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------------------------------
# `repalign embed`
# ---------------------------------------------------------------------------------------
@pytest.fixture
def photo_folder(tmp_path, small_photos):
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(len(small_photos)):
        small_photos.load(i).save(folder / f"p{i}.png")
    return folder


def test_cli_embed_folder_to_npz(photo_folder, tmp_path, capsys):
    import json

    from repalign.cli import main

    out = tmp_path / "feats.npz"
    assert main(["embed", "pixels", "--dataset", str(photo_folder), "--out", str(out), "--format", "json"]) == 0
    (record,) = json.loads(capsys.readouterr().out)
    assert record["cache"] == "stored" and (record["n"], record["d"]) == (6, 3072)
    saved = np.load(out, allow_pickle=False)
    files = sorted(photo_folder.iterdir())
    assert list(saved["stimuli"]) == [p.name for p in files]
    # the embeddings file format (docs/own-data.md): one layer is "embeddings", named in "layer"
    assert str(saved["layer"]) == PENULTIMATE and str(saved["model"]) == "pixels"
    np.testing.assert_array_equal(saved["embeddings"], extract_embeddings("pixels", FileImageSet(files, name="photos")))
    assert main(["embed", "pixels", "--dataset", str(photo_folder), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["cache"] == "hit"


@pytest.mark.parametrize(
    "argv, match",
    [
        (["--dataset", "peterson"], "holds 6 datasets"),
        (["--dataset", "mnistt"], "Did you mean: mnist"),
        (["--dataset", "/no/such/folder"], "not found"),
        (["--dataset", "{folder}", "--out", "x.txt"], "--out must name a .npz file"),
        (["--dataset", "{folder}", "--layer", "nope"], "Unknown layer"),
        (["--dataset", "{folder}", "--device", "tpu"], "Unknown device"),
        (["--dataset", "{folder}", "--batch-size", "0"], "'batch_size' must be an integer >= 1"),
    ],
)
def test_cli_embed_bad_input(photo_folder, capsys, argv, match):
    from repalign.cli import main

    argv = [a.replace("{folder}", str(photo_folder)) for a in argv]
    assert main(["embed", "pixels", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("repalign: error:") and match in err and "Traceback" not in err


@pytest.mark.integration
def test_cli_embed_human_dataset_saves_stimuli(mirror, tmp_path, capsys):
    from repalign.cli import main
    from repalign.data.human import load_human

    out = tmp_path / "animals.npz"
    assert main(["embed", "pixels", "--dataset", "peterson:animals", "--out", str(out), "--dtype", "float16"]) == 0
    saved = np.load(out, allow_pickle=False)
    assert tuple(saved["stimuli"]) == load_human("peterson:animals")[0].stimuli
    assert saved["embeddings"].shape == (120, 3072) and saved["embeddings"].dtype == np.float16


def test_importing_engine_and_cli_does_not_import_torch():
    import subprocess
    import sys

    code = (
        "import sys, repalign.embed, repalign.embed.cache, repalign.cli.embed, repalign.cli.cache;"
        "from repalign.cli import build_parser; build_parser().parse_args(['cache', 'list']);"
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert out.strip() == "False"


# ---------------------------------------------------------------------------------------
# numpy models: the prefetch-thread loader (the default on a multi-core CPU)
# ---------------------------------------------------------------------------------------
class ResizeToUint8:
    """RGB PIL -> (size, size, 3) uint8 array, as TFLite models take (``delay`` seconds an image)."""

    def __init__(self, size: int, log: list | None = None, delay: float = 0.0):
        self.size, self.log, self.delay = size, log, delay

    def __call__(self, img):
        if self.log is not None:
            self.log.append(1)
        time.sleep(self.delay)
        return np.asarray(img.resize((self.size, self.size), Image.BILINEAR))


class NumpyProjectionHandle(ModelHandle):
    """A real numpy model: flattened uint8 pixels times a seeded random matrix (-> 5 features).

    Records the thread count it ran with (``compute_threads``, as TFLite handles have) and,
    per forward pass, how many images had been preprocessed by then. ``prepare_delay`` (an
    image) and ``forward_delay`` (a batch) make preparing or the forward pass the slower side
    by a wide margin, which decides whether the engine prepares in a thread.
    """

    uses_torch = False

    def __init__(self, size: int = 6, *, prepare_delay: float = 0.02, forward_delay: float = 0.0):
        self.size = size
        self.weights = np.random.default_rng(3).standard_normal((size * size * 3, 5)).astype(np.float32)
        self.spec = ModelSpec(name="test:numpyproj", source="test", arch="numpyproj", resolved_id="test:numpyproj")
        self.device = "cpu"
        self.default_batch_size = 2
        self.num_threads = 2
        self.threads_seen: list[int] = []
        self.prepared: list = []
        self.prepared_at_forward: list[int] = []
        self.prepare_delay, self.forward_delay = prepare_delay, forward_delay

    identity = property(lambda self: {"resolved_id": "test:numpyproj", "weights": "random:3"})
    preprocess_config = property(lambda self: {"size": self.size})
    transform = property(lambda self: ResizeToUint8(self.size, self.prepared, self.prepare_delay))

    def available_layers(self):
        return [PENULTIMATE]

    @contextlib.contextmanager
    def compute_threads(self, n):
        previous, self.num_threads = self.num_threads, n
        try:
            yield self
        finally:
            self.num_threads = previous

    def forward(self, batch, *, layers=None):
        assert isinstance(batch, np.ndarray) and batch.dtype == np.uint8
        self.threads_seen.append(self.num_threads)
        self.prepared_at_forward.append(len(self.prepared))
        time.sleep(self.forward_delay)
        return {PENULTIMATE: batch.reshape(len(batch), -1).astype(np.float32) @ self.weights}


def numpy_oracle(handle: NumpyProjectionHandle, images) -> np.ndarray:
    """Image by image, outside the engine."""
    transform = ResizeToUint8(handle.size)
    return np.stack(
        [transform(images.load(i)).reshape(-1).astype(np.float32) @ handle.weights for i in range(len(images))]
    )


@pytest.fixture
def two_cpus(monkeypatch):
    monkeypatch.setattr(embed, "usable_cpus", lambda: 2)


def test_threaded_loader_matches_oracle_in_order_and_frees_a_core(image_files, two_cpus):
    handle = NumpyProjectionHandle()
    got = extract_embeddings(handle, image_files, batch_size=3, cache=False)  # default loader: the thread
    np.testing.assert_allclose(got, numpy_oracle(handle, image_files), rtol=1e-5, atol=1e-2)  # float32 sums
    # two batches in turn, on both cores, to time them; then one core left to decoding, then restored
    assert handle.threads_seen == [2, 2, 1, 1] and handle.num_threads == 2
    reversed_set = SubsetImageSet(image_files, list(range(10, -1, -1)))
    np.testing.assert_array_equal(extract_embeddings(handle, reversed_set, batch_size=3, cache=False), got[::-1])
    serial = extract_embeddings(NumpyProjectionHandle(), image_files, batch_size=3, num_workers=0, cache=False)
    np.testing.assert_array_equal(serial, got)


def test_a_forward_pass_slower_than_preparing_keeps_every_core(image_files, two_cpus):
    """Preparing 2 images takes milliseconds, the forward pass 0.25 s: a thread would only
    slow the forward pass, so the batches are prepared in turn."""
    handle = NumpyProjectionHandle(prepare_delay=0.0, forward_delay=0.25)
    got = extract_embeddings(handle, image_files, batch_size=3, cache=False)
    assert handle.threads_seen == [2] * 4
    assert handle.prepared_at_forward == [3, 6, 9, 11]  # nothing prepared ahead
    np.testing.assert_allclose(got, numpy_oracle(handle, image_files), rtol=1e-5, atol=1e-2)


@pytest.mark.parametrize(
    "prepare_s, forward_s, cpus, thread", [(0.3, 0.2, 2, True), (0.1, 0.2, 2, False), (0.1, 0.2, 4, True)]
)
def test_the_thread_pays_when_preparing_is_slower_than_its_share_of_the_forward_pass(
    image_files, monkeypatch, prepare_s, forward_s, cpus, thread
):
    """The rule p > f / (c - 1): in turn p + f a batch, with the thread max(p, f c / (c - 1))."""
    monkeypatch.setattr(embed, "usable_cpus", lambda: cpus)
    assert (max(prepare_s, forward_s * cpus / (cpus - 1)) < prepare_s + forward_s) is thread
    clock = iter([0.0, prepare_s, 10.0, 10.0 + prepare_s])  # the two probe batches' preparation
    monkeypatch.setattr(embed.time, "perf_counter", lambda: next(clock, 20.0))
    handle = NumpyProjectionHandle(prepare_delay=0.0)
    times: list[float] = []
    batches = embed._pipelined_batches(handle, embed._PreparedImages(image_files, handle.transform), 3, times)
    for k, batch in enumerate(batches):
        if k < 2:
            times.append(forward_s)
        handle.forward(batch)
    assert handle.threads_seen == [2, 2] + [cpus - 1 if thread else 2] * 2  # the thread leaves a core


def test_in_process_loader_keeps_the_model_thread_count(image_files, two_cpus):
    handle = NumpyProjectionHandle()
    extract_embeddings(handle, image_files, batch_size=3, num_workers=0, cache=False)
    assert handle.threads_seen == [2] * 4


def test_threaded_loader_prefetch_is_bounded(image_files, two_cpus, monkeypatch):
    monkeypatch.setattr(embed, "THREAD_PREFETCH_BATCHES", 1)
    handle = NumpyProjectionHandle()
    extract_embeddings(handle, image_files, batch_size=2, cache=False)
    # at forward k (k batches of 2 done): its batch, <= 1 queued, <= 1 in the making
    for k, prepared in enumerate(handle.prepared_at_forward):
        assert prepared <= min(len(image_files), 2 * (k + 3))
    assert len(handle.prepared) == len(image_files)


def test_threaded_loader_corrupt_image_error_names_the_file(image_files, two_cpus):
    bad = image_files.paths[6]
    bad.write_bytes(b"this is not a png")
    handle = NumpyProjectionHandle()
    with pytest.raises(InputError, match=f"Corrupt or unreadable image file: {bad}") as info:
        extract_embeddings(handle, image_files, batch_size=2, cache=False)
    assert "\n" not in str(info.value)
    assert handle.threads_seen == [2, 2, 1] and handle.num_threads == 2
    assert not [t for t in threading.enumerate() if t.name == "repalign-prefetch"]


@pytest.mark.parametrize(
    "uses_torch, device, n_images, cpus, expected",
    [
        (False, "cpu", 11, 2, True),
        (False, "cpu", 2, 2, False),  # a single batch: nothing to overlap
        (False, "cpu", 11, 1, False),  # one core: decoding and forward would only take turns
        (False, "cuda", 11, 2, False),
        (True, "cpu", 11, 2, False),  # torch models keep the DataLoader
    ],
)
def test_when_the_thread_pipeline_is_used(monkeypatch, uses_torch, device, n_images, cpus, expected):
    monkeypatch.setattr(embed, "usable_cpus", lambda: cpus)
    handle = NumpyProjectionHandle()
    handle.uses_torch, handle.device = uses_torch, device
    assert embed._use_thread_pipeline(handle, n_images, 2) is expected
