"""Few-shot dataset loaders: CIFAR python pickles (generated here), IDX files, ImageFolder trees."""

from __future__ import annotations

import gzip
import os
import pickle

import numpy as np
import pytest

from repalign.data.fewshot_datasets import load_fewshot_dataset, read_idx
from repalign.errors import (
    InputError,
    MissingDataError,
    UnknownNameError,
    UnsafePickleError,
)


def _cifar_rows(rng, n):
    """n random 32x32 RGB images and their CIFAR rows (red plane, green plane, blue plane)."""
    images = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
    rows = images.transpose(0, 3, 1, 2).reshape(n, 3072)
    return images, rows


def _dump(path, obj):
    with open(path, "wb") as handle:
        pickle.dump(obj, handle, protocol=2)  # the official tarballs are protocol-2 pickles


def write_cifar10(root, rng, *, per_batch=6):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    names = [b"airplane", b"automobile", b"bird"]
    _dump(
        folder / "batches.meta",
        {b"label_names": names, b"num_cases_per_batch": per_batch, b"num_vis": 3072},
    )
    images, rows = _cifar_rows(rng, per_batch)
    labels = [i % 3 for i in range(per_batch)]
    _dump(
        folder / "test_batch",
        {
            b"batch_label": b"testing batch 1 of 1",
            b"data": rows,
            b"labels": labels,
            b"filenames": [f"img_{i}.png".encode() for i in range(per_batch)],
        },
    )
    train = []
    for b in range(1, 6):
        batch_images, batch_rows = _cifar_rows(rng, per_batch)
        _dump(
            folder / f"data_batch_{b}",
            {b"data": batch_rows, b"labels": [(i + b) % 3 for i in range(per_batch)]},
        )
        train.append(batch_images)
    return images, np.array(labels), np.concatenate(train)


def write_cifar100(root, rng, *, n=8):
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    fine = [b"apple", b"aquarium_fish", b"baby", b"bear"]
    _dump(
        folder / "meta",
        {
            b"fine_label_names": fine,
            b"coarse_label_names": [b"fruit", b"fish", b"people", b"mammals"],
        },
    )
    images, rows = _cifar_rows(rng, n)
    fine_labels = [i % 4 for i in range(n)]
    coarse_labels = [3 - i % 4 for i in range(n)]
    _dump(
        folder / "test",
        {b"data": rows, b"fine_labels": fine_labels, b"coarse_labels": coarse_labels},
    )
    _dump(
        folder / "train",
        {
            b"data": rows[:4],
            b"fine_labels": fine_labels[:4],
            b"coarse_labels": coarse_labels[:4],
        },
    )
    return images, np.array(fine_labels)


def test_cifar10_layout(tmp_path, rng):
    images, labels, train_images = write_cifar10(tmp_path, rng)
    for path in (tmp_path, tmp_path / "cifar-10-batches-py"):
        data = load_fewshot_dataset(path)
        assert data.class_names == ("airplane", "automobile", "bird")
        assert data.labels.dtype == np.int64 and np.array_equal(data.labels, labels)
        assert np.array_equal(data.images.images, images)
        # The loaded image is the original one: planes reassembled into RGB pixels.
        assert np.array_equal(np.asarray(data.images.load(4)), images[4])
    train = load_fewshot_dataset(tmp_path, split="train")
    assert len(train) == 30 and np.array_equal(train.images.images, train_images)


def test_cifar100_uses_fine_labels(tmp_path, rng):
    images, fine = write_cifar100(tmp_path, rng)
    data = load_fewshot_dataset(tmp_path)
    assert data.class_names == ("apple", "aquarium_fish", "baby", "bear")
    assert np.array_equal(data.labels, fine)
    assert np.array_equal(np.asarray(data.images.load(7)), images[7])
    assert len(load_fewshot_dataset(tmp_path / "cifar-100-python", split="train")) == 4


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_cifar_pickle_is_refused(tmp_path, rng):
    write_cifar10(tmp_path, rng)
    marker = tmp_path / "pwned"
    _dump(
        tmp_path / "cifar-10-batches-py" / "test_batch",
        {b"data": _Exploit(marker), b"labels": [0]},
    )
    with pytest.raises(UnsafePickleError, match="Refusing to unpickle"):
        load_fewshot_dataset(tmp_path)
    assert not marker.exists()


