"""Each training image's K nearest neighbours in the teacher's space, for neighbourhood losses.

For the teacher's (N, D) vectors of every training image (its bank), row i of the table is
the K images j ≠ i of largest g(x_i)·g(x_j), best first: the exact result of a stable
descending sort of the full score row with column i removed, equal scores going to the lower
index (the ``torch`` backend, :func:`asymret.search.exact_search` over chunks of queries).
The ``faiss`` backend asks an exact inner-product flat index on the CPU for the same; it can
order scores that differ only by float rounding otherwise. Each query asks for K + 1
neighbours and drops itself (or, when equal scores pushed it beyond the list, the last entry).

The teacher is frozen, so the table depends only on its bank: :func:`bank_neighbours` computes
it once and caches it inside the bank's feature store folder (``neighbours-k<K>.npy``, with a
``.json`` naming the store's checksum and K), where every epoch, resumed run and student of the
same teacher reads it again; a cache made from other vectors or another K is not reused.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import torch

from asymret.errors import AsymretError
from asymret.features.store import FeatureStore
from asymret.files import write_bytes_atomic, write_text_atomic
from asymret.mining import check_backend
from asymret.search import exact_search

DEFAULT_QUERY_CHUNK = 1024
"""Training images whose neighbours are searched at a time."""

CACHE_FORMAT = "asymret-neighbours"
CACHE_VERSION = 1


def teacher_neighbours(
    vectors: np.ndarray | torch.Tensor,
    k: int,
    *,
    backend: str = "torch",
    device: str | torch.device = "cpu",
    query_chunk: int = DEFAULT_QUERY_CHUNK,
) -> torch.Tensor:
    """The ``k`` nearest other rows of every row of ``vectors`` by dot product.

    Args:
        vectors: (N, D) teacher vectors (a read-only memory map is fine).
        k: neighbours per row, ``1 <= k <= N − 1``.
        backend: ``torch`` (exact chunked matrix products on ``device``) or ``faiss``
            (exact flat inner-product index, CPU).
        device: where the torch backend scores.
        query_chunk: rows searched at a time.

    Returns:
        (N, k) int64 CPU tensor of row indices, nearest first, never the row itself. A row
        holding NaN or Inf (an unreadable image's, in a bank made with
        ``data.skip_unreadable``) is nobody's neighbour, and its own row is all -1.

    Raises:
        AsymretError: bad ``k`` or ``query_chunk``, an unusable backend, or bad vectors
            (not 2-D floats, or fewer than ``k + 1`` finite rows).
    """
    if getattr(vectors, "ndim", None) != 2:
        raise AsymretError(f"teacher vectors: expected a 2-D array (N, D), got "
                           f"{type(vectors).__name__} of shape {getattr(vectors, 'shape', None)}")
    finite = (torch.isfinite(vectors).all(dim=1).cpu() if isinstance(vectors, torch.Tensor)
              else torch.from_numpy(np.isfinite(vectors).all(axis=1)))
    if not finite.all():
        kept = torch.nonzero(finite).flatten()
        table = torch.full((vectors.shape[0], k), -1, dtype=torch.int64)
        if isinstance(vectors, torch.Tensor):
            readable = vectors[kept]
        else:
            readable = np.asarray(vectors)[kept.numpy()]
        try:
            found = teacher_neighbours(readable, k, backend=backend, device=device,
                                       query_chunk=query_chunk)
        except AsymretError as exc:
            raise AsymretError(f"{exc} ({len(kept)} of {vectors.shape[0]} rows are finite; "
                               "the others are unreadable images)") from None
        table[kept] = kept[found]
        return table
    count = vectors.shape[0]
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= count - 1:
        raise AsymretError(f"neighbours per image must be an integer in [1, {count - 1}] "
                           f"(the bank holds {count} images), got {k!r}")
    if isinstance(query_chunk, bool) or not isinstance(query_chunk, int) or query_chunk < 1:
        raise AsymretError(f"query_chunk must be a positive integer, got {query_chunk!r}")
    check_backend(backend, device)
    search = _faiss_search(vectors) if backend == "faiss" else _torch_search(vectors, device)
    table = torch.empty(count, k, dtype=torch.int64)
    for start in range(0, count, query_chunk):
        rows = torch.arange(start, min(start + query_chunk, count))
        found = search(rows, k + 1)
        is_self = found == rows[:, None]
        dropped = is_self.clone()
        dropped[~is_self.any(dim=1), -1] = True
        table[rows] = found[~dropped].view(len(rows), k)
    return table


def _torch_search(vectors: np.ndarray | torch.Tensor, device: str | torch.device):
    def search(rows: torch.Tensor, wanted: int) -> torch.Tensor:
        queries = vectors[rows.numpy()] if isinstance(vectors, np.ndarray) else vectors[rows]
        return exact_search(queries, vectors, wanted, device=device)[1].cpu()

    return search


def _faiss_search(vectors: np.ndarray | torch.Tensor):
    import faiss

    if isinstance(vectors, torch.Tensor):
        vectors = vectors.detach().cpu().numpy()
    database = np.ascontiguousarray(vectors, dtype=np.float32)
    if not np.isfinite(database).all():
        row = int(np.argmin(np.isfinite(database).all(axis=1)))
        raise AsymretError(f"teacher vectors: row {row} holds NaN or Inf")
    index = faiss.IndexFlatIP(database.shape[1])
    index.add(database)

    def search(rows: torch.Tensor, wanted: int) -> torch.Tensor:
        return torch.from_numpy(index.search(database[rows.numpy()], wanted)[1]).long()

    return search


def cache_paths(store: FeatureStore, k: int) -> tuple[Path, Path]:
    """The table and metadata files of ``store``'s K-neighbour cache."""
    return store.path / f"neighbours-k{k}.npy", store.path / f"neighbours-k{k}.json"


def bank_neighbours(
    store: FeatureStore,
    k: int,
    *,
    backend: str = "torch",
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """:func:`teacher_neighbours` of a complete bank store, computed once and cached beside it.

    Returns:
        (N, k) int64 CPU tensor.

    Raises:
        AsymretError: the store is incomplete, or as :func:`teacher_neighbours`.
    """
    if not store.is_complete:
        raise AsymretError(f"{store.path}: the teacher's bank is incomplete "
                           f"({store.complete_rows} of {store.count} rows)")
    table_path, meta_path = cache_paths(store, k)
    wanted = {"format": CACHE_FORMAT, "version": CACHE_VERSION, "k": k,
              "count": store.count, "vectors": store.meta["checksum"]}
    if table_path.is_file() and meta_path.is_file():
        try:
            stored = json.loads(meta_path.read_text())
        except (OSError, ValueError):
            stored = None
        if stored == wanted:
            table = np.load(table_path)
            if table.shape == (store.count, k) and table.dtype == np.int64:
                return torch.from_numpy(table)
    table = teacher_neighbours(store.vectors, k, backend=backend, device=device)
    buffer = _npy_bytes(table.numpy())
    write_bytes_atomic(table_path, buffer)
    write_text_atomic(meta_path, json.dumps(wanted, sort_keys=True))
    return table


def _npy_bytes(array: np.ndarray) -> bytes:
    handle = io.BytesIO()
    np.save(handle, array)
    return handle.getvalue()
