"""load_dataset_images: which kind of dataset a name or path means (image folder, human
dataset, few-shot dataset), on tiny generated folders; the real Peterson data where marked."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from repalign.data import DATASET_KINDS, load_dataset_images
from repalign.data.fewshot_datasets import load_fewshot_dataset
from repalign.data.human import load_human
from repalign.errors import InputError, MissingDataError, UnknownNameError


def _png(path, shade: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (5, 4), (shade, 255 - shade, 7)).save(path)


def _pixels(images, index: int) -> np.ndarray:
    return np.asarray(images.load(index))


def test_a_folder_of_images_is_an_image_folder_sorted_by_name(tmp_path):
    for name, shade in (("b.png", 10), ("a.png", 20), ("c.jpg", 30)):
        _png(tmp_path / "photos" / name, shade)
    (tmp_path / "photos" / "notes.txt").write_text("not an image")
    source = load_dataset_images(tmp_path / "photos")
    assert source.kind == "image_folder" and source.kind in DATASET_KINDS
    assert source.stimuli == ("a.png", "b.png", "c.jpg") and source.labels is None
    assert len(source.images) == 3 and source.images.name == "photos"
    np.testing.assert_array_equal(_pixels(source.images, 1), np.asarray(Image.open(tmp_path / "photos" / "b.png")))


def test_a_manifest_folder_is_a_human_dataset(tmp_path):
    root = tmp_path / "toy"
    for i, name in enumerate(("owl.png", "cat.png", "dog.png")):
        _png(root / "images" / name, 40 * i)
    sim = np.array([[1.0, 0.2, 0.3], [0.2, 1.0, 0.9], [0.3, 0.9, 1.0]])
    np.save(root / "sim.npy", sim)
    (root / "repalign.json").write_text(
        json.dumps({"name": "toy", "images": "images", "similarity": "sim.npy", "stimuli": ["owl", "cat", "dog"]})
    )
    source = load_dataset_images(str(root))
    (oracle,) = load_human(root)
    assert source.kind == "human" and source.labels is None
    assert source.stimuli == oracle.stimuli == ("owl", "cat", "dog")  # stimulus order, not file order
    for i, path in enumerate(oracle.image_paths):
        np.testing.assert_array_equal(_pixels(source.images, i), np.asarray(Image.open(path)))


def test_class_subfolders_are_a_fewshot_dataset(tmp_path):
    for label, shade in (("cats", 50), ("dogs", 150)):
        for i in range(2):
            _png(tmp_path / "pets" / label / f"{i}.png", shade + i)
    source = load_dataset_images(tmp_path / "pets")
    oracle = load_fewshot_dataset(tmp_path / "pets")
    assert source.kind == "fewshot" and source.stimuli is None
    assert source.labels.dtype == np.int64 and source.labels.tolist() == oracle.labels.tolist() == [0, 0, 1, 1]
    np.testing.assert_array_equal(_pixels(source.images, 3), _pixels(oracle.images, 3))


def test_what_is_none_of_the_kinds(tmp_path):
    with pytest.raises(UnknownNameError, match=r"Dataset 'mnistt' is not an image folder and .*Did you mean: mnist"):
        load_dataset_images("mnistt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UnknownNameError, match="folder holds no images and is not a human dataset") as info:
        load_dataset_images(tmp_path / "empty")
    assert "\n" not in str(info.value) and "not a few-shot dataset" in str(info.value)
    with pytest.raises(UnknownNameError, match="not found"):
        load_dataset_images(tmp_path / "absent")


def test_a_human_dataset_without_images_says_how_to_add_them(tmp_path):
    root = tmp_path / "matrix-only"
    root.mkdir()
    np.save(root / "sim.npy", np.array([[1.0, 0.2, 0.3], [0.2, 1.0, 0.9], [0.3, 0.9, 1.0]]))
    (root / "repalign.json").write_text(json.dumps({"similarity": "sim.npy", "stimuli": ["a", "b", "c"]}))
    with pytest.raises(MissingDataError, match="'matrix-only' has no images: add 'images = \"FOLDER\"'"):
        load_dataset_images(root)


@pytest.mark.integration
def test_peterson_names_one_domain_not_all_six(mirror):
    source = load_dataset_images("peterson:animals")
    assert source.kind == "human" and len(source.images) == len(source.stimuli) == 120
    with pytest.raises(InputError, match=r"'peterson' holds 6 datasets .*pick one, e.g. 'peterson:animals'"):
        load_dataset_images("peterson")
