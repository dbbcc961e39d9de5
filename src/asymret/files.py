"""Small file helpers shared by the modules that must never leave a half-written file."""

from __future__ import annotations

import json
import os
from pathlib import Path

from asymret.errors import AsymretError


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write UTF-8 ``text`` to a temporary file beside ``path`` (creating its folder), fsync
    it, then rename it over ``path``: readers see the old file or the new one, never a part."""
    write_bytes_atomic(path, text.encode("utf-8"))


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """:func:`write_text_atomic` for bytes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        with open(temporary, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


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
