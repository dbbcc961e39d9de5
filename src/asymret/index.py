"""A teacher index on disk: a photo collection indexed once by the teacher, searched by students.

The teacher's vectors of a collection go into a faiss index (:func:`build_index`), which grows
with :func:`add_to_index`; a student, or any query model trained against that teacher, searches
it (:func:`search_index`). Two kinds:

- ``exact``: an exact inner-product index (``faiss.IndexFlatIP``), the default;
- ``ivfpq``: for large collections. A PCA to at most 256 dimensions, an inverted file of
  ``nlist`` lists and 4-bit product-quantisation codes (faiss fast-scan), searched in ``nprobe``
  lists; the best ``rerank`` candidates are then re-scored exactly from the teacher's vectors,
  kept in the index folder as float16 files that are memory-mapped (disk and page cache, not
  process memory). Its recall@10 against exact search is measured when it is built (sampled
  vectors of the collection as queries, each query's own image left out of both rankings),
  recorded and reported. The teacher's vectors are unit vectors, so the L2 ranking of the
  codes is the inner-product ranking; without re-ranking (``rerank=0``) the scores are the
  codes' approximation of the inner product.

The index folder::

    index.json               what everything else is checked against, replaced atomically last:
                             format, kind, count, dim, the teacher (spec, name, config, weights
                             fingerprint), the preprocessing (imsize, scales, precision), the
                             IVF-PQ settings and recall, and the name, size and sha256 of each
                             file below
    index-<g>.faiss          the faiss index of generation g (one generation per build or add)
    images-<g>.json          {"ids": [...], "paths": [...]}, row by row
    vectors-<g>.npy          ivfpq only: the float16 vectors that add g contributed
    pending/                 while a build or add runs: the feature store it extracts into
    .lock                    held by the one build or add that may run at a time

Building and adding extract through the resumable feature store
(:func:`~asymret.features.extract_to_store`, ``pending/``): a killed run, run again, resumes
after its last completed chunk, and a store made with other settings is refused. Files of a
new generation are written (temp + ``os.replace``) before ``index.json`` names them, so a
reader sees the old index or the new one, never a mixture. Unreadable images are skipped and
reported; an ``add`` skips images already indexed (same id or path). An add to an ``ivfpq``
index encodes the new vectors with the quantisers trained at build time; ask it to measure
the recall again (``recall_queries``) after the collection has grown much, and retrain the
quantisers on the whole collection from the stored vectors (:func:`retrain_index`, nothing
extracted again) when it has dropped.

Which queries fit: the index records its teacher's fingerprint
(:func:`~asymret.features.model_fingerprint`). A query model exposes ``metadata`` with its own
``fingerprint`` and the ``teacher_fingerprint`` it was trained against (a saved student's
``teacher.json``, :mod:`asymret.teacher_record`); :func:`check_query_model` accepts the
index's teacher itself or a student of it, refuses a student of another teacher, and refuses a
model with no record unless ``allow_unknown_teacher``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from asymret.data.image_list import ImageList
from asymret.data.images import load_image, to_tensor
from asymret.errors import AsymretError
from asymret.features import (
    META_FILE,
    FeatureStore,
    Network,
    check_scales,
    extract_to_store,
    extraction_meta,
    model_fingerprint,
    multiscale_power,
    multiscale_vectors,
    retrieval_net,
)
from asymret.files import (
    exclusive_lock,
    read_versioned_json,
    reserve_space,
    write_text_atomic,
    writing,
)
from asymret.models.network import RetrievalNet, Teacher
from asymret.teacher_record import TEACHER_RECORD_FILE, read_teacher_record

INDEX_FORMAT = "asymret-index"
INDEX_VERSION = 1
INDEX_META = "index.json"
PENDING = "pending"
WRITER_LOCK = ".lock"
INDEX_KINDS = ("exact", "ivfpq")
RECALL_K = 10
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm")
MIN_IVFPQ_VECTORS = 256
"""Fewest vectors an IVF-PQ index is trained on (its codebooks need that many samples)."""

_UNIT_NORM_TOLERANCE = 1e-3
_HASH_BLOCK = 64 << 20
_SCAN_ROWS = 16384
_FAISS_MISSING = "the teacher index needs the faiss-cpu package: pip install faiss-cpu"

QueryModel = Callable[[list[torch.Tensor]], Any]
"""A query network: a list of (3, H, W) float images in [0, 1] → (N, D) vectors (numpy or
torch); optionally with ``metadata`` (``fingerprint``, ``teacher_fingerprint``)."""


def _faiss():
    try:
        import faiss
    except ImportError:
        raise AsymretError(_FAISS_MISSING) from None
    return faiss


# --- Settings ----------------------------------------------------------------------------


@dataclass(frozen=True)
class IvfPqOptions:
    """Settings of an ``ivfpq`` index; ``None`` picks a default from the collection.

    Attributes:
        nlist: inverted lists; default 4·√N rounded to a power of two, at most N/39 (each
            list's centroid is trained on at least 39 vectors).
        reduce_dim: PCA to this many dimensions before the inverted file (default
            ``min(D, 256)``; ``D`` keeps every dimension, no PCA).
        pq_m: 4-bit sub-quantisers per vector, a divisor of ``reduce_dim`` (default
            ``reduce_dim / 2``, or ``reduce_dim`` when odd; a code is ``pq_m / 2`` bytes).
        nprobe: lists searched per query, at most ``nlist`` (search can override it).
        rerank: candidates re-scored exactly from the stored vectors (0: scores of the codes;
            search can override it).
        train_size: vectors the quantisers are trained on (default ``max(39·nlist, 10000)``,
            at most N).
    """

    nlist: int | None = None
    reduce_dim: int | None = None
    pq_m: int | None = None
    nprobe: int = 64
    rerank: int = 100
    train_size: int | None = None

    def resolve(self, count: int, dim: int) -> dict:
        """The settings for ``count`` vectors of dimension ``dim``, with the faiss factory.

        Raises:
            AsymretError: too few vectors, or a setting out of range.
        """
        if count < MIN_IVFPQ_VECTORS:
            raise AsymretError(
                f"an IVF-PQ index needs at least {MIN_IVFPQ_VECTORS} vectors to train, the "
                f"collection has {count}; use the exact kind"
            )
        nlist = self.nlist or _default_nlist(count)
        reduce_dim = self.reduce_dim or min(dim, 256)
        pq_m = self.pq_m or (reduce_dim // 2 if reduce_dim % 2 == 0 else reduce_dim)
        train_size = min(count, self.train_size or max(39 * nlist, 10000))
        checks = [
            (1 <= nlist <= count, f"nlist must be in [1, {count}] (vectors), got {nlist}"),
            (1 <= reduce_dim <= dim, f"reduce_dim must be in [1, {dim}], got {reduce_dim}"),
            (1 <= pq_m <= reduce_dim and reduce_dim % pq_m == 0,
             f"pq_m must divide reduce_dim {reduce_dim}, got {pq_m}"),
            (self.nprobe >= 1, f"nprobe must be at least 1, got {self.nprobe}"),
            (self.rerank >= 0, f"rerank must be 0 or more, got {self.rerank}"),
            (train_size >= max(nlist, 16),
             f"train_size must be at least max(nlist, 16), got {train_size}"),
        ]
        for ok, message in checks:
            if not ok:
                raise AsymretError(message)
        transform = f"PCAR{reduce_dim}," if reduce_dim < dim else ""
        return {
            "factory": f"{transform}IVF{nlist},PQ{pq_m}x4fs",
            "nlist": nlist,
            "reduce_dim": reduce_dim,
            "pq_m": pq_m,
            "nprobe": min(self.nprobe, nlist),
            "rerank": self.rerank,
            "train_size": train_size,
        }


def _default_nlist(count: int) -> int:
    target = 1 << max(0, round(math.log2(4 * math.sqrt(count))))
    return max(1, min(target, count // 39))


# --- The index ---------------------------------------------------------------------------


class Hit(NamedTuple):
    """One search result: the image's path, its score (inner product with the query) and its
    row in the index."""

    path: str
    score: float
    row: int


class TeacherIndex:
    """An opened teacher index (see the module's description of the folder).

    Open one with :meth:`open`. Attributes: ``path``, ``meta`` (``index.json``), ``ids`` and
    ``paths`` (row by row), ``faiss_index``.
    """

    def __init__(self, path: Path, meta: dict, ids: list[str], paths: list[str], faiss_index,
                 parts: list[np.ndarray]):
        self.path = path
        self.meta = meta
        self.ids = ids
        self.paths = paths
        self.faiss_index = faiss_index
        self._parts = parts
        self._part_starts = np.cumsum([0] + [len(p) for p in parts])

    @property
    def count(self) -> int:
        return int(self.meta["count"])

    @property
    def dim(self) -> int:
        return int(self.meta["dim"])

    @property
    def kind(self) -> str:
        return self.meta["kind"]

    @property
    def teacher(self) -> dict:
        """``{"spec", "pretrained", "name", "config", "fingerprint"}`` of the indexing teacher."""
        return self.meta["teacher"]

    @property
    def fingerprint(self) -> str:
        """The teacher's weights fingerprint."""
        return self.meta["teacher"]["fingerprint"]

    @property
    def preprocessing(self) -> dict:
        return self.meta["preprocessing"]

    @property
    def imsize(self) -> int | None:
        return self.meta["preprocessing"]["imsize"]

    @property
    def recall(self) -> dict | None:
        """The recall@10 measured when the index was built (ivfpq), else ``None``."""
        return self.meta.get("recall")

    @classmethod
    def open(cls, path: str | Path, *, verify: bool = False) -> TeacherIndex:
        """Open an index folder (its faiss index is read into memory).

        Args:
            path: the index folder.
            verify: also recompute the sha256 of the faiss and vector files (reads them all;
                the images file is always checked).

        Raises:
            AsymretError: naming the file that is missing, truncated, corrupt or does not
                match ``index.json``.
        """
        path = Path(path)
        meta = _read_meta(path)
        files = meta["files"]
        images = json.loads(_checked_bytes(path, files["images"], verify=True))
        ids, paths = images.get("ids"), images.get("paths")
        images_file = path / files["images"]["name"]
        if not (isinstance(ids, list) and isinstance(paths, list)
                and len(ids) == len(paths) == meta["count"]):
            raise AsymretError(f"{images_file}: does not list {meta['count']} ids and paths")
        index_file = path / files["index"]["name"]
        _checked_file(path, files["index"], verify=verify)
        faiss = _faiss()
        try:
            faiss_index = faiss.read_index(str(index_file))
        except RuntimeError as exc:
            reason = (str(exc).strip() or "unreadable").splitlines()[0]
            raise AsymretError(f"{index_file}: cannot read the faiss index ({reason})") from None
        if faiss_index.ntotal != meta["count"] or faiss_index.d != meta["dim"]:
            raise AsymretError(
                f"{index_file}: holds {faiss_index.ntotal} vectors of dimension {faiss_index.d}, "
                f"{INDEX_META} says {meta['count']} of {meta['dim']}"
            )
        parts = []
        for part in files.get("vectors", []):
            _checked_file(path, part, verify=verify)
            parts.append(_open_part(path / part["name"], meta["dim"]))
        if meta["kind"] == "ivfpq" and sum(len(p) for p in parts) != meta["count"]:
            raise AsymretError(f"{path / INDEX_META}: its vector files do not hold "
                               f"{meta['count']} rows")
        index = cls(path, meta, ids, paths, faiss_index, parts)
        if meta["kind"] == "ivfpq":
            index.set_nprobe(meta["ivfpq"]["nprobe"])
        return index

    def set_nprobe(self, nprobe: int) -> None:
        """Inverted lists searched per query (ivfpq)."""
        if nprobe < 1:
            raise AsymretError(f"nprobe must be at least 1, got {nprobe}")
        _faiss().extract_index_ivf(self.faiss_index).nprobe = int(nprobe)

    def vectors(self, rows: np.ndarray) -> np.ndarray:
        """The stored vectors of ``rows`` as float32, shape (len(rows), D): the exact index's,
        or the float16 re-ranking copies of an ivfpq index."""
        rows = np.asarray(rows, dtype=np.int64)
        if self.kind == "exact":
            return self.faiss_index.reconstruct_batch(rows)
        out = np.empty((len(rows), self.dim), dtype=np.float32)
        part_of = np.searchsorted(self._part_starts, rows, side="right") - 1
        for part in np.unique(part_of):
            chosen = part_of == part
            local = rows[chosen] - self._part_starts[part]
            order = np.argsort(local, kind="stable")
            out[np.flatnonzero(chosen)[order]] = self._parts[part][local[order]]
        return out

    def iter_vectors(self, rows: int = _SCAN_ROWS):
        """``(start, (n, D) float32)`` blocks of every stored vector, in row order."""
        if self.kind == "exact":
            for start in range(0, self.count, rows):
                stop = min(start + rows, self.count)
                yield start, self.faiss_index.reconstruct_n(start, stop - start)
            return
        for part, first in zip(self._parts, self._part_starts, strict=False):
            for start in range(0, len(part), rows):
                yield int(first) + start, np.asarray(part[start : start + rows], np.float32)

    def search(
        self, queries: np.ndarray, k: int = 10, *, nprobe: int | None = None,
        rerank: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` best rows per query by inner product.

        Args:
            queries: (nq, D) query vectors.
            k: results per query (at most the index's count; fewer are returned then).
            nprobe, rerank: override the index's (ivfpq).

        Returns:
            ``(scores, rows)``, each (nq, min(k, count)), best first; ``rows`` is -1 where an
            IVF-PQ search found fewer candidates.
        """
        queries = _query_matrix(queries, self.dim)
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise AsymretError(f"k must be a positive integer, got {k!r}")
        k = min(k, self.count)
        if self.kind == "exact":
            return self.faiss_index.search(queries, k)
        settings = self.meta["ivfpq"]
        if nprobe is not None:
            self.set_nprobe(nprobe)
        try:
            rerank = settings["rerank"] if rerank is None else rerank
            if rerank < 0:
                raise AsymretError(f"rerank must be 0 or more, got {rerank}")
            candidates = min(self.count, max(k, rerank))
            distances, rows = self.faiss_index.search(queries, candidates)
        finally:
            if nprobe is not None:
                self.set_nprobe(settings["nprobe"])
        if rerank == 0:
            # Unit database vectors: |q - x|² = |q|² + 1 - 2 q·x.
            norms = (queries.astype(np.float64) ** 2).sum(1, keepdims=True)
            scores = ((norms + 1 - distances) / 2).astype(np.float32)
            return np.where(rows >= 0, scores, -np.inf)[:, :k], rows[:, :k]
        return self._rerank(queries, rows, k)

    def hits(
        self, queries: np.ndarray, k: int = 10, *, nprobe: int | None = None,
        rerank: int | None = None,
    ) -> list[list[Hit]]:
        """:meth:`search` as one list of :class:`Hit` per query, best first.

        Raises:
            AsymretError: the queries' dimension is not the index's.
        """
        if getattr(queries, "ndim", 0) == 2 and queries.shape[1] != self.dim:
            raise AsymretError(f"the query model gives {queries.shape[1]}-D vectors, index "
                               f"{self.path} holds {self.dim}-D vectors")
        scores, rows = self.search(queries, k, nprobe=nprobe, rerank=rerank)
        return [[Hit(self.paths[r], float(s), int(r))
                 for s, r in zip(row_scores, row_ids, strict=True) if r >= 0]
                for row_scores, row_ids in zip(scores, rows, strict=True)]

    def _rerank(self, queries: np.ndarray, rows: np.ndarray, k: int):
        scores = np.full(rows.shape, -np.inf, dtype=np.float32)
        found = rows >= 0
        vectors = self.vectors(rows[found])
        scores[found] = np.einsum("nd,nd->n", vectors, np.repeat(queries, found.sum(1), axis=0))
        # Best first; equal scores by lower row, as the exact index orders them.
        order = np.lexsort((np.where(found, rows, np.iinfo(np.int64).max), -scores), axis=1)
        top = order[:, :k]
        return np.take_along_axis(scores, top, 1), np.take_along_axis(rows, top, 1)


def _query_matrix(queries: Any, dim: int) -> np.ndarray:
    if isinstance(queries, torch.Tensor):
        queries = queries.detach().cpu().float().numpy()
    queries = np.ascontiguousarray(np.asarray(queries, dtype=np.float32))
    if queries.ndim != 2 or queries.shape[1] != dim:
        raise AsymretError(f"query vectors: expected shape (n, {dim}) for this index, got "
                           f"{tuple(queries.shape)}")
    if not np.isfinite(queries).all():
        raise AsymretError("query vectors hold NaN or Inf")
    return queries


# --- Reading and writing the folder ------------------------------------------------------


def _read_meta(path: Path) -> dict:
    meta_path = path / INDEX_META
    if not path.is_dir():
        raise AsymretError(f"{path}: no such index folder")
    try:
        meta = read_versioned_json(meta_path, INDEX_FORMAT, INDEX_VERSION,
                                   contents="index metadata", kind="index", label="index")
    except FileNotFoundError:
        raise AsymretError(f"{path}: not an asymret index ({INDEX_META} is missing)") from None
    required = ("kind", "count", "dim", "files", "teacher", "preprocessing", "generation")
    missing = [key for key in required if key not in meta]
    files = meta.get("files")
    entries = [] if not isinstance(files, dict) else [
        files.get("index"), files.get("images"), *files.get("vectors", [])]
    if missing or meta["kind"] not in INDEX_KINDS or not entries or not all(
        isinstance(e, dict) and {"name", "bytes", "sha256"} <= set(e) for e in entries
    ):
        raise AsymretError(f"{meta_path}: malformed index metadata (missing {missing}, kind "
                           f"{meta.get('kind')!r}, or its list of files)")
    return meta


def _file_digest(path: Path) -> str:
    hasher = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(_HASH_BLOCK):
            hasher.update(block)
    return "sha256:" + hasher.hexdigest()


def _checked_file(folder: Path, entry: dict, *, verify: bool) -> Path:
    """The file ``entry`` names, refused (naming it) if missing, of the wrong size or, with
    ``verify``, of the wrong sha256."""
    path = folder / entry["name"]
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise AsymretError(f"{path}: index file is missing") from None
    if size != entry["bytes"]:
        raise AsymretError(f"{path}: truncated or corrupt ({size} bytes, {INDEX_META} says "
                           f"{entry['bytes']})")
    if verify and _file_digest(path) != entry["sha256"]:
        raise AsymretError(f"{path}: checksum does not match {INDEX_META}; the file is corrupt")
    return path


def _checked_bytes(folder: Path, entry: dict, *, verify: bool) -> bytes:
    path = _checked_file(folder, entry, verify=False)
    data = path.read_bytes()
    if verify and "sha256:" + hashlib.sha256(data).hexdigest() != entry["sha256"]:
        raise AsymretError(f"{path}: checksum does not match {INDEX_META}; the file is corrupt")
    return data


def _open_part(path: Path, dim: int) -> np.ndarray:
    try:
        part = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as exc:
        raise AsymretError(f"{path}: not a readable vectors file ({exc})") from None
    if part.ndim != 2 or part.shape[1] != dim or part.dtype != np.float16:
        raise AsymretError(f"{path}: holds a {part.shape} {part.dtype} array, expected "
                           f"(n, {dim}) float16")
    return part


def _entry(path: Path) -> dict:
    return {"name": path.name, "bytes": path.stat().st_size, "sha256": _file_digest(path)}


def _replace_from_temporary(path: Path, write: Callable[[Path], None]) -> Path:
    """``write(temporary)`` beside ``path``, fsync, then rename it over ``path``; a full disk
    becomes one line naming ``path`` (:func:`~asymret.files.writing`), no temporary left."""
    temporary = path.with_name(f".{path.name}.tmp")
    with writing(path, temporary):
        write(temporary)
        with open(temporary, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    return path


def _write_part(
    folder: Path, generation: int, blocks: Iterable[np.ndarray], count: int, dim: int
) -> Path:
    """Write ``vectors-<generation>.npy``: (count, dim) float16 rows from ``blocks``."""
    path = folder / f"vectors-{generation:06d}.npy"

    def write(temporary: Path) -> None:
        array = np.lib.format.open_memmap(temporary, mode="w+", dtype=np.float16,
                                          shape=(count, dim))
        reserve_space(temporary, temporary.stat().st_size, named=path)  # no SIGBUS when full
        start = 0
        for block in blocks:
            array[start : start + len(block)] = block
            start += len(block)
        array.flush()
        del array

    return _replace_from_temporary(path, write)


def _write_generation(
    folder: Path, meta: dict, faiss_index, ids: list[str], paths: list[str],
    new_part: Path | None,
) -> dict:
    """Write generation ``meta['generation']``'s index and images files, then ``index.json``
    naming them (and ``new_part``, already written); then remove older generations' files that
    the new metadata does not name."""
    faiss = _faiss()
    generation = meta["generation"]
    index_file = folder / f"index-{generation:06d}.faiss"
    images_file = folder / f"images-{generation:06d}.json"
    _replace_from_temporary(index_file, lambda t: faiss.write_index(faiss_index, str(t)))
    text = json.dumps({"ids": ids, "paths": paths}) + "\n"
    _replace_from_temporary(images_file, lambda t: t.write_text(text))
    vectors = list(meta["files"].get("vectors", [])) if meta.get("files") else []
    if new_part is not None:
        vectors = [v for v in vectors if v["name"] != new_part.name] + [_entry(new_part)]
    meta["files"] = {"index": _entry(index_file), "images": _entry(images_file),
                     **({"vectors": vectors} if meta["kind"] == "ivfpq" else {})}
    write_text_atomic(folder / INDEX_META, json.dumps(meta, indent=2) + "\n")
    named = {meta["files"]["index"]["name"], meta["files"]["images"]["name"],
             *(v["name"] for v in vectors)}
    for pattern in ("index-*.faiss", "images-*.json", "vectors-*.npy"):
        for stale in folder.glob(pattern):
            if stale.name not in named:
                stale.unlink()
    return meta


# --- The collection's images -------------------------------------------------------------


def list_images(directory: str | Path) -> list[Path]:
    """Image files under ``directory`` (recursively, hidden files and folders left out),
    absolute, sorted.

    Raises:
        AsymretError: not a folder, or no image file in it.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise AsymretError(f"{directory}: not a folder of images")
    found = sorted(
        path.resolve() for path in directory.rglob("*")
        if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()
        and not any(part.startswith(".") for part in path.relative_to(directory).parts)
    )
    if not found:
        raise AsymretError(f"{directory}: no image files ({' '.join(IMAGE_SUFFIXES)})")
    return found


def collection_images(
    images: str | Path | None = None, dataset: str | Path | None = None,
    root: str | Path | None = None,
) -> tuple[list[str], list[Path]]:
    """``(ids, paths)`` of a collection: the image files of a folder (ids are the absolute
    paths) or a test set's database (its image names; a set under the data root or a photo
    folder with ``images.csv``, see :func:`~asymret.data.load_test_set`).

    Raises:
        AsymretError: neither or both given, or nothing found.
    """
    if (images is None) == (dataset is None):
        raise AsymretError("give either a folder of images or a dataset")
    if images is not None:
        paths = list_images(images)
        return [str(p) for p in paths], paths
    from asymret.data import load_test_set

    test_set = load_test_set(dataset, root)
    if not test_set.imlist:
        raise AsymretError(f"dataset {dataset}: no database images to index")
    return list(test_set.imlist), [test_set.image_path(n).resolve() for n in test_set.imlist]


# --- Building and adding -----------------------------------------------------------------


@dataclass(frozen=True)
class IndexReport:
    """What a build or an add did.

    Attributes:
        index: the index as it now is.
        added: images indexed by this run.
        skipped: paths of unreadable images left out.
        already: images given that the index already held (an add).
        recall: the recall@10 measured by this run (ivfpq), else ``None``.
    """

    index: TeacherIndex
    added: int
    skipped: list[str]
    already: int
    recall: dict | None


def teacher_meta(teacher: Network, spec: str | Path | None, pretrained: bool) -> dict:
    """What an index records of its teacher: ``{"spec", "pretrained", "name", "config",
    "fingerprint"}`` (a spec that is an existing path is made absolute)."""
    model = retrieval_net(teacher)
    if spec is not None and Path(spec).exists():
        spec = str(Path(spec).resolve())
    return {"spec": None if spec is None else str(spec), "pretrained": bool(pretrained),
            "name": model.config.name, "config": model.config.to_dict(),
            "fingerprint": model_fingerprint(model)}


def build_index(
    out: str | Path,
    teacher: Network,
    ids: Sequence[str],
    paths: Sequence[str | Path],
    *,
    teacher_spec: str | Path | None = None,
    pretrained: bool = False,
    kind: str = "exact",
    ivfpq: IvfPqOptions | None = None,
    imsize: int | None = 1024,
    scales: Sequence[float] = (1.0,),
    amp: bool = False,
    recall_queries: int = 1000,
    chunk_size: int = 4096,
    **options,
) -> IndexReport:
    """Index a collection with the teacher into the folder ``out`` (resuming a killed build).

    Args:
        out: the index folder; it must not hold an index yet.
        teacher: the indexing network.
        ids, paths: the collection's images (see :func:`collection_images`).
        teacher_spec, pretrained: where the teacher comes from (recorded, so that
            :func:`add_to_index` can load it again).
        kind: ``"exact"`` or ``"ivfpq"``.
        ivfpq: IVF-PQ settings (kind ``ivfpq``).
        imsize, scales, amp: the teacher's preprocessing (longer side, extraction scales,
            bfloat16 autocast), recorded and reused by every add.
        recall_queries: sampled vectors the IVF-PQ recall is measured with (0: not measured).
        chunk_size: images extracted between two progress records of the pending store.
        options: ``device``, ``batch_size``, ``num_workers``, ``progress``, ``channels_last``
            (see :func:`~asymret.features.extract_to_store`).

    Raises:
        AsymretError: an index already there, a pending extraction made otherwise, bad
            settings, or no readable image.
    """
    out = Path(out)
    _check_new_index(out, kind, recall_queries)
    if len(ids) != len(paths) or not ids:
        raise AsymretError(f"{out}: {len(ids)} ids for {len(paths)} images")
    scales = check_scales(scales)
    images = ImageList(paths, imsize, skip_unreadable=True)
    with _writing_index(out):
        store = _extract_pending(out, teacher, images, ids, scales, amp, chunk_size, options)
        rows, skipped = _readable_rows(store, paths)
        index = _create_index(
            out, store.vectors, [str(ids[r]) for r in rows], [str(paths[r]) for r in rows],
            rows=rows, teacher=teacher_meta(teacher, teacher_spec, pretrained),
            preprocessing=extraction_meta(teacher, images, scales, amp=amp)["preprocessing"],
            kind=kind, ivfpq=ivfpq, recall_queries=recall_queries,
        )
        shutil.rmtree(out / PENDING, ignore_errors=True)
    return IndexReport(index, len(rows), skipped, 0, index.recall)


def _writing_index(folder: Path):
    """The lock of the one build or add of ``folder`` that may run at a time."""
    return exclusive_lock(folder / WRITER_LOCK, f"index {folder}")


def _check_new_index(out: Path, kind: str, recall_queries: int) -> None:
    if kind not in INDEX_KINDS:
        raise AsymretError(f"unknown index kind {kind!r}; expected one of {INDEX_KINDS}")
    if (out / INDEX_META).exists():
        raise AsymretError(f"{out}: already holds an index; add images with `asymret index add`")
    if recall_queries < 0:
        raise AsymretError(f"recall_queries must be 0 or more, got {recall_queries}")


def create_index(
    out: str | Path,
    vectors: np.ndarray,
    ids: Sequence[str],
    paths: Sequence[str],
    *,
    teacher: dict,
    preprocessing: dict,
    kind: str = "exact",
    ivfpq: IvfPqOptions | None = None,
    recall_queries: int = 1000,
    rows: np.ndarray | None = None,
) -> TeacherIndex:
    """Write an index of vectors the teacher already made (:func:`build_index` extracts them
    first; a benchmark generates them).

    Args:
        out: the index folder; it must not hold an index yet.
        vectors: (N, D) float vectors, read ``rows`` at a time (a memory map is fine).
        ids, paths: one per indexed row.
        teacher: :func:`teacher_meta` of the network that made them.
        preprocessing: how they were made (``extraction_meta(...)["preprocessing"]``).
        kind, ivfpq, recall_queries: as :func:`build_index`.
        rows: the rows of ``vectors`` to index, in order (default: all).

    Returns:
        The opened index; for ivfpq its ``recall`` is measured (unless ``recall_queries=0``).
    """
    out = Path(out)
    with _writing_index(out):
        return _create_index(out, vectors, ids, paths, teacher=teacher,
                             preprocessing=preprocessing, kind=kind, ivfpq=ivfpq,
                             recall_queries=recall_queries, rows=rows)


def _create_index(out: Path, vectors: np.ndarray, ids: Sequence[str], paths: Sequence[str], *,
                  teacher: dict, preprocessing: dict, kind: str, ivfpq: IvfPqOptions | None,
                  recall_queries: int, rows: np.ndarray | None) -> TeacherIndex:
    _check_new_index(out, kind, recall_queries)
    rows = np.arange(len(vectors)) if rows is None else np.asarray(rows, dtype=np.int64)
    count, dim = len(rows), int(vectors.shape[1])
    if not (len(ids) == len(paths) == count) or not count:
        raise AsymretError(f"{out}: {len(ids)} ids and {len(paths)} paths for {count} vectors")
    faiss = _faiss()
    meta = {
        "format": INDEX_FORMAT, "version": INDEX_VERSION, "kind": kind, "count": count,
        "dim": dim, "generation": 1, "teacher": teacher, "preprocessing": preprocessing,
        "ivfpq": None, "recall": None, "faiss": faiss.__version__, "files": None,
    }

    def added_blocks() -> Iterator[np.ndarray]:
        for start in range(0, count, _SCAN_ROWS):
            block = np.ascontiguousarray(vectors[rows[start : start + _SCAN_ROWS]], np.float32)
            faiss_index.add(block)
            yield block

    out.mkdir(parents=True, exist_ok=True)
    if kind == "exact":
        faiss_index = faiss.IndexFlatIP(dim)
        for _ in added_blocks():
            pass
        part = None
    else:
        settings = (ivfpq or IvfPqOptions()).resolve(count, dim)
        _check_unit_norm(vectors, rows, out)
        faiss_index = _trained_ivfpq(settings, dim, count, lambda sample: vectors[rows[sample]])
        part = _write_part(out, 1, added_blocks(), count, dim)
        meta["ivfpq"] = settings
    _write_generation(out, meta, faiss_index, list(map(str, ids)), list(map(str, paths)), part)
    faiss_index = None  # the opened index reads its own copy
    index = TeacherIndex.open(out)
    if kind == "ivfpq" and recall_queries:
        index.meta["recall"] = measure_recall(index, recall_queries)
        write_text_atomic(out / INDEX_META, json.dumps(index.meta, indent=2) + "\n")
    return index


def _trained_ivfpq(settings: dict, dim: int, count: int,
                   sample_vectors: Callable[[np.ndarray], np.ndarray]):
    """An empty IVF-PQ faiss index of ``settings``, trained on ``settings['train_size']``
    rows sampled (seed 0, sorted) from ``count``; ``sample_vectors(rows)`` gives their
    (n, dim) vectors."""
    faiss = _faiss()
    faiss_index = faiss.index_factory(dim, settings["factory"], faiss.METRIC_L2)
    sample = np.sort(np.random.default_rng(0).choice(count, settings["train_size"],
                                                      replace=False))
    faiss_index.train(np.ascontiguousarray(sample_vectors(sample), dtype=np.float32))
    return faiss_index


def retrain_index(path: str | Path, ivfpq: IvfPqOptions | None = None, *,
                  recall_queries: int = 1000) -> IndexReport:
    """Train an IVF-PQ index's quantisers afresh on its whole collection and re-encode it.

    Adds encode new vectors with the quantisers trained at build time; after the collection
    has grown much, their lists and codes fit it worse (and the default ``nlist`` grows with
    the collection). The stored vectors are re-used: nothing is extracted again. The ids,
    paths and row order stay; a reader sees the old index or the new one.

    Args:
        path: the index folder (kind ``ivfpq``).
        ivfpq: the settings (default: the defaults for the collection's new size, with the
            index's ``nprobe`` and ``rerank``).
        recall_queries: sampled vectors the new recall is measured with (0: not measured).

    Raises:
        AsymretError: an exact index, or bad settings.
    """
    path = Path(path)
    with _writing_index(path):
        index = TeacherIndex.open(path)
        if index.kind != "ivfpq":
            raise AsymretError(f"{path}: an exact index has no quantisers to retrain")
        if recall_queries < 0:
            raise AsymretError(f"recall_queries must be 0 or more, got {recall_queries}")
        old = index.meta["ivfpq"]
        settings = (ivfpq or IvfPqOptions(nprobe=old["nprobe"], rerank=old["rerank"])).resolve(
            index.count, index.dim)
        faiss_index = _trained_ivfpq(settings, index.dim, index.count, index.vectors)
        for _, block in index.iter_vectors():
            faiss_index.add(block)
        meta = json.loads(json.dumps(index.meta))
        meta.update(generation=meta["generation"] + 1, ivfpq=settings, recall=None)
        _write_generation(path, meta, faiss_index, index.ids, index.paths, None)
        index = TeacherIndex.open(path)
        recall = None
        if recall_queries:
            recall = index.meta["recall"] = measure_recall(index, recall_queries)
            write_text_atomic(path / INDEX_META, json.dumps(index.meta, indent=2) + "\n")
    return IndexReport(index, 0, [], index.count, recall)


def add_to_index(
    path: str | Path,
    ids: Sequence[str],
    paths: Sequence[str | Path],
    *,
    teacher: Network | None = None,
    root: str | Path | None = None,
    recall_queries: int = 0,
    chunk_size: int = 4096,
    **options,
) -> IndexReport:
    """Extract the images not yet in the index with its teacher and add them (resumable).

    Args:
        path: the index folder.
        ids, paths: the images to add; those whose id or path is already indexed are
            skipped.
        teacher: the indexing network; by default loaded from the spec the index records.
            Either way its fingerprint must be the index's.
        root: data root the recorded teacher spec is looked up under.
        recall_queries: measure the IVF-PQ recall again with this many sampled vectors.
        chunk_size, options: as :func:`build_index`.

    Raises:
        AsymretError: the teacher's weights differ from the index's, or as
            :func:`build_index`.
    """
    path = Path(path)
    TeacherIndex.open(path)  # a clear error for a folder without an index, before locking it
    with _writing_index(path):
        return _add_to_index(path, ids, paths, teacher=teacher, root=root,
                             recall_queries=recall_queries, chunk_size=chunk_size, **options)


def _add_to_index(path: Path, ids: Sequence[str], paths: Sequence[str | Path], *,
                  teacher: Network | None, root: str | Path | None, recall_queries: int,
                  chunk_size: int, **options) -> IndexReport:
    index = TeacherIndex.open(path)
    if len(ids) != len(paths):
        raise AsymretError(f"{path}: {len(ids)} ids for {len(paths)} images")
    teacher = teacher if teacher is not None else _load_recorded_teacher(index, root)
    fingerprint = model_fingerprint(teacher)
    if fingerprint != index.fingerprint:
        raise AsymretError(
            f"{path}: indexed by teacher {index.teacher['name']} ({index.fingerprint[:19]}), "
            f"the given teacher's weights differ ({fingerprint[:19]}); add with the same teacher"
        )
    known_ids, known_paths = set(index.ids), set(index.paths)
    wanted = [i for i, (name, image) in enumerate(zip(ids, paths, strict=True))
              if str(name) not in known_ids and str(image) not in known_paths]
    already = len(ids) - len(wanted)
    if not wanted:
        shutil.rmtree(path / PENDING, ignore_errors=True)
        return IndexReport(index, 0, [], already, None)
    new_ids = [str(ids[i]) for i in wanted]
    new_paths = [paths[i] for i in wanted]
    pending = path / PENDING
    preprocessing = index.preprocessing
    images = ImageList(new_paths, preprocessing["imsize"], skip_unreadable=True)
    amp = preprocessing.get("precision") == "bf16"
    store = _extract_pending(path, teacher, images, new_ids, preprocessing["scales"], amp,
                             chunk_size, options)
    rows, skipped = _readable_rows(store, new_paths)
    block = np.ascontiguousarray(store.vectors[rows], dtype=np.float32)
    meta = json.loads(json.dumps(index.meta))
    if index.kind == "ivfpq":
        _check_unit_norm(store.vectors, rows, path)
    if len(rows):
        index.faiss_index.add(block)
        meta["count"] = index.count + len(rows)
        meta["generation"] += 1
        part = (_write_part(path, meta["generation"], [block], len(block), index.dim)
                if index.kind == "ivfpq" else None)
        meta = _write_generation(
            path, meta, index.faiss_index, index.ids + [new_ids[r] for r in rows],
            index.paths + [str(new_paths[r]) for r in rows], part,
        )
    index = TeacherIndex.open(path)
    recall = None
    if index.kind == "ivfpq" and recall_queries:
        recall = measure_recall(index, recall_queries)
        index.meta["recall"] = recall
        write_text_atomic(path / INDEX_META, json.dumps(index.meta, indent=2) + "\n")
    shutil.rmtree(pending, ignore_errors=True)
    return IndexReport(index, len(rows), skipped, already, recall)


def _load_recorded_teacher(index: TeacherIndex, root: str | Path | None) -> Network:
    from asymret.models import load_network

    spec = index.teacher.get("spec")
    if not spec:
        raise AsymretError(f"{index.path}: records no teacher spec; pass the teacher")
    return load_network(spec, root, pretrained=index.teacher.get("pretrained", False))


def _extract_pending(
    folder: Path, teacher: Network, images: ImageList, ids: Sequence[str],
    scales: Sequence[float], amp: bool, chunk_size: int, options: dict,
) -> FeatureStore:
    """Extract into ``folder/pending``, resuming it; a pending store of other images (an
    unfinished run given another list) or an unreadable one is discarded first."""
    pending = folder / PENDING
    ids = [str(i) for i in ids]
    if (pending / META_FILE).exists():
        try:
            previous = FeatureStore.open(pending, writable=True)
        except AsymretError:
            previous = None
        if previous is None or previous.ids != ids:
            shutil.rmtree(pending)
    return extract_to_store(teacher, images, ids, pending, scales=scales, amp=amp,
                            chunk_size=chunk_size, **options)


def _readable_rows(store: FeatureStore, paths: Sequence[str | Path]) -> tuple[np.ndarray, list]:
    """Rows of the store whose vectors exist (unreadable images are NaN) and the paths of the
    others."""
    finite = np.ones(store.count, dtype=bool)
    for start in range(0, store.count, _SCAN_ROWS):
        finite[start : start + _SCAN_ROWS] = np.isfinite(
            store.vectors[start : start + _SCAN_ROWS]).all(axis=1)
    rows = np.flatnonzero(finite)
    if not len(rows) and store.count:
        raise AsymretError(f"{store.path}: none of the {store.count} images could be read "
                           f"(first: {paths[0]})")
    return rows, [str(paths[i]) for i in np.flatnonzero(~finite)]


def _check_unit_norm(vectors: np.ndarray, rows: np.ndarray, folder: Path) -> None:
    for start in range(0, len(rows), _SCAN_ROWS):
        block = np.asarray(vectors[rows[start : start + _SCAN_ROWS]], dtype=np.float32)
        norms = np.linalg.norm(block, axis=1)
        if np.abs(norms - 1).max(initial=0) > _UNIT_NORM_TOLERANCE:
            raise AsymretError(f"{folder}: an IVF-PQ index needs unit vectors; the teacher "
                               "gives vectors of other norms, use the exact kind")


# --- Recall ------------------------------------------------------------------------------


def exact_neighbours(
    index: TeacherIndex, queries: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """The exact top ``k`` rows per query by inner product over the stored vectors (a
    chunked scan; float32 scores), as ``(scores, rows)``."""
    faiss = _faiss()
    queries = _query_matrix(queries, index.dim)
    k = min(k, index.count)
    heap = faiss.ResultHeap(len(queries), k, keep_max=True)
    for start, block in index.iter_vectors():
        scores, rows = faiss.knn(queries, np.ascontiguousarray(block), min(k, len(block)),
                                 metric=faiss.METRIC_INNER_PRODUCT)
        if scores.shape[1] < k:
            pad = k - scores.shape[1]
            scores = np.pad(scores, ((0, 0), (0, pad)), constant_values=-np.inf)
            rows = np.pad(rows, ((0, 0), (0, pad)), constant_values=-1 - start)
        heap.add_result(np.ascontiguousarray(scores, np.float32),
                        np.ascontiguousarray(rows + start, np.int64))
    heap.finalize()
    return heap.D, heap.I


def measure_recall(
    index: TeacherIndex, queries: int = 1000, *, k: int = RECALL_K, seed: int = 0,
    nprobe: int | None = None, rerank: int | None = None,
) -> dict:
    """Recall@k of the index's search against exact search, with ``queries`` vectors of the
    collection sampled as queries; each query's own row is left out of both rankings.

    Returns:
        ``{"k", "queries", "count", "recall", "nprobe", "rerank"}``: the mean fraction of the
        exact top ``k`` that the index's top ``k`` holds.
    """
    count = index.count
    if count < 2:
        raise AsymretError(f"{index.path}: recall needs at least 2 vectors")
    k = min(k, count - 1)
    rows = np.sort(np.random.default_rng(seed).choice(count, min(queries, count),
                                                      replace=False))
    sample = index.vectors(rows)
    _, exact = exact_neighbours(index, sample, k + 1)
    _, found = index.search(sample, k + 1, nprobe=nprobe, rerank=rerank)
    hits = 0
    for row, truth, got in zip(rows, exact, found, strict=True):
        truth = [r for r in truth if r != row][:k]
        got = [r for r in got if r != row and r >= 0][:k]
        hits += len(set(truth) & set(got))
    settings = index.meta.get("ivfpq") or {}
    return {
        "k": k, "queries": len(rows), "count": count, "recall": hits / (k * len(rows)),
        "nprobe": nprobe or settings.get("nprobe"),
        "rerank": settings.get("rerank") if rerank is None else rerank,
    }


# --- Query models and search -------------------------------------------------------------


class TorchQueryModel:
    """A torch network as a query model: images → (N, D) numpy vectors, batched by size.

    Args:
        net: the query network (a student, or the teacher itself).
        scales: extraction scales (the reference's multi-scale descriptor for several).
        device: where it runs.
        teacher_fingerprint: the fingerprint of the teacher it was trained against, if known.
        source: where it was loaded from (for messages).

    Attributes:
        metadata: ``{"fingerprint", "teacher_fingerprint", "source"}``, as an ONNX query
            model's.
    """

    def __init__(self, net: Network, *, scales: Sequence[float] = (1.0,),
                 device: str | torch.device = "cpu", teacher_fingerprint: str | None = None,
                 source: str | None = None):
        self.net = net
        self.scales = check_scales(scales)
        self.device = torch.device(device)
        self.metadata = {"fingerprint": model_fingerprint(net),
                         "teacher_fingerprint": teacher_fingerprint,
                         "source": source or retrieval_net(net).config.name}

    @classmethod
    def load(cls, spec: str | Path, *, root: str | Path | None = None,
             pretrained: bool = False, **kwargs) -> TorchQueryModel:
        """A saved student folder (its ``teacher.json`` read), a reference ``.pth`` or a name."""
        from asymret.models import load_network

        record = read_teacher_record(spec)
        return cls(load_network(spec, root, pretrained=pretrained),
                   teacher_fingerprint=None if record is None else record.fingerprint,
                   source=str(spec), **kwargs)

    def __call__(self, images: torch.Tensor | Sequence[torch.Tensor]) -> np.ndarray:
        if isinstance(images, torch.Tensor) and images.ndim == 4:
            images = list(images)
        out = np.empty((len(images), self.net.outputdim), dtype=np.float32)
        groups: dict[tuple, list[int]] = {}
        for i, image in enumerate(images):
            groups.setdefault(tuple(image.shape), []).append(i)
        power = multiscale_power(self.net) if len(self.scales) > 1 else 1.0
        was_training = self.net.training
        self.net.eval().to(self.device)
        try:
            with torch.no_grad():
                for members in groups.values():
                    batch = torch.stack([images[i] for i in members]).to(self.device)
                    vectors = multiscale_vectors(self.net, batch, self.scales, power)
                    out[members] = vectors.float().cpu().numpy()
        finally:
            self.net.train(was_training)
        return out


def as_query_model(model: Any) -> Any:
    """A RetrievalNet or Teacher becomes a :class:`TorchQueryModel`; anything else is used as
    it is."""
    return TorchQueryModel(model) if isinstance(model, RetrievalNet | Teacher) else model


def check_query_model(
    index: TeacherIndex | str | Path, model: Any, *, allow_unknown_teacher: bool = False
) -> None:
    """Refuse a query model whose vectors are not in the index's teacher's space.

    Accepted: the index's teacher itself (its ``metadata['fingerprint']``, or
    ``'model_fingerprint'`` as an ONNX query model names it), a model whose
    ``metadata['teacher_fingerprint']`` is the index's teacher's, and, with
    ``allow_unknown_teacher``, a model with no teacher record.

    Args:
        index: an opened index, or its folder (only ``index.json`` is read).
        model: the query model.
        allow_unknown_teacher: accept a model with no teacher record.

    Raises:
        AsymretError: one line naming the model, the teachers and what to do.
    """
    if isinstance(index, TeacherIndex):
        path, teacher = index.path, index.teacher
    else:
        path = Path(index)
        teacher = _read_meta(path)["teacher"]
    fingerprint = teacher["fingerprint"]
    metadata = getattr(model, "metadata", None) or {}
    source = metadata.get("source") or getattr(model, "path", None) or type(model).__name__
    own = metadata.get("fingerprint") or metadata.get("model_fingerprint")
    theirs = metadata.get("teacher_fingerprint")
    if fingerprint in (own, theirs):
        return
    described = f"teacher {teacher['name']} ({fingerprint[:19]})"
    if theirs:
        raise AsymretError(
            f"{source} was trained against another teacher ({theirs[:19]}) than the one that "
            f"built index {path}, {described}; search it with a student of that teacher"
        )
    if not allow_unknown_teacher:
        raise AsymretError(
            f"{source} has no record of the teacher it was trained against (no "
            f"{TEACHER_RECORD_FILE}: trained alone, or saved before asymret recorded teachers), "
            f"so its vectors may not match index {path}, built by {described}; pass "
            "--allow-unknown-teacher (allow_unknown_teacher=True) to search anyway"
        )


def parse_box(text: str) -> tuple[float, float, float, float]:
    """``"x1,y1,x2,y2"`` → a box in pixels (``x1 < x2``, ``y1 < y2``)."""
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 4 or not (values[0] < values[2] and values[1] < values[3]):
        raise AsymretError(f"--box must be x1,y1,x2,y2 with x1 < x2 and y1 < y2, got {text!r}")
    return values


def query_vectors(
    model: QueryModel, queries: Sequence[str | Path], *, imsize: int | None,
    box: Sequence[float] | Sequence[Sequence[float] | None] | None = None,
) -> np.ndarray:
    """(N, D) float32 vectors of query images, each read as asymret reads a query (cropped to
    its box, then shrunk by its full image's factor to ``imsize``,
    :func:`~asymret.data.images.load_image`).

    Args:
        model: the query model.
        queries: image files.
        imsize: the longer side of the full image (``None``: as it is).
        box: one box ``[x1, y1, x2, y2]`` for every query, or one box (or ``None``) per query.
    """
    return model_vectors(model, load_queries(queries, imsize=imsize, box=box))


def load_queries(
    queries: Sequence[str | Path], *, imsize: int | None,
    box: Sequence[float] | Sequence[Sequence[float] | None] | None = None,
) -> list[torch.Tensor]:
    """Query images as (3, H, W) tensors in [0, 1], read as :func:`query_vectors` reads them."""
    if not queries:
        raise AsymretError("no query images given")
    boxes = _boxes_for(box, len(queries))
    return [to_tensor(load_image(path, imsize, bbox))
            for path, bbox in zip(queries, boxes, strict=True)]


def model_vectors(model: QueryModel, images: Sequence[torch.Tensor]) -> np.ndarray:
    """(N, D) float32 vectors of N (3, H, W) images through a query model (checked shape)."""
    vectors = as_query_model(model)(images)
    if isinstance(vectors, torch.Tensor):
        vectors = vectors.detach().cpu().float().numpy()
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[0] != len(images):
        raise AsymretError(f"the query model returned shape {vectors.shape} for "
                           f"{len(images)} images; expected (N, D)")
    return vectors


def _boxes_for(box: Any, count: int) -> list:
    if box is None:
        return [None] * count
    if len(box) == 4 and all(isinstance(v, int | float) for v in box):
        return [tuple(float(v) for v in box)] * count
    if len(box) != count:
        raise AsymretError(f"{len(box)} boxes for {count} queries")
    return list(box)


def search_index(
    index: TeacherIndex | str | Path,
    model: QueryModel,
    queries: Sequence[str | Path],
    k: int = 10,
    *,
    box: Sequence[float] | Sequence[Sequence[float] | None] | None = None,
    imsize: int | None = None,
    allow_unknown_teacher: bool = False,
    nprobe: int | None = None,
    rerank: int | None = None,
) -> list[list[Hit]]:
    """Search a teacher index with query images; per query, the ranked ``(path, score)``.

    Args:
        index: an opened index or its folder.
        model: a query model (:class:`TorchQueryModel`, an ONNX query model, or any callable
            mapping a list of (3, H, W) images in [0, 1] to (N, D) vectors); checked against
            the index's teacher by :func:`check_query_model`.
        queries: image files.
        k: results per query.
        box: crop box(es), see :func:`query_vectors`.
        imsize: the queries' longer side (default: the index's).
        allow_unknown_teacher: accept a model with no teacher record.
        nprobe, rerank: IVF-PQ search settings (default: the index's).

    Returns:
        One list of :class:`Hit` per query, best first.
    """
    model = as_query_model(model)
    check_query_model(index, model, allow_unknown_teacher=allow_unknown_teacher)
    if not isinstance(index, TeacherIndex):  # checked first: the index may be large
        index = TeacherIndex.open(index)
    vectors = query_vectors(model, queries, imsize=index.imsize if imsize is None else imsize,
                            box=box)
    return index.hits(vectors, k, nprobe=nprobe, rerank=rerank)
