"""Image collections as the extraction code sees them: an ordered, indexable set of images
with a content fingerprint (used in the embedding cache key).

Images are decoded one at a time on demand, so a collection never holds all decoded
images in memory.
"""

from __future__ import annotations

import abc
import hashlib
import logging
import os
import struct
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from repalign.errors import InputError, MissingDataError, first_line

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm")


def decode_image(path: str | os.PathLike):
    """Open an image file as an RGB ``PIL.Image``.

    Transparent images are composited on white (the background the raters saw), and
    grayscale, palette and CMYK images are converted. Images that are not 8 bits a channel
    are scaled to 8 bits by their full range, never clipped: 16-bit images (``I;16``) are
    divided by 257 (65535 -> 255), float images (``F``) must hold intensities in [0, 1]
    (times 255; other ranges are refused, having no agreed white level), and 32-bit integer
    images are refused except 16-bit PNGs, which older Pillow decodes so. An animated image
    (GIF, APNG, WebP) gives its first frame, with a warning. An image above
    ``PIL.Image.MAX_IMAGE_PIXELS`` pixels is refused before it is decoded (Pillow would only
    warn): it is a decompression bomb or nothing a model should resize. A missing or corrupt
    file raises an error that names it.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        with warnings.catch_warnings():
            # Pillow warns between MAX_IMAGE_PIXELS and twice that; here it is an error. (A filter
            # that outlives this block, when another thread saves and restores the filters at
            # the same time, only turns this one warning into an error there too.)
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                _check_pixels(img, path)
                _warn_if_several_frames(img, path)
                img.load()
                return to_rgb(_to_8bit(img, path))
    except FileNotFoundError as exc:
        raise MissingDataError(f"Image file not found: {path}") from exc
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise InputError(
            f"Image {path} has more pixels than the {Image.MAX_IMAGE_PIXELS} Pillow decodes safely "
            "(PIL.Image.MAX_IMAGE_PIXELS): a decompression bomb, or an image to downscale first"
        ) from exc
    except InputError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, struct.error) as exc:
        raise InputError(f"Corrupt or unreadable image file: {path} ({first_line(exc, with_type=True)})") from exc
    except (IndexError, KeyError, TypeError, ZeroDivisionError, MemoryError) as exc:
        # what Pillow's decoders raise on damaged files beyond the errors they document (a
        # truncated GIF: IndexError); the file is as unreadable as with any other error
        raise InputError(f"Corrupt or unreadable image file: {path} ({first_line(exc, with_type=True)})") from exc


def _warn_if_several_frames(img, path: Path) -> None:
    """Warn that an animated or multi-page image stands for its first frame; leaves it on that frame."""
    try:
        n_frames = getattr(img, "n_frames", 1)  # counting a GIF's frames reads through the file
    except (OSError, EOFError, ValueError, IndexError, struct.error):
        n_frames = None  # damaged after the first frame; the first may still be whole
    if n_frames == 1:
        return
    img.seek(0)
    if n_frames is None:
        log.warning("%s has damaged frames after the first; using the first", path)
    else:
        log.warning("%s has %d frames (animated or multi-page); using the first", path, n_frames)


def _check_pixels(img, path: Path) -> None:
    from PIL import Image

    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and img.width * img.height > limit:
        # Image.open has warned (or raised) already unless the filters were changed meanwhile
        raise Image.DecompressionBombError(f"{path}: {img.width}x{img.height} pixels")


def _to_8bit(img, path: Path):
    """An 8-bit-per-channel image of the same picture (16-bit and float scaled by their range)."""
    from PIL import Image

    if img.mode.startswith("I;16"):
        array = np.asarray(img, dtype=np.float64)  # any byte order, as numbers
        return Image.fromarray(np.round(array / 257.0).astype(np.uint8))  # 2-D uint8: mode "L"
    if img.mode == "I":
        array = np.asarray(img)
        if img.format == "PNG" and array.min() >= 0 and array.max() <= 65535:  # 16-bit PNG in older Pillow
            return Image.fromarray(np.round(array / 257.0).astype(np.uint8))
        raise InputError(
            f"Image {path} holds 32-bit integers, which have no agreed white level; save it with 8 or 16 bits a channel"
        )
    if img.mode == "F":
        array = np.asarray(img, dtype=np.float64)
        if not np.isfinite(array).all():
            raise InputError(f"Image {path} holds NaN or infinite values")
        if array.min() < 0 or array.max() > 1:
            raise InputError(
                f"Image {path} holds floats in [{array.min():.4g}, {array.max():.4g}]; float images must hold "
                "intensities in [0, 1] (or save it with 8 or 16 bits a channel)"
            )
        return Image.fromarray(np.round(array * 255.0).astype(np.uint8))
    return img


def to_rgb(img):
    """Convert any PIL image mode to RGB, compositing transparency onto white."""
    from PIL import Image

    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
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


def unwrap_subsets(images: ImageSet) -> tuple[ImageSet, np.ndarray | None]:
    """``(base, indices)``: the set below any chain of subsets, and the positions in it of
    ``images``' images, in order (None when ``images`` is not a subset)."""
    indices = None
    while isinstance(images, SubsetImageSet):
        indices = images.indices if indices is None else images.indices[indices]
        images = images.base
    return images, indices


def list_image_files(folder: str | os.PathLike) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name."""
    folder = Path(folder)
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
