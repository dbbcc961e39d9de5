"""Revisited Oxford/Paris evaluation: mAP and mean precision@k for Easy, Medium and Hard.

The numbers equal the official revisitop ``compute_map``: junk images are removed from the
ranking (each positive moves up by the junk images ranked strictly before it), AP averages
the precision just before and at each positive over ``len(ok)`` recall steps, precision@k
uses the official cut ``min(last positive's 1-based rank, k)``, and a query without positives
is left out of both means. Protocols: Easy (ok = easy, junk = junk + hard), Medium (ok =
easy + hard, junk = junk), Hard (ok = hard, junk = junk + easy).

Two ways to get the positions of the ground-truth images in each query's ranking:

- :func:`compute_map` takes a full ranking ``ranks`` (n, nq), as the official code does;
  :func:`rank_database` builds it with a stable descending sort of the scores.
- :func:`compute_map_from_features` and :func:`evaluate_retrieval` never sort the database:
  an image's position is the number of database scores ranked before it, counted chunk by
  chunk (see :func:`database_positions`). This is the path for ~1M-image databases.

Both rank with the same rule (scores as dot products, float32 or float64 as in
:mod:`asymret.search`; equal scores ordered by database index) and compute the scores through
the same chunked function, so with the same ``chunk_size`` they give identical numbers.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from asymret.errors import AsymretError
from asymret.search import (
    DEFAULT_CHUNK_SIZE,
    Features,
    check_features,
    iter_score_chunks,
    score_dtype_for,
)

PROTOCOLS = ("easy", "medium", "hard")
DEFAULT_KAPPAS = (1, 5, 10)

SETTINGS: dict[str, tuple[str, str]] = {
    "symmetric": ("student", "student"),
    "asymmetric": ("student", "teacher"),
    "teacher": ("teacher", "teacher"),
}
"""The test settings, each (query-side network, database-side network): ``symmetric`` f–f,
``asymmetric`` f–g (student queries, teacher database), ``teacher`` g–g."""


def available_settings(sides: Collection[str]) -> dict[str, tuple[str, str]]:
    """The settings (in :data:`SETTINGS` order) whose two networks are both in ``sides``
    (e.g. ``{"student", "teacher"}``, or ``{"teacher"}`` for a teacher alone)."""
    return {name: pair for name, pair in SETTINGS.items() if set(pair) <= set(sides)}

# Per protocol: the gnd lists whose images count as positives, and those ignored as junk.
_PROTOCOL_LISTS = {
    "easy": (("easy",), ("junk", "hard")),
    "medium": (("easy", "hard"), ("junk",)),
    "hard": (("hard",), ("junk", "easy")),
}
_GND_LISTS = ("easy", "hard", "junk")

GroundTruth = Sequence[Mapping[str, Any]]
"""Per query a mapping with ``ok`` (positive database indices) and optional ``junk``."""

MapResult = tuple[float, np.ndarray, np.ndarray, np.ndarray]
"""``(map, aps (nq,), mpk (len(kappas),), prs (nq, len(kappas)))`` as fractions; NaN for a
query without positives (and for the means when no query has positives)."""


def protocol_ground_truth(
    gnd: Mapping[str, Any] | Sequence[Mapping[str, Any]], protocol: str
) -> list[dict[str, np.ndarray]]:
    """Positives and junk of every query for one protocol.

    Args:
        gnd: A :func:`~asymret.data.revisitop.load_gnd` dict, or its ``gnd`` list of
            per-query ``easy``/``hard``/``junk`` index lists.
        protocol: ``"easy"``, ``"medium"`` or ``"hard"``.

    Returns:
        Per query ``{"ok": int64 array, "junk": int64 array}``; lists are concatenated as
        given (duplicates kept, as the official code does: ``len(ok)`` is the AP denominator).
    """
    if protocol not in _PROTOCOL_LISTS:
        raise AsymretError(f"unknown protocol {protocol!r}; expected one of {PROTOCOLS}")
    ok_lists, junk_lists = _PROTOCOL_LISTS[protocol]
    return [
        {
            "ok": np.concatenate([lists[name] for name in ok_lists]),
            "junk": np.concatenate([lists[name] for name in junk_lists]),
        }
        for lists in _gnd_index_lists(gnd)
    ]


def compute_map(
    ranks: np.ndarray, ground_truth: GroundTruth, kappas: Sequence[int] = DEFAULT_KAPPAS
) -> MapResult:
    """mAP and mP@k from a full ranking, as the official revisitop ``compute_map``.

    Args:
        ranks: Shape (n, nq): ``ranks[r, q]`` is the database index at 0-based rank ``r`` for
            query ``q``. A truncated ranking is allowed: positives missing from it add nothing
            to AP (the denominator stays ``len(ok)``), and P@k is 0 for a query none of whose
            positives is ranked (the official code fails there).
        ground_truth: Per query ``ok`` and optional ``junk`` database indices.
        kappas: The k of precision@k.

    Returns:
        ``(map, aps, mpk, prs)`` as fractions; see :data:`MapResult`.
    """
    ranks = np.asarray(ranks)
    if ranks.ndim != 2 or ranks.shape[1] != len(ground_truth):
        raise AsymretError(
            f"ranks must have shape (n, {len(ground_truth)}) for {len(ground_truth)} queries, "
            f"got {ranks.shape}"
        )
    kappas = _checked_kappas(kappas)
    per_query = []
    for query, truth in enumerate(ground_truth):
        ok = _index_array(truth["ok"])
        junk = _index_array(truth.get("junk", ()))
        ranking = ranks[:, query]
        per_query.append(
            (np.flatnonzero(np.isin(ranking, ok)), np.flatnonzero(np.isin(ranking, junk)), ok.size)
        )
    return _summarise(per_query, kappas)


def rank_database(
    queries: Features,
    database: Features,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """Full ranking by a stable descending sort of the scores (equal scores by index).

    Holds the whole (nq, n) score matrix: meant for small databases and for checking.

    Args:
        queries: Shape (nq, D).
        database: Shape (n, D).
        chunk_size: Rows per score chunk (use the same value as the fast path to compare).
        device: Where scores are computed and sorted.

    Returns:
        ``ranks``, shape (n, nq), int64, the layout :func:`compute_map` takes.
    """
    check_features(queries, database, chunk_size=chunk_size)
    scores = torch.cat(
        [
            chunk
            for _, chunk in iter_score_chunks(
                queries, database, chunk_size=chunk_size, device=device
            )
        ],
        dim=1,
    )
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices
    return order.T.cpu().numpy()


def database_positions(
    queries: Features,
    database: Features,
    indices_per_query: Sequence[Sequence[int] | np.ndarray],
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    device: str | torch.device = "cpu",
) -> list[np.ndarray]:
    """0-based positions of given database images in each query's ranking, without sorting.

    The ranking is the stable descending order of the scores, so the position of image ``i``
    for query ``q`` is ``#{j: s[q, j] > s[q, i]} + #{j < i: s[q, j] == s[q, i]}``. The scores
    of the requested images are read in a first pass; a second pass over the database counts,
    chunk by chunk, the scores above each of them (searchsorted into the few sorted requested
    scores, then a histogram) and the equal scores of lower index (a range update over the
    requested images sorted by score then index). Memory is bounded by the chunk:
    O(nq × chunk_size + nq × max requested), whatever the number of tied scores.

    Args:
        queries: Shape (nq, D).
        database: Shape (n, D).
        indices_per_query: For each query, database indices (duplicates allowed).
        chunk_size: Database rows scored at a time.
        device: Where scores are computed and counted.

    Returns:
        Per query an int64 array of positions, aligned with the given indices.

    Raises:
        AsymretError: invalid features, wrong number of index lists, or an index outside the
            database.
        RuntimeError: a chunk's scores differed between the two passes (a non-deterministic
            matrix product); checked, never silently miscounted.
    """
    check_features(queries, database, chunk_size=chunk_size)
    if len(indices_per_query) != queries.shape[0]:
        raise AsymretError(
            f"queries has {queries.shape[0]} rows but {len(indices_per_query)} index lists "
            "were given"
        )
    requested = [_index_array(indices) for indices in indices_per_query]
    for query, indices in enumerate(requested):
        _check_index_range(indices, database.shape[0], f"query {query}")
    return _positions(queries, database, requested, chunk_size, torch.device(device))


def compute_map_from_features(
    queries: Features,
    database: Features,
    ground_truth: GroundTruth,
    kappas: Sequence[int] = DEFAULT_KAPPAS,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    device: str | torch.device = "cpu",
) -> MapResult:
    """:func:`compute_map` of the dot-product ranking, without sorting the database.

    Args:
        queries: Shape (nq, D).
        database: Shape (n, D).
        ground_truth: Per query ``ok`` and optional ``junk`` database indices.
        kappas: The k of precision@k.
        chunk_size: Database rows scored at a time.
        device: Where scores are computed and counted.

    Returns:
        ``(map, aps, mpk, prs)`` as fractions; see :data:`MapResult`.
    """
    kappas = _checked_kappas(kappas)
    return _summarise(
        _ground_truth_positions(queries, database, ground_truth, chunk_size, device), kappas
    )


def precision_recall_points(
    queries: Features,
    database: Features,
    ground_truth: GroundTruth,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    device: str | torch.device = "cpu",
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Recall and precision at each positive of each query, junk removed (no interpolation).

    Args:
        queries: Shape (nq, D).
        database: Shape (n, D).
        ground_truth: Per query ``ok`` and optional ``junk`` database indices.
        chunk_size: Database rows scored at a time.
        device: Where scores are computed and counted.

    Returns:
        Per query ``(recall, precision)``, float64 arrays with one point per positive in
        rank order: ``(j + 1) / len(ok)`` and ``(j + 1) / (rank + 1)``; empty without
        positives.
    """
    curves = []
    for positive, junk, num_ok in _ground_truth_positions(
        queries, database, ground_truth, chunk_size, device
    ):
        ranks = _ranks_without_junk(positive, junk)
        hits = np.arange(1, ranks.size + 1, dtype=np.float64)
        curves.append((hits / max(num_ok, 1), hits / (ranks + 1)))
    return curves


