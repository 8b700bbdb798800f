"""Each hostile or malformed input file of issue 13 (the input-file part), fed exactly as a user
or an attacker would hand it over, with the clean outcome asserted: a one-line repalign error
naming the file and the problem, or the documented behaviour -- and nothing else read, run or
changed. (tests/test_fuzz_inputs.py feeds random and damaged variants of the same files.)"""

from __future__ import annotations

import io
import json
import logging
import os
import pickle
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest

from repalign import _npy
from repalign.data._matrix_io import read_matrix, read_names
from repalign.data.human import load_human
from repalign.data.images import decode_image
from repalign.embed import load_embeddings_file
from repalign.errors import InputError, RepalignError
from repalign.fewshot import make_splits
from repalign.fewshot.splits import SplitManifest

PROJECT = Path(__file__).resolve().parents[1]
NAMES = ["cat.png", "dog.png", "emu.png", "fox.png"]


def _similarity() -> np.ndarray:
    x = np.random.default_rng(0).normal(size=(4, 3))
    return x @ x.T


def _dataset(root: Path, manifest: str, **files) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "repalign.toml").write_text(manifest)
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, np.ndarray):
            np.save(path, content)
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return root


def _one_line(exc_info) -> str:
    text = str(exc_info.value)
    assert "\n" not in text and isinstance(exc_info.value, RepalignError)
    return text


# ------------------------------------------------------------------ 1. .npy / .npz headers


def _header_only(shape, descr="<f8", version=(1, 0)) -> bytes:
    buffer = io.BytesIO()
    header = {"descr": descr, "fortran_order": False, "shape": shape}
    if version == (1, 0):
        np.lib.format.write_array_header_1_0(buffer, header)
    else:
        np.lib.format.write_array_header_2_0(buffer, header)
    return buffer.getvalue()


@pytest.mark.parametrize("version", [(1, 0), (2, 0)])
def test_a_header_declaring_a_huge_array_is_refused_before_any_allocation(tmp_path, version):
    path = tmp_path / "huge.npy"
    path.write_bytes(_header_only((10**9, 10**9), version=version))  # 8 exabytes declared, 128 bytes there
    expected = r"huge\.npy is truncated: its header declares a float64 array of shape \(1000000000, 1000000000\)"
    with pytest.raises(InputError, match=expected) as info:
        load_embeddings_file(path)
    _one_line(info)
    with pytest.raises(InputError, match=expected):
        read_matrix(path)


def test_an_array_the_file_does_hold_meets_the_size_limit(tmp_path, monkeypatch):
    # The declared size fits the file (as in a sparse file that claims terabytes): the limit stops it.
    np.save(tmp_path / "large.npy", np.zeros((256, 1024)))  # 2 MiB
    monkeypatch.setattr(_npy, "MAX_ARRAY_BYTES", 1 << 20)
    with pytest.raises(
        InputError, match=r"large\.npy declares a float64 array .*\(2 MiB\); repalign reads at most 1 MiB"
    ):
        load_embeddings_file(tmp_path / "large.npy")


def test_a_header_that_is_no_python_literal_is_a_one_line_error(tmp_path):
    # numpy re-tokenizes such a header, and the tokenizer's own error escaped np.load
    buffer = io.BytesIO()
    np.save(buffer, np.zeros((4, 3)))
    data = bytearray(buffer.getvalue())
    data[data.index(b"}")] = ord("(")
    (tmp_path / "paren.npy").write_bytes(bytes(data))
    with pytest.raises(InputError, match=r"paren\.npy has a damaged or truncated \.npy header") as info:
        load_embeddings_file(tmp_path / "paren.npy")
    assert "descr" not in _one_line(info)  # the header's text is not quoted


