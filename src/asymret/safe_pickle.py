"""Restricted unpickling for annotation and training-db files.

Pickles are code: ``pickle.load`` on an untrusted file can run anything. The official
revisitop and SfM-120k files hold only plain containers, numbers, strings and numpy arrays,
so :func:`load_pickle` admits exactly those and refuses any other global before it is called.
"""

from __future__ import annotations

import _compat_pickle
import io
import pickle
from pathlib import Path
from typing import Any

from asymret.errors import AsymretError

_ALLOWED_GLOBALS = frozenset(
    {
        ("_codecs", "encode"),  # bytes in protocol-2 pickles
        ("builtins", "set"),
        ("builtins", "frozenset"),
        ("builtins", "slice"),
        ("builtins", "complex"),
        ("collections", "OrderedDict"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
    }
)


class UnsafePickleError(AsymretError):
    """The pickle references a global that is not a plain container or numpy array."""


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: io.BufferedIOBase, source: str):
        super().__init__(file)
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        # Python 2 names (protocol < 3), mapped as pickle itself maps them.
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise UnsafePickleError(
            f"{self._source}: refused to unpickle '{module}.{name}'; only plain containers, "
            "numbers, strings and numpy arrays are allowed (nothing from the file was run)"
        )

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"{self._source}: refused a persistent id in the pickle")


def loads_pickle(data: bytes, source: str = "<bytes>") -> Any:
    """Unpickle ``data`` admitting only plain containers, numbers, strings and numpy arrays."""
    try:
        return _RestrictedUnpickler(io.BytesIO(data), source).load()
    except UnsafePickleError:
        raise
    except Exception as exc:
        reason = f"{type(exc).__name__}: {exc}"
        raise AsymretError(f"{source}: not a readable pickle ({reason})") from exc


def load_pickle(path: str | Path) -> Any:
    """Read a pickle file safely; see :func:`loads_pickle`.

    Raises:
        AsymretError: the file is missing, unreadable, or references a forbidden global.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise AsymretError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    return loads_pickle(data, str(path))