@dataclass(frozen=True)
class RevisitedResult:
    """Revisited-protocol scores, all in percent and unrounded.

    Attributes:
        kappas: The k of precision@k.
        map: Protocol name → mAP over the queries with positives.
        mp_at_k: Protocol name → mean precision@k, one value per kappa.
        ap_per_query: Protocol name → AP of every query, shape (nq,), NaN without positives.
        queries_used: Protocol name → number of queries in the means.
    """

    kappas: tuple[int, ...]
    map: dict[str, float]
    mp_at_k: dict[str, list[float]]
    ap_per_query: dict[str, np.ndarray]
    queries_used: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        """``{"map": {protocol: value}, "mp@k": {"k": kappas, protocol: [values]}}``."""
        return {
            "map": {protocol: self.map[protocol] for protocol in PROTOCOLS},
            "mp@k": {
                "k": list(self.kappas),
                **{protocol: list(self.mp_at_k[protocol]) for protocol in PROTOCOLS},
            },
        }

    def format_table(self) -> str:
        """Plain-text table: one mAP row and one row per mP@k, two decimals."""
        labels = ["mAP", *(f"mP@{kappa}" for kappa in self.kappas)]
        rows = [[self.map[protocol] for protocol in PROTOCOLS]]
        rows += [
            [self.mp_at_k[protocol][i] for protocol in PROTOCOLS] for i in range(len(self.kappas))
        ]
        width = max(len(label) for label in labels)
        return "\n".join(
            f"{label:<{width}}  "
            + "  ".join(
                f"{protocol[0].upper()} {value:6.2f}"
                for protocol, value in zip(PROTOCOLS, values, strict=True)
            )
            for label, values in zip(labels, rows, strict=True)
        )