def _corrupt_deflate(path: Path, member: str) -> None:
    """Overwrite the compressed bytes of ``member`` (not its zip headers) with an invalid deflate stream."""
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(member)
    data = bytearray(path.read_bytes())
    name_length, extra_length = np.frombuffer(bytes(data[info.header_offset + 26 : info.header_offset + 30]), "<u2")
    start = info.header_offset + 30 + int(name_length) + int(extra_length)
    data[start : start + info.compress_size] = b"\xff" * info.compress_size  # 0xff: a reserved block type
    path.write_bytes(bytes(data))


def test_a_corrupt_compressed_member_is_a_one_line_error(tmp_path):
    np.savez_compressed(tmp_path / "e.npz", embeddings=np.ones((4, 3)), names=np.array(NAMES))
    _corrupt_deflate(tmp_path / "e.npz", "embeddings.npy")
    with pytest.raises(InputError, match=r"e\.npz is not an \.npz archive or is damaged: error: Error -3") as info:
        load_embeddings_file(tmp_path / "e.npz")
    _one_line(info)
    manifest = make_splits(np.repeat(np.arange(3), 6), shots=1, seeds=1)
    path = manifest.save(tmp_path / "s.npz")
    _corrupt_deflate(path, "meta.npy")
    with pytest.raises(InputError, match=r"s\.npz is not an \.npz archive or is damaged"):
        SplitManifest.load(path)


@pytest.mark.parametrize(
    "content, match",
    [
        (b"", r"empty\.npy is empty \(0 bytes\)"),
        (b"\x93NUMPY\x01\x00\x76", r"is truncated inside its \.npy header"),
        (b"\x93NUMPY\x09\x00" + b"x" * 100, r"damaged \.npy header \(format version 9\.0\)"),
        (b"\x93NUMPY\x02\x00\xff\xff\xff\x7f" + b"x" * 100, r"declares 2147483647 header bytes"),
        (_header_only((3,), descr="|O"), "holds Python objects, which only pickle could rebuild"),
        (pickle.dumps([1, 2, 3]), "is a pickle, not an .npy array"),
    ],
    ids=["empty", "cut-in-header", "unknown-version", "4-GB-header-length", "object-dtype", "pickle"],
)
def test_damaged_npy_files_are_one_line_errors(tmp_path, content, match):
    path = tmp_path / "empty.npy"
    path.write_bytes(content)
    with pytest.raises(InputError, match=match) as info:
        load_embeddings_file(path)
    assert "empty.npy" in _one_line(info)


def test_every_truncation_of_a_valid_npy_is_an_error_naming_the_file(tmp_path):
    buffer = io.BytesIO()
    np.save(buffer, np.arange(60, dtype=np.float32).reshape(6, 10))
    data = buffer.getvalue()
    for cut in range(len(data)):
        path = tmp_path / f"cut{cut}.npy"
        path.write_bytes(data[:cut])
        with pytest.raises(
            InputError, match=rf"cut{cut}\.npy (is empty|is truncated|has a damaged|is not an \.npy file)"
        ):
            read_matrix(path)


def test_an_npz_member_declaring_a_huge_array_is_refused(tmp_path):
    path = tmp_path / "huge.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("embeddings.npy", _header_only((10**9, 10**9)))
        archive.writestr("names.npy", _header_only((10**9,), descr="<U10"))
    with pytest.raises(InputError, match=r"huge\.npz \(member 'embeddings'\) is truncated: its header declares"):
        load_embeddings_file(path)


def test_a_compressed_npz_cannot_inflate_past_the_limit(tmp_path, monkeypatch):
    path = tmp_path / "bomb.npz"
    np.savez_compressed(path, sim=np.zeros((512, 512)), names=np.array(["a"] * 512))  # 2 MiB of zeros, ~2 KiB
    assert path.stat().st_size < 20_000
    monkeypatch.setattr(_npy, "MAX_ARRAY_BYTES", 1 << 20)
    with pytest.raises(InputError, match=r"bomb\.npz \(member 'sim'\) declares .* at most 1 MiB"):
        read_matrix(path, key="sim")
    monkeypatch.setattr(_npy, "MAX_ARRAY_BYTES", 3 << 20)  # the control: within the limit, it loads
    matrix, _ = read_matrix(path, key="sim")
    assert matrix.shape == (512, 512)


