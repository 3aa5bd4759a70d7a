"""Reading pickled dataset files without running code from them.

A pickle is a program: its ``GLOBAL``/``STACK_GLOBAL`` opcodes import any callable and ``REDUCE`` calls it, so
``pickle.load`` on a downloaded file runs whatever the file's author chose (``os.system`` through ``__reduce__``).
:func:`load_data_pickle` reads a file only when every global it names is in an allow-list of data types (by default
the NumPy array reconstructors and a few builtins, which is all a CIFAR batch holds); anything else raises
:class:`ForbiddenGlobalError` before a single object of the file is built. The file is also scanned opcode by
opcode first, so a length field that claims gigabytes in a short file is refused without allocating them.
"""

from __future__ import annotations

import builtins
import codecs
import io
import pickle
import pickletools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

try:
    from numpy._core.multiarray import _reconstruct, scalar
except ImportError:  # NumPy 1
    from numpy.core.multiarray import _reconstruct, scalar

__all__ = [
    "NUMPY_ARRAY_GLOBALS",
    "ForbiddenGlobalError",
    "PickleFileError",
    "load_data_pickle",
]

_SAFE_BUILTINS = ("set", "frozenset", "complex", "bytearray", "slice", "range")

NUMPY_ARRAY_GLOBALS: Mapping[tuple[str, str], Any] = {
    # NumPy arrays, dtypes and scalars, under their NumPy 1 (``numpy.core``) and NumPy 2 (``numpy._core``) names
    **{(m, "_reconstruct"): _reconstruct for m in ("numpy.core.multiarray", "numpy._core.multiarray")},
    **{(m, "scalar"): scalar for m in ("numpy.core.multiarray", "numpy._core.multiarray")},
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    # bytes in protocol-2 pickles written by Python 3 (``_codecs.encode(text, "latin1")``)
    ("_codecs", "encode"): codecs.encode,
    # plain containers; ``__builtin__`` is Python 2's name of the module
    **{(m, n): getattr(builtins, n) for m in ("builtins", "__builtin__") for n in _SAFE_BUILTINS},
}
"""The globals of a real CIFAR-10/100 batch (NumPy's array reconstruction) and harmless containers."""

DEFAULT_MAX_BYTES = 1 << 30


class PickleFileError(ValueError):
    """A pickled file that is truncated, corrupt, too large or refused."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


class ForbiddenGlobalError(PickleFileError):
    """The pickle names a global outside the allow-list: loading it could run code, so it is not loaded."""

    def __init__(self, path: Path, module: str, name: str) -> None:
        self.global_name = f"{module}.{name}"
        super().__init__(
            path,
            f"refused: it references the global {self.global_name!r}, which a data file never needs "
            "(a pickle that imports it can run code); nothing from the file was executed",
        )


class _Restricted(pickle.Unpickler):
    def __init__(self, data: bytes, path: Path, allowed: Mapping[tuple[str, str], Any], encoding: str) -> None:
        super().__init__(io.BytesIO(data), encoding=encoding)
        self._path, self._allowed = path, allowed

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise ForbiddenGlobalError(self._path, module, name) from None

    def persistent_load(self, pid: Any) -> Any:
        raise PickleFileError(self._path, "refused: it uses persistent ids, which plain data never does")


def _scan(data: bytes, path: Path, allowed: Mapping[tuple[str, str], Any]) -> None:
    """Walk the opcodes without building objects: truncation and oversized lengths fail here, and so do the globals
    that ``GLOBAL``/``INST`` name inline (``STACK_GLOBAL`` takes its names from the stack: ``find_class`` checks
    those)."""
    try:
        for opcode, arg, _ in pickletools.genops(data):
            if opcode.name in ("GLOBAL", "INST"):
                module, _, name = str(arg).partition(" ")
                if (module, name) not in allowed:
                    raise ForbiddenGlobalError(path, module, name)
    except PickleFileError:
        raise
    except Exception as exc:  # genops raises ValueError for unknown opcodes and short reads, and others for bad args
        raise PickleFileError(path, f"is truncated or not a pickle ({type(exc).__name__}: {exc})") from None


def load_data_pickle(
    path: str | Path,
    *,
    allowed: Mapping[tuple[str, str], Any] = NUMPY_ARRAY_GLOBALS,
    encoding: str = "latin1",
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> Any:
    """Unpickle ``path`` allowing only the globals in ``allowed`` (``(module, name)`` -> the object to use).

    ``encoding='latin1'`` reads Python 2 pickles (the CIFAR files) as torchvision does. Raises
    :class:`ForbiddenGlobalError` naming the file and the global, or :class:`PickleFileError` for a file that is
    larger than ``max_bytes``, truncated or malformed.
    """
    path = Path(path)
    size = path.stat().st_size
    if size > max_bytes:
        raise PickleFileError(path, f"is {size} bytes, more than the {max_bytes} a data file of this kind may have")
    data = path.read_bytes()
    _scan(data, path, allowed)
    try:
        return _Restricted(data, path, allowed, encoding).load()
    except PickleFileError:
        raise
    except Exception as exc:  # the allowed constructors called with bad arguments, a short stream, a bad memo index
        detail = " ".join(f"{type(exc).__name__}: {exc}".split())[:200]
        raise PickleFileError(path, f"is corrupt or not a data pickle ({detail})") from None
