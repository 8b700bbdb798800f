"""Tests of the preprocessed-input cache (repalign.embed.inputs) and its use by extract_embeddings.

The oracle for every extraction is the same model run with the input cache switched off (the
decode-and-preprocess path, itself tested against per-image forwards in test_embed.py):
features must be bit-identical, whether the inputs were just recorded or read back.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from repalign._options import DEFAULT_INPUT_CACHE_BYTES
from repalign.data.images import ArrayImageSet, FileImageSet, SubsetImageSet
from repalign.embed import InputCache, extract_embeddings, order_by_preprocessing
from repalign.embed.cache import cache_key
from repalign.embed.inputs import input_cache_limit, input_key_parts
from repalign.errors import InputError


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("REPALIGN_CACHE_HOME", str(tmp_path / "embeddings"))
    # these tests set the store's limit themselves (4 GiB), whatever the default
    monkeypatch.setenv("REPALIGN_INPUT_CACHE_BYTES", str(4 << 30))


@pytest.fixture
def photo_files(tmp_path):
    """Nine small PNG files with smooth, distinct content (RGB, RGBA, grayscale)."""
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[0:40, 0:52]
    paths = []
    for k in range(9):
        phase = rng.uniform(0, 2 * np.pi, size=3)
        channels = [127 + 120 * np.sin(0.15 * (xx + k * yy) / 2 + phase[c]) for c in range(3)]
        img = Image.fromarray(np.stack(channels, axis=-1).astype(np.uint8))
        img = img.convert("RGBA") if k % 3 == 1 else img.convert("L") if k % 3 == 2 else img
        path = tmp_path / f"photo{k}.png"
        img.save(path)
        paths.append(path)
    return FileImageSet(paths, name="photos9")


def _no_decoding(images, monkeypatch):
    """Make decoding an image fail: a read of ready inputs must not decode anything."""

    def refuse(index):
        raise AssertionError(f"image {index} was decoded")

    monkeypatch.setattr(images, "load", refuse)


def _entries() -> list[dict]:
    """The store's preprocessed-input entries (decoded image files are tested in test_embed_decoded.py)."""
    return [m for m in InputCache().entries() if m["parts"]["kind"] == "preprocessed-inputs"]


def _three_ways(model, images, monkeypatch, **kwargs):
    """(no input cache, recording run, run on read-back inputs) features of one loaded model."""
    from repalign.models import load_model

    handle = load_model(model, device="cpu")
    reference = extract_embeddings(handle, images, cache=False, input_cache=False, **kwargs)
    assert _entries() == []
    recorded = extract_embeddings(handle, images, cache=False, input_cache=True, **kwargs)
    assert len(_entries()) == 1
    with monkeypatch.context() as m:
        _no_decoding(images, m)
        replayed = extract_embeddings(handle, images, cache=False, input_cache=True, **kwargs)
    return reference, recorded, replayed


# ---------------------------------------------------------------------------------------
# bit-identical features
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("model, batch_size", [("pixels:12", 4), ("timm:resnet18@random", 4)])
def test_features_are_bit_identical_with_and_without_the_input_cache(model, batch_size, photo_files, monkeypatch):
    reference, recorded, replayed = _three_ways(model, photo_files, monkeypatch, batch_size=batch_size)
    assert reference.dtype == recorded.dtype == replayed.dtype
    np.testing.assert_array_equal(recorded, reference)
    np.testing.assert_array_equal(replayed, reference)


def test_models_of_one_configuration_share_inputs(photo_files, monkeypatch):
    """Two untrained timm models with the same config (bicubic, crop 0.95, 224): the second reads the first's inputs."""
    from repalign.models import describe_model, load_model

    a, b = "timm:lcnet_050@random", "timm:mobilenetv3_small_050@random"
    assert describe_model(a)["preprocess_config"] == describe_model(b)["preprocess_config"]
    images = SubsetImageSet(photo_files, [0, 3, 4])
    extract_embeddings(a, images, cache=False, input_cache=True)
    reference = extract_embeddings(b, images, cache=False, input_cache=False)
    with monkeypatch.context() as m:
        _no_decoding(photo_files, m)
        shared = extract_embeddings(load_model(b, device="cpu"), images, cache=False, input_cache=True)
    np.testing.assert_array_equal(shared, reference)
    assert len(_entries()) == 1


