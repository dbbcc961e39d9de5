"""The on-disk feature store: an (N, D) array of vectors with their ids and provenance.

This module owns the store's format (:class:`FeatureStore` and the file-name and version
constants) and nothing about networks or images; :mod:`asymret.features.extract` fills stores.
A store is a directory holding

- ``vectors.npy``: the (N, D) vectors, float32 or float16, read as a memory map (a bank of
  120k × 2048 float32 costs page cache, not 1 GB of process memory);
- ``ids.json``: the N image ids, row by row;
- ``meta.json``: the caller's provenance (for extraction: the model's name, config and weights
  fingerprint, and the preprocessing) plus the store's own keys: format, version, dim, count,
  dtype, a digest of the ids, how many rows are complete, and, once complete, the sha256 of
  the vectors and of a sample of their rows. It is replaced atomically after each chunk, so a
  killed extraction resumes from its last completed chunk.

Opening a complete store checks it (``verify``, :data:`VERIFY_LEVELS`): by default the
file's size and the sha256 of :data:`SAMPLE_ROWS` rows spread evenly over it, first and last
included (a few reads: rows zeroed, reversed or overwritten in place are caught wherever a
run of them is longer than N / 63 rows, or covers a sampled row); ``"full"`` rehashes the
whole file; ``"size"`` checks the size alone. A store written before the sample was recorded
is checked in full. The space of ``vectors.npy`` is reserved when the store is created, so a
full disk is one clear error at the start rather than a SIGBUS in the middle
(:func:`~asymret.files.reserve_space`).

A store never mixes vectors of different provenance or id lists:
:meth:`FeatureStore.check_matches` raises :class:`~asymret.errors.AsymretError` naming the
store and the first setting that differs.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from asymret.errors import AsymretError
from asymret.files import read_versioned_json, reserve_space, write_text_atomic, writing

STORE_FORMAT = "asymret-features"
STORE_VERSION = 1
VECTORS_FILE = "vectors.npy"
IDS_FILE = "ids.json"
META_FILE = "meta.json"
STORE_DTYPES = ("float32", "float16")
VERIFY_LEVELS = ("size", "sample", "full")
"""How much of a complete store :meth:`FeatureStore.open` checks: its size; also a sample of
its rows (the default); also every byte."""
SAMPLE_ROWS = 64
"""Rows, evenly spread, whose sha256 (with their row numbers) is the store's sample checksum."""

_HASH_BLOCK_BYTES = 64 << 20
_NPY_HEADER_READERS = {
    (1, 0): np.lib.format.read_array_header_1_0,
    (2, 0): np.lib.format.read_array_header_2_0,
}
# Keys of meta.json that the store itself maintains; the caller's meta may not set them.
_STORE_KEYS = ("format", "version", "count", "dim", "dtype", "ids_sha256", "complete_rows",
               "checksum", "sample_checksum")


