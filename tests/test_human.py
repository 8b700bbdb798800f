"""Human similarity datasets: Peterson (real mirror data, npz and upstream pickle) and user manifests."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from repalign import data as registry
from repalign._io import sha256_file
from repalign.data.human import (
    PETERSON_DOMAINS,
    HumanSimilarity,
    check_similarity_matrix,
    convert_peterson_pickle,
    list_human_datasets,
    load_human,
    read_peterson_npz,
)
from repalign.errors import InputError, MissingDataError, UnknownNameError, UnsafePickleError

# --------------------------------------------------------------------------- Peterson (real data)


@pytest.fixture(scope="module")
def peterson(mirror):
    return {d.name.split(":")[1]: d for d in load_human("peterson")}


@pytest.mark.integration
def test_peterson_has_six_symmetric_120x120_matrices(peterson):
    assert list(peterson) == list(PETERSON_DOMAINS)
    for domain, data in peterson.items():
        sim = data.similarity
        assert sim.shape == (120, 120) and sim.dtype == np.float64
        assert len(data.stimuli) == 120 == len(set(data.stimuli))
        assert list(data.stimuli) == sorted(data.stimuli), "rows are in sorted name order"
        np.testing.assert_array_equal(sim, sim.T)
        np.testing.assert_array_equal(np.diag(sim), 1.0)
        assert 0.0 <= sim.min() and sim.max() <= 1.0
        assert data.n_missing_pairs == 0
        assert not sim.flags.writeable, "shared matrices are read-only"


@pytest.mark.integration
@pytest.mark.parametrize("domain, size", [("animals", (300, 300)), ("fruits", (500, 500)), ("vegetables", (500, 500))])
def test_peterson_images_for_animals_fruits_and_vegetables(peterson, domain, size):
    data = peterson[domain]
    assert data.has_images and len(data.image_paths) == 120
    assert [p.name for p in data.image_paths] == list(data.stimuli)
    images = data.images()
    assert len(images) == 120
    first = images.load(0)
    assert first.mode == "RGB" and first.size == size


@pytest.mark.integration
@pytest.mark.parametrize("domain", ["automobiles", "furniture", "various"])
def test_peterson_domains_without_images_fail_clearly_only_when_images_are_needed(peterson, domain):
    data = peterson[domain]
    assert data.image_paths is None and data.similarity.shape == (120, 120)
    with pytest.raises(MissingDataError, match=rf"'{domain}' are not available \(120 files missing: {data.stimuli[0]}"):
        data.images()


@pytest.mark.integration
def test_peterson_single_domain_and_bad_names(mirror):
    (fruits,) = load_human("peterson:fruits")
    assert fruits.name == "peterson:fruits" and fruits.source == "peterson-similarity"
    with pytest.raises(UnknownNameError, match="Did you mean: animals"):
        load_human("peterson:animal")
    with pytest.raises(UnknownNameError, match="Unknown human dataset 'petersen'.*Did you mean: peterson"):
        load_human("petersen")
    assert list_human_datasets()[:2] == ["peterson", "peterson:animals"]


def _upstream_pickle(npz_path: Path, out: Path, *, shuffle: bool, protocol: int = 4) -> None:
    """A pickle in the upstream format ({domain: {'similarity', 'fnames'}}), built from the npz."""
    rng = np.random.default_rng(1)
    payload = {}
    for domain, (sim, names) in read_peterson_npz(npz_path).items():
        order = rng.permutation(len(names)) if shuffle else np.arange(len(names))
        payload[domain] = {"similarity": sim[np.ix_(order, order)], "fnames": [names[i] for i in order]}
    out.write_bytes(pickle.dumps(payload, protocol=protocol))


@pytest.mark.integration
@pytest.mark.parametrize("protocol", [2, 4])
def test_upstream_format_pickle_loads_identically(mirror, peterson, tmp_path, protocol):
    pkl = tmp_path / "datasets_peterson.pkl"
    _upstream_pickle(mirror / "peterson" / "similarity.npz", pkl, shuffle=True, protocol=protocol)
    loaded = {d.name.split(":")[1]: d for d in load_human(pkl)}
    assert list(loaded) == list(PETERSON_DOMAINS)
    for domain, data in loaded.items():
        assert data.stimuli == peterson[domain].stimuli
        np.testing.assert_array_equal(data.similarity, peterson[domain].similarity)
    assert loaded["animals"].has_images and not loaded["various"].has_images


@pytest.mark.integration
def test_pickle_converted_to_npz_matches_the_registered_content_hash(mirror, tmp_path):
    """The download path for peterson-similarity: upstream pickle -> npz, verified by content."""
    pkl, npz = tmp_path / "up.pkl", tmp_path / "similarity.npz"
    _upstream_pickle(mirror / "peterson" / "similarity.npz", pkl, shuffle=True)
    convert_peterson_pickle(pkl, npz)
    fspec = registry.DATASETS["peterson-similarity"].file("similarity.npz")
    assert registry.npz_content_sha256(npz) == fspec.content_sha256
    assert sha256_file(npz) != fspec.sha256, "different zip bytes; the content hash decides"
    assert registry.check_file(npz, fspec) is None


@pytest.mark.integration
def test_peterson_similarity_downloads_from_a_served_upstream_pickle(mirror, tmp_path, monkeypatch):
    """End to end over a real local HTTP server: the pickle is fetched, converted, verified."""
    import functools
    import http.server
    import threading

    served = tmp_path / "served"
    served.mkdir()
    _upstream_pickle(mirror / "peterson" / "similarity.npz", served / "datasets_peterson.pkl", shuffle=True)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        real = registry.DATASETS["peterson-similarity"].file("similarity.npz")
        url = f"http://127.0.0.1:{httpd.server_address[1]}/datasets_peterson.pkl"
        spec = registry.DatasetSpec(
            "test-peterson-upstream",
            "upstream pickle",
            "none",
            "none",
            "none",
            mirror_path=None,
            files=(
                registry.FileSpec(
                    "similarity.npz",
                    sha256=real.sha256,
                    content_sha256=real.content_sha256,
                    urls=(url,),
                    convert=real.convert,
                ),
            ),
        )
        monkeypatch.setitem(registry.DATASETS, spec.name, spec)
        monkeypatch.setenv("REPALIGN_DATA_HOME", str(tmp_path / "home"))
        path = registry.fetch_file(spec.name, "similarity.npz", progress=False)
    finally:
        httpd.shutdown()
        httpd.server_close()
    fetched = read_peterson_npz(path)
    for domain, (sim, names) in read_peterson_npz(mirror / "peterson" / "similarity.npz").items():
        np.testing.assert_array_equal(fetched[domain][0], sim)
        assert fetched[domain][1] == names


class _RunsShell:
    """Unpickling this calls os.system -- the classic malicious pickle."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def test_malicious_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    pkl = tmp_path / "datasets_peterson.pkl"
    pkl.write_bytes(pickle.dumps({"animals": {"similarity": _RunsShell(f"touch {marker}"), "fnames": ["a"]}}))

    with pytest.raises(UnsafePickleError, match=r"Refusing to unpickle '(posix|os|nt)\.system'"):
        load_human(pkl)
    assert not marker.exists(), "the payload must not have run"

    # Control: the same bytes under plain pickle really do run the command (in a child process).
    subprocess.run([sys.executable, "-c", f"import pickle; pickle.loads(open({str(pkl)!r}, 'rb').read())"], check=True)
    assert marker.exists()


