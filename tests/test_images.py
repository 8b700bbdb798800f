"""Image decoding and image sets: robust decoding, lazy loading, content fingerprints."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from repalign.data.images import ArrayImageSet, FileImageSet, SubsetImageSet, decode_image, to_rgb
from repalign.errors import InputError, MissingDataError


def test_transparency_is_composited_on_white_exactly_like_pillow_alpha_composite():
    value, alpha = np.meshgrid(np.arange(256), np.arange(256))
    rgba = np.stack([value, 255 - value, value // 2, alpha], axis=-1).astype(np.uint8)
    image = Image.fromarray(rgba, "RGBA")
    white = Image.new("RGBA", image.size, (255, 255, 255, 255))
    oracle = np.asarray(Image.alpha_composite(white, image).convert("RGB"))
    assert np.array_equal(np.asarray(to_rgb(image)), oracle)


@pytest.mark.parametrize("mode", ["L", "CMYK", "P", "LA", "I;16"])
def test_every_mode_becomes_rgb(mode, tmp_path):
    image = Image.new(mode, (7, 5))
    assert to_rgb(image).mode == "RGB"
    if mode in ("L", "P", "LA"):
        path = tmp_path / "x.png"
        image.save(path)
        decoded = decode_image(path)
        assert decoded.mode == "RGB" and decoded.size == (7, 5)


def test_corrupt_and_missing_files_name_the_file(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    with pytest.raises(InputError, match="broken.png"):
        decode_image(bad)
    with pytest.raises(MissingDataError, match="nothere.png"):
        decode_image(tmp_path / "nothere.png")
    with pytest.raises(MissingDataError, match="1 image file"):
        FileImageSet([tmp_path / "nothere.png"], name="mine")


def test_file_fingerprint_follows_content_and_order(tmp_path):
    paths = []
    for i in range(3):
        path = tmp_path / f"{i}.png"
        Image.new("RGB", (4, 4), (i * 40, 0, 0)).save(path)
        paths.append(path)
    base = FileImageSet(paths).fingerprint()
    assert FileImageSet(paths).fingerprint() == base
    assert FileImageSet(paths[::-1]).fingerprint() != base
    Image.new("RGB", (4, 4), (1, 2, 3)).save(paths[1])
    assert FileImageSet(paths).fingerprint() != base


def test_array_images_grayscale_to_rgb_and_fingerprints():
    gray = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    images = ArrayImageSet(gray)
    first = np.asarray(images.load(0))
    assert (
        first.shape == (3, 4, 3) and np.array_equal(first[..., 0], gray[0]) and np.array_equal(first[..., 2], gray[0])
    )
    changed = gray.copy()
    changed[1, 0, 0] += 1
    assert ArrayImageSet(changed).fingerprint() != images.fingerprint()
    with pytest.raises(InputError, match="uint8"):
        ArrayImageSet(gray.astype(np.float32))


def test_subset_view_loads_selected_images_and_has_its_own_fingerprint():
    gray = np.stack([np.full((2, 2), i, np.uint8) for i in range(5)])
    base = ArrayImageSet(gray)
    subset = SubsetImageSet(base, [4, 1])
    assert len(subset) == 2
    assert np.asarray(subset.load(0))[0, 0, 0] == 4
    assert subset.fingerprint() != SubsetImageSet(base, [1, 4]).fingerprint()
