"""Reading ``.npy`` and ``.npz`` files that may be damaged or hostile.

``np.load`` trusts a file's header: an ``.npy`` whose header declares a (10^9, 10^9) array
makes it allocate exabytes (MemoryError) before it notices the data is not there, an empty
or cut-off file ends in EOFError, and an ``.npz`` member can decompress to far more than
the archive's size. These readers parse the header first, compare the bytes it declares
with the bytes the file (or the zip member) holds and with :data:`MAX_ARRAY_BYTES`, and
only then read the data -- never with pickle. Every problem is a one-line
:class:`~repalign.errors.InputError` naming the file; the header's text is never quoted
(only its parsed shape and dtype).
"""

from __future__ import annotations

import math
import os
import struct
import tokenize
import zipfile
import zlib
from pathlib import Path
from typing import IO

import numpy as np

from repalign.errors import InputError, MissingDataError, first_line, quote_token

#: The largest array (in bytes, all members of an .npz together) these readers load: far above
#: any embedding or similarity matrix repalign handles, far below what would exhaust a machine.
MAX_ARRAY_BYTES = 16 << 30
#: numpy's own limit on the header's length (np.load refuses longer headers the same way).
_MAX_HEADER_BYTES = 10_000
_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGIC = b"PK\x03\x04"
_EMPTY_ZIP_MAGIC = b"PK\x05\x06"
#: What a damaged archive or member can raise while it is read (zlib, zipfile, numpy, struct).
_READ_ERRORS = (
    OSError,
    EOFError,
    ValueError,
    zipfile.BadZipFile,
    zlib.error,
    struct.error,
    NotImplementedError,  # an unsupported zip compression method
    RuntimeError,  # an encrypted zip member
    OverflowError,
    MemoryError,
)


def read_npy(path: str | os.PathLike) -> np.ndarray:
    """The array of an ``.npy`` file, read without pickle after its header is checked.

    Raises:
        MissingDataError: the file does not exist.
        InputError: not an ``.npy`` (an ``.npz``, a pickle, anything else), a damaged header,
            an object array, fewer data bytes than the header declares, or more than
            :data:`MAX_ARRAY_BYTES`.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            if size == 0:
                raise InputError(f"{path} is empty (0 bytes); expected a .npy array")
            start = handle.read(len(_NPY_MAGIC))
            if not start.startswith(_NPY_MAGIC):
                raise InputError(f"{path} {_not_npy(start)}")
            handle.seek(0)
            shape, dtype, header_end = _read_header(handle, path, size)
            _check_size(path, shape, dtype, available=size - header_end, total=0)
            handle.seek(0)
            return np.lib.format.read_array(handle, allow_pickle=False)
    except FileNotFoundError as exc:
        raise MissingDataError(f"File not found: {path}") from exc
    except InputError:
        raise
    except _READ_ERRORS as exc:
        raise InputError(f"{path} is damaged: {first_line(exc, with_type=True)}") from exc


def read_npz(path: str | os.PathLike, *, keys: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` file (all of them, or those of ``keys`` it holds), without pickle.

    Every member's header is checked against the member's declared size and, summed over
    the members read, against :data:`MAX_ARRAY_BYTES`, so a compressed member cannot
    inflate into more memory than that.

    Returns:
        ``{name: array}`` in the archive's order; a name of ``keys`` the file lacks is absent.

    Raises:
        MissingDataError: the file does not exist.
        InputError: not a zip archive (an ``.npy`` is named as such), a damaged archive or
            member, an object array, or more than :data:`MAX_ARRAY_BYTES` in all.
    """
    path = Path(path)
    start = b""
    try:
        if path.stat().st_size == 0:
            raise InputError(f"{path} is empty (0 bytes); expected an .npz archive")
        with open(path, "rb") as handle:
            start = handle.read(len(_NPY_MAGIC))
        if start.startswith(_NPY_MAGIC):
            raise InputError(f"{path} holds a single .npy array, not an .npz archive; rename it to .npy")
        with zipfile.ZipFile(path) as archive:
            members = _members(archive)
            wanted = members if keys is None else {k: members[k] for k in keys if k in members}
            arrays, total = {}, 0
            for name, info in wanted.items():
                label = f"{path} (member {quote_token(name)})"
                with archive.open(info) as member:
                    shape, dtype, header_end = _read_header(member, label, info.file_size)
                    total = _check_size(label, shape, dtype, available=info.file_size - header_end, total=total)
                with archive.open(info) as member:  # from the start again: numpy reads the header itself
                    arrays[name] = np.lib.format.read_array(member, allow_pickle=False)
            return arrays
    except FileNotFoundError as exc:
        raise MissingDataError(f"File not found: {path}") from exc
    except InputError:
        raise
    except _READ_ERRORS as exc:
        what = "not a zip archive" if isinstance(exc, zipfile.BadZipFile) and not start.startswith(b"PK") else None
        raise InputError(
            f"{path} is not an .npz archive or is damaged: {what or first_line(exc, with_type=True)}"
        ) from exc