def evaluate_retrieval(
    queries: Features,
    database: Features,
    gnd: Mapping[str, Any] | Sequence[Mapping[str, Any]],
    kappas: Sequence[int] = DEFAULT_KAPPAS,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    device: str | torch.device = "cpu",
) -> RevisitedResult:
    """Evaluate query and database features under the Easy, Medium and Hard protocols.

    The database is never sorted (see :func:`database_positions`); the positions of every
    query's easy, hard and junk images are counted once and shared by the three protocols.

    Args:
        queries: Query vectors, shape (nq, D), one per gnd entry.
        database: Database vectors, shape (n, D); gnd indices refer to its rows.
        gnd: A :func:`~asymret.data.revisitop.load_gnd` dict or its ``gnd`` list.
        kappas: The k of precision@k.
        chunk_size: Database rows scored at a time.
        device: Where scores are computed and counted.

    Returns:
        The scores in percent.

    Raises:
        AsymretError: wrong ndim or dtype, dimension mismatch, query count different from the
            gnd entries, NaN/Inf vectors, or a gnd index outside the database.
    """
    kappas = _checked_kappas(kappas)
    check_features(queries, database, chunk_size=chunk_size)
    index_lists = _gnd_index_lists(gnd)
    _check_query_count(queries, len(index_lists))
    for query, lists in enumerate(index_lists):
        for name in _GND_LISTS:
            _check_index_range(
                lists[name], database.shape[0], f"ground truth of query {query} ('{name}')"
            )
    positions = _positions(
        queries,
        database,
        [np.concatenate([lists[name] for name in _GND_LISTS]) for lists in index_lists],
        chunk_size,
        torch.device(device),
    )
    positions_by_list = []
    for query_positions, lists in zip(positions, index_lists, strict=True):
        ends = np.cumsum([lists[name].size for name in _GND_LISTS])
        positions_by_list.append(
            dict(zip(_GND_LISTS, np.split(query_positions, ends[:-1]), strict=True))
        )
    summaries = {}
    for protocol, (ok_lists, junk_lists) in _PROTOCOL_LISTS.items():
        per_query = [
            (
                np.unique(np.concatenate([found[name] for name in ok_lists])),
                np.unique(np.concatenate([found[name] for name in junk_lists])),
                sum(found[name].size for name in ok_lists),
            )
            for found in positions_by_list
        ]
        summaries[protocol] = _summarise(per_query, kappas)
    return RevisitedResult(
        kappas=kappas,
        map={protocol: 100.0 * mean_ap for protocol, (mean_ap, _, _, _) in summaries.items()},
        mp_at_k={
            protocol: (100.0 * mpk).tolist() for protocol, (_, _, mpk, _) in summaries.items()
        },
        ap_per_query={protocol: 100.0 * aps for protocol, (_, aps, _, _) in summaries.items()},
        queries_used={
            protocol: int(np.count_nonzero(~np.isnan(aps)))
            for protocol, (_, aps, _, _) in summaries.items()
        },
    )