def test_the_checked_readers_return_what_numpy_wrote(tmp_path):
    arrays = {
        "f": np.random.default_rng(1).normal(size=(5, 3)),
        "fortran": np.asfortranarray(np.arange(12, dtype=np.int16).reshape(3, 4)),
        "names": np.array(["cat", "dög"]),
        "scalar": np.array("meta"),
    }
    np.savez_compressed(tmp_path / "a.npz", **arrays)
    loaded = _npy.read_npz(tmp_path / "a.npz")
    assert list(loaded) == list(arrays)
    for key, array in arrays.items():
        np.testing.assert_array_equal(loaded[key], array)
        assert loaded[key].dtype == array.dtype
    np.save(tmp_path / "f.npy", arrays["fortran"])
    np.testing.assert_array_equal(_npy.read_npy(tmp_path / "f.npy"), arrays["fortran"])


# ------------------------------------------------------------------ 2. images


def _png16(path: Path, values: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(values.astype(np.uint16)).save(path)


def test_a_16_bit_png_keeps_its_full_range(tmp_path):
    values = np.arange(0, 65536, 16, dtype=np.uint16).reshape(64, 64)
    _png16(tmp_path / "g16.png", values)
    rgb = np.asarray(decode_image(tmp_path / "g16.png"))
    expected = np.round(values / 257.0).astype(np.uint8)  # 65535 -> 255, 257 * k -> k
    assert rgb.shape == (64, 64, 3)
    np.testing.assert_array_equal(rgb[..., 0], expected)
    np.testing.assert_array_equal(rgb[..., 1], rgb[..., 2])
    assert len(np.unique(rgb)) == 256  # not the handful of levels clipping at 255 gave


def test_a_16_bit_tiff_is_scaled_like_a_png(tmp_path):
    from PIL import Image

    values = np.array([[0, 257, 514], [32896, 65278, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "g16.tif")
    np.testing.assert_array_equal(np.asarray(decode_image(tmp_path / "g16.tif"))[..., 0], [[0, 1, 2], [128, 254, 255]])


def test_a_float_tiff_in_0_1_is_scaled_by_255_and_other_ranges_are_refused(tmp_path):
    from PIL import Image

    values = np.linspace(0, 1, 64 * 64, dtype=np.float32).reshape(64, 64)
    Image.fromarray(values).save(tmp_path / "unit.tif")
    rgb = np.asarray(decode_image(tmp_path / "unit.tif"))
    np.testing.assert_array_equal(rgb[..., 0], np.round(values.astype(np.float64) * 255).astype(np.uint8))
    assert rgb.max() == 255  # not black
    Image.fromarray(values * 300).save(tmp_path / "wide.tif")
    with pytest.raises(InputError, match=r"wide\.tif holds floats in \[0, 300\]; float images must hold"):
        decode_image(tmp_path / "wide.tif")
    Image.fromarray(np.full((4, 4), np.nan, dtype=np.float32)).save(tmp_path / "nan.tif")
    with pytest.raises(InputError, match=r"nan\.tif holds NaN or infinite values"):
        decode_image(tmp_path / "nan.tif")


def test_a_32_bit_integer_tiff_is_refused(tmp_path):
    from PIL import Image

    Image.fromarray(np.full((4, 4), 70000, dtype=np.int32)).save(tmp_path / "i32.tif")
    with pytest.raises(InputError, match=r"i32\.tif holds 32-bit integers"):
        decode_image(tmp_path / "i32.tif")


def test_an_animated_gif_gives_its_first_frame_with_a_warning(tmp_path, caplog):
    from PIL import Image

    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    frames = [Image.new("RGB", (8, 8), c) for c in colours]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=100)
    with caplog.at_level(logging.WARNING, logger="repalign.data.images"):
        rgb = np.asarray(decode_image(tmp_path / "anim.gif"))
    assert (rgb == colours[0]).all()
    assert "anim.gif has 3 frames (animated or multi-page); using the first" in caplog.text


@pytest.mark.parametrize("factor", [1.5, 3], ids=["pillow-would-warn", "pillow-would-refuse"])
def test_more_pixels_than_the_bomb_limit_are_refused_not_warned(tmp_path, monkeypatch, factor):
    from PIL import Image

    Image.new("RGB", (100, 100), "white").save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", int(100 * 100 / factor))  # the user's own setting
    filters = list(warnings.filters)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with pytest.raises(InputError, match=r"big\.png has more pixels than the \d+ Pillow decodes safely"):
            decode_image(tmp_path / "big.png")
    assert not seen  # an error, not a warning
    assert warnings.filters == filters  # and no filter left behind
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100 * 100)  # at the limit: decoded
    assert decode_image(tmp_path / "big.png").size == (100, 100)


# ------------------------------------------------------------------ 3. BOMs and split manifests

BOM = b"\xef\xbb\xbf"


def test_text_files_with_a_utf8_bom_read_like_without(tmp_path):
    matrix = _similarity()
    csv = ",".join(["", *NAMES]) + "\n"
    csv += "".join(",".join([n, *(f"{v:.6f}" for v in row)]) + "\n" for n, row in zip(NAMES, matrix))
    root = _dataset(
        tmp_path / "toml",
        "",
        **{
            "sim.csv": BOM + csv.encode(),
            "names.txt": BOM + ("\n".join(NAMES)).encode(),
            "names.csv": BOM + ("name\n" + "\n".join(NAMES)).encode(),
            "t.csv": BOM + b"anchor,positive,negative\ncat.png,dog.png,emu.png\n",
        },
    )
    (root / "repalign.toml").write_bytes(BOM + b'similarity = "sim.csv"\nstimuli = "names.txt"\ntriplets = "t.csv"\n')
    (dataset,) = load_human(root)
    assert list(dataset.stimuli) == NAMES  # the first name carries no \ufeff
    np.testing.assert_allclose(dataset.similarity, (matrix + matrix.T) / 2, atol=1e-6)
    assert (dataset.judgments.a.tolist(), dataset.judgments.b.tolist(), dataset.judgments.c.tolist()) == ([0], [1], [2])
    assert read_names(root / "names.csv") == NAMES
    (root / "repalign.toml").unlink()
    (root / "repalign.json").write_bytes(BOM + json.dumps({"similarity": "sim.csv", "stimuli": "names.csv"}).encode())
    assert list(load_human(root)[0].stimuli) == NAMES


def _split_json(tmp_path, edit) -> Path:
    manifest = make_splits(np.repeat(np.arange(3), 6), shots=(1, 2), seeds=2)
    path = manifest.save(tmp_path / "splits.json")
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda d: d["splits"][0]["train"].__setitem__(0, 1.5), r"train must hold integer indices; got '1\.5'"),
        (lambda d: d["splits"][0]["eval"].__setitem__(0, "3"), r"eval must hold integer indices; got \"'3'\""),
        (lambda d: d["splits"][0]["train"].__setitem__(0, True), "train must hold integer indices; got 'True'"),
        (lambda d: d["splits"][0].__setitem__("seed", 0.0), r"seed must be an integer; got '0\.0'"),
        (lambda d: d["splits"][1].__setitem__("train", {"a": 1}), "train must be a list of integers; got dict"),
        (lambda d: d.__setitem__("version", 2), "of version '2'; this repalign reads version 1"),
        (lambda d: d.__setitem__("version", "1"), "of version \"'1'\"; this repalign reads version 1"),
        (lambda d: d.pop("version"), "of version 'None'; this repalign reads version 1"),
        (lambda d: d.__setitem__("format", "other"), "is not a repalign split manifest"),
        (lambda d: d.__setitem__("n_examples", "18"), "n_examples must be an integer"),
        (lambda d: d["splits"].append(dict(d["splits"][0])), "seed=0, shots=1 appears twice"),
    ],
    ids=[
        "float",
        "string",
        "bool",
        "float-seed",
        "dict",
        "version-2",
        "version-str",
        "no-version",
        "format",
        "n",
        "dup",
    ],
)
def test_malformed_split_manifests_are_refused(tmp_path, edit, match):
    with pytest.raises(InputError, match=match) as info:
        SplitManifest.load(_split_json(tmp_path, edit))
    _one_line(info)


