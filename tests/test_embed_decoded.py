"""Tests of decoded image files kept once per image set (repalign.embed.decoded).

Oracles: ``repalign.data.images.decode_image`` for the pixels, and the same model run with
the input cache off for the features (bit for bit).
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from PIL import Image

from repalign.data.images import FileImageSet, SubsetImageSet, decode_image
from repalign.embed import InputCache, extract_embeddings
from repalign.embed import inputs as inputs_module
from repalign.embed.decoded import DecodedImageSet, decoded_images, image_files
from repalign.embed.engine import EXTRACTION_CODE_VERSION
from repalign.errors import InputError


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("REPALIGN_CACHE_HOME", str(tmp_path / "embeddings"))
    monkeypatch.setenv("REPALIGN_INPUT_CACHE_BYTES", str(1 << 30))


@pytest.fixture
def mixed_files(tmp_path):
    """Eight PNG files of two sizes in every mode decode_image converts (RGB, RGBA, L, P, I;16)."""
    rng = np.random.default_rng(11)
    paths = []
    for k in range(8):
        height, width = (30, 44) if k % 2 else (37, 25)
        rgb = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
        img = Image.fromarray(rgb)
        if k % 5 == 1:
            img = img.convert("RGBA")
            img.putalpha(Image.fromarray(rng.integers(0, 256, size=(height, width), dtype=np.uint8)))
        elif k % 5 == 2:
            img = img.convert("L")
        elif k % 5 == 3:
            img = img.convert("P")
        elif k % 5 == 4:
            img = Image.fromarray(rng.integers(0, 65536, size=(height, width), dtype=np.uint16))
        path = tmp_path / f"image{k}.png"
        img.save(path)
        paths.append(path)
    return FileImageSet(paths, name="mixed8")


def _decoded(images, threads: int = 1):
    return decoded_images(images, InputCache(), code_version=EXTRACTION_CODE_VERSION, threads=threads)


def _refuse_decoding(images, monkeypatch):
    def refuse(index):
        raise AssertionError(f"image {index} was decoded from its file")

    monkeypatch.setattr(images, "load", refuse)


def _decoded_entries() -> list[dict]:
    return [m for m in InputCache().entries() if m["parts"]["kind"] == "decoded-images"]


@pytest.mark.parametrize("threads", [1, 3])
def test_decoded_images_are_the_files_decoded(mixed_files, threads):
    decoded = _decoded(mixed_files, threads=threads)
    assert isinstance(decoded, DecodedImageSet)
    assert (len(decoded), decoded.name, decoded.fingerprint()) == (8, "mixed8", mixed_files.fingerprint())
    for i, path in enumerate(mixed_files.paths):
        image = decoded.load(i)
        assert image.mode == "RGB"
        np.testing.assert_array_equal(np.asarray(image), np.asarray(decode_image(path)))
    (entry,) = _decoded_entries()
    assert entry["size_bytes"] > sum(np.asarray(decode_image(p)).nbytes for p in mixed_files.paths)  # + npy header


def test_a_second_read_uses_the_entry_without_decoding(mixed_files, monkeypatch):
    first = _decoded(mixed_files)
    _refuse_decoding(mixed_files, monkeypatch)
    again = _decoded(mixed_files)
    assert isinstance(again, DecodedImageSet)
    for i in range(len(mixed_files)):
        np.testing.assert_array_equal(np.asarray(again.load(i)), np.asarray(first.load(i)))
    assert len(_decoded_entries()) == 1


def test_a_subset_reads_its_own_files(mixed_files):
    subset = SubsetImageSet(mixed_files, [5, 0, 3])
    assert image_files(subset) == [mixed_files.paths[i] for i in (5, 0, 3)]
    decoded = _decoded(subset)
    for i, k in enumerate((5, 0, 3)):
        np.testing.assert_array_equal(np.asarray(decoded.load(i)), np.asarray(decode_image(mixed_files.paths[k])))


def test_features_of_every_configuration_come_from_one_decode(mixed_files, monkeypatch):
    """The first model decodes the files; a model of another configuration reads the pixels."""
    references = {
        m: extract_embeddings(m, mixed_files, cache=False, input_cache=False) for m in ("pixels:8", "pixels:12")
    }
    first = extract_embeddings("pixels:8", mixed_files, cache=False, input_cache=True)
    np.testing.assert_array_equal(first, references["pixels:8"])
    with monkeypatch.context() as m:
        _refuse_decoding(mixed_files, m)
        other = extract_embeddings("pixels:12", mixed_files, cache=False, input_cache=True)
    np.testing.assert_array_equal(other, references["pixels:12"])


def test_pickled_decoded_set_carries_the_path_not_the_pixels(mixed_files):
    decoded = _decoded(mixed_files)
    decoded.load(0)
    payload = pickle.dumps(decoded)
    pixels = sum(np.asarray(decoded.load(i)).nbytes for i in range(len(decoded)))
    assert len(payload) < pixels / 2
    restored = pickle.loads(payload)  # noqa: S301 - our own object, pickled in this test
    for i in range(len(decoded)):
        np.testing.assert_array_equal(np.asarray(restored.load(i)), np.asarray(decoded.load(i)))


def test_a_set_larger_than_the_limit_is_not_kept(mixed_files, monkeypatch):
    total = sum(np.asarray(decode_image(p)).nbytes for p in mixed_files.paths)
    monkeypatch.setenv("REPALIGN_INPUT_CACHE_BYTES", str(total - 1))
    assert _decoded(mixed_files) is mixed_files
    assert _decoded_entries() == []
    monkeypatch.setenv("REPALIGN_INPUT_CACHE_BYTES", "0")  # the store switched off keeps nothing either
    assert _decoded(mixed_files) is mixed_files


def test_a_corrupt_file_keeps_nothing_and_extraction_reports_it(mixed_files):
    broken = list(mixed_files.paths)
    broken[3].write_bytes(broken[3].read_bytes()[:60])  # the header survives, the pixels do not
    images = FileImageSet(broken, name="broken")
    assert _decoded(images, threads=2) is images
    assert _decoded_entries() == []
    with pytest.raises(InputError, match=f"Corrupt or unreadable image file: {broken[3]}"):
        extract_embeddings("pixels:8", images, cache=False, input_cache=True, batch_size=2)
    assert InputCache().entries() == []


def test_an_entry_is_hashed_once_per_process_until_its_file_changes(mixed_files, monkeypatch):
    _decoded(mixed_files)
    (entry,) = _decoded_entries()
    checks = []
    original = inputs_module.check_cached_array
    monkeypatch.setattr(
        inputs_module, "check_cached_array", lambda *args: checks.append(1) or original(*args), raising=True
    )
    store = InputCache()
    for _ in range(3):
        assert store.load(entry["key"]) is not None
    assert checks == []  # this process wrote the entry, hashing its bytes as it went
    path = store.array_path(entry["key"])
    pixels = np.load(path)
    pixels[0] ^= 1  # same size, new content and modification time
    np.save(path, pixels)
    assert store.load(entry["key"]) is None  # hashed again, found changed, removed
    assert _decoded_entries() == []


def test_an_entry_this_process_wrote_is_read_back_without_hashing(mixed_files, monkeypatch):
    """The recorder hashed the bytes as it wrote them; reading them back must not hash again."""
    checks = []
    original = inputs_module.check_cached_array
    monkeypatch.setattr(inputs_module, "check_cached_array", lambda *args: checks.append(1) or original(*args))
    assert isinstance(_decoded(mixed_files), DecodedImageSet)  # decoded, written, then read back
    assert checks == []
    inputs_module._verified.clear()  # another process: it hashes the entry on its first read
    assert isinstance(_decoded(mixed_files), DecodedImageSet)
    assert checks == [1]