def test_pickle_with_unexpected_structure_is_refused(tmp_path):
    pkl = tmp_path / "p.pkl"
    pkl.write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(InputError, match="not a Peterson pickle: expected a dict of domains"):
        load_human(pkl)
    pkl.write_bytes(pickle.dumps({"animals": {"similarity": np.eye(3)}}))
    with pytest.raises(InputError, match="'animals' must be a dict with 'similarity' and 'fnames'"):
        load_human(pkl)
    pkl.write_bytes(b"\x80\x04garbage")
    with pytest.raises(UnsafePickleError, match="Could not read pickle"):
        load_human(pkl)


# --------------------------------------------------------------------------- user datasets


NAMES = ["cat.png", "dog.png", "fox.png", "owl.png"]


def _similarity(n: int = 4, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    sim = x @ x.T
    return sim


def _images(folder: Path, names=NAMES) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        Image.new("RGB", (8, 8), (40 * i, 10, 200)).save(folder / name)


def _dataset(tmp_path: Path, manifest: dict | str, *, images=True, fmt="toml", files: dict | None = None) -> Path:
    """Write a user dataset folder; ``files`` maps file name -> bytes/str/ndarray(.npy)."""
    root = tmp_path / "study"
    root.mkdir(exist_ok=True)
    if images:
        _images(root / "images")
    for name, content in (files or {}).items():
        path = root / name
        if isinstance(content, np.ndarray):
            np.save(path, content)
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    if isinstance(manifest, str):
        (root / f"repalign.{fmt}").write_text(manifest)
    elif fmt == "json":
        (root / "repalign.json").write_text(json.dumps(manifest))
    else:
        lines = [
            f"{k} = {json.dumps(v)}" if not isinstance(v, bool) else f"{k} = {str(v).lower()}"
            for k, v in manifest.items()
        ]
        (root / "repalign.toml").write_text("\n".join(lines) + "\n")
    return root


def _csv(matrix: np.ndarray, names=None) -> str:
    rows = [",".join(["", *names])] if names else []
    for i, row in enumerate(matrix):
        cells = ["" if np.isnan(v) else repr(float(v)) for v in row]
        rows.append(",".join(([names[i]] if names else []) + cells))
    return "\n".join(rows) + "\n"


def test_manifest_with_csv_matrix_names_in_header_and_images(tmp_path):
    sim = _similarity()
    root = _dataset(
        tmp_path, {"name": "toy", "images": "images", "similarity": "sim.csv"}, files={"sim.csv": _csv(sim, NAMES)}
    )
    (data,) = load_human(root)  # a folder holding the manifest
    assert isinstance(data, HumanSimilarity)
    assert data.name == "toy" and data.stimuli == tuple(NAMES)
    np.testing.assert_allclose(data.similarity, sim, rtol=0, atol=1e-12)
    assert [p.name for p in data.image_paths] == NAMES
    assert len(data.images()) == 4 and data.judgments is None
    (again,) = load_human(root / "repalign.toml")  # or the manifest itself
    np.testing.assert_array_equal(again.similarity, data.similarity)


@pytest.mark.parametrize("fmt", ["npy", "npz", "mat", "txt-names"])
def test_matrix_formats_give_the_same_dataset(tmp_path, fmt):
    sim = _similarity()
    names_txt = "\n".join(NAMES) + "\n"
    if fmt == "npy":
        manifest, files = {"similarity": "m.npy", "stimuli": "names.txt"}, {"m.npy": sim, "names.txt": names_txt}
    elif fmt == "npz":
        (tmp_path / "study").mkdir()
        np.savez(tmp_path / "study" / "m.npz", rdm=sim, labels=np.array(NAMES), other=np.arange(3))
        manifest, files = {"similarity": "m.npz", "matrix_key": "rdm", "names_key": "labels"}, {}
    elif fmt == "mat":
        (tmp_path / "study").mkdir()
        cell = np.empty((len(NAMES),), dtype=object)
        cell[:] = NAMES
        scipy.io.savemat(tmp_path / "study" / "m.mat", {"S": sim, "names": cell})
        manifest, files = {"similarity": "m.mat", "matrix_key": "S", "names_key": "names"}, {}
    else:
        manifest = {"similarity": "m.csv", "stimuli": "names.txt"}
        files = {"m.csv": _csv(sim), "names.txt": names_txt}
    root = _dataset(tmp_path, {"images": "images", **manifest}, files=files)
    (data,) = load_human(root)
    assert data.stimuli == tuple(NAMES)
    np.testing.assert_allclose(data.similarity, sim, rtol=0, atol=1e-12)


def test_dissimilarity_is_declared_and_negated(tmp_path):
    points = np.array([[0.0], [1.0], [3.0], [7.0]])
    distances = np.abs(points - points.T)
    root = _dataset(
        tmp_path, {"dissimilarity": "d.npy", "stimuli": NAMES}, images=False, fmt="json", files={"d.npy": distances}
    )
    (data,) = load_human(root)
    np.testing.assert_array_equal(data.similarity, -distances)
    assert data.similarity[0, 1] > data.similarity[0, 3], "closer = more similar"
    with pytest.raises(MissingDataError, match="has no images: add 'images"):
        data.images()


def test_nan_entries_are_kept_as_missing_pairs_and_counted(tmp_path):
    sim = _similarity()
    sim[0, 2] = sim[2, 0] = np.nan
    sim[1, 3] = sim[3, 1] = np.nan
    root = _dataset(tmp_path, {"similarity": "s.csv", "stimuli": NAMES}, images=False, files={"s.csv": _csv(sim)})
    (data,) = load_human(root)
    assert data.n_missing_pairs == 2
    assert np.isnan(data.similarity[0, 2]) and np.isnan(data.similarity[3, 1])


def test_symmetrize_option_averages_the_two_triangles(tmp_path):
    sim = _similarity()
    sim[0, 1] += 0.5
    root = _dataset(
        tmp_path, {"similarity": "s.npy", "stimuli": NAMES, "symmetrize": True}, images=False, files={"s.npy": sim}
    )
    (data,) = load_human(root)
    assert data.similarity[0, 1] == data.similarity[1, 0] == pytest.approx((sim[0, 1] + sim[1, 0]) / 2)


TRIPLETS = "anchor,positive,negative,count\ncat.png,dog.png,owl.png,3\nfox,dog,cat,1\n"
ODD = "i,j,k,odd\ncat.png,dog.png,owl.png,owl.png\nfox.png,dog.png,cat.png,fox.png\nowl,fox,dog,fox\n"


def test_triplet_judgments_anchor_form_over_an_image_folder(tmp_path):
    root = _dataset(tmp_path, {"images": "images", "triplets": "t.csv"}, files={"t.csv": TRIPLETS})
    (data,) = load_human(root)
    assert data.similarity is None and data.stimuli == tuple(sorted(NAMES))
    j = data.judgments
    assert j.kind == "triplet" and j.chance_level == 0.5
    idx = {n: i for i, n in enumerate(data.stimuli)}
    assert list(zip(j.a, j.b, j.c)) == [
        (idx["cat.png"], idx["dog.png"], idx["owl.png"]),
        (idx["fox.png"], idx["dog.png"], idx["cat.png"]),
    ]
    assert j.counts.tolist() == [3, 1]


def test_triplet_judgments_odd_one_out_form_puts_the_odd_one_last(tmp_path):
    sim = _similarity()
    root = _dataset(
        tmp_path,
        {"images": "images", "similarity": "s.npy", "stimuli": NAMES, "triplets": "o.csv"},
        files={"s.npy": sim, "o.csv": ODD},
    )
    (data,) = load_human(root)
    j = data.judgments
    assert j.kind == "odd_one_out" and j.chance_level == pytest.approx(1 / 3)
    idx = {n: i for i, n in enumerate(NAMES)}
    rows = [(int(a), int(b), int(c)) for a, b, c in zip(j.a, j.b, j.c)]
    assert rows == [
        (idx["cat.png"], idx["dog.png"], idx["owl.png"]),
        (idx["dog.png"], idx["cat.png"], idx["fox.png"]),
        (idx["owl.png"], idx["dog.png"], idx["fox.png"]),
    ]
    assert j.counts.tolist() == [1, 1, 1]


def test_judgment_only_dataset_without_images_takes_names_from_the_csv(tmp_path):
    root = _dataset(
        tmp_path, {"triplets": "t.csv"}, images=False, files={"t.csv": "anchor,positive,negative\na,b,c\nd,c,a\n"}
    )
    (data,) = load_human(root)
    assert data.stimuli == ("a", "b", "c", "d") and data.image_paths is None


# --------------------------------------------------------------------------- bad input, one line each


def _bad(tmp_path, manifest, files=None, images=False, fmt="toml"):
    return _dataset(tmp_path, manifest, images=images, files=files, fmt=fmt)


@pytest.mark.parametrize(
    "matrix, match",
    [
        (np.ones((3, 4)), r"not square \(shape \(3, 4\)\)"),
        (np.eye(2), "only 2 stimuli; alignment needs at least 3"),
        (np.full((4, 4), 0.5), r"constant \(every pair = 0.5\)"),
        (
            np.array([[1, 0.2, 0.3, 0.1], [0.9, 1, 0.4, 0.5], [0.3, 0.4, 1, 0.6], [0.1, 0.5, 0.6, 1]]),
            r"not symmetric: \|S - S\^T\| reaches 0.7 at \('cat.png', 'dog.png'\).*symmetrize = true",
        ),
        (
            np.where(np.eye(4, k=1, dtype=bool), np.nan, 1.0) + np.eye(4),
            r"not symmetric: S\['cat.png', 'dog.png'\] is missing but its mirror entry is not",
        ),
        (np.full((4, 4), np.nan), "every stimulus pair is missing"),
        (np.array([[1, np.inf, 0, 0], [np.inf, 1, 0, 0], [0, 0, 1, 0.5], [0, 0, 0.5, 1]]), "infinite value at"),
    ],
)
def test_bad_matrices(tmp_path, matrix, match):
    n = matrix.shape[0]
    root = _bad(tmp_path, {"similarity": "s.npy", "stimuli": NAMES[:n] if n <= 4 else NAMES}, {"s.npy": matrix})
    with pytest.raises(InputError, match=match):
        load_human(root)


def test_check_similarity_matrix_tolerance_is_relative():
    sim = _similarity() * 1000
    sim[0, 1] += 1e-4  # 1e-7 relative to max |S| > 1000: within the default 1e-6
    out = check_similarity_matrix(sim, NAMES, label="t")
    assert out[0, 1] == out[1, 0]
    with pytest.raises(InputError, match="not symmetric"):
        check_similarity_matrix(sim, NAMES, label="t", tolerance=1e-12)


@pytest.mark.parametrize(
    "manifest, files, images, match",
    [
        (
            {"similarity": "s.npy", "stimuli": ["a", "b", "a", "c"]},
            {"s.npy": _similarity()},
            False,
            r"duplicate stimulus name\(s\): 'a'",
        ),
        (
            {"similarity": "s.npy", "stimuli": ["a", "b", "c"]},
            {"s.npy": _similarity()},
            False,
            r"3 stimulus names for a 4x4 matrix",
        ),
        (
            {"similarity": "s.npy", "stimuli": ["cat.png", "dog.png", "fox.png", "emu.png"], "images": "images"},
            {"s.npy": _similarity()},
            True,
            r"1 stimulus name\(s\) match no image file in the image folder: 'emu.png'",
        ),
        ({"similarity": "s.npy"}, {"s.npy": _similarity()}, False, "no stimulus names: add 'stimuli'"),
        (
            {"similarity": "s.npy", "dissimilarity": "s.npy", "stimuli": NAMES},
            {"s.npy": _similarity()},
            False,
            "either 'similarity' or 'dissimilarity', not both",
        ),
        ({"stimuli": NAMES}, {}, False, "needs 'similarity' or 'dissimilarity'.*and/or 'triplets'"),
        (
            {"similarity": "s.npy", "stimuli": NAMES, "dissimilarty": "x"},
            {"s.npy": _similarity()},
            False,
            "Unknown key 'dissimilarty'.*Did you mean: dissimilarity",
        ),
        (
            {"similarity": "s.npy", "stimuli": NAMES, "symmetrize": "yes"},
            {"s.npy": _similarity()},
            False,
            "'symmetrize' must be bool, got 'yes'",
        ),
        (
            {"similarity": "s.csv", "stimuli": NAMES},
            {"s.csv": "1,2,3,4\n2,1,x,4\n3,3,1,4\n4,4,4,1\n"},
            False,
            r"Non-numeric entry 'x' in s.csv at row 2, column 3",
        ),
        (
            {"similarity": "s.csv", "stimuli": NAMES},
            {"s.csv": _csv(_similarity(), ["a", "b", "c", "d"])},
            False,
            "names in s.csv differ from the stimulus list",
        ),
        (
            {"similarity": "s.npy", "stimuli": NAMES},
            {"s.npy": b"\x93NUMPY garbage"},
            False,
            r"s\.npy has a damaged \.npy header",
        ),
        (
            {"similarity": "s.npz", "stimuli": NAMES},
            {"s.npz": b"PK\x03\x04 not a zip"},
            False,
            r"s\.npz is not an \.npz archive or is damaged",
        ),
        (
            {"similarity": "s.mat", "stimuli": NAMES},
            {"s.mat": b"MATLAB 5.0 MAT-file" + b"\0" * 10},
            False,
            r"Corrupt or unreadable .mat file",
        ),
        (
            {"similarity": "s.npy", "stimuli": NAMES},
            {"s.npy": np.array([{"a": 1}], dtype=object)},
            False,
            r"holds Python objects, which only pickle could rebuild",
        ),
        ({"similarity": "s.xlsx", "stimuli": NAMES}, {"s.xlsx": b"xx"}, False, "Unsupported matrix file type '.xlsx'"),
        (
            {"similarity": "s.npy", "stimuli": "names.csv"},
            {"s.npy": _similarity(), "names.csv": "label\na\nb\nc\nd\n"},
            False,
            "needs a header with a 'name' column",
        ),
        (
            {"triplets": "t.csv", "images": "images"},
            {"t.csv": "anchor,positive,negative\ncat,dog,emu\n"},
            True,
            r"Unknown stimulus name\(s\) in column 'negative' of t.csv: 'emu' \(line 2\)",
        ),
        (
            {"triplets": "t.csv", "images": "images"},
            {"t.csv": "a,b,c\ncat,dog,owl\n"},
            True,
            "has columns 'a', 'b', 'c'; expected 'anchor,positive,negative' or 'i,j,k,odd'",
        ),
        (
            {"triplets": "t.csv", "images": "images"},
            {"t.csv": "i,j,k,odd\ncat,dog,owl,fox\n"},
            True,
            "line 2, 'odd' is not one of i, j, k",
        ),
        (
            {"triplets": "t.csv", "images": "images"},
            {"t.csv": "anchor,positive,negative,count\ncat,dog,owl,0\n"},
            True,
            "line 2, count '0' is not a positive integer",
        ),
        (
            {"triplets": "t.csv", "images": "images"},
            {"t.csv": "anchor,positive,negative\ncat,dog,cat\n"},
            True,
            "line 2, a triplet names the same stimulus twice",
        ),
        ({"triplets": "t.csv", "images": "images"}, {"t.csv": "anchor,positive,negative\n"}, True, "has no judgments"),
        (
            {"triplets": "t.csv"},
            {"t.csv": "anchor,positive,negative\na,b,a\n"},
            False,
            "only 2 stimuli; alignment needs at least 3",
        ),
    ],
)
def test_bad_user_datasets(tmp_path, manifest, files, images, match):
    root = _bad(tmp_path, manifest, files, images=images)
    with pytest.raises(InputError, match=match) as err:
        load_human(root)
    assert "\n" not in str(err.value), "errors are one line"


def test_missing_files_and_manifest_problems(tmp_path):
    root = _bad(tmp_path, {"similarity": "absent.npy", "stimuli": NAMES})
    with pytest.raises(MissingDataError, match="Matrix file not found: .*absent.npy"):
        load_human(root)
    with pytest.raises(MissingDataError, match="Human dataset path not found"):
        load_human(tmp_path / "nowhere" / "repalign.toml")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="No manifest in .*create repalign.toml"):
        load_human(empty)
    (empty / "repalign.toml").write_text("similarity = [unclosed\n")
    with pytest.raises(InputError, match="Cannot parse manifest"):
        load_human(empty)
    (empty / "repalign.json").write_text("{}")
    with pytest.raises(InputError, match="holds both repalign.toml and repalign.json"):
        load_human(empty)