def test_an_npz_split_manifest_with_float_indices_is_refused(tmp_path):
    manifest = make_splits(np.repeat(np.arange(3), 6), shots=1, seeds=1)
    path = manifest.save(tmp_path / "splits.npz")
    arrays = _npy.read_npz(path)
    arrays["train__seed0__shots1"] = arrays["train__seed0__shots1"] + 0.5
    np.savez(path, **arrays)
    with pytest.raises(InputError, match="train must be a 1-D integer array; got float64"):
        SplitManifest.load(path)
    loaded = SplitManifest.load(manifest.save(tmp_path / "ok.npz"))  # the control
    np.testing.assert_array_equal(loaded.split(0, 1).train, manifest.split(0, 1).train)


def test_triplet_columns_repeated_in_another_case_are_refused(tmp_path):
    root = _dataset(
        tmp_path / "ds",
        'triplets = "t.csv"\nstimuli = ["a", "b", "c"]\n',
        **{"t.csv": "Anchor,anchor,positive,negative\na,a,b,c\n"},
    )
    with pytest.raises(InputError, match=r"t\.csv names column\(s\) 'anchor' more than once"):
        load_human(root)


def test_a_split_manifest_that_is_not_utf8_is_not_quoted_back(tmp_path):
    path = tmp_path / "s.json"
    path.write_bytes(b"\xe9" + bytes(range(256)) * 8)
    with pytest.raises(InputError, match=r"Malformed split manifest .*s\.json: 'utf-8' codec can't decode") as info:
        SplitManifest.load(path)
    assert len(_one_line(info)) < 300