@pytest.mark.integration
@pytest.mark.parametrize(
    "model, batch_size", [("tflite:mobilenet_v1_0.25_128_quant", 16), ("cifar_resnet:resnet20", 32)]
)
def test_mirror_models_bit_identical_on_peterson_images(mirror, model, batch_size, monkeypatch):
    from repalign.data.human import load_human

    images = SubsetImageSet(load_human("peterson:animals")[0].images(), list(range(0, 120, 3)))  # 40 images
    reference, recorded, replayed = _three_ways(model, images, monkeypatch, batch_size=batch_size)
    np.testing.assert_array_equal(recorded, reference)
    np.testing.assert_array_equal(replayed, reference)


def test_input_cache_follows_the_cache_switch_by_default(photo_files):
    extract_embeddings("pixels:8", photo_files, cache=False)
    assert _entries() == []
    extract_embeddings("pixels:8", photo_files)
    assert len(_entries()) == 1


def test_the_store_is_on_by_default_within_its_limit(photo_files, monkeypatch):
    monkeypatch.delenv("REPALIGN_INPUT_CACHE_BYTES")
    assert input_cache_limit() == DEFAULT_INPUT_CACHE_BYTES == 2 << 30
    extract_embeddings("pixels:8", photo_files, cache=False)
    assert not InputCache().root.exists()  # it follows the embedding cache's switch
    extract_embeddings("pixels:8", photo_files)
    assert len(_entries()) == 1


def test_limit_zero_switches_the_store_off(photo_files, monkeypatch):
    monkeypatch.setenv("REPALIGN_INPUT_CACHE_BYTES", "0")
    extract_embeddings("pixels:8", photo_files, cache=False, input_cache=True)
    assert not InputCache().root.exists()


def test_inputs_larger_than_the_limit_are_not_kept_and_values_are_unchanged(photo_files, monkeypatch):
    reference = extract_embeddings("pixels:8", photo_files, cache=False, input_cache=False)
    monkeypatch.setenv("REPALIGN_INPUT_CACHE_BYTES", str(8 * 8 * 3 * 4 * len(photo_files) - 1))  # one byte short
    out = extract_embeddings("pixels:8", photo_files, cache=False, input_cache=True, batch_size=2)
    np.testing.assert_array_equal(out, reference)
    assert _entries() == []
    assert not any(p.name.endswith(".tmp") for p in InputCache().root.rglob("*"))


@pytest.mark.parametrize("value", ["-1", "lots", "1.5"])
def test_bad_limit_variable_is_a_one_line_error(value, monkeypatch):
    monkeypatch.setenv("REPALIGN_INPUT_CACHE_BYTES", value)
    with pytest.raises(InputError, match="REPALIGN_INPUT_CACHE_BYTES=.*integer >= 0"):
        input_cache_limit()


# ---------------------------------------------------------------------------------------
# damaged entries
# ---------------------------------------------------------------------------------------
def _array_file(key: str):
    return InputCache().array_path(key)


def test_replaced_input_array_is_detected_and_recomputed(photo_files, caplog):
    reference = extract_embeddings("pixels:8", photo_files, cache=False, input_cache=False)
    extract_embeddings("pixels:8", photo_files, cache=False, input_cache=True)
    (entry,) = _entries()
    path = _array_file(entry["key"])
    # Same shape and dtype, different values: only the content hash can tell.
    array = np.load(path)
    array[0, 0] += 0.25
    np.save(path, array)
    assert InputCache().load(entry["key"]) is None
    assert "does not match the sha256" in caplog.text
    assert not path.exists()
    out = extract_embeddings("pixels:8", photo_files, cache=False, input_cache=True)
    np.testing.assert_array_equal(out, reference)
    (again,) = _entries()  # recomputed and stored afresh
    assert again["key"] == entry["key"]
    assert InputCache().load(entry["key"]) is not None


