"""Tests of the content-addressed embedding store (repalign.embed.cache) and `repalign cache`."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from repalign.cli import main
from repalign.embed.cache import CACHE_FORMAT_VERSION, EmbeddingCache, cache_key, canonical_json
from repalign.errors import InputError

PARTS = {
    "model": {"resolved_id": "timm:resnet18.a1_in1k", "weights": "sha256:ab12"},
    "preprocess": {"input_size": [3, 224, 224], "mean": [0.485, 0.456, 0.406], "crop_pct": 0.875},
    "layer": "penultimate",
    "images": "f" * 64,
    "code_version": "1",
    "dtype": "float32",
}


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("REPALIGN_CACHE_HOME", str(tmp_path / "embeddings"))
    return EmbeddingCache()


def _put(store, model="timm:resnet18", layer="penultimate", n=5, d=3, dtype="float32", seed=0):
    parts = {**PARTS, "model": {"resolved_id": model, "seed": seed}, "layer": layer, "dtype": dtype}
    key = cache_key(parts)
    array = np.random.default_rng(seed).normal(size=(n, d)).astype(dtype)
    store.store(
        key, array, parts=parts, info={"model": model, "model_id": model + ".x", "layer": layer, "images": "imgs"}
    )
    return key, array


def test_key_is_sha256_of_canonical_json():
    expected = hashlib.sha256(
        json.dumps({"cache_format": CACHE_FORMAT_VERSION, **PARTS}, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()
    assert cache_key(PARTS) == expected


def test_key_ignores_dict_order_and_tuple_vs_list():
    shuffled = dict(reversed(list(PARTS.items())))
    shuffled["preprocess"] = {"crop_pct": 0.875, "mean": (0.485, 0.456, 0.406), "input_size": (3, 224, 224)}
    assert cache_key(shuffled) == cache_key(PARTS)


@pytest.mark.parametrize(
    "part, value",
    [
        ("model", {"resolved_id": "timm:resnet18.a1_in1k", "weights": "sha256:ab13"}),
        ("preprocess", {"input_size": [3, 224, 224], "mean": [0.485, 0.456, 0.406], "crop_pct": 0.9}),
        ("layer", "layer4"),
        ("images", "e" * 64),
        ("code_version", "2"),
        ("dtype", "float16"),
    ],
)
def test_any_part_change_changes_key(part, value):
    assert cache_key({**PARTS, part: value}) != cache_key(PARTS)


def test_unserialisable_part_is_an_input_error():
    with pytest.raises(InputError, match="must be JSON-serialisable"):
        canonical_json({"model": object()})


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_roundtrip_and_metadata(store, dtype):
    key, array = _put(store, dtype=dtype)
    got = store.load(key)
    assert got.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(got, array)
    (entry,) = store.entries()
    assert entry["key"] == key and (entry["n"], entry["d"], entry["dtype"]) == (5, 3, dtype)
    assert entry["model"] == "timm:resnet18" and entry["images"] == "imgs" and entry["created"]
    assert entry["parts"]["layer"] == "penultimate"
    assert entry["size_bytes"] == (store.root / key[:2] / f"{key}.npy").stat().st_size
    # atomic writes leave no temporary files behind
    assert not list(store.root.rglob("*.tmp"))


def test_miss_returns_none(store):
    assert store.load("0" * 64) is None and not store.contains("0" * 64)


def test_entry_without_metadata_is_a_miss(store):
    key, _ = _put(store)
    (store.root / key[:2] / f"{key}.json").unlink()
    assert store.load(key) is None and store.entries() == []


def test_corrupt_array_is_discarded(store, caplog):
    key, _ = _put(store)
    (store.root / key[:2] / f"{key}.npy").write_bytes(b"garbage")
    with caplog.at_level("WARNING", logger="repalign.embed.cache"):
        assert store.load(key) is None
    assert "Discarding unreadable" in caplog.text and not store.contains(key)


def test_shape_disagreeing_with_metadata_is_discarded(store):
    key, _ = _put(store)
    np.save(store.root / key[:2] / f"{key}.npy", np.zeros((2, 2), np.float32))
    assert store.load(key) is None


@pytest.mark.parametrize(
    "array, match",
    [(np.zeros(4, np.float32), "must be 2-D"), (np.zeros((2, 2), np.float64), "must be one of")],
)
def test_store_rejects_bad_arrays(store, array, match):
    with pytest.raises(InputError, match=match):
        store.store("a" * 64, array, parts={}, info={})


def test_entries_filter_clear_and_stats(store):
    _put(store, model="timm:resnet18", seed=0)
    _put(store, model="timm:resnet50", seed=1)
    key_tfl, _ = _put(store, model="tflite:mobilenet_v2", seed=2)
    assert len(store.entries()) == 3
    assert {e["model"] for e in store.entries(model="timm:*")} == {"timm:resnet18", "timm:resnet50"}
    assert len(store.entries(model="TIMM:RESNET5*")) == 1  # case-insensitive
    assert len(store.entries(model="*.x")) == 3  # matches the resolved id too
    stats = store.stats()
    assert stats["n_entries"] == 3 and stats["total_bytes"] == sum(e["size_bytes"] for e in store.entries())
    assert store.clear(model="timm:*") == 2
    assert [e["key"] for e in store.entries()] == [key_tfl]
    assert store.clear() == 1 and store.entries() == [] and store.stats()["n_entries"] == 0


def test_cli_list_json_and_table(store, capsys):
    key, _ = _put(store, model="timm:resnet18", n=7, d=4)
    assert main(["cache", "list", "--format", "json"]) == 0
    (record,) = json.loads(capsys.readouterr().out)
    assert record["key"] == key and record["n"] == 7 and record["d"] == 4 and record["model"] == "timm:resnet18"
    assert record["size"] == store.entries()[0]["size_bytes"]
    assert main(["cache", "list"]) == 0
    table = capsys.readouterr().out
    assert "timm:resnet18" in table and "1 cached embeddings" in table and "float32" in table


def test_cli_list_empty(store, capsys):
    assert main(["cache", "list"]) == 0
    assert "No cached embeddings" in capsys.readouterr().out


def test_cli_list_reports_the_input_cache(store, capsys, monkeypatch):
    from repalign.embed.inputs import InputCache

    monkeypatch.setenv("REPALIGN_INPUT_CACHE_BYTES", str(3 << 20))
    inputs = InputCache()
    for kind in ("decoded-images", "preprocessed-inputs"):
        recorder = inputs.recorder(kind[0] * 64, 1024, parts={"kind": kind}, info={"images": kind})
        recorder.add(np.zeros(1024, dtype=np.uint8))
        assert recorder.commit()
    assert main(["cache", "list"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("Input cache: 1 decoded image set(s) and 1 preprocessed input set(s), 2.2 KiB of 3.0 MiB")
    monkeypatch.setenv("REPALIGN_INPUT_CACHE_BYTES", "0")
    assert main(["cache", "list"]) == 0
    assert "Input cache: off (" in capsys.readouterr().out


def test_cli_clear_requires_confirmation(store, capsys, monkeypatch):
    _put(store, model="timm:resnet18", seed=0)
    _put(store, model="tflite:mobilenet_v2", seed=1)
    monkeypatch.setattr("sys.stdin.isatty", lambda: False, raising=False)
    assert main(["cache", "clear"]) == 2
    assert "pass --yes" in capsys.readouterr().err and len(store.entries()) == 2
    assert main(["cache", "clear", "--model", "tflite:*", "--yes"]) == 0
    assert "Deleted 1" in capsys.readouterr().out
    assert [e["model"] for e in store.entries()] == ["timm:resnet18"]
    assert main(["cache", "clear", "--yes"]) == 0 and store.entries() == []


def test_cli_clear_also_removes_preprocessed_inputs(store, capsys):
    """The input cache lives under the same home (``inputs/``); a full clear empties it too,
    a clear of some models leaves it (inputs belong to no model)."""
    from repalign.embed.inputs import InputCache

    inputs = InputCache(max_bytes=1 << 20)
    for name in ("a", "b"):
        recorder = inputs.recorder(name * 64, 4, parts={"test": name}, info={"images": name})
        recorder.add(np.arange(12, dtype=np.uint8).reshape(4, 3))
        assert recorder.commit()
    (inputs.root / "ab" / ("c" * 64 + ".npy")).parent.mkdir(parents=True, exist_ok=True)
    (inputs.root / "ab" / ("c" * 64 + ".npy")).write_bytes(b"orphan array, no metadata")
    _put(store, model="timm:resnet18")
    assert main(["cache", "clear", "--model", "timm:*", "--yes"]) == 0 and len(inputs.entries()) == 2
    assert main(["cache", "clear", "--yes"]) == 0  # nothing embedded left: the inputs alone are cleared
    assert "Deleted 2 input cache entries" in capsys.readouterr().out
    assert inputs.entries() == [] and list(inputs.root.rglob("*.npy")) == []