# ------------------------------------------------------------------ 4. paths out of the folder


SECRET = "root:x:0:0:the-secret-line:/root:/bin/bash"


@pytest.fixture
def secret(tmp_path) -> Path:
    path = tmp_path / "elsewhere" / "passwd"
    path.parent.mkdir()
    path.write_text("\n".join([SECRET] * 5) + "\n")
    return path


@pytest.mark.parametrize("key", ["stimuli", "similarity", "triplets"])
def test_a_manifest_path_leading_out_of_the_folder_is_refused_without_reading_it(tmp_path, secret, key):
    root = tmp_path / "deep" / "er" / "ds"
    relative = os.path.relpath(secret, root)  # ../../../elsewhere/passwd
    manifest = {
        "stimuli": f'similarity = "s.npy"\nstimuli = "{relative}"\n',
        "similarity": f'similarity = "{relative}"\nstimuli = {json.dumps(NAMES)}\n',
        "triplets": f'triplets = "{relative}"\n',
    }[key]
    _dataset(root, manifest, **{"s.npy": _similarity()})
    with pytest.raises(InputError, match=rf"'{key}' = .* leads outside the dataset folder .* allow_outside = true"):
        load_human(root)
    (root / "repalign.toml").write_text(manifest.replace(relative, str(secret)))  # an absolute path
    with pytest.raises(InputError, match="leads outside the dataset folder") as info:
        load_human(root)
    assert "secret-line" not in _one_line(info)