def _first_difference(stored: Any, requested: Any, key: str) -> tuple[str, Any, Any] | None:
    """The first dotted key whose values differ between two JSON-like values, or None."""
    if isinstance(stored, dict) and isinstance(requested, dict):
        for name in sorted(set(stored) | set(requested)):
            found = _first_difference(
                stored.get(name), requested.get(name), f"{key}.{name}" if key else name
            )
            if found is not None:
                return found
        return None
    return None if stored == requested else (key, stored, requested)


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class FeatureStore:
    """An on-disk (N, D) array of vectors with their ids and provenance.

    Build one with :meth:`create` or :func:`~asymret.features.extract.extract_to_store`; read
    one with :meth:`open`.

    Attributes:
        path: the store directory.
        vectors: (N, D) ``np.memmap`` (read-only unless opened writable).
        ids: the N image ids, row by row.
        meta: the contents of ``meta.json``.
    """

    def __init__(self, path: Path, vectors: np.memmap, ids: list[str], meta: dict):
        self.path = path
        self.vectors = vectors
        self.ids = ids
        self.meta = meta

    @property
    def count(self) -> int:
        """Number of rows N."""
        return int(self.meta["count"])

    @property
    def dim(self) -> int:
        """Vector dimension D."""
        return int(self.meta["dim"])

    @property
    def complete_rows(self) -> int:
        """Rows ``[0, complete_rows)`` hold final vectors."""
        return int(self.meta["complete_rows"])

    @property
    def is_complete(self) -> bool:
        return self.complete_rows == self.count

    @classmethod
    def create(
        cls,
        path: str | Path,
        ids: Sequence[str],
        dim: int,
        meta: Mapping[str, Any],
        dtype: str = "float32",
    ) -> FeatureStore:
        """Create an empty, writable store (no row complete yet).

        Args:
            path: store directory; created if missing. It must not already hold a store.
            ids: one id per row.
            dim: vector dimension D.
            meta: JSON-serialisable provenance, e.g.
                :func:`~asymret.features.extract.extraction_meta`.
            dtype: ``"float32"`` or ``"float16"``.

        Raises:
            AsymretError: a store is already there, or invalid ids, dim, dtype or meta.
        """
        path = Path(path)
        ids = [str(i) for i in ids]
        if (path / META_FILE).exists():
            raise AsymretError(f"{path}: a feature store already exists here")
        if not ids:
            raise AsymretError(f"{path}: a feature store needs at least one id")
        if dim < 1:
            raise AsymretError(f"{path}: dimension must be positive, got {dim}")
        if dtype not in STORE_DTYPES:
            raise AsymretError(f"{path}: dtype must be one of {STORE_DTYPES}, got {dtype!r}")
        reserved = sorted(set(meta) & set(_STORE_KEYS))
        if reserved:
            raise AsymretError(f"{path}: meta may not set the store's own keys {reserved}")
        path.mkdir(parents=True, exist_ok=True)
        ids_text = json.dumps(ids)
        vectors_path = path / VECTORS_FILE
        with writing(vectors_path, vectors_path, path / IDS_FILE):
            vectors = np.lib.format.open_memmap(
                vectors_path, mode="w+", dtype=np.dtype(dtype), shape=(len(ids), dim)
            )
            reserve_space(vectors_path, vectors_path.stat().st_size)
            (path / IDS_FILE).write_text(ids_text + "\n")
        full_meta = {
            "format": STORE_FORMAT,
            "version": STORE_VERSION,
            **json.loads(json.dumps(dict(meta))),
            "count": len(ids),
            "dim": dim,
            "dtype": dtype,
            "ids_sha256": hashlib.sha256(ids_text.encode()).hexdigest(),
            "complete_rows": 0,
            "checksum": None,
            "sample_checksum": None,
        }
        with writing(path / META_FILE, vectors_path, path / IDS_FILE):
            write_text_atomic(path / META_FILE, json.dumps(full_meta, indent=2) + "\n")
        return cls(path, vectors, ids, full_meta)

    @classmethod
    def open(
        cls, path: str | Path, *, writable: bool = False, verify: bool | str = "sample"
    ) -> FeatureStore:
        """Open a store, its vectors as a memory map (nothing is read into memory up front).

        Args:
            path: store directory.
            writable: open for resuming (an incomplete store is then allowed; its rows are
                not checked beyond the file's size).
            verify: how much of a complete store to check, one of :data:`VERIFY_LEVELS`:
                ``"size"``, ``"sample"`` (default: the sha256 of :data:`SAMPLE_ROWS` rows) or
                ``"full"`` (reads the whole file); ``True`` is ``"full"``, ``False``
                ``"size"``.

        Raises:
            AsymretError: missing or unreadable files, a vectors file that is truncated or of
                the wrong shape, ids that do not match meta.json, an incomplete store opened
                read-only, or a checksum mismatch; the message names the file.
        """
        path = Path(path)
        level = check_verify_level(verify)
        meta_path = path / META_FILE
        try:
            meta = read_versioned_json(meta_path, STORE_FORMAT, STORE_VERSION,
                                       contents="store metadata", kind="feature store",
                                       label="store")
        except FileNotFoundError:
            raise AsymretError(f"{path}: not a feature store ({META_FILE} is missing)") from None
        ids = _read_ids(path / IDS_FILE, meta)
        vectors = _open_vectors(path / VECTORS_FILE, meta, writable)
        if writable:
            reserve_space(path / VECTORS_FILE, (path / VECTORS_FILE).stat().st_size)
        store = cls(path, vectors, ids, meta)
        if not writable and not store.is_complete:
            raise AsymretError(
                f"{path}: incomplete feature store ({store.complete_rows} of {store.count} "
                "rows); run the extraction again to resume it"
            )
        if store.is_complete and level != "size":
            if level == "full" or store.meta.get("sample_checksum") is None:
                store.verify()
            else:
                store.verify_sample()
        return store

    def checksum(self) -> str:
        """``"sha256:<hex>"`` of the vectors' bytes, read from the file block by block.

        Plain reads, not the memory map, so that hashing a large store does not leave its
        pages mapped into this process.
        """
        hasher = hashlib.sha256()
        with open(self.path / VECTORS_FILE, "rb") as handle:
            handle.seek(self.vectors.offset)
            while block := handle.read(_HASH_BLOCK_BYTES):
                hasher.update(block)
        return "sha256:" + hasher.hexdigest()

    def sample_checksum(self) -> str:
        """``"sha256:<hex>"`` of the :data:`SAMPLE_ROWS` sampled rows, each after its row
        number (plain reads of a few rows)."""
        hasher = hashlib.sha256()
        row_bytes = self.dim * self.vectors.dtype.itemsize
        with open(self.path / VECTORS_FILE, "rb") as handle:
            for row in _sampled_rows(self.count):
                handle.seek(self.vectors.offset + row * row_bytes)
                hasher.update(row.to_bytes(8, "little"))
                hasher.update(handle.read(row_bytes))
        return "sha256:" + hasher.hexdigest()

    def verify_sample(self) -> None:
        """Compare the sampled rows' checksum with meta.json (see :data:`VERIFY_LEVELS`).

        Raises:
            AsymretError: naming ``vectors.npy`` if a sampled row changed since it was written.
        """
        actual = self.sample_checksum()
        if actual != self.meta.get("sample_checksum"):
            raise AsymretError(
                f"{self.path / VECTORS_FILE}: sampled rows do not match {META_FILE} (stored "
                f"{self.meta.get('sample_checksum')}, file {actual}); the vectors changed after "
                f"they were written: delete {self.path} and extract them again"
            )

    def verify(self) -> None:
        """Recompute the checksum of a complete store and compare it with meta.json.

        Raises:
            AsymretError: naming ``vectors.npy`` if the vectors changed since they were written.
        """
        if not self.is_complete:
            raise AsymretError(f"{self.path}: cannot verify an incomplete feature store")
        actual = self.checksum()
        if actual != self.meta["checksum"]:
            raise AsymretError(
                f"{self.path / VECTORS_FILE}: checksum mismatch (stored {self.meta['checksum']}, "
                f"file {actual}); the vectors are corrupt: delete {self.path} and extract "
                "them again"
            )

    def write(self, start: int, vectors: torch.Tensor | np.ndarray) -> None:
        """Write rows ``[start, start + len(vectors))`` and record them complete (atomically).

        Rows are written in order: ``start`` must equal :attr:`complete_rows`. The memory map
        is flushed before ``meta.json`` is replaced; when the last row is written the checksum
        is recorded too.

        Args:
            start: first row.
            vectors: (n, D) vectors.
        """
        if start != self.complete_rows:
            raise AsymretError(
                f"{self.path}: rows must be written in order; next row is "
                f"{self.complete_rows}, got {start}"
            )
        if isinstance(vectors, torch.Tensor):
            vectors = vectors.detach().cpu().float().numpy()
        stop = start + len(vectors)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim or stop > self.count:
            raise AsymretError(
                f"{self.path}: cannot write {tuple(vectors.shape)} vectors at row {start} of a "
                f"({self.count}, {self.dim}) store"
            )
        self.vectors[start:stop] = vectors
        self.vectors.flush()
        self.meta["complete_rows"] = stop
        if stop == self.count:
            self.meta["checksum"] = self.checksum()
            self.meta["sample_checksum"] = self.sample_checksum()
        write_text_atomic(self.path / META_FILE, json.dumps(self.meta, indent=2) + "\n")

    def check_matches(
        self,
        meta: Mapping[str, Any],
        ids: Sequence[str] | None = None,
        dim: int | None = None,
        dtype: str | None = None,
    ) -> None:
        """Refuse a store made otherwise than requested.

        Args:
            meta: the provenance it must have (every key given is compared, recursively).
            ids: the ids it must hold, in order.
            dim: the vector dimension it must have.
            dtype: the storage dtype it must have.

        Raises:
            AsymretError: naming the store and the first setting that differs.
        """
        if ids is not None:
            ids = [str(i) for i in ids]
            if ids != self.ids:
                raise AsymretError(f"{self.path}: feature store holds other image ids "
                                   f"({_ids_difference(self.ids, ids)}); refusing to mix vectors")
        requested: dict[str, Any] = json.loads(json.dumps(dict(meta)))
        if dim is not None:
            requested["dim"] = dim
        if dtype is not None:
            requested["dtype"] = dtype
        difference = _first_difference({k: self.meta.get(k) for k in requested}, requested, "")
        if difference is not None:
            key, stored, wanted = difference
            raise AsymretError(
                f"{self.path}: feature store was made with a different {key} (stored "
                f"{_short(stored)}, requested {_short(wanted)}); refusing to mix vectors, use "
                "another directory or delete this one"
            )


