"""Tests of the extraction engine (repalign.embed).

Engine behaviour is checked with a real (tiny, seeded) torch CNN behind the ModelHandle
interface, against an independent oracle: the same network run image by image outside the
engine. Real model sources (pixels, timm @random, TFLite) are exercised further below.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from repalign import embed
from repalign.cache import EmbeddingCache
from repalign.data.images import ArrayImageSet, FileImageSet, SubsetImageSet
from repalign.embed import embedding_cache_key, extract_embeddings, is_cached, resolve_device
from repalign.errors import InputError, MissingDataError, RepalignError, UnknownNameError
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


def test_resolve_device():
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") in ("cuda", "mps", "cpu")
    if not torch.cuda.is_available():
        assert resolve_device("auto") != "cuda"
        with pytest.raises(InputError, match="CUDA is not available"):
            resolve_device("cuda:0")
    with pytest.raises(InputError, match="Unknown device 'tpu'"):
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