def test_symlinks_out_of_the_folder_are_refused_and_allow_outside_opts_in(tmp_path, secret):
    from PIL import Image

    outside_images = tmp_path / "shared-images"
    outside_images.mkdir()
    for i, name in enumerate(NAMES):
        Image.new("RGB", (4, 4), (50 * i, 0, 0)).save(outside_images / name)
    root = _dataset(tmp_path / "ds", 'similarity = "s.npy"\nimages = "images"\n', **{"s.npy": _similarity()})
    (root / "images").mkdir()
    for name in NAMES:
        (root / "images" / name).symlink_to(outside_images / name)
    with pytest.raises(InputError, match=r"image file 'cat\.png' leads outside the dataset folder"):
        load_human(root)
    (root / "repalign.toml").write_text('similarity = "s.npy"\nimages = "images"\nallow_outside = true\n')
    (dataset,) = load_human(root)
    assert dataset.stimuli == tuple(NAMES) and dataset.has_images
    # a symlinked name list is refused as well, and allowed with the opt-in
    (root / "names.txt").symlink_to(secret)
    (root / "repalign.toml").write_text('similarity = "s.npy"\nstimuli = "names.txt"\n')
    with pytest.raises(InputError, match=r"'stimuli' = 'names\.txt' leads outside the dataset folder"):
        load_human(root)
    (root / "repalign.toml").write_text('similarity = "s.npy"\nstimuli = "names.txt"\nallow_outside = true\n')
    with pytest.raises(InputError, match="5 stimulus names for a 4x4 matrix"):  # read, as asked
        load_human(root)


def test_files_inside_the_folder_may_be_symlinks_within_it(tmp_path):
    root = _dataset(tmp_path / "ds", 'similarity = "link.npy"\nstimuli = "sub/../names.txt"\n')
    (root / "sub").mkdir()
    np.save(root / "data.npy", _similarity())
    (root / "link.npy").symlink_to(root / "data.npy")
    (root / "names.txt").write_text("\n".join(NAMES))
    assert load_human(root)[0].stimuli == tuple(NAMES)


@pytest.mark.parametrize(
    "files, match",
    [
        ({"names.txt": "\n".join(["x" * 5000] * 4)}, r"duplicate stimulus name\(s\): 'x{29}\.\.\.'"),
        ({"s.csv": "1,2\n3," + "y" * 5000 + "\n"}, r"Non-numeric entry 'y{29}\.\.\.' in s\.csv at row 2, column 2"),
        ({"names.csv": "z" * 5000 + ",b\n1,2\n"}, r"found columns: 'z{29}\.\.\.', 'b'"),
        ({"names.txt": "a\nb\x1b[31mred\nc\nd\n"}, r"match no image file .*'b\\x1b\[31mred'"),
    ],
    ids=["long-names", "long-cell", "long-header", "control-characters"],
)
def test_errors_quote_only_short_escaped_tokens_of_a_file(tmp_path, files, match):
    manifest = {
        "names.txt": 'similarity = "s.npy"\nstimuli = "names.txt"\n',
        "s.csv": 'similarity = "s.csv"\nstimuli = ["a", "b"]\n',
        "names.csv": 'similarity = "s.npy"\nstimuli = "names.csv"\n',
    }[next(iter(files))]
    if "\x1b" in next(iter(files.values())):
        manifest += 'images = "images"\n'
        files = {**files, "images/a.png": b"", "images/c.png": b"", "images/d.png": b"", "images/e.png": b""}
    root = _dataset(tmp_path / "ds", manifest, **{"s.npy": _similarity(), **files})
    with pytest.raises(InputError, match=match) as info:
        load_human(root)
    assert len(_one_line(info)) < 400


# ------------------------------------------------------------------ 5. the embedding cache


