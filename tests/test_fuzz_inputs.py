"""Fuzzing the readers of every file a user hands repalign.

For each kind of file -- a dataset manifest (TOML, JSON), a similarity matrix (.npy, .npz,
.csv), a stimulus list, a triplet CSV, an embeddings file (.npy, .npz), an image, a split
manifest (JSON, .npz) -- seeded inputs go through the public loader: random bytes, random
bytes behind the format's own magic (so they get past the first check), every prefix length
of a valid file on a grid (truncations), and valid files with a few bytes overwritten. The
loader must either return or raise a repalign error (the CLI turns those into exit code 2
and one line); a bare ValueError, EOFError, UnicodeDecodeError, MemoryError ... escaping is a
defect. A few of the inputs then go through the CLI in a fresh process, which must exit 2 with
exactly one line on stderr.

``N_RANDOM``, ``N_TRUNCATIONS`` and ``N_MUTATIONS`` set the inputs per kind; docs/hardening.md
states the total (test_the_documented_count_is_what_runs keeps the two in step).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from repalign.data.human import load_human
from repalign.data.images import decode_image
from repalign.embed import load_embeddings_file
from repalign.errors import RepalignError
from repalign.fewshot import make_splits
from repalign.fewshot.splits import SplitManifest

PROJECT = Path(__file__).resolve().parents[1]
N_RANDOM = 40  # pure random bytes, then random bytes behind the format's magic
N_TRUNCATIONS = 40
N_MUTATIONS = 120
NAMES = ["cat.png", "dog.png", "emu.png", "fox.png"]


# ----------------------------------------------------------------------------- valid seeds


def _similarity() -> np.ndarray:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 3))
    return x @ x.T


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _npz(compressed: bool = False, **arrays) -> bytes:
    buffer = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buffer, **arrays)
    return buffer.getvalue()


def _image(fmt: str) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(1)
    buffer = io.BytesIO()
    if fmt == "GIF":
        frames = [Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)).convert("P") for _ in range(2)]
        frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:])
    elif fmt == "TIFF16":
        Image.fromarray(rng.integers(0, 65535, (12, 12), dtype=np.uint16)).save(buffer, "TIFF")
    else:
        Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)).save(buffer, fmt)
    return buffer.getvalue()


def _csv_matrix() -> bytes:
    rows = [",".join(["", *NAMES])]
    rows += [",".join([name, *(f"{v:.4f}" for v in row)]) for name, row in zip(NAMES, _similarity())]
    return ("\n".join(rows) + "\n").encode()


def _split_manifest(suffix: str, tmp: Path) -> bytes:
    manifest = make_splits(np.repeat(np.arange(3), 6), shots=(1, 2), seeds=2)
    return manifest.save(tmp / f"seed{suffix}").read_bytes()


# Each kind: (file name the fuzzed bytes are written to, the valid seed's bytes, magic prefix)
def _kinds(tmp: Path) -> dict[str, tuple[str, bytes, bytes]]:
    return {
        "manifest.toml": (
            "repalign.toml",
            b'name = "fuzz"\nsimilarity = "s.npy"\nstimuli = "names.txt"\nsymmetrize = false\n',
            b"similarity = ",
        ),
        "manifest.json": (
            "repalign.json",
            json.dumps({"name": "fuzz", "similarity": "s.npy", "stimuli": "names.txt"}).encode(),
            b'{"similarity": ',
        ),
        "matrix.npy": ("s.npy", _npy(_similarity()), b"\x93NUMPY\x01\x00"),
        "matrix.npz": ("m.npz", _npz(sim=_similarity(), names=np.array(NAMES)), b"PK\x03\x04"),
        "matrix.csv": ("m.csv", _csv_matrix(), b",cat.png,"),
        "names.txt": ("names.txt", ("\n".join(NAMES) + "\n").encode(), b"\xef\xbb\xbf"),
        "triplets.csv": ("t.csv", b"anchor,positive,negative,count\ncat,dog,emu,2\nfox,emu,cat,1\n", b"anchor,"),
        "embeddings.npy": ("e.npy", _npy(np.random.default_rng(2).normal(size=(4, 5))), b"\x93NUMPY\x01\x00"),
        "embeddings.npz": (
            "e.npz",
            _npz(True, embeddings=np.random.default_rng(3).normal(size=(4, 5)), names=np.array(NAMES)),
            b"PK\x03\x04",
        ),
        "image.png": ("i.png", _image("PNG"), b"\x89PNG\r\n\x1a\n"),
        "image.gif": ("i.gif", _image("GIF"), b"GIF89a"),
        "image.jpg": ("i.jpg", _image("JPEG"), b"\xff\xd8\xff"),
        "image.tif": ("i.tif", _image("TIFF16"), b"II*\x00"),
        "splits.json": ("s.json", _split_manifest(".json", tmp), b'{"format": "repalign-fewshot-splits", '),
        "splits.npz": ("s.npz", _split_manifest(".npz", tmp), b"PK\x03\x04"),
    }


# ----------------------------------------------------------------------------- the loaders


def _dataset(root: Path, manifest: bytes | None = None, **files: bytes) -> Path:
    """A valid 4-stimulus dataset folder; ``files`` replace (or add) its files."""
    root.mkdir(parents=True, exist_ok=True)
    contents = {
        "s.npy": _npy(_similarity()),
        "names.txt": ("\n".join(NAMES) + "\n").encode(),
        **files,
    }
    for name, data in contents.items():
        (root / name).write_bytes(data)
    if manifest is not None:
        (root / "repalign.toml").write_bytes(manifest)
    return root


def _load(kind: str, folder: Path, name: str, data: bytes):
    """Feed ``data`` as a file of ``kind`` through the public loader of that kind."""
    if kind.startswith("manifest"):
        root = _dataset(folder)
        (root / name).write_bytes(data)
        return load_human(root)
    if kind == "matrix.npy":
        return load_human(_dataset(folder, b'similarity = "s.npy"\nstimuli = "names.txt"\n', **{name: data}))
    if kind == "matrix.npz":
        manifest = b'similarity = "m.npz"\nmatrix_key = "sim"\nnames_key = "names"\n'
        return load_human(_dataset(folder, manifest, **{name: data}))
    if kind == "matrix.csv":
        return load_human(_dataset(folder, b'dissimilarity = "m.csv"\n', **{name: data}))
    if kind == "names.txt":
        return load_human(_dataset(folder, b'similarity = "s.npy"\nstimuli = "names.txt"\n', **{name: data}))
    if kind == "triplets.csv":
        manifest = b'triplets = "t.csv"\nstimuli = ["cat", "dog", "emu", "fox"]\n'
        return load_human(_dataset(folder, manifest, **{name: data}))
    path = folder / name
    folder.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if kind.startswith("embeddings"):
        return load_embeddings_file(path)
    if kind.startswith("image"):
        return decode_image(path)
    if kind.startswith("splits"):
        return SplitManifest.load(path)
    raise AssertionError(kind)


# ----------------------------------------------------------------------------- the inputs


def _inputs(seed: bytes, magic: bytes, rng: np.random.Generator) -> list[bytes]:
    """Random bytes, random bytes behind the magic, truncations and mutations of ``seed``."""
    out = [b""]
    for i in range(N_RANDOM - 1):
        noise = rng.integers(0, 256, int(rng.integers(1, 600)), dtype=np.uint8).tobytes()
        out.append(noise if i % 2 == 0 else magic + noise)
    cuts = np.unique(np.linspace(1, len(seed) - 1, N_TRUNCATIONS).astype(int))
    out += [seed[:cut] for cut in cuts]
    out += [seed[: len(seed) - 1]] * (N_TRUNCATIONS - len(cuts))  # short seeds: pad to the same count
    for _ in range(N_MUTATIONS):
        data = bytearray(seed)
        for position in rng.integers(0, len(data), int(rng.integers(1, 4))):
            data[position] = int(rng.integers(0, 256))
        out.append(bytes(data))
    return out


N_PER_KIND = N_RANDOM + N_TRUNCATIONS + N_MUTATIONS
KIND_NAMES = [
    "manifest.toml",
    "manifest.json",
    "matrix.npy",
    "matrix.npz",
    "matrix.csv",
    "names.txt",
    "triplets.csv",
    "embeddings.npy",
    "embeddings.npz",
    "image.png",
    "image.gif",
    "image.jpg",
    "image.tif",
    "splits.json",
    "splits.npz",
]


# Pillow warns about damaged TIFF tags it skips; what matters here is what gets raised
@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("kind", KIND_NAMES)
def test_every_input_loads_or_is_a_repalign_error(tmp_path, kind):
    name, seed, magic = _kinds(tmp_path)[kind]
    assert _load(kind, tmp_path / "control", name, seed) is not None  # the seed itself is valid
    rng = np.random.default_rng(KIND_NAMES.index(kind))
    inputs = _inputs(seed, magic, rng)
    assert len(inputs) == N_PER_KIND
    escaped = []
    for i, data in enumerate(inputs):
        try:
            _load(kind, tmp_path / f"case{i}", name, data)
        except RepalignError as exc:
            assert "\n" not in str(exc), f"{kind} input {i}: a multi-line error: {exc!r}"
            assert len(str(exc)) < 600, f"{kind} input {i}: an error too long to be one line of output"
        except Exception as exc:  # noqa: BLE001 - the point: anything else is a defect
            escaped.append(f"input {i} ({len(data)} bytes): {type(exc).__name__}: {str(exc)[:120]}")
    assert not escaped, f"{kind}: {len(escaped)} inputs escaped as non-repalign errors:\n" + "\n".join(escaped)


def test_the_documented_count_is_what_runs():
    text = (PROJECT / "docs" / "hardening.md").read_text()
    assert f"{len(KIND_NAMES)} kinds of file" in text
    assert f"{len(KIND_NAMES) * N_PER_KIND} inputs" in text


# ----------------------------------------------------------------------------- the CLI


def _cli(*argv: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "repalign", *argv],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(PROJECT / "src"), **env},
        timeout=120,
    )


def _assert_clean_failure(result: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("repalign: error: "), result.stderr


def _huge_npy() -> bytes:
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": (10**9, 10**9)})
    return header.getvalue()


@pytest.mark.integration
@pytest.mark.parametrize(
    "name, data",
    [
        ("random.npy", np.random.default_rng(7).integers(0, 256, 400, dtype=np.uint8).tobytes()),
        ("huge.npy", _huge_npy()),
        ("cut.npz", _npz(embeddings=np.zeros((120, 8)), names=np.array([f"{i}" for i in range(120)]))[:700]),
    ],
    ids=["random-bytes", "huge-header", "truncated-npz"],
)
def test_cli_align_with_a_bad_embeddings_file(tmp_path, mirror, name, data):
    (tmp_path / name).write_bytes(data)
    result = _cli("align", "--embeddings", str(tmp_path / name), "--human", "peterson:animals", env={})
    _assert_clean_failure(result)
    assert name in result.stderr


@pytest.mark.parametrize(
    "damaged, data",
    [
        ("repalign.toml", b'similarity = "s.npy"\nimages = [\x00\xff'),
        ("s.npy", _huge_npy()),
        ("images/dog.png", b"\x89PNG\r\n\x1a\n" + bytes(range(64))),
    ],
    ids=["garbage-manifest", "huge-matrix-header", "corrupt-image"],
)
def test_cli_align_pixels_with_a_damaged_dataset(tmp_path, damaged, data):
    from PIL import Image

    root = _dataset(tmp_path / "ds", b'similarity = "s.npy"\nstimuli = "names.txt"\nimages = "images"\n')
    (root / "images").mkdir()
    for i, stimulus in enumerate(NAMES):
        Image.new("RGB", (8, 8), (60 * i, 0, 0)).save(root / "images" / stimulus)
    (root / damaged).write_bytes(data)
    result = _cli("align", "pixels", "--human", str(root), "--n-bootstrap", "0", env={})
    _assert_clean_failure(result)
    assert Path(damaged).name in result.stderr
