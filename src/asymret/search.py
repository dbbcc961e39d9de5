"""Exact dot-product search over a database processed in chunks (torch).

Queries ``(nq, D)`` and database ``(n, D)`` may be numpy arrays (a read-only memory map
included) or torch tensors in float16, bfloat16, float32 or float64. Only one chunk of the
database is on ``device`` at a time, so a database larger than device memory can be searched.

Scores are dot products computed in float32, or in float64 when either input is float64;
float16 and bfloat16 vectors are widened chunk by chunk. Every function here computes scores
through :func:`iter_score_chunks`, so with the same ``chunk_size`` they see the same scores bit
for bit. Rankings are stable descending sorts: equal scores are ordered by database index.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import torch

from asymret.errors import AsymretError

Features = np.ndarray | torch.Tensor

DEFAULT_CHUNK_SIZE = 65536


def check_features(queries: Features, database: Features, *, chunk_size: int) -> None:
    """Check that queries and database are finite 2-D float arrays of the same dimension.

    Args:
        queries: Query vectors, shape (nq, D).
        database: Database vectors, shape (n, D).
        chunk_size: Rows checked for NaN/Inf at a time (bounds memory on large databases).

    Raises:
        AsymretError: a one-line message naming the array and the problem (first bad row for
            NaN/Inf).
    """
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise AsymretError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    for name, array in (("queries", queries), ("database", database)):
        if not isinstance(array, np.ndarray | torch.Tensor):
            raise AsymretError(
                f"{name}: expected a numpy array or torch tensor, got {type(array).__name__}"
            )
        if array.ndim != 2:
            raise AsymretError(
                f"{name}: expected a 2-D array (rows, D), got shape {tuple(array.shape)}"
            )
        if not _is_floating(array):
            raise AsymretError(f"{name}: expected floating-point vectors, got dtype {array.dtype}")
        if array.shape[0] == 0 or array.shape[1] == 0:
            raise AsymretError(f"{name}: empty array of shape {tuple(array.shape)}")
    if queries.shape[1] != database.shape[1]:
        raise AsymretError(
            f"dimension mismatch: queries have D={queries.shape[1]}, "
            f"database has D={database.shape[1]}"
        )
    for name, array in (("queries", queries), ("database", database)):
        _check_finite(array, name, chunk_size)


def iter_score_chunks(
    queries: Features,
    database: Features,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    device: str | torch.device = "cpu",
    chunk_numbers: Iterable[int] | None = None,
) -> Iterator[tuple[int, torch.Tensor]]:
    """Yield dot-product scores of all queries against consecutive database chunks.

    Chunk ``c`` covers database rows ``[c * chunk_size, (c + 1) * chunk_size)``; the
    boundaries depend on ``chunk_size`` only, so a chunk computed twice gives the same scores.
    Inputs are assumed validated (see :func:`check_features`).

    Args:
        queries: Query vectors, shape (nq, D).
        database: Database vectors, shape (n, D).
        chunk_size: Database rows per chunk.
        device: Where the scores are computed.
        chunk_numbers: Only these chunks, in increasing order; all chunks when None.

    Yields:
        ``(start, scores)``: the chunk's first database row and its scores, shape (nq, rows),
        float32 (float64 when an input is float64), on ``device``.
    """
    device = torch.device(device)
    score_dtype = score_dtype_for(queries, database)
    query_matrix = _to_tensor(queries, device, score_dtype)
    num_chunks = -(-database.shape[0] // chunk_size)
    for chunk in range(num_chunks) if chunk_numbers is None else chunk_numbers:
        start = chunk * chunk_size
        block = _to_tensor(database[start : start + chunk_size], device, score_dtype)
        yield start, query_matrix @ block.T


def exact_search(
    queries: Features,
    database: Features,
    k: int,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    device: str | torch.device = "cpu",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-k database vectors by dot product, merging a running top-k chunk by chunk.

    Equal scores are ranked by lower database index, so the result equals the first ``k``
    columns of a stable descending sort of the full score matrix.

    Args:
        queries: Query vectors, shape (nq, D).
        database: Database vectors, shape (n, D); float16/bfloat16 is widened per chunk.
        k: Neighbours per query, ``1 <= k <= n``.
        chunk_size: Database rows scored at a time.
        device: Where the scores are computed and the results returned.

    Returns:
        ``(scores, indices)``, both shape (nq, k) on ``device``: scores in float32 (float64
        when an input is float64), best first; indices int64 database rows.

    Raises:
        AsymretError: invalid shapes, dtypes, NaN/Inf vectors, or ``k`` out of range.
    """
    check_features(queries, database, chunk_size=chunk_size)
    num_database = database.shape[0]
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= num_database:
        raise AsymretError(
            f"k must be an integer in [1, {num_database}] (database size), got {k!r}"
        )
    best_scores: torch.Tensor | None = None
    best_indices: torch.Tensor | None = None
    for start, scores in iter_score_chunks(queries, database, chunk_size=chunk_size, device=device):
        chunk_scores, chunk_columns = _top_k_in_index_order(scores, min(k, scores.shape[1]))
        chunk_indices = chunk_columns + start
        if best_scores is not None:
            # Earlier chunks hold lower indices, and each part lists equal scores by index,
            # so a stable sort of the concatenation breaks ties by lower index.
            chunk_scores = torch.cat([best_scores, chunk_scores], dim=1)
            chunk_indices = torch.cat([best_indices, chunk_indices], dim=1)
        order = torch.sort(chunk_scores, dim=1, descending=True, stable=True).indices[:, :k]
        best_scores = chunk_scores.gather(1, order)
        best_indices = chunk_indices.gather(1, order)
    return best_scores, best_indices