def test_a_cache_entry_replaced_by_another_array_is_recomputed_not_used(tmp_path, monkeypatch, caplog):
    from repalign.data.images import ArrayImageSet
    from repalign.embed import EmbeddingCache, embedding_cache_key, extract_embeddings

    monkeypatch.setenv("REPALIGN_CACHE_HOME", str(tmp_path / "cache"))
    images = ArrayImageSet(np.random.default_rng(0).integers(0, 255, (5, 8, 8, 3), dtype=np.uint8), name="toy")
    truth = extract_embeddings("pixels", images, device="cpu")
    key = embedding_cache_key("pixels", images)
    store = EmbeddingCache()
    np.save(store.root / key[:2] / f"{key}.npy", np.zeros_like(truth))  # same shape and dtype
    with caplog.at_level(logging.WARNING, logger="repalign.embed.cache"):
        again = extract_embeddings("pixels", images, device="cpu")
    np.testing.assert_array_equal(again, truth)
    assert "does not match the sha256 stored with it" in caplog.text
    np.testing.assert_array_equal(store.load(key), truth)  # rewritten with its hash, a hit again


def test_cache_entries_without_a_hash_are_misses_with_one_warning(tmp_path, caplog):
    from repalign.embed import EmbeddingCache
    from repalign.embed import cache as cache_module

    store = EmbeddingCache(tmp_path / "cache")
    keys = []
    for seed in range(2):
        key = f"{seed}" * 64
        store.store(key, np.ones((2, 3), np.float32), parts={}, info={})
        meta_path = store.root / key[:2] / f"{key}.json"
        meta = json.loads(meta_path.read_text())
        del meta["sha256"]  # as an older repalign wrote it
        meta_path.write_text(json.dumps(meta))
        keys.append(key)
    cache_module._warned_unhashed.discard(str(store.root))
    with caplog.at_level(logging.WARNING, logger="repalign.embed.cache"):
        assert [store.load(k) for k in keys] == [None, None]
    assert caplog.text.count("without a content hash") == 1
    assert not any(store.contains(k) for k in keys)


# ------------------------------------------------------------------ 6. weights files