def read_npz_names(path: str | os.PathLike) -> list[str]:
    """Names of the arrays in an ``.npz`` file, in the archive's order (no array is read).

    Raises:
        MissingDataError, InputError: as :func:`read_npz`.
    """
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            return list(_members(archive))
    except FileNotFoundError as exc:
        raise MissingDataError(f"File not found: {path}") from exc
    except _READ_ERRORS as exc:
        raise InputError(f"{path} is not an .npz archive or is damaged: {first_line(exc, with_type=True)}") from exc


def _members(archive: zipfile.ZipFile) -> dict[str, zipfile.ZipInfo]:
    """Array name -> zip member, as ``np.load`` names them (the member name without ``.npy``)."""
    return {
        info.filename.removesuffix(".npy"): info
        for info in archive.infolist()
        if info.filename.endswith(".npy") and not info.is_dir()
    }


def _read_header(handle: IO[bytes], label, available: int) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, offset of the data) from the header at the handle's position."""
    try:
        version = np.lib.format.read_magic(handle)
    except ValueError as exc:
        raise InputError(f"{label} has a damaged .npy header (magic string)") from exc
    if version not in ((1, 0), (2, 0), (3, 0)):
        raise InputError(f"{label} has a damaged .npy header (format version {version[0]}.{version[1]})")
    length_format = "<H" if version == (1, 0) else "<I"
    raw = handle.read(struct.calcsize(length_format))
    if len(raw) < struct.calcsize(length_format):
        raise InputError(f"{label} is truncated inside its .npy header")
    (length,) = struct.unpack(length_format, raw)
    # checked before numpy reads the header: a 2.0 header may declare a 4 GB length
    if length > _MAX_HEADER_BYTES:
        raise InputError(f"{label} has a damaged .npy header (it declares {length} header bytes)")
    if length > available - handle.tell():
        raise InputError(f"{label} is truncated inside its .npy header")
    handle.seek(handle.tell() - len(raw))
    try:
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(handle)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(handle)
        else:  # 3.0 (utf-8 field names) has no public header reader; np.load uses this one
            shape, _, dtype = np.lib.format._read_array_header(handle, version)
    except (
        ValueError,
        TypeError,
        SyntaxError,
        tokenize.TokenError,  # numpy re-tokenizes a header that is not a literal
        RecursionError,
        MemoryError,
        struct.error,
        AttributeError,
    ) as exc:
        # numpy's message quotes the header text; say only where the problem is
        raise InputError(f"{label} has a damaged or truncated .npy header") from exc
    if dtype.hasobject:
        raise InputError(
            f"{label} holds Python objects, which only pickle could rebuild; repalign reads arrays without pickle: "
            "save numbers (or strings) instead"
        )
    return tuple(shape), dtype, handle.tell()


def _check_size(label, shape: tuple[int, ...], dtype: np.dtype, *, available: int, total: int) -> int:
    """Refuse a declared array larger than the bytes there are or than the limit; returns the new total."""
    # Python ints, so a hostile shape cannot overflow; zero-byte items still count one byte
    # each, or a (10**18,) array of empty strings would pass and hang whoever iterates it.
    declared = math.prod(shape) * max(dtype.itemsize, 1)
    what = f"a {dtype} array of shape {_short(repr(shape), 60)} ({_size(declared)})"
    if declared > available:
        raise InputError(f"{label} is truncated: its header declares {what} but only {_size(max(0, available))} follow")
    if total + declared > MAX_ARRAY_BYTES:
        raise InputError(f"{label} declares {what}; repalign reads at most {_size(MAX_ARRAY_BYTES)} of arrays a file")
    return total + declared


def _not_npy(start: bytes) -> str:
    if start.startswith((_ZIP_MAGIC, _EMPTY_ZIP_MAGIC)):
        return "is an .npz archive, not an .npy array; rename it to .npz"
    if start[:1] == b"\x80":
        return "is a pickle, not an .npy array; repalign reads arrays without pickle"
    return "is not an .npy file (it lacks the NumPy magic string); it is corrupt or another kind of file"


def _short(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _size(n_bytes: int) -> str:
    if n_bytes < 1024:
        return f"{n_bytes} bytes"
    exponent = 1
    while n_bytes >= 1024 ** (exponent + 1) and exponent < 5:
        exponent += 1
    return f"{n_bytes / 1024**exponent:.3g} {('KiB', 'MiB', 'GiB', 'TiB', 'PiB')[exponent - 1]}"