def _positions(
    queries: Features,
    database: Features,
    requested: list[np.ndarray],
    chunk_size: int,
    device: torch.device,
) -> list[np.ndarray]:
    """:func:`database_positions` on validated input."""
    num_database = database.shape[0]
    unique_rows = [np.unique(indices) for indices in requested]
    num_queries = len(unique_rows)
    width = max([1, *(query_rows.size for query_rows in unique_rows)])
    # Rows of the requested images, padded with the out-of-range row ``num_database``.
    rows = torch.full((num_queries, width), num_database, dtype=torch.int64)
    for query, query_rows in enumerate(unique_rows):
        rows[query, : query_rows.size] = torch.from_numpy(query_rows)
    rows = rows.to(device)

    # Pass 1: scores of the requested rows, taken from the same chunk computation as pass 2.
    # Padding keeps +inf. Sorting is stable and rows ascend, so equal scores keep row order.
    row_scores = torch.full(
        (num_queries, width), torch.inf, dtype=score_dtype_for(queries, database), device=device
    )
    needed_chunks = np.unique(np.concatenate(unique_rows) // chunk_size).tolist()
    for start, scores in iter_score_chunks(
        queries, database, chunk_size=chunk_size, device=device, chunk_numbers=needed_chunks
    ):
        columns = rows - start
        inside = (columns >= 0) & (columns < scores.shape[1])
        gathered = scores.gather(1, columns.clamp(0, scores.shape[1] - 1))
        row_scores = torch.where(inside, gathered, row_scores)
    thresholds, order = torch.sort(row_scores, dim=1, stable=True)
    threshold_rows = rows.gather(1, order)

    # Integer keys ordering all (query, score, row) triples of the requested images, flat:
    # query, then rank of the score among the query's distinct scores, then row.
    new_value = torch.ones_like(thresholds, dtype=torch.bool)
    new_value[:, 1:] = thresholds[:, 1:] != thresholds[:, :-1]
    value_rank = new_value.cumsum(dim=1) - 1
    row_stride = num_database + 1
    query_stride = (width + 1) * row_stride
    query_base = torch.arange(num_queries, device=device).unsqueeze(1) * query_stride
    keys = (query_base + value_rank * row_stride + threshold_rows).flatten()
    # An extra +inf column: searchsorted's answer (<= width) can always be gathered.
    thresholds = torch.cat([thresholds, thresholds.new_full((num_queries, 1), torch.inf)], dim=1)

    # Pass 2, per chunk: (a) a histogram of the number of thresholds strictly below each
    # database score gives the scores above every threshold; (b) each database score equal to
    # a threshold adds one to the requested images of that score and a higher row, a range of
    # ``keys`` marked in a difference array.
    bins = width + 1
    histogram = torch.zeros(num_queries * bins, dtype=torch.int64, device=device)
    bin_offsets = torch.arange(num_queries, device=device).unsqueeze(1) * bins
    tie_ranges = torch.zeros(keys.numel() + 1, dtype=torch.int64, device=device)
    seen_itself = torch.zeros(keys.numel(), dtype=torch.int64, device=device)
    for start, scores in iter_score_chunks(queries, database, chunk_size=chunk_size, device=device):
        thresholds_below = torch.searchsorted(thresholds, scores)
        histogram += torch.bincount(
            (thresholds_below + bin_offsets).flatten(), minlength=num_queries * bins
        )
        tied = thresholds.gather(1, thresholds_below) == scores
        tied_queries, tied_columns = tied.nonzero(as_tuple=True)
        # Key (query, score, row) of each tied database score; the requested images with the
        # same query and score and a higher row are the keys in [later_begin, later_end).
        tied_value_rank = value_rank[tied_queries, thresholds_below[tied]]
        value_base = tied_queries * query_stride + tied_value_rank * row_stride
        tied_keys = value_base + start + tied_columns
        later_begin = torch.searchsorted(keys, tied_keys, right=True)
        later_end = torch.searchsorted(keys, value_base + row_stride)
        tie_ranges += torch.bincount(later_begin, minlength=tie_ranges.numel())
        tie_ranges -= torch.bincount(later_end, minlength=tie_ranges.numel())
        # A requested image must meet its own score exactly once over the pass.
        itself = later_begin - 1
        is_requested = keys[itself.clamp(min=0)] == tied_keys
        seen_itself += torch.bincount(itself[is_requested], minlength=keys.numel())
    if not torch.equal(seen_itself, (threshold_rows < num_database).flatten().long()):
        raise RuntimeError(
            "database scores differed between two computations of the same chunk; "
            "the matrix product on this device is not deterministic"
        )
    # scores_above[:, t] = number of database scores > threshold t = histogram bins > t.
    scores_above = histogram.view(num_queries, bins).flip(1).cumsum(1).flip(1)[:, 1:]
    tied_before = tie_ranges[:-1].cumsum(0).view(num_queries, width)
    sorted_positions = (scores_above + tied_before).cpu().numpy()
    threshold_rows = threshold_rows.cpu().numpy()

    positions = []
    for query, (query_rows, indices) in enumerate(zip(unique_rows, requested, strict=True)):
        count = query_rows.size
        by_row = np.argsort(threshold_rows[query, :count])
        positions.append(
            sorted_positions[query, :count][by_row][np.searchsorted(query_rows, indices)]
        )
    return positions


def _ground_truth_positions(
    queries: Features,
    database: Features,
    ground_truth: GroundTruth,
    chunk_size: int,
    device: str | torch.device,
) -> list[tuple[np.ndarray, np.ndarray, int]]:
    """Per query: sorted positions of the ok images, of the junk images, and ``len(ok)``."""
    check_features(queries, database, chunk_size=chunk_size)
    _check_query_count(queries, len(ground_truth))
    ok_lists = [_index_array(truth["ok"]) for truth in ground_truth]
    junk_lists = [_index_array(truth.get("junk", ())) for truth in ground_truth]
    for query, (ok, junk) in enumerate(zip(ok_lists, junk_lists, strict=True)):
        _check_index_range(ok, database.shape[0], f"ground truth of query {query} ('ok')")
        _check_index_range(junk, database.shape[0], f"ground truth of query {query} ('junk')")
    positions = _positions(
        queries,
        database,
        [np.concatenate([ok, junk]) for ok, junk in zip(ok_lists, junk_lists, strict=True)],
        chunk_size,
        torch.device(device),
    )
    return [
        (np.unique(found[: ok.size]), np.unique(found[ok.size :]), ok.size)
        for found, ok in zip(positions, ok_lists, strict=True)
    ]


def _summarise(
    per_query: Sequence[tuple[np.ndarray, np.ndarray, int]], kappas: tuple[int, ...]
) -> MapResult:
    """Official AP/P@k per query and their means, summed in query order as the official code.

    Args:
        per_query: ``(positive positions, junk positions, len(ok))``: sorted 0-based positions
            in the ranking before junk removal.
        kappas: The k of precision@k.
    """
    aps = np.full(len(per_query), np.nan)
    prs = np.full((len(per_query), len(kappas)), np.nan)
    ap_sum = 0.0
    precision_sums = np.zeros(len(kappas))
    used = 0
    for query, (positive, junk, num_ok) in enumerate(per_query):
        if num_ok == 0:
            continue
        ranks = _ranks_without_junk(positive, junk)
        aps[query] = _average_precision(ranks, num_ok)
        prs[query] = _precisions_at(ranks, kappas)
        ap_sum += aps[query]
        precision_sums = precision_sums + prs[query]
        used += 1
    if used == 0:
        return float("nan"), aps, np.full(len(kappas), np.nan), prs
    return float(ap_sum / used), aps, precision_sums / used, prs


def _ranks_without_junk(positive: np.ndarray, junk: np.ndarray) -> np.ndarray:
    """Each positive's position minus the junk positions strictly before it."""
    return positive - np.searchsorted(junk, positive, side="left")


def _average_precision(ranks: np.ndarray, num_ok: int) -> float:
    """Official AP: trapezoid between the precision before and at each positive."""
    recall_step = 1.0 / num_ok
    average_precision = 0.0
    for hits_before, rank in enumerate(ranks.tolist()):
        precision_before = 1.0 if rank == 0 else hits_before / rank
        precision_at = (hits_before + 1) / (rank + 1)
        average_precision += (precision_before + precision_at) * recall_step / 2.0
    return average_precision


def _precisions_at(ranks: np.ndarray, kappas: tuple[int, ...]) -> np.ndarray:
    """Official P@k: with 1-based ranks, cut = min(last positive's rank, k); hits <= cut / cut."""
    if ranks.size == 0:
        return np.zeros(len(kappas))
    one_based = ranks + 1
    last = int(one_based.max())
    return np.array(
        [np.count_nonzero(one_based <= min(last, kappa)) / min(last, kappa) for kappa in kappas],
        dtype=np.float64,
    )


def _checked_kappas(kappas: Sequence[int]) -> tuple[int, ...]:
    checked = tuple(kappas)
    if any(isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1 for k in checked):
        raise AsymretError(f"kappas must be positive integers, got {list(checked)}")
    return tuple(int(k) for k in checked)


def _check_query_count(queries: Features, num_ground_truth: int) -> None:
    if queries.shape[0] != num_ground_truth:
        raise AsymretError(
            f"queries has {queries.shape[0]} rows but the ground truth has "
            f"{num_ground_truth} queries"
        )


def _check_index_range(indices: np.ndarray, num_database: int, what: str) -> None:
    bad = indices[(indices < 0) | (indices >= num_database)]
    if bad.size:
        raise AsymretError(
            f"{what}: index {int(bad[0])} is outside the database of {num_database} vectors"
        )


def _index_array(indices: Sequence[int] | np.ndarray) -> np.ndarray:
    array = np.asarray(indices)
    if array.size == 0:
        return np.zeros(0, dtype=np.int64)
    if not np.issubdtype(array.dtype, np.integer):
        raise AsymretError(f"database indices must be integers, got dtype {array.dtype}")
    return array.astype(np.int64).reshape(-1)


def _gnd_index_lists(
    gnd: Mapping[str, Any] | Sequence[Mapping[str, Any]],
) -> list[dict[str, np.ndarray]]:
    """Per query ``easy``/``hard``/``junk`` as int64 arrays, from a gnd dict or list."""
    entries = gnd["gnd"] if isinstance(gnd, Mapping) else gnd
    lists = []
    for query, entry in enumerate(entries):
        if not isinstance(entry, Mapping):
            raise AsymretError(
                f"ground truth of query {query}: expected a dict, got {type(entry).__name__}"
            )
        missing = [name for name in _GND_LISTS if name not in entry]
        if missing:
            raise AsymretError(f"ground truth of query {query}: missing '{missing[0]}'")
        lists.append({name: _index_array(entry[name]) for name in _GND_LISTS})
    return lists
