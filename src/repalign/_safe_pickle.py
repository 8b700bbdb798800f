"""A restricted unpickler for downloaded files (Peterson's matrices, CIFAR batches).

Plain ``pickle.load`` on a downloaded file runs whatever code the file names. This
unpickler only lets a pickle rebuild plain containers, strings/bytes/numbers and numpy
arrays; any other global (``os.system``, ``builtins.eval``, ...) is refused with
:class:`~repalign.errors.UnsafePickleError` before anything is called.
"""

from __future__ import annotations

import io
import pickle
from typing import IO, Any

from repalign.errors import UnsafePickleError

# The globals a pickled numpy array needs (numpy 1.x and 2.x module paths), and the
# codecs helper that protocol-2 pickles written by Python 2 use for byte strings.
_NUMPY_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("_codecs", "encode"),
    # protocol 5 pickles rebuild arrays from an out-of-band-capable buffer
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: IO[bytes], *, allowed: set[tuple[str, str]], **kwargs: Any):
        super().__init__(file, **kwargs)
        self._allowed = allowed

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._allowed:
            raise UnsafePickleError(
                f"Refusing to unpickle '{module}.{name}': only numpy arrays and plain containers "
                "are allowed in downloaded pickles. The file may be corrupt or malicious; "
                "delete it and fetch it again."
            )
        return super().find_class(module, name)


def safe_load(file: IO[bytes] | bytes, *, encoding: str = "ASCII") -> Any:
    """Unpickle ``file`` allowing only containers, scalars, strings, bytes and numpy arrays.

    ``encoding="bytes"`` reads Python 2 pickles (CIFAR's) with byte-string keys.
    """
    if isinstance(file, (bytes, bytearray)):
        file = io.BytesIO(file)
    try:
        return _RestrictedUnpickler(file, allowed=_NUMPY_GLOBALS, encoding=encoding).load()
    except UnsafePickleError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
        raise UnsafePickleError(f"Could not read pickle: {exc}") from exc
