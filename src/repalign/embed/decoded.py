"""Decoded image files, kept once per image set for every preprocessing configuration.

The input cache (:mod:`repalign.embed.inputs`) spares every model after the first of a
preprocessing configuration the decode and the preprocessing. The first model of each
configuration still prepares its own inputs, and decoding a PNG or JPEG is most of that
work (11 ms an image for the 500-pixel Peterson PNGs on the development CPU, against about
1 ms for the resize). A study of many configurations would decode every image once per
configuration. This module decodes an image set's files once, into the same store, as the
RGB pixels :func:`repalign.data.images.decode_image` gives; every first model of a
configuration then reads pixels instead of files.

* **Same pixels.** An image read back is ``Image.fromarray`` of the stored RGB array: the
  image the file decodes to, byte for byte, so the inputs and features are unchanged and
  neither cache key tells the two apart.
* **One entry per image set,** keyed by the set's content fingerprint and the extraction
  code version (decoding rules are part of it). The pixels of all images sit in one flat
  uint8 array; the metadata lists each image's height and width.
* **Bounded.** The sizes come from the files' headers before anything is decoded: a set
  whose pixels would not fit in the store's limit is not kept (and not decoded twice to
  find out). Decoding runs in a thread per usable CPU (Pillow's decoders release the GIL)
  and streams into the entry, so memory holds a few images, not the set.
* **Never in the way.** Only image sets whose images are files (``FileImageSet`` or a
  subset of one) are kept. A file that fails to decode, or decodes to another size than its
  header said, abandons the entry; the extraction then decodes the files itself and reports
  that file's error as it always did.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from repalign.data.images import FileImageSet, ImageSet, unwrap_subsets
from repalign.embed.cache import cache_key
from repalign.embed.inputs import INPUT_CACHE_FORMAT_VERSION, InputCache
from repalign.errors import RepalignError

log = logging.getLogger(__name__)

#: Images decoded ahead of the writer per decoding thread (bounds memory while streaming).
_AHEAD_PER_THREAD = 4

__all__ = ["DecodedImageSet", "decoded_images", "image_files"]


def image_files(images: ImageSet) -> list[Path] | None:
    """The files behind ``images`` in its order, or None when its images are not plain files."""
    base, indices = unwrap_subsets(images)
    if not isinstance(base, FileImageSet) or type(base).load is not FileImageSet.load:
        return None
    return list(base.paths) if indices is None else [base.paths[int(i)] for i in indices]


def decoded_images(images: ImageSet, store: InputCache, *, code_version: str, threads: int = 1) -> ImageSet:
    """``images`` read from the store's decoded pixels, decoding the files into it first when
    they are not there yet; ``images`` itself when they cannot be kept (see the module notes).
    """
    if isinstance(images, DecodedImageSet) or not store.enabled:
        return images
    paths = image_files(images)
    if paths is None:
        return images
    parts = {
        "kind": "decoded-images",
        "input_format": INPUT_CACHE_FORMAT_VERSION,
        "images": images.fingerprint(),
        "code_version": code_version,
    }
    key = cache_key(parts)
    stored = _read(store, key, images, paths)
    if stored is None and _decode_into(store, key, parts, images, paths, threads):
        stored = _read(store, key, images, paths)
    return images if stored is None else stored


class DecodedImageSet(ImageSet):
    """An image set read from decoded RGB pixels (a flat uint8 array and each image's size).

    It stands for the set it was decoded from: the same name, length and fingerprint.
    Pickled (to DataLoader workers), it carries the file's path, never the pixels.
    """

    def __init__(
        self, source: ImageSet, paths: list[Path], array_path: Path, shapes: np.ndarray, pixels: np.ndarray | None
    ):
        self.source = source
        self.name = source.name
        self.paths = paths  # error messages name the file, as the file path's do
        self.array_path = Path(array_path)
        self.shapes = shapes
        self.offsets = np.concatenate([[0], np.cumsum(_sizes(shapes))])
        self._pixels = pixels

    def __len__(self) -> int:
        return len(self.shapes)

    def load(self, index: int):
        from PIL import Image

        height, width = (int(v) for v in self.shapes[index])
        start, stop = int(self.offsets[index]), int(self.offsets[index + 1])
        return Image.fromarray(np.array(self._flat()[start:stop]).reshape(height, width, 3), "RGB")

    def fingerprint(self) -> str:
        return self.source.fingerprint()

    def _flat(self) -> np.ndarray:
        if self._pixels is None:  # reopened after pickling; checked by the process that wrote or read it
            self._pixels = np.load(self.array_path, mmap_mode="r")
        return self._pixels

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_pixels": None}


def _read(store: InputCache, key: str, images: ImageSet, paths: list[Path]) -> DecodedImageSet | None:
    pixels = store.load(key)
    if pixels is None:
        return None
    meta = store.metadata(key) or {}
    shapes = np.asarray(meta.get("image_shapes", []), dtype=np.int64).reshape(-1, 2)
    if len(shapes) != len(paths) or int(_sizes(shapes).sum()) != len(pixels):
        log.warning("Discarding decoded-image cache entry %s: its sizes do not match its pixels", key)
        store.remove(key)
        return None
    log.info("Decoded images of '%s' read from the input cache (%s)", images.name, key[:12])
    return DecodedImageSet(images, paths, store.array_path(key), shapes, pixels)


def _decode_into(
    store: InputCache, key: str, parts: dict[str, Any], images: ImageSet, paths: list[Path], threads: int
) -> bool:
    """Decode every file into a new entry; False (nothing kept) when they do not fit or one fails."""
    shapes = _header_shapes(paths)
    if shapes is None:
        return False
    total = int(_sizes(shapes).sum())
    if total > store.max_bytes:
        log.info("Not keeping decoded images of '%s': %d bytes is more than the input cache limit", images.name, total)
        return False
    info = {"images": images.name, "source": "decoded", "image_shapes": shapes.tolist()}
    recorder = store.recorder(key, total, parts=parts, info=info)
    try:
        with contextlib.closing(_decoded_pixels(images, threads)) as decoded:
            for index, pixels in enumerate(decoded):
                if pixels.shape != (shapes[index, 0], shapes[index, 1], 3):
                    log.info(
                        "Not keeping decoded images of '%s': %s decodes to another size", images.name, paths[index]
                    )
                    recorder.abort()
                    return False
                recorder.add(pixels.reshape(-1))
    except RepalignError as exc:  # the extraction decodes this file again and reports it
        log.debug("Not keeping decoded images of '%s': %s", images.name, exc)
        recorder.abort()
        return False
    except BaseException:
        recorder.abort()
        raise
    return recorder.commit()


def _sizes(shapes: np.ndarray) -> np.ndarray:
    """Bytes of each image's RGB pixels, from ``(n, 2)`` heights and widths."""
    return shapes[:, 0] * shapes[:, 1] * 3


def _header_shapes(paths: list[Path]) -> np.ndarray | None:
    """``(n, 2)`` heights and widths read from the files' headers (no pixels decoded)."""
    from PIL import Image

    shapes = np.empty((len(paths), 2), dtype=np.int64)
    try:
        for i, path in enumerate(paths):
            with Image.open(path) as img:
                shapes[i] = (img.height, img.width)
    except Exception as exc:  # noqa: BLE001 - an unreadable header: the extraction reports it
        log.debug("Not keeping decoded images: cannot read the size of an image (%s)", exc)
        return None
    return shapes


def _decoded_pixels(images: ImageSet, threads: int) -> Iterator[np.ndarray]:
    """Every image's ``(h, w, 3)`` uint8 pixels in order, decoded by ``threads`` threads."""
    if threads <= 1:
        for index in range(len(images)):
            yield _pixels(images, index)
        return
    ahead = threads * _AHEAD_PER_THREAD
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="repalign-decode") as pool:
        pending = [pool.submit(_pixels, images, i) for i in range(min(ahead, len(images)))]
        for index in range(len(images)):
            pixels = pending[index].result()
            pending[index] = None  # the writer has it: free the slot's memory
            if index + ahead < len(images):
                pending.append(pool.submit(_pixels, images, index + ahead))
            yield pixels


def _pixels(images: ImageSet, index: int) -> np.ndarray:
    return np.asarray(images.load(index))