def score_dtype_for(queries: Features, database: Features) -> torch.dtype:
    """The dtype scores are computed in: float64 if either input is float64, else float32."""
    return torch.float64 if _is_float64(queries) or _is_float64(database) else torch.float32


def _top_k_in_index_order(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k best columns per row, ties at the cut going to lower columns.

    Args:
        scores: Shape (nq, c), finite.
        k: ``1 <= k <= c``.

    Returns:
        ``(values, columns)``, shape (nq, k), listed in increasing column order.
    """
    if k == scores.shape[1]:
        columns = torch.arange(k, device=scores.device).expand(scores.shape[0], k)
        return scores, columns
    cut = torch.topk(scores, k, dim=1, sorted=False).values.min(dim=1, keepdim=True).values
    above = scores > cut
    at_cut = scores == cut
    needed_at_cut = k - above.sum(dim=1, keepdim=True)
    keep = above | (at_cut & (at_cut.cumsum(dim=1) <= needed_at_cut))
    columns = keep.nonzero()[:, 1].view(scores.shape[0], k)
    return scores.gather(1, columns), columns


def _is_float64(array: Features) -> bool:
    if isinstance(array, torch.Tensor):
        return array.dtype == torch.float64
    return array.dtype == np.float64


def _is_floating(array: Features) -> bool:
    if isinstance(array, torch.Tensor):
        return array.dtype.is_floating_point
    return np.issubdtype(array.dtype, np.floating)


def _check_finite(array: Features, name: str, chunk_size: int) -> None:
    for start in range(0, array.shape[0], chunk_size):
        block = array[start : start + chunk_size]
        finite_rows = (
            torch.isfinite(block).all(dim=1).cpu().numpy()
            if isinstance(block, torch.Tensor)
            else np.isfinite(block).all(axis=1)
        )
        if not finite_rows.all():
            row = start + int(np.argmin(finite_rows))
            raise AsymretError(f"{name}: row {row} holds NaN or Inf")


def _to_tensor(array: Features, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    if isinstance(array, np.ndarray):
        # A read-only array (np.load memory map) is copied: torch tensors must be writable.
        array = torch.from_numpy(np.require(array, requirements=["C", "W"]))
    return array.to(device=device, dtype=dtype)