def test_matlab_v73_files_get_a_conversion_hint(tmp_path):
    # A v7.3 header (HDF5-based MAT file): version 0x0200 at byte 124, 'IM' endian marker.
    header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 .".ljust(
        116
    )
    header += b"\0" * 8 + (0x0200).to_bytes(2, "little") + b"IM"
    root = _bad(tmp_path, {"similarity": "s.mat", "stimuli": NAMES}, {"s.mat": header + b"\0" * 512})
    with pytest.raises(InputError, match=r"MATLAB v7.3 \(HDF5\) file.*-v7"):
        load_human(root)


def test_human_similarity_checks_its_own_consistency():
    with pytest.raises(InputError, match="does not match 3 stimuli"):
        HumanSimilarity("x", ("a", "b", "c"), similarity=np.eye(4))
    with pytest.raises(InputError, match="needs a similarity matrix or triplet judgments"):
        HumanSimilarity("x", ("a", "b", "c"))


def test_human_similarity_is_read_only_without_touching_the_callers_array():
    sim = _similarity()
    data = HumanSimilarity("x", tuple(NAMES), similarity=sim)
    assert sim.flags.writeable and not data.similarity.flags.writeable
    assert np.shares_memory(sim, data.similarity), "no copy of a float64 matrix"
    with pytest.raises(ValueError, match="read-only"):
        data.similarity[0, 0] = 5


@pytest.mark.parametrize("value", ["nan", "-1.0", "inf"])
def test_symmetry_tolerance_must_be_finite_and_non_negative(tmp_path, value):
    """NaN passes every comparison, so a NaN tolerance would silently accept any asymmetry."""
    root = _dataset(
        tmp_path,
        f'name = "toy"\nimages = "images"\nsimilarity = "sim.csv"\nsymmetry_tolerance = {value}\n',
        files={"sim.csv": _csv(_similarity(), NAMES)},
    )
    with pytest.raises(InputError, match=r"symmetry_tolerance must be a finite number >= 0") as info:
        load_human(root)
    assert "\n" not in str(info.value)