def test_malformed_cifar_files(tmp_path, rng):
    write_cifar10(tmp_path, rng)
    folder = tmp_path / "cifar-10-batches-py"
    _dump(
        folder / "test_batch",
        {b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]},
    )
    with pytest.raises(InputError, match=r"uint8 \(n, 3072\)"):
        load_fewshot_dataset(tmp_path)
    _dump(folder / "test_batch", {b"data": np.zeros((2, 3072), np.uint8)})
    with pytest.raises(InputError, match="lacks \\['labels'\\]"):
        load_fewshot_dataset(tmp_path)
    _dump(
        folder / "test_batch",
        {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 7]},
    )
    with pytest.raises(InputError, match="out of range for 3 class names"):
        load_fewshot_dataset(tmp_path)


def _write_idx(path, array, *, magic=None, truncate=0):
    header = bytes([0, 0, 0x08, array.ndim]) if magic is None else magic
    header += b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    payload = header + array.tobytes()
    payload = payload[: len(payload) - truncate]
    with gzip.open(path, "wb") as handle:
        handle.write(payload)


def test_idx_folder_and_errors(tmp_path, rng):
    images = rng.integers(0, 256, size=(12, 5, 4), dtype=np.uint8)
    labels = np.arange(12, dtype=np.uint8) % 3
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", images)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", labels)
    assert np.array_equal(read_idx(tmp_path / "t10k-images-idx3-ubyte.gz"), images)
    data = load_fewshot_dataset(tmp_path)
    assert data.class_names == ("0", "1", "2") and np.array_equal(data.labels, labels)
    assert data.images.load(3).mode == "RGB"  # grayscale digits become RGB for RGB models
    assert np.array_equal(np.asarray(data.images.load(3))[..., 1], images[3])

    bad = tmp_path / "bad.gz"
    _write_idx(bad, images, magic=b"\x50\x4b\x03\x04")
    with pytest.raises(InputError, match="not an IDX file"):
        read_idx(bad)
    _write_idx(bad, images, truncate=7)
    with pytest.raises(InputError, match="truncated or corrupt"):
        read_idx(bad)
    _write_idx(bad, images, magic=bytes([0, 0, 0x0D, 3]))
    with pytest.raises(InputError, match="element type 0x0d"):
        read_idx(bad)
    bad.write_bytes(b"not gzip at all")
    with pytest.raises(InputError, match="Cannot read IDX"):
        read_idx(bad)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", labels[:-1])
    with pytest.raises(InputError, match="12 images but 11 labels"):
        load_fewshot_dataset(tmp_path)


def test_image_folder(tmp_path):
    from PIL import Image

    for name, shade in (("cats", 40), ("dogs", 200)):
        (tmp_path / "pets" / name).mkdir(parents=True)
        for i in range(3):
            Image.new("L", (6, 5), shade + i).save(tmp_path / "pets" / name / f"{i}.png")
    data = load_fewshot_dataset(tmp_path / "pets")
    assert data.name == "pets" and data.class_names == ("cats", "dogs")
    assert np.array_equal(data.labels, [0, 0, 0, 1, 1, 1])
    image = data.images.load(4)
    assert image.mode == "RGB" and image.getpixel((0, 0)) == (201, 201, 201)
    (tmp_path / "pets" / "empty").mkdir()
    with pytest.raises(InputError, match="holds no image files"):
        load_fewshot_dataset(tmp_path / "pets")
    with pytest.raises(InputError, match="no class sub-folders"):
        load_fewshot_dataset(tmp_path / "pets" / "cats")


def test_unknown_dataset_names_the_closest():
    with pytest.raises(UnknownNameError, match="Did you mean: fashion_mnist"):
        load_fewshot_dataset("fashion-mnist")
    with pytest.raises(UnknownNameError, match="Did you mean: cifar100, cifar10"):
        load_fewshot_dataset("cifar1000")
    with pytest.raises(MissingDataError, match="folder not found"):
        load_fewshot_dataset("/no/such/folder")
    with pytest.raises(InputError, match="Unknown split"):
        load_fewshot_dataset("mnist", split="validation")


MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.mark.integration
def test_real_mnist_and_fashion_mnist(mirror):
    mnist = load_fewshot_dataset("mnist")
    assert mnist.images.images.shape == (10000, 28, 28)
    assert np.array_equal(np.bincount(mnist.labels), MNIST_TEST_COUNTS)
    assert mnist.labels[:8].tolist() == [7, 2, 1, 0, 4, 1, 4, 9]  # upstream order
    fashion = load_fewshot_dataset("fashion_mnist")
    assert np.array_equal(np.bincount(fashion.labels), [1000] * 10)
    assert fashion.class_names[9] == "Ankle boot"
    assert fashion.images.load(0).size == (28, 28) and fashion.images.load(0).mode == "RGB"
    train = load_fewshot_dataset("mnist", split="train")
    assert train.images.images.shape == (60000, 28, 28) and len(np.unique(train.labels)) == 10
