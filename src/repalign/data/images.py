"""Image collections as the extraction code sees them: an ordered, indexable set of images
with a content fingerprint (used in the embedding cache key).

Images are decoded one at a time on demand, so a collection never holds all decoded
images in memory.
"""

from __future__ import annotations

import abc
import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from repalign.errors import InputError, MissingDataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm")


def decode_image(path: str | os.PathLike):
    """Open an image file as an RGB ``PIL.Image``.

    Transparent images are composited on white (the background the raters saw), and
    grayscale, palette and CMYK images are converted. A missing or corrupt file raises an
    error that names it.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        with Image.open(path) as img:
            img.load()
            return to_rgb(img)
    except FileNotFoundError as exc:
        raise MissingDataError(f"Image file not found: {path}") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"Corrupt or unreadable image file: {path} ({exc})") from exc


def to_rgb(img):
    """Convert any PIL image mode to RGB, compositing transparency onto white."""
    from PIL import Image

    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        # Pasting through the alpha mask gives the same pixels as alpha_composite onto white
        # (checked for every value/alpha pair) at a third of the cost.
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba.convert("RGB"), mask=rgba.getchannel("A"))
        return background
    if img.mode != "RGB":
        return img.convert("RGB")
    return img.copy()


class ImageSet(abc.ABC):
    """An ordered collection of images. Subclasses decode lazily in :meth:`load`."""

    name: str

    @abc.abstractmethod
    def __len__(self) -> int: ...

    @abc.abstractmethod
    def load(self, index: int):
        """Return image ``index`` as an RGB ``PIL.Image``."""

    @abc.abstractmethod
    def fingerprint(self) -> str:
        """A hex digest that changes whenever any image's content or the order changes."""


class FileImageSet(ImageSet):
    """Images stored as files, in the given order."""

    def __init__(self, paths: Sequence[str | os.PathLike], *, name: str = "images"):
        self.paths = tuple(Path(p) for p in paths)
        self.name = name
        missing = [p for p in self.paths if not p.is_file()]
        if missing:
            shown = ", ".join(str(p) for p in missing[:3])
            more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
            raise MissingDataError(f"{len(missing)} image file(s) of '{name}' are missing: {shown}{more}")
        self._fingerprint: str | None = None

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, index: int):
        return decode_image(self.paths[index])

    def fingerprint(self) -> str:
        if self._fingerprint is None:
            digest = hashlib.sha256(b"files\0")
            for path in self.paths:
                digest.update(path.name.encode() + b"\0")
                digest.update(hashlib.sha256(path.read_bytes()).digest())
            self._fingerprint = digest.hexdigest()
        return self._fingerprint


class ArrayImageSet(ImageSet):
    """Images held in a uint8 array: ``(n, height, width)`` grayscale or ``(n, height, width, 3)`` RGB."""

    def __init__(self, images: np.ndarray, *, name: str = "array"):
        images = np.asarray(images)
        if images.dtype != np.uint8 or images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[-1] != 3):
            raise InputError(
                f"Image array of '{name}' must be uint8 with shape (n, h, w) or (n, h, w, 3); "
                f"got {images.dtype} {images.shape}"
            )
        self.images = images
        self.name = name
        self._fingerprint: str | None = None

    def __len__(self) -> int:
        return len(self.images)

    def load(self, index: int):
        from PIL import Image

        array = self.images[index]
        # Grayscale digits are replicated to three channels for RGB models.
        return Image.fromarray(array, mode="L").convert("RGB") if array.ndim == 2 else Image.fromarray(array, "RGB")

    def fingerprint(self) -> str:
        if self._fingerprint is None:
            digest = hashlib.sha256(b"array\0" + str(self.images.shape).encode())
            digest.update(np.ascontiguousarray(self.images).tobytes())
            self._fingerprint = digest.hexdigest()
        return self._fingerprint


class SubsetImageSet(ImageSet):
    """A view of selected indices of another image set (e.g. the few-shot images actually used)."""

    def __init__(self, base: ImageSet, indices: Sequence[int]):
        self.base = base
        self.indices = np.asarray(indices, dtype=np.int64)
        self.name = f"{base.name}[subset]"

    def __len__(self) -> int:
        return len(self.indices)

    def load(self, index: int):
        return self.base.load(int(self.indices[index]))

    def fingerprint(self) -> str:
        digest = hashlib.sha256(b"subset\0" + self.base.fingerprint().encode())
        digest.update(self.indices.tobytes())
        return digest.hexdigest()


def list_image_files(folder: str | os.PathLike) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name."""
    folder = Path(folder)
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
