"""Small file helpers shared by the modules that must never leave a half-written file.

A full disk (``ENOSPC``) or an exhausted quota (``EDQUOT``) while writing becomes one
:class:`~asymret.errors.AsymretError` naming the file (:func:`writing`), and the temporary
file being written is removed, so that neither a traceback nor a stray ``*.tmp`` is left.
Memory-mapped files reserve their blocks up front (:func:`reserve_space`): a write into a
sparse mapping on a full disk would otherwise kill the process with SIGBUS, with no message.
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from asymret.errors import AsymretError

NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
"""``errno`` values that mean the file system has no room left for this user."""


def no_space_cause(exc: BaseException) -> OSError | None:
    """The ``ENOSPC``/``EDQUOT`` OSError behind ``exc`` (itself, or its cause or context, as
    when torch wraps a failed ``write`` in a RuntimeError), or None."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in NO_SPACE_ERRNOS:
            return current
        if current.__cause__ is not None or current.__suppress_context__:
            current = current.__cause__
        else:
            current = current.__context__
    return None


def no_space_error(path: str | Path, cause: OSError) -> AsymretError:
    """The one line a full disk or quota gives when writing ``path``."""
    reason = os.strerror(cause.errno) if cause.errno is not None else str(cause)
    return AsymretError(f"{path}: cannot write it: {reason}; free some space and run again "
                        "(nothing half-written was kept)")


@contextmanager
def writing(path: str | Path, *temporaries: str | Path) -> Iterator[None]:
    """Write ``path`` (through ``temporaries``) in this block: on any failure the temporary
    files are removed, and no space left becomes :func:`no_space_error` naming ``path``."""
    try:
        yield
    except BaseException as exc:
        for temporary in temporaries:
            Path(temporary).unlink(missing_ok=True)
        cause = no_space_cause(exc)
        if cause is not None:
            raise no_space_error(path, cause) from None
        raise


def reserve_space(path: str | Path, size: int, *, named: str | Path | None = None) -> None:
    """Allocate the blocks of the first ``size`` bytes of the existing file ``path``
    (``posix_fallocate``), so that writing them through a memory map cannot hit a full disk.

    A file system that cannot allocate ahead (or a platform without ``posix_fallocate``)
    leaves the file as it is.

    Raises:
        AsymretError: :func:`no_space_error` naming ``named`` (default: ``path``; the file a
            temporary ``path`` becomes) when the disk or quota has no room for it.
    """
    allocate = getattr(os, "posix_fallocate", None)
    if allocate is None or size <= 0:
        return
    descriptor = os.open(path, os.O_RDWR)
    try:
        allocate(descriptor, 0, size)
    except OSError as exc:
        if exc.errno in NO_SPACE_ERRNOS:
            raise no_space_error(path if named is None else named, exc) from None
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            raise
    finally:
        os.close(descriptor)


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write UTF-8 ``text`` to a temporary file beside ``path`` (creating its folder), fsync
    it, then rename it over ``path``: readers see the old file or the new one, never a part."""
    write_bytes_atomic(path, text.encode("utf-8"))


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """:func:`write_text_atomic` for bytes.

    Raises:
        AsymretError: naming ``path`` when the disk or quota is full (no temporary is left).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    with writing(path, temporary):
        with open(temporary, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)


def read_versioned_json(path: Path, fmt: str, version: int, *, contents: str, kind: str,
                        label: str) -> dict:
    """The JSON mapping of ``path``, written as ``{"format": fmt, "version": version, ...}``.

    A missing file raises ``FileNotFoundError`` for the caller to word. Every other problem
    is an :class:`~asymret.errors.AsymretError` naming ``path``: ``cannot read <contents>``,
    ``not an asymret <kind>``, or ``<label> version V is not supported``.
    """
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AsymretError(f"{path}: cannot read {contents} ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != fmt:
        raise AsymretError(f"{path}: not an asymret {kind}")
    if data.get("version") != version:
        raise AsymretError(f"{path}: {label} version {data.get('version')} is not supported "
                           f"(this asymret reads version {version})")
    return data


@contextmanager
def exclusive_lock(path: str | Path, what: str) -> Iterator[None]:
    """Hold an exclusive lock on the file ``path`` (created if missing) while writing
    ``what``; a second writer, in this process or another, is refused at once. The lock goes
    with the process, so a killed writer leaves none behind.

    Raises:
        AsymretError: another writer holds it.
    """
    import fcntl

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise AsymretError(f"{what} is being written by another asymret run; wait for it "
                               "to finish, or stop it, then run this again") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