class _Boom:
    """Unpickling this writes a file: the proof that a loader ran code from a weights file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.fixture
def weight_files(tmp_path):
    torch = pytest.importorskip("torch")
    marker = tmp_path / "pwned"
    files = {}
    torch.save({"state_dict": _Boom(marker)}, tmp_path / "evil.pth")
    files["evil"] = tmp_path / "evil.pth"
    (tmp_path / "evil-raw.pth").write_bytes(pickle.dumps(_Boom(marker)))  # a plain (legacy) pickle
    files["evil-raw"] = tmp_path / "evil-raw.pth"
    (tmp_path / "random.pth").write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    files["random"] = tmp_path / "random.pth"
    torch.save({"conv.weight": torch.zeros(64, 3, 3, 3), "fc.bias": torch.zeros(10)}, tmp_path / "whole.pth")
    data = (tmp_path / "whole.pth").read_bytes()
    (tmp_path / "truncated.pth").write_bytes(data[: len(data) // 2])
    files["truncated"] = tmp_path / "truncated.pth"
    torch.save(torch.zeros(3), tmp_path / "tensor.pth")
    files["tensor"] = tmp_path / "tensor.pth"
    return files, marker


@pytest.mark.parametrize("model", ["torchvision:resnet18", "cifar_resnet:resnet20"])
def test_hostile_or_garbage_weights_are_one_line_errors_and_never_run(weight_files, model):
    from repalign.models import load_model

    files, marker = weight_files
    expected = {
        "evil": "holds Python objects other than tensors, which repalign never loads",
        "evil-raw": "is not a PyTorch checkpoint, or it is damaged",  # refused at its first opcode
        "random": "is not a PyTorch checkpoint, or it is damaged",
        "truncated": "is not a PyTorch checkpoint, or it is damaged",
        "tensor": "holds Tensor, not a state dict of named tensors",
    }
    for kind, path in files.items():
        with pytest.raises(InputError, match=expected[kind]) as info:
            load_model(model, weights=path, device="cpu")
        text = _one_line(info)
        assert path.name in text and "weights_only" not in text
        assert not marker.exists(), f"{kind}: loading ran code from the file"


def test_hostile_or_garbage_timm_weights_are_one_line_errors_and_never_run(weight_files):
    """timm loads --weights through its own loader (weights_only=True); its failures on hostile or
    damaged files become one line that never suggests a full unpickle."""
    pytest.importorskip("timm")
    from repalign.models import load_model

    files, marker = weight_files
    for kind, path in files.items():
        with pytest.raises(InputError, match=r"is not a readable weights file|does not fit timm model") as info:
            load_model("timm:resnet18", weights=path, device="cpu")
        text = _one_line(info)
        assert path.name in text and "weights_only" not in text and "unsafe" not in text.lower()
        assert not marker.exists(), f"{kind}: loading ran code from the file"


# ------------------------------------------------------------------ 7. data/cache homes


@pytest.mark.parametrize("variable", ["REPALIGN_CACHE_HOME", "REPALIGN_DATA_HOME"])
def test_a_home_variable_pointing_at_a_file_is_a_one_line_error(tmp_path, monkeypatch, variable):
    from repalign import _paths

    (tmp_path / "file").write_text("x")
    home = {"REPALIGN_CACHE_HOME": _paths.cache_home, "REPALIGN_DATA_HOME": _paths.data_home}[variable]
    for value, where in [(tmp_path / "file", "is a file"), (tmp_path / "file" / "sub", "lies below the file")]:
        monkeypatch.setenv(variable, str(value))
        with pytest.raises(InputError, match=rf"{variable}=.*{where}.*point {variable} at a folder") as info:
            home()
        _one_line(info)
    monkeypatch.setenv(variable, str(tmp_path / "new" / "folder"))  # missing folders are fine: created later
    assert home() == tmp_path / "new" / "folder"


def test_the_cli_reports_a_cache_home_that_is_a_file(tmp_path):
    (tmp_path / "file").write_text("x")
    result = subprocess.run(
        [sys.executable, "-m", "repalign", "cache", "list"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(PROJECT / "src"), "REPALIGN_CACHE_HOME": str(tmp_path / "file")},
        timeout=120,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"repalign: error: REPALIGN_CACHE_HOME={tmp_path / 'file'} is a file; point REPALIGN_CACHE_HOME at a "
        "folder (it is created if missing)"
    ]


# ------------------------------------------------------------------ 8. DataLoader workers


def test_workers_above_the_cpu_count_are_lowered_with_a_warning(caplog):
    from repalign.embed.engine import bound_num_workers, usable_cpus

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert usable_cpus() == cpus
    with caplog.at_level(logging.WARNING, logger="repalign.embed.engine"):
        assert bound_num_workers(100_000) == cpus
    assert f"num_workers=100000 is more than the {cpus} CPUs" in caplog.text
    caplog.clear()
    assert bound_num_workers(cpus) == cpus and bound_num_workers(0) == 0 and bound_num_workers(None) is None
    assert not caplog.text


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs CPU affinity (Linux)")
def test_extract_embeddings_with_100000_workers_starts_one_per_cpu(tmp_path):
    pytest.importorskip("torch")
    # A fresh process pinned to one CPU: the bound is 1, whatever the machine running the tests has.
    script = (
        "import logging, os, numpy as np\n"
        "os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})\n"
        "logging.basicConfig(level=logging.INFO, format='%(message)s')\n"
        "from repalign.data.images import ArrayImageSet\n"
        "from repalign.embed import extract_embeddings\n"
        "images = ArrayImageSet(np.zeros((6, 8, 8, 3), np.uint8), name='toy')\n"
        "x = extract_embeddings('pixels', images, num_workers=100000, batch_size=2, cache=False, device='cpu')\n"
        "print('rows', x.shape[0])\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(PROJECT / "src"), "REPALIGN_CACHE_HOME": str(tmp_path)},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "num_workers=100000 is more than the 1 CPUs this process may use; using 1" in result.stderr
    assert "(batch 2, 1 workers)" in result.stderr and "rows 6" in result.stdout