@pytest.mark.parametrize("damage", ["truncate", "garbage", "other_shape"])
def test_damaged_input_files_are_misses(photo_files, damage):
    extract_embeddings("pixels:8", photo_files, cache=False, input_cache=True)
    (entry,) = _entries()
    path = _array_file(entry["key"])
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:-10])
    elif damage == "garbage":
        path.write_bytes(b"not an npy file at all")
    else:
        np.save(path, np.zeros((3, 5), dtype=np.float32))
    assert InputCache().load(entry["key"]) is None
    assert _entries() == []


# ---------------------------------------------------------------------------------------
# size limit and LRU eviction
# ---------------------------------------------------------------------------------------
def _put(store: InputCache, name: str, n: int = 10, width: int = 100) -> str:
    key = cache_key({"test": name})
    recorder = store.recorder(key, n, parts={"test": name}, info={"images": name})
    block = np.full((n, width), len(name), dtype=np.uint8)
    recorder.add(block[: n // 2])
    recorder.add(block[n // 2 :])
    assert recorder.commit()
    return key


def test_eviction_keeps_the_store_under_its_limit_in_lru_order(tmp_path):
    store = InputCache(tmp_path / "inputs", max_bytes=10**9)
    keys = {name: _put(store, name) for name in ("a", "b", "c")}
    entry_size = store.entries()[0]["size_bytes"]
    assert store.load(keys["a"]) is not None  # "a" is now the most recently used; "b" the least
    small = InputCache(tmp_path / "inputs", max_bytes=3 * entry_size)
    keys["d"] = _put(small, "d")
    left = [m["key"] for m in small.entries()]
    assert keys["b"] not in left
    assert left == [keys["c"], keys["a"], keys["d"]]  # least recently used first
    assert small.total_bytes() <= small.max_bytes
    keys["e"] = _put(small, "e")
    assert [m["key"] for m in small.entries()] == [keys["a"], keys["d"], keys["e"]]
    assert small.total_bytes() <= small.max_bytes


def test_an_entry_larger_than_the_limit_is_never_written(tmp_path):
    store = InputCache(tmp_path / "inputs", max_bytes=500)
    recorder = store.recorder("ab" * 32, 10, parts={}, info={})
    recorder.add(np.zeros((5, 100), dtype=np.uint8))
    assert not recorder.commit()
    assert store.entries() == []


def test_an_aborted_recording_leaves_nothing(tmp_path):
    store = InputCache(tmp_path / "inputs", max_bytes=10**6)
    recorder = store.recorder("cd" * 32, 10, parts={}, info={})
    recorder.add(np.zeros((5, 4), dtype=np.float32))
    assert not recorder.commit()  # only 5 of 10 rows: incomplete
    assert store.entries() == []
    assert not any(store.root.rglob("*.tmp"))


def test_an_extraction_that_fails_midway_records_nothing(photo_files, tmp_path):
    broken = list(photo_files.paths)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    broken[7] = tmp_path / "broken.png"
    with pytest.raises(InputError, match="broken.png"):
        extract_embeddings("pixels:8", FileImageSet(broken), cache=False, input_cache=True, batch_size=2)
    assert _entries() == []
    assert not any(InputCache().root.rglob("*.tmp"))


# ---------------------------------------------------------------------------------------
# keys
# ---------------------------------------------------------------------------------------
TFLITE_CONFIG = {
    "resize": [128, 128],
    "interpolation": "lanczos",
    "crop": "none",
    "input_mean": 128.0,
    "input_std": 128.0,
    "input_dtype": "uint8",
    "input_scale": 0.0078125,
    "input_zero_point": 128,
}
TIMM_CONFIG = {
    "transform": "timm.data.create_transform(is_training=False)",
    "timm_version": "1.0",
    "input_size": [3, 224, 224],
    "interpolation": "bicubic",
    "mean": [0.485, 0.456, 0.406],
    "std": [0.229, 0.224, 0.225],
    "crop_pct": 0.875,
    "crop_mode": "center",
}


def _key(config, **changes):
    parts = {"source": "tflite", "transform": "T", "preprocess_config": config, "images": "f" * 64}
    parts.update(changes)
    return cache_key(input_key_parts(code_version="2", **parts))


def _changed(value):
    if isinstance(value, list):
        return [*value[:-1], _changed(value[-1])]
    if isinstance(value, str):
        return value + "x"
    return value + 1 if isinstance(value, int) else value * 1.0001


@pytest.mark.parametrize("config", [TFLITE_CONFIG, TIMM_CONFIG], ids=["tflite", "timm"])
def test_keys_differ_when_any_preprocessing_field_differs(config):
    base = _key(config)
    keys = {base}
    for field in config:
        changed = _key({**config, field: _changed(config[field])})
        assert changed != base, field
        keys.add(changed)
        keys.add(_key({k: v for k, v in config.items() if k != field}))  # a field left out
    assert len(keys) == 1 + 2 * len(config)
    assert _key(dict(reversed(list(config.items())))) == base  # order of fields does not matter


def test_keys_differ_by_images_source_transform_and_code_version():
    base = _key(TFLITE_CONFIG)
    others = [
        _key(TFLITE_CONFIG, images="e" * 64),
        _key(TFLITE_CONFIG, source="timm"),
        _key(TFLITE_CONFIG, transform="U"),
        cache_key(
            input_key_parts(
                source="tflite", transform="T", preprocess_config=TFLITE_CONFIG, images="f" * 64, code_version="3"
            )
        ),
    ]
    assert len({base, *others}) == 5


def test_real_configs_of_different_sizes_get_different_entries(photo_files):
    images = ArrayImageSet(np.stack([np.asarray(photo_files.load(i)) for i in range(3)]), name="three")
    extract_embeddings("pixels:8", images, cache=False, input_cache=True)
    extract_embeddings("pixels:9", images, cache=False, input_cache=True)
    extract_embeddings("pixels", images, cache=False, input_cache=True)
    extract_embeddings("pixels:32", images, cache=False, input_cache=True)  # the same config as "pixels"
    assert sorted(tuple(m["shape"]) for m in _entries()) == [(3, 192), (3, 243), (3, 3072)]


# ---------------------------------------------------------------------------------------
# unit order
# ---------------------------------------------------------------------------------------
def test_order_by_preprocessing_groups_configurations_stably():
    models = ["pixels:16", "timm:resnet26@random", "pixels:8", "nosuch:model", "pixels:16", "timm:resnet34@random"]
    assert order_by_preprocessing(models) == [
        "pixels:16",
        "pixels:16",
        "timm:resnet26@random",
        "timm:resnet34@random",
        "pixels:8",
        "nosuch:model",
    ]
    assert order_by_preprocessing([]) == []


def test_plan_units_puts_models_of_one_configuration_together():
    from repalign.study.config import StudyConfig
    from repalign.study.plan import plan_units

    config = StudyConfig.from_dict({"study": {"name": "t"}, "models": {"include": ["pixels"]}})
    units = plan_units(config, ["pixels:8", "pixels:16", "pixels:8"])
    assert [u.model for u in units] == ["pixels:8", "pixels:8", "pixels:16"]


def test_store_path_is_below_the_cache_home(tmp_path):
    assert InputCache().root == tmp_path / "embeddings" / "inputs"
    assert os.fspath(InputCache().root).startswith(os.fspath(tmp_path))