def check_verify_level(verify: bool | str) -> str:
    """``verify`` as one of :data:`VERIFY_LEVELS` (``True`` → ``"full"``, ``False`` →
    ``"size"``).

    Raises:
        AsymretError: any other value.
    """
    if isinstance(verify, bool):
        return "full" if verify else "size"
    if verify not in VERIFY_LEVELS:
        raise AsymretError(f"verify must be one of {', '.join(VERIFY_LEVELS)}, got {verify!r}")
    return verify


def _sampled_rows(count: int) -> list[int]:
    """Up to :data:`SAMPLE_ROWS` row numbers spread evenly over ``[0, count)``, first and last
    included, ascending."""
    return sorted({int(r) for r in np.linspace(0, count - 1, min(count, SAMPLE_ROWS)).round()})


def _ids_difference(stored: list[str], requested: list[str]) -> str:
    if len(stored) != len(requested):
        return f"{len(stored)} stored vs {len(requested)} requested"
    row = next(i for i, (a, b) in enumerate(zip(stored, requested, strict=True)) if a != b)
    return f"row {row}: stored {stored[row]!r}, requested {requested[row]!r}"


def _read_ids(path: Path, meta: Mapping[str, Any]) -> list[str]:
    try:
        text = path.read_text().rstrip("\n")
        ids = json.loads(text)
    except (OSError, json.JSONDecodeError) as exc:
        raise AsymretError(f"{path}: cannot read store ids ({exc})") from None
    if hashlib.sha256(text.encode()).hexdigest() != meta.get("ids_sha256"):
        raise AsymretError(f"{path}: ids do not match {META_FILE} (file changed or corrupt)")
    return ids


def _open_vectors(path: Path, meta: Mapping[str, Any], writable: bool) -> np.memmap:
    expected_shape = (meta.get("count"), meta.get("dim"))
    try:
        with open(path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            read_header = _NPY_HEADER_READERS.get(version)
            if read_header is None:
                raise ValueError(f"unsupported .npy format version {version}")
            shape, fortran_order, dtype = read_header(handle)
            data_offset = handle.tell()
        file_size = path.stat().st_size
    except FileNotFoundError:
        raise AsymretError(f"{path}: vectors file is missing") from None
    except (OSError, ValueError) as exc:
        raise AsymretError(f"{path}: not a readable .npy vectors file ({exc})") from None
    if shape != expected_shape or fortran_order or dtype != np.dtype(meta.get("dtype")):
        raise AsymretError(
            f"{path}: holds a {shape} {dtype} array but {META_FILE} says {expected_shape} "
            f"{meta.get('dtype')}"
        )
    expected_size = data_offset + math.prod(shape) * dtype.itemsize
    if file_size != expected_size:
        raise AsymretError(
            f"{path}: vectors file is truncated or corrupt ({file_size} bytes, "
            f"expected {expected_size})"
        )
    return np.load(path, mmap_mode="r+" if writable else "r")
