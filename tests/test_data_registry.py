"""The dataset registry: resolution order, verification, downloads, archives, the `data` CLI.

Downloads are tested against a real HTTP server on 127.0.0.1 (``http.server`` in a thread)
serving files the tests write; mirror copies against the real mirror (integration).
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import io
import json
import logging
import os
import pickle
import socket
import tarfile
import threading
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from repalign import data as registry
from repalign.cli import main
from repalign.data import ArchiveSpec, DatasetSpec, FileSpec
from repalign.errors import ChecksumError, InputError, MissingDataError, UnknownNameError


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------- fixtures


class _Server:
    """A real HTTP server over a temporary folder; counts the requests per path."""

    def __init__(self, root: Path):
        self.root = root
        self.hits: Counter[str] = Counter()
        hits = self.hits

        class Handler(http.server.SimpleHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server naming)
                hits[self.path] += 1
                super().do_GET()

            def log_message(self, *args):  # keep test output clean
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def put(self, name: str, data: bytes) -> str:
        (self.root / name).parent.mkdir(parents=True, exist_ok=True)
        (self.root / name).write_bytes(data)
        return f"{self.url}/{name}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(tmp_path):
    srv = _Server(tmp_path / "served")
    srv.root.mkdir()
    yield srv
    srv.close()


@pytest.fixture
def homes(tmp_path, monkeypatch):
    """A private data home and an (initially empty) private mirror for this test."""
    home, mirror = tmp_path / "home", tmp_path / "mirror"
    mirror.mkdir()
    monkeypatch.setenv("REPALIGN_DATA_HOME", str(home))
    monkeypatch.setenv("REPALIGN_MIRROR", str(mirror))
    monkeypatch.delenv("REPALIGN_OFFLINE", raising=False)
    return home, mirror


@pytest.fixture
def register(monkeypatch):
    """Register a dataset for the duration of one test."""

    def _register(spec: DatasetSpec) -> DatasetSpec:
        monkeypatch.setitem(registry.DATASETS, spec.name, spec)
        return spec

    return _register


def _spec(name: str, files, *, mirror_path: str | None = "toy", archive=None) -> DatasetSpec:
    return DatasetSpec(
        name,
        "toy dataset",
        license="MIT",
        citation="none",
        homepage="http://example.invalid",
        mirror_path=mirror_path,
        files=tuple(files),
        archive=archive,
    )


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _leftovers(folder: Path) -> list[str]:
    """Temporary files that a download or copy left behind."""
    return [p.name for p in folder.rglob("*") if p.name.endswith((".part", ".tmp", ".converted"))]


# --------------------------------------------------------------------------- downloads


def test_download_is_verified_moved_into_place_and_stamped(homes, server, register):
    home, _ = homes
    payload = os.urandom(50_000)
    url = server.put("data/payload.bin", payload)
    register(_spec("toy-dl", [FileSpec("payload.bin", sha256=sha256(payload), urls=(url,))]))

    folder = registry.fetch("toy-dl", progress=True)  # progress bar on a captured stream must work too

    assert folder == home / "toy-dl"
    assert (folder / "payload.bin").read_bytes() == payload
    assert _leftovers(folder) == []
    assert (folder / "payload.bin").stat().st_mode & 0o044, "fetched files should be readable like normal files"
    stamp = json.loads((folder / registry.STAMP_NAME).read_text())
    assert stamp["payload.bin"][0] == len(payload)
    # A second fetch is served from the data home: no new request.
    registry.fetch("toy-dl")
    assert server.hits["/data/payload.bin"] == 1
    assert registry.dataset_status("toy-dl") == "present"


def test_download_checksum_mismatch_is_an_error_and_nothing_is_kept(homes, server, register):
    home, _ = homes
    url = server.put("bad.bin", b"tampered content")
    register(_spec("toy-bad", [FileSpec("bad.bin", sha256=sha256(b"original content"), urls=(url,))]))

    with pytest.raises(ChecksumError, match=r"bad\.bin.*sha256 [0-9a-f]{64} differs from the expected"):
        registry.fetch("toy-bad", progress=False)
    assert not (home / "toy-bad" / "bad.bin").exists()
    assert _leftovers(home) == []


def test_gzip_is_verified_by_content_hash_not_wrapper_bytes(homes, server, register):
    home, _ = homes
    content = b"IDX-like content " * 1000
    upstream_gz = gzip.compress(content, mtime=1_000_000)  # another wrapper than the mirror's
    mirror_gz = gzip.compress(content, mtime=0)
    assert upstream_gz != mirror_gz
    url = server.put("x-idx1-ubyte.gz", upstream_gz)
    register(
        _spec(
            "toy-gz",
            [FileSpec("x-idx1-ubyte.gz", sha256=sha256(mirror_gz), content_sha256=sha256(content), urls=(url,))],
        )
    )

    path = registry.fetch_file("toy-gz", "x-idx1-ubyte.gz", progress=False)
    assert gzip.decompress(path.read_bytes()) == content

    other = server.put("y-idx1-ubyte.gz", gzip.compress(b"different content"))
    register(_spec("toy-gz-bad", [FileSpec("y-idx1-ubyte.gz", content_sha256=sha256(content), urls=(other,))]))
    with pytest.raises(ChecksumError, match="content sha256 .* differs"):
        registry.fetch("toy-gz-bad", progress=False)
    assert not (home / "toy-gz-bad" / "y-idx1-ubyte.gz").exists()


def test_md5_is_checked_on_download(homes, server, register):
    payload = b"archive bytes"
    url = server.put("a.bin", payload)
    register(_spec("toy-md5", [FileSpec("a.bin", sha256=sha256(payload), md5="0" * 32, urls=(url,))]))
    with pytest.raises(ChecksumError, match="md5 .* differs"):
        registry.fetch("toy-md5", progress=False)
    good = hashlib.md5(payload).hexdigest()
    register(_spec("toy-md5-ok", [FileSpec("a.bin", sha256=sha256(payload), md5=good, urls=(url,))]))
    assert registry.fetch_file("toy-md5-ok", "a.bin").read_bytes() == payload


def test_next_url_is_tried_after_http_404(homes, server, register):
    payload = b"served by the second mirror"
    good = server.put("second/f.txt", payload)
    register(_spec("toy-404", [FileSpec("f.txt", sha256=sha256(payload), urls=(f"{server.url}/first/f.txt", good))]))
    assert registry.fetch_file("toy-404", "f.txt", progress=False).read_bytes() == payload
    assert server.hits["/first/f.txt"] == 1 and server.hits["/second/f.txt"] == 1


def test_offline_and_missing_gives_one_clear_error(homes, register):
    home, _ = homes
    dead = f"http://127.0.0.1:{_closed_port()}"
    register(
        _spec(
            "toy-offline",
            [FileSpec(f"f{i}.txt", sha256=sha256(b"x"), urls=(f"{dead}/f{i}.txt",)) for i in range(5)],
        )
    )
    with pytest.raises(
        MissingDataError, match=r"5 of 5 file\(s\) not available \(f0\.txt, f1\.txt, f2\.txt and 2 more"
    ) as err:
        registry.fetch("toy-offline", progress=False)
    message = str(err.value)
    assert "REPALIGN_MIRROR" in message and str(home / "toy-offline") in message
    assert "\n" not in message


def test_repalign_offline_disables_downloads(homes, server, register, monkeypatch):
    url = server.put("f.txt", b"x")
    register(_spec("toy-noget", [FileSpec("f.txt", sha256=sha256(b"x"), urls=(url,))]))
    monkeypatch.setenv("REPALIGN_OFFLINE", "1")
    with pytest.raises(MissingDataError, match="downloads are disabled"):
        registry.fetch("toy-noget", progress=False)
    assert server.hits["/f.txt"] == 0


def test_mirror_is_preferred_over_download(homes, server, register):
    home, mirror = homes
    payload = b"mirror copy"
    (mirror / "toy").mkdir()
    (mirror / "toy" / "m.txt").write_bytes(payload)
    url = server.put("m.txt", payload)
    register(_spec("toy-mirror", [FileSpec("m.txt", sha256=sha256(payload), urls=(url,))]))
    assert registry.dataset_status("toy-mirror") == "mirror"
    assert registry.fetch_file("toy-mirror", "m.txt").read_bytes() == payload
    assert server.hits["/m.txt"] == 0


def test_corrupt_mirror_file_is_never_used(homes, server, register, caplog):
    home, mirror = homes
    payload = b"the real content"
    (mirror / "toy").mkdir()
    (mirror / "toy" / "c.txt").write_bytes(b"a corrupt copy")
    register(_spec("toy-corrupt-mirror", [FileSpec("c.txt", sha256=sha256(payload))]))
    with pytest.raises(ChecksumError, match=r"mirror file .*c\.txt: sha256 .* differs"):
        registry.fetch("toy-corrupt-mirror", progress=False)
    assert not (home / "toy-corrupt-mirror" / "c.txt").exists()

    # With an upstream copy as well, the download replaces the corrupt mirror file -- after logging it.
    url = server.put("c.txt", payload)
    register(_spec("toy-corrupt-mirror2", [FileSpec("c.txt", sha256=sha256(payload), urls=(url,))]))
    with caplog.at_level(logging.ERROR, logger="repalign.data"):
        path = registry.fetch_file("toy-corrupt-mirror2", "c.txt", progress=False)
    assert path.read_bytes() == payload
    assert "mirror file" in caplog.text


def test_corrupt_file_in_data_home_is_reported_then_replaced(homes, register, caplog):
    home, mirror = homes
    payload = b"good bytes" * 100
    (mirror / "toy").mkdir()
    (mirror / "toy" / "g.bin").write_bytes(payload)
    register(_spec("toy-home", [FileSpec("g.bin", sha256=sha256(payload))]))
    path = registry.fetch_file("toy-home", "g.bin")
    path.write_bytes(b"bit rot")

    records = registry.verify("toy-home")
    assert [(r["file"], r["status"]) for r in records] == [("g.bin", "corrupt")]
    assert path.read_bytes() == b"bit rot", "verify reports; it never replaces"

    with caplog.at_level(logging.WARNING, logger="repalign.data"):
        registry.fetch("toy-home", progress=False)
    assert "in the data home is corrupt" in caplog.text
    assert path.read_bytes() == payload
    assert [r["status"] for r in registry.verify("toy-home")] == ["ok"]


def test_corrupt_file_in_data_home_without_a_source_is_a_checksum_error(homes, register):
    home, _ = homes
    register(_spec("toy-home2", [FileSpec("g.bin", sha256=sha256(b"expected"))], mirror_path=None))
    (home / "toy-home2").mkdir(parents=True)
    (home / "toy-home2" / "g.bin").write_bytes(b"unexpected")
    with pytest.raises(ChecksumError, match=r"g\.bin in the data home is corrupt"):
        registry.fetch("toy-home2", progress=False)
    assert (home / "toy-home2" / "g.bin").read_bytes() == b"unexpected", "never silently deleted"


def test_verification_stamp_avoids_rehashing_until_the_file_changes(homes, register, monkeypatch):
    home, mirror = homes
    payload = os.urandom(10_000)
    (mirror / "toy").mkdir()
    (mirror / "toy" / "s.bin").write_bytes(payload)
    register(_spec("toy-stamp", [FileSpec("s.bin", sha256=sha256(payload))]))
    registry.fetch("toy-stamp")

    calls = Counter()
    from repalign.data import _checksums  # where files are hashed

    real = _checksums.sha256_file

    def counting(path, **kwargs):
        calls[Path(path).name] += 1
        return real(path, **kwargs)

    monkeypatch.setattr(_checksums, "sha256_file", counting)
    registry.fetch("toy-stamp")
    assert calls["s.bin"] == 0, "unchanged file (same size and mtime) must not be hashed again"
    os.utime(home / "toy-stamp" / "s.bin", ns=(1, 1))
    registry.fetch("toy-stamp")
    assert calls["s.bin"] == 1
    registry.verify("toy-stamp", full=False)
    assert calls["s.bin"] == 1, "quick verify trusts the fresh stamp"
    registry.verify("toy-stamp")
    assert calls["s.bin"] == 2, "full verify always re-hashes"


def test_verify_reports_missing_files_and_absent_datasets(homes, register):
    home, mirror = homes
    (mirror / "toy").mkdir()
    for name in ("a.txt", "b.txt"):
        (mirror / "toy" / name).write_text(name)
    register(_spec("toy-ver", [FileSpec(n, sha256=sha256(n.encode())) for n in ("a.txt", "b.txt")]))
    assert {"dataset": "toy-ver", "file": "", "status": "absent", "detail": "not fetched"} in registry.verify()
    registry.fetch("toy-ver")
    (home / "toy-ver" / "b.txt").unlink()
    statuses = {r["file"]: r["status"] for r in registry.verify("toy-ver")}
    assert statuses == {"a.txt": "ok", "b.txt": "missing"}


def test_fetch_file_fetches_only_that_file(homes, server, register):
    home, _ = homes
    urls = {n: server.put(n, n.encode()) for n in ("one.txt", "two.txt")}
    register(_spec("toy-one", [FileSpec(n, sha256=sha256(n.encode()), urls=(u,)) for n, u in urls.items()]))
    registry.fetch_file("toy-one", "two.txt")
    assert not (home / "toy-one" / "one.txt").exists()
    with pytest.raises(UnknownNameError, match="Did you mean: two.txt"):
        registry.fetch_file("toy-one", "twoo.txt")


# --------------------------------------------------------------------------- archives


def _cifar_like_tarball(folder: str = "cifar-10-batches-py") -> bytes:
    """A small tarball in CIFAR's python format: pickled dicts with byte-string keys."""
    rng = np.random.default_rng(0)
    batch = {
        b"data": rng.integers(0, 256, size=(6, 3072), dtype=np.uint8),
        b"labels": [0, 1, 2, 0, 1, 2],
        b"batch_label": b"testing batch 1 of 1",
    }
    meta = {b"label_names": [b"airplane", b"automobile", b"bird"], b"num_vis": 3072}
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, obj in (("test_batch", batch), ("batches.meta", meta)):
            data = pickle.dumps(obj, protocol=2)
            info = tarfile.TarInfo(f"{folder}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _archive_spec(name: str, data: bytes, url: str, **overrides) -> DatasetSpec:
    fields = dict(
        sha256=sha256(data),
        md5=hashlib.md5(data).hexdigest(),
        size=len(data),
        extract_to="cifar-10-batches-py",
        urls=(url,),
    )
    fields.update(overrides)
    return _spec(name, (), archive=ArchiveSpec("cifar-10-python.tar.gz", **fields))


def test_archive_is_verified_extracted_and_recorded(homes, server, register):
    from repalign._safe_pickle import safe_load

    home, _ = homes
    data = _cifar_like_tarball()
    register(_archive_spec("toy-cifar", data, server.put("cifar-10-python.tar.gz", data)))

    folder = registry.fetch("toy-cifar", progress=False)
    batch = safe_load((folder / "cifar-10-batches-py" / "test_batch").read_bytes(), encoding="bytes")
    assert batch[b"data"].shape == (6, 3072) and batch[b"labels"] == [0, 1, 2, 0, 1, 2]
    assert not (folder / "cifar-10-python.tar.gz").exists(), "the archive is not kept after extraction"
    assert registry.dataset_status("toy-cifar") == "present"
    assert {r["status"] for r in registry.verify("toy-cifar")} == {"ok"}
    assert registry.fetch_file("toy-cifar", "cifar-10-batches-py/batches.meta").is_file()

    # A damaged extracted file is reported by verify, and fetch re-extracts a verified archive.
    (folder / "cifar-10-batches-py" / "test_batch").write_bytes(b"damaged")
    assert any(r["status"] == "corrupt" for r in registry.verify("toy-cifar"))
    registry.fetch("toy-cifar", progress=False)
    assert server.hits["/cifar-10-python.tar.gz"] == 2
    assert {r["status"] for r in registry.verify("toy-cifar")} == {"ok"}


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_read_only_uses_files_in_place_and_writes_nothing(homes, server, register):
    """Inside read_only(), fetch finds files where they are -- data home, else mirror -- and
    neither copies, downloads, extracts nor stamps anything; what is in neither is missing."""
    home, mirror = homes
    payload = b"in the mirror"
    (mirror / "toy").mkdir()
    (mirror / "toy" / "m.txt").write_bytes(payload)
    register(_spec("toy-ro-mirror", [FileSpec("m.txt", sha256=sha256(payload))]))
    url = server.put("d.bin", b"x" * 2_500_000)
    register(_spec("toy-ro-dl", [FileSpec("d.bin", sha256=sha256(b"x" * 2_500_000), urls=(url,), size=2_500_000)]))
    data = _cifar_like_tarball()
    register(_archive_spec("toy-ro-cifar", data, server.put("cifar-10-python.tar.gz", data)))
    (mirror / "toy" / "bad.txt").write_bytes(b"corrupt")
    register(_spec("toy-ro-bad", [FileSpec("bad.txt", sha256=sha256(b"good"))]))

    with registry.read_only():
        assert registry.fetch("toy-ro-mirror") == mirror / "toy"  # the mirror's folder, read in place
        assert registry.fetch_file("toy-ro-mirror", "m.txt") == mirror / "toy" / "m.txt"
        with pytest.raises(MissingDataError, match=r"not downloaded yet \(2\.5 MB from upstream\)") as err:
            registry.fetch_file("toy-ro-dl", "d.bin")
        assert err.value.dataset == "toy-ro-dl"
        with pytest.raises(MissingDataError, match="not downloaded yet") as err:
            registry.fetch("toy-ro-cifar")  # an archive is usable only once extracted
        assert err.value.dataset == "toy-ro-cifar"
        with pytest.raises(ChecksumError, match="mirror file"):
            registry.fetch("toy-ro-bad")  # verified in place: a corrupt copy is never used
    assert not home.exists() and server.hits == {}
    assert registry.describe_status("toy-ro-dl") == "not downloaded yet (2.5 MB from upstream)"

    # fetched normally, the data home's copy is what read_only() finds -- and leaves unchanged
    registry.fetch("toy-ro-mirror", progress=False)
    registry.fetch("toy-ro-cifar", progress=False)
    before = _tree(home)
    (home / "toy-ro-mirror" / registry.STAMP_NAME).unlink()  # unstamped: hashed, but not stamped again
    before.pop(f"toy-ro-mirror/{registry.STAMP_NAME}")
    with registry.read_only():
        assert registry.fetch("toy-ro-mirror") == home / "toy-ro-mirror"
        assert registry.fetch_file("toy-ro-cifar", "cifar-10-batches-py/test_batch").is_file()
    assert _tree(home) == before


def test_read_only_with_downloads_off_says_so(homes, register, monkeypatch):
    monkeypatch.setenv("REPALIGN_OFFLINE", "1")
    register(_spec("toy-ro-off", [FileSpec("f.bin", sha256=sha256(b"x"), urls=("http://example.invalid/f",))]))
    assert registry.describe_status("toy-ro-off") == (
        "not downloaded yet; downloads are off (REPALIGN_OFFLINE) and no mirror holds it"
    )


def test_archive_checksum_is_checked_before_extraction(homes, server, register):
    home, _ = homes
    data = _cifar_like_tarball()
    register(_archive_spec("toy-cifar-bad", data, server.put("c.tar.gz", data), sha256="0" * 64))
    with pytest.raises(ChecksumError, match="differs from the expected 0000"):
        registry.fetch("toy-cifar-bad", progress=False)
    assert not (home / "toy-cifar-bad" / "cifar-10-batches-py").exists()


@pytest.mark.parametrize(
    "member, kind, match",
    [
        ("../escaped.txt", tarfile.REGTYPE, "points outside its folder"),
        ("/tmp/absolute.txt", tarfile.REGTYPE, "points outside its folder"),
        ("cifar-10-batches-py/link", tarfile.SYMTYPE, "is a link or special file"),
    ],
)
def test_unsafe_archive_members_are_refused(homes, server, register, member, kind, match):
    home, _ = homes
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo(member)
        info.type = kind
        if kind == tarfile.SYMTYPE:
            info.linkname = "/etc/passwd"
            tar.addfile(info)
        else:
            info.size = 4
            tar.addfile(info, io.BytesIO(b"evil"))
    data = buffer.getvalue()
    register(_archive_spec("toy-evil", data, server.put("evil.tar.gz", data)))
    with pytest.raises(InputError, match=match):
        registry.fetch("toy-evil", progress=False)
    assert not (home / "escaped.txt").exists() and not (home / "toy-evil" / "cifar-10-batches-py").exists()


# --------------------------------------------------------------------------- specs and registry


def test_spec_validation_errors():
    with pytest.raises(InputError, match="needs a sha256 or content_sha256"):
        FileSpec("a.txt")
    with pytest.raises(InputError, match="must be relative and stay inside"):
        FileSpec("../a.txt", sha256="0" * 64)
    with pytest.raises(InputError, match="content_sha256 is defined for .gz and .npz"):
        FileSpec("a.txt", content_sha256="0" * 64)
    with pytest.raises(InputError, match="either files or an archive"):
        _spec("empty", [])
    with pytest.raises(InputError, match="already registered"):
        registry.register_dataset(registry.DATASETS["mnist"])
    with pytest.raises(UnknownNameError, match="Did you mean: mnist"):
        registry.fetch("mnits")


def test_builtin_registry_has_the_architecture_names_and_provenance():
    expected = {
        "peterson-similarity",
        "peterson-images-animals",
        "peterson-images-fruits",
        "peterson-images-vegetables",
        "mnist",
        "fashion_mnist",
        "cifar10",
        "cifar100",
        "timm-results-2022-07-27",
        "timm-results-2025-10-30",
        "paper-models",
        "coral-tflite",
        "cifar10-resnet",
    }
    assert expected <= set(registry.list_datasets())
    for name in expected:
        spec = registry.DATASETS[name]
        assert spec.license and spec.citation and spec.homepage
        for fspec in spec.files:
            assert fspec.sha256 or fspec.content_sha256
            if fspec.relpath.endswith(".gz"):
                assert fspec.content_sha256, "gzip files are verified by their content"
    # Pinned upstream commits from the mirror's provenance.
    assert "834e08e677cf4ac316d7076065ef5609ce5d58b3" in registry.DATASETS["peterson-similarity"].files[0].urls[0]
    assert "104342d2d3480b3e66203073dac24f4e2dbb4c41" in registry.DATASETS["coral-tflite"].files[0].urls[0]
    assert registry.DATASETS["cifar10"].archive.md5 == "c58f30108f718f92721af3b95e74349a"
    assert len(registry.DATASETS["coral-tflite"].files) == 12
    assert len(registry.DATASETS["peterson-images-animals"].files) == 120
    assert len(registry.DATASETS["peterson-images-vegetables"].files) == 120


@pytest.mark.integration
def test_vegetable_checksums_equal_the_mirrors_published_list(mirror):
    """Independent oracle: the per-file sha256 list the mirror publishes for the vegetables."""
    published = {}
    for line in (mirror / "peterson" / "images-vegetables.sha256").read_text().splitlines():
        if line.strip():
            digest, name = line.split()
            published[name] = digest
    spec = registry.DATASETS["peterson-images-vegetables"]
    assert {f.relpath: f.sha256 for f in spec.files} == published
    assert all("834e08e677cf4ac316d7076065ef5609ce5d58b3/handoff/data/vegetables/" in f.urls[0] for f in spec.files)


def test_bundled_checksums_agree_with_the_mirror_readme():
    """Independent oracle: the checksums printed in ../shared/data/README.md."""
    files = {(name, f.relpath): f for name, spec in registry.DATASETS.items() for f in spec.files}
    assert (
        files["peterson-similarity", "similarity.npz"].sha256
        == "f44bf61e9a778b2552e222b68723af9fc039b6d950c577ee69371401360379ac"
    )
    readme_content = {
        ("mnist", "train-images-idx3-ubyte.gz"): "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        ("mnist", "t10k-labels-idx1-ubyte.gz"): "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        (
            "fashion_mnist",
            "train-images-idx3-ubyte.gz",
        ): "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        (
            "fashion_mnist",
            "t10k-labels-idx1-ubyte.gz",
        ): "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    }
    for key, value in readme_content.items():
        assert files[key].content_sha256 == value, key
    assert files["coral-tflite", "mobilenet_v2_1.0_224_quant.tflite"].sha256 == (
        "7aad0c74c5e3c06e5eb3c827e13304fdd68a83da6087d92ee169c24ff9fd4776"
    )
    for fspec in registry.DATASETS["cifar10-resnet"].files:  # "the first 8 hex digits are in each file name"
        assert fspec.sha256.startswith(fspec.relpath.split("-")[1].split(".")[0])


# --------------------------------------------------------------------------- the real mirror


@pytest.mark.integration
def test_every_mirror_dataset_fetches_and_verifies(mirror, tmp_path, monkeypatch):
    monkeypatch.setenv("REPALIGN_DATA_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("REPALIGN_MIRROR", str(mirror))
    names = [n for n in registry.list_datasets() if not n.startswith("cifar1")]  # CIFAR is not in the mirror
    for name in names:
        assert registry.dataset_status(name) == "mirror", name
        folder = registry.fetch(name, progress=False)
        for fspec in registry.DATASETS[name].files:
            assert (folder / fspec.relpath).is_file()
    problems = [r for r in registry.verify() if r["status"] in ("corrupt", "missing")]
    assert problems == []
    lines = (tmp_path / "home" / "paper-models" / "paper_models.txt").read_text().split()
    assert len(lines) == 490
    assert registry.dataset_status("cifar10") == "download"


@pytest.mark.integration
def test_mirror_copy_of_gzip_matches_readme_content_hash(mirror, tmp_path, monkeypatch):
    monkeypatch.setenv("REPALIGN_DATA_HOME", str(tmp_path / "home"))
    path = registry.fetch_file("mnist", "t10k-labels-idx1-ubyte.gz", progress=False)
    assert hashlib.sha256(gzip.decompress(path.read_bytes())).hexdigest() == (
        "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"
    )


def test_real_dataset_without_mirror_offline_names_what_is_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("REPALIGN_DATA_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("REPALIGN_MIRROR", raising=False)
    monkeypatch.setenv("REPALIGN_OFFLINE", "1")
    with pytest.raises(MissingDataError, match=r"Dataset 'paper-models'.*set REPALIGN_MIRROR to a folder holding \./"):
        registry.fetch("paper-models", progress=False)
    with pytest.raises(MissingDataError, match=r"peterson/.*similarity\.npz"):
        registry.fetch("peterson-similarity", progress=False)


# --------------------------------------------------------------------------- CLI


def test_cli_data_list_info_fetch_verify(homes, register, capsys):
    home, mirror = homes
    (mirror / "toy").mkdir()
    (mirror / "toy" / "c.txt").write_text("cli")
    register(_spec("toy-cli", [FileSpec("c.txt", sha256=sha256(b"cli"), size=3)]))

    assert main(["data", "list", "--format", "json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["toy-cli"]["status"] == "mirror" and "mnist" in rows

    assert main(["data", "info", "toy-cli", "--format", "json"]) == 0
    info = json.loads(capsys.readouterr().out)[0]
    assert info["license"] == "MIT" and info["size_bytes"] == 3

    assert main(["data", "fetch", "toy-cli", "--no-progress", "--format", "csv"]) == 0
    assert capsys.readouterr().out.splitlines() == ["name,path", f"toy-cli,{home / 'toy-cli'}"]

    assert main(["data", "verify", "toy-cli", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["status"] == "ok"

    (home / "toy-cli" / "c.txt").write_text("CLI")
    assert main(["data", "verify", "toy-cli", "--format", "json"]) == 1
    row = json.loads(capsys.readouterr().out)[0]
    assert row["n_problems"] == 1 and "corrupt" in row["problems"][0]

    assert main(["data", "info", "no-such-data"]) == 2
    assert "Unknown dataset 'no-such-data'" in capsys.readouterr().err
