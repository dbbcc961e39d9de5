"""Per-epoch training tuples: random (query, positive) pairs and negatives from a random pool.

The rule follows the reference project (cirtorch ``TuplesDataset.create_epoch_tuples``). Each
epoch draws ``num_pairs`` training pairs and a pool of ``pool_size`` random images
(:func:`sample_epoch`). A query's hard negatives are the pool images in order of decreasing
similarity to the query, skipping images of the query's own cluster (they may show the same
landmark) and images of a cluster already taken, until ``num_negatives`` are found
(:func:`mine_hard_negatives`). Random negatives apply the same rule to a random order of the
pool (:func:`random_negatives`).

In asymmetric training the pool vectors are the frozen teacher's, read from its precomputed
feature bank (a memory-mapped array is fine: only the pool's rows are read), while the query
vectors may be the student's or the teacher's; :func:`hard_negative_tuples` wires this up, and
:func:`epoch_tuples` draws a whole epoch as the trainer uses it (pairs, pool, random or hard
negatives) from vectors the caller supplies.

Mining is exact and vectorised. A chunk of queries is scored against the whole pool with one
matrix product; the ``M`` best pool entries per query are the candidates; a sort-based pass
keeps the first eligible entry of each cluster. A query for which ``M`` candidates could hide a
better negative (fewer than ``num_negatives`` picks scored strictly above the ``M``-th
candidate) is searched again with ``M`` doubled, up to the whole pool, so the result always
equals the rule applied to a stable descending sort of the full score row: equal scores go to
the lower pool position.

Losses that need no pairs train on epochs of random images instead (:func:`sample_images`,
the reference's ``reg`` and ``rand`` modes): regression learns g(a) of each image, RKD and
DarkRank relate the images of each batch.

Randomness comes from a CPU ``torch.Generator``: the same generator state gives the same
epoch. :func:`epoch_generator` derives one generator per (seed, epoch), so a resumed run needs
no saved generator state.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from asymret.errors import AsymretError
from asymret.search import score_dtype_for

Features = np.ndarray | torch.Tensor
Indices = np.ndarray | torch.Tensor

DEFAULT_CANDIDATES = 128
"""Initial candidate list length ``M`` per query; doubled for queries that need more."""

DEFAULT_QUERY_CHUNK = 512
"""Queries scored at a time: the score block is ``query_chunk × pool_size`` floats."""

_RANDOM_KEYS_PER_CHUNK = 1 << 22
"""Random keys drawn at a time by :func:`random_negatives` (32 MiB of float64). The chunks
depend on the pool size only, so the draw depends only on the inputs and the generator state."""

MINING_BACKENDS = ("torch", "faiss")
"""Backends of :func:`mine_hard_negatives` (see its ``backend`` argument)."""

NEGATIVE_MODES = ("hard", "random", "none")
"""Negatives of :func:`epoch_tuples`."""

_FAISS_MISSING = "the faiss mining backend needs the faiss-cpu package: pip install faiss-cpu"

VectorReader = Callable[[torch.Tensor], "Features"]
"""``read(indices)``: the (n, D) vectors of training images ``indices`` ((n,) int64 CPU
tensor), e.g. rows of the teacher's bank or the student's vectors extracted on demand."""

CandidateSearch = Callable[[torch.Tensor, int], tuple[torch.Tensor, torch.Tensor]]
"""``search(rows, m)``: the ``m`` best-scored pool entries for the chunk's query ``rows``, as
``(scores, positions)`` of shape (len(rows), m). All entries scored above the ``m``-th must be
included; the order among them does not matter."""


@dataclass(frozen=True)
class EpochTuples:
    """The training tuples of one epoch, in training-image index space.

    Attributes:
        query_indices: (Q,) int64 query image of each tuple.
        positive_indices: (Q,) int64 positive image of each tuple.
        negative_indices: (Q, k) int64 negative images, best first; ``-1`` pads a row when the
            pool held fewer than ``k`` clusters other than the query's.
    """

    query_indices: torch.Tensor
    positive_indices: torch.Tensor
    negative_indices: torch.Tensor

    def __len__(self) -> int:
        return self.query_indices.shape[0]


@dataclass(frozen=True)
class EpochSample:
    """The training pairs and the negative pool drawn for one epoch (int64 CPU tensors).

    Attributes:
        pair_indices: (Q,) which training pairs, as positions in the db's pair lists.
        query_indices: (Q,) query image of each drawn pair.
        positive_indices: (Q,) positive image of each drawn pair.
        pool_indices: (P,) distinct images forming the negative pool, sorted ascending (a
            memory-mapped feature bank is then read front to back).
    """

    pair_indices: torch.Tensor
    query_indices: torch.Tensor
    positive_indices: torch.Tensor
    pool_indices: torch.Tensor

    def tuples(self, negative_positions: torch.Tensor) -> EpochTuples:
        """Tuples from negatives given as pool positions (as the mining functions return).

        Args:
            negative_positions: (Q, k) int64 positions in ``pool_indices``; ``-1`` for none.

        Returns:
            The epoch's tuples with negatives mapped to image indices (``-1`` kept).
        """
        positions = torch.as_tensor(negative_positions, dtype=torch.int64).cpu()
        if positions.ndim != 2 or positions.shape[0] != self.query_indices.shape[0]:
            raise AsymretError(
                f"negative_positions: expected shape ({self.query_indices.shape[0]}, k), "
                f"got {tuple(positions.shape)}"
            )
        if positions.numel() and (
            positions.min() < -1 or positions.max() >= len(self.pool_indices)
        ):
            raise AsymretError(f"negative_positions: out of range -1..{len(self.pool_indices) - 1}")
        negatives = torch.where(
            positions >= 0, self.pool_indices[positions.clamp(min=0)], torch.tensor(-1)
        )
        return EpochTuples(self.query_indices, self.positive_indices, negatives)


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """A CPU generator determined by ``(seed, epoch)`` alone, for exactly resumable training.

    Generators of different epochs are statistically independent (numpy ``SeedSequence``
    mixes the pair into the 64-bit torch seed).
    """
    if seed < 0 or epoch < 0:
        raise AsymretError(f"seed and epoch must be >= 0, got seed={seed}, epoch={epoch}")
    words = np.random.SeedSequence((seed, epoch)).generate_state(2, dtype=np.uint32)
    generator = torch.Generator()
    generator.manual_seed(int(words[0]) << 32 | int(words[1]))
    return generator


def sample_epoch(
    num_pairs: int,
    pool_size: int,
    query_indices: Indices,
    positive_indices: Indices,
    num_images: int,
    generator: torch.Generator,
) -> EpochSample:
    """Draw the epoch's training pairs and negative pool, as the reference project does.

    ``num_pairs`` distinct pairs are drawn uniformly (all pairs, in random order, if there are
    fewer), then ``pool_size`` distinct images uniformly from all ``num_images`` (all if fewer).
    The pool may contain query images; their own cluster is skipped when mining anyway.

    Args:
        num_pairs: Training pairs per epoch (reference: 2,000).
        pool_size: Images in the negative pool (reference: 20,000); 0 for no pool.
        query_indices: (N_pairs,) query image of every training pair (SfM ``qidxs``).
        positive_indices: (N_pairs,) positive image of every pair (SfM ``pidxs``).
        num_images: Images in the training db.
        generator: CPU generator; two draws from equal states are equal.

    Returns:
        The drawn pairs and pool.

    Raises:
        AsymretError: negative sizes, pair lists of different lengths or not 1-D, or image
            indices outside ``[0, num_images)``.
    """
    for name, value in (("num_pairs", num_pairs), ("pool_size", pool_size)):
        _check_count(name, value)
    _check_count("num_images", num_images)
    queries = _as_index_tensor("query_indices", query_indices)
    positives = _as_index_tensor("positive_indices", positive_indices)
    if queries.shape != positives.shape:
        raise AsymretError(
            f"query_indices and positive_indices differ in length: "
            f"{queries.shape[0]} vs {positives.shape[0]}"
        )
    for name, indices in (("query_indices", queries), ("positive_indices", positives)):
        if indices.numel() and (indices.min() < 0 or indices.max() >= num_images):
            raise AsymretError(f"{name}: image index out of range 0..{num_images - 1}")
    pairs = torch.randperm(queries.shape[0], generator=generator)[:num_pairs]
    pool = torch.randperm(num_images, generator=generator)[:pool_size].sort().values
    return EpochSample(pairs, queries[pairs], positives[pairs], pool)


def mine_hard_negatives(
    query_vectors: Features,
    query_clusters: Indices,
    pool_vectors: Features,
    pool_clusters: Indices,
    num_negatives: int = 5,
    *,
    candidates: int | None = None,
    query_chunk: int = DEFAULT_QUERY_CHUNK,
    device: str | torch.device = "cpu",
    backend: Literal["torch", "faiss"] = "torch",
) -> torch.Tensor:
    """Hard negatives: per query, the most similar pool images, one per cluster, own excluded.

    For each query, pool entries are visited in order of decreasing dot product (equal scores:
    lower pool position first); an entry is taken unless its cluster is the query's or already
    taken, until ``num_negatives`` are taken. The result equals that rule applied to the full
    score matrix, whatever ``candidates`` and ``query_chunk`` are.

    Scores are computed in float32 (float64 if an input is float64); a float16/bfloat16 pool is
    widened once. The whole pool is held on ``device`` (``P × D`` floats) and one score block
    of ``query_chunk × P``. Pass the pool's rows only, e.g. ``bank[pool_indices]`` of a
    memory-mapped bank (see :func:`hard_negative_tuples`).

    Args:
        query_vectors: (Q, D) query embeddings (student or teacher), L2-normalised.
        query_clusters: (Q,) integer cluster of each query.
        pool_vectors: (P, D) pool embeddings (usually the teacher's), L2-normalised.
        pool_clusters: (P,) integer cluster of each pool image.
        num_negatives: Negatives per query, k >= 0 (reference: 5).
        candidates: Initial candidate list length per query (default
            :data:`DEFAULT_CANDIDATES`, at least ``k``); only affects speed.
        query_chunk: Queries scored at a time; only affects speed and memory.
        device: Where scores are computed (torch backend).
        backend: ``"torch"`` (matrix product and top-k) or ``"faiss"`` (an exact
            inner-product flat index finds the candidates; CPU only, float32 scores; needs the
            optional ``faiss-cpu`` package). Both apply the same rule; they can differ only
            where two scores differ by float rounding, since each computes its own dot products.

    Returns:
        (Q, k) int64 CPU tensor of pool positions, best first. A query whose pool holds fewer
        than k clusters other than its own gets one negative per such cluster, then ``-1``.

    Raises:
        AsymretError: invalid shapes, dtypes, NaN/Inf vectors, cluster lengths that do not
            match, ``k < 0``, bad ``candidates``/``query_chunk``, an unknown backend, faiss
            not installed, or faiss asked for a non-CPU device.
    """
    _check_vectors(query_vectors, pool_vectors)
    num_queries, num_pool = query_vectors.shape[0], pool_vectors.shape[0]
    query_clusters = _as_cluster_tensor("query_clusters", query_clusters, num_queries)
    pool_clusters = _as_cluster_tensor("pool_clusters", pool_clusters, num_pool)
    _check_count("num_negatives", num_negatives)
    initial_candidates = _initial_candidates(candidates, num_negatives)
    if isinstance(query_chunk, bool) or not isinstance(query_chunk, int) or query_chunk < 1:
        raise AsymretError(f"query_chunk must be a positive integer, got {query_chunk!r}")
    device = torch.device(device)
    check_backend(backend, device)
    if backend == "torch":
        searches = _torch_searches(query_vectors, pool_vectors, query_chunk, device)
    else:
        searches = _faiss_searches(query_vectors, pool_vectors, query_chunk)
    return _select_negatives(
        searches,
        query_clusters.to(device),
        pool_clusters.to(device),
        num_negatives,
        initial_candidates,
    )


def check_backend(backend: str, device: str | torch.device = "cpu") -> None:
    """Refuse a mining backend that cannot run: unknown, faiss off the CPU or not installed.

    Args:
        backend: One of :data:`MINING_BACKENDS`.
        device: Where the scores would be computed (``"cpu"``, ``"cuda:1"``...).

    Raises:
        AsymretError: naming the problem (and the package to install for faiss).
    """
    if backend not in MINING_BACKENDS:
        raise AsymretError(f"unknown mining backend '{backend}'; expected 'torch' or 'faiss'")
    if backend == "faiss":
        device_type = device.type if isinstance(device, torch.device) else str(device)
        if device_type.partition(":")[0] != "cpu":
            raise AsymretError(f"the faiss backend runs on the CPU, got device '{device}'")
        if importlib.util.find_spec("faiss") is None:
            raise AsymretError(_FAISS_MISSING)


def random_negatives(
    query_clusters: Indices,
    pool_clusters: Indices,
    num_negatives: int,
    generator: torch.Generator,
) -> torch.Tensor:
    """Random negatives: the hard-negative rule applied to a random order of the pool.

    Each query visits the pool in its own uniformly random order and takes images not of its
    own cluster nor of a cluster already taken. Every eligible image is equally likely to be
    the first negative, so a cluster with more images in the pool is drawn more often.

    Args:
        query_clusters: (Q,) integer cluster of each query.
        pool_clusters: (P,) integer cluster of each pool image.
        num_negatives: Negatives per query, k >= 0.
        generator: CPU generator; equal states give equal draws.

    Returns:
        (Q, k) int64 CPU tensor of pool positions; ``-1`` pads as in
        :func:`mine_hard_negatives`.

    Raises:
        AsymretError: clusters not 1-D integer arrays, an empty pool, or ``k < 0``.
    """
    query_clusters = _as_cluster_tensor("query_clusters", query_clusters, None)
    pool_clusters = _as_cluster_tensor("pool_clusters", pool_clusters, None)
    if pool_clusters.numel() == 0:
        raise AsymretError("pool_clusters: empty pool")
    _check_count("num_negatives", num_negatives)
    searches = _random_searches(query_clusters.shape[0], pool_clusters.shape[0], generator)
    return _select_negatives(
        searches, query_clusters, pool_clusters, num_negatives, DEFAULT_CANDIDATES
    )


def sample_images(num_images_per_epoch: int, num_images: int, generator: torch.Generator
                  ) -> EpochTuples:
    """An epoch of random training images and no pairs (the reference's ``reg``/``rand`` modes).

    ``num_images_per_epoch`` distinct images are drawn uniformly from all ``num_images`` (all
    of them, in random order, if there are fewer), as the reference's ``TuplesDatasetRand``
    and ``RegressionTS`` draw ``poolsize`` images per epoch. Each image is its own tuple:
    ``positive_indices`` repeats ``query_indices`` and there are no negatives, so losses that
    need only g(a) (regression) or a batch of images (RKD, DarkRank) train on it unchanged.

    Args:
        num_images_per_epoch: images drawn per epoch (reference: 20,000).
        num_images: images in the training db.
        generator: CPU generator; two draws from equal states are equal.

    Returns:
        Tuples with (Q,) query = positive indices and (Q, 0) negatives.
    """
    _check_count("num_images_per_epoch", num_images_per_epoch)
    _check_count("num_images", num_images)
    images = torch.randperm(num_images, generator=generator)[:num_images_per_epoch]
    return EpochTuples(images, images.clone(), torch.empty(len(images), 0, dtype=torch.int64))


def hard_negative_tuples(
    sample: EpochSample,
    clusters: Indices,
    feature_bank: Features | None = None,
    num_negatives: int = 5,
    *,
    query_vectors: Features | VectorReader | None = None,
    pool_vectors: Features | VectorReader | None = None,
    candidates: int | None = None,
    query_chunk: int = DEFAULT_QUERY_CHUNK,
    device: str | torch.device = "cpu",
    backend: Literal["torch", "faiss"] = "torch",
) -> EpochTuples:
    """Mine the epoch's hard negatives against a feature bank and return the tuples.

    Only the rows of the sampled pool (and of the queries when ``query_vectors`` is None) are
    read from ``feature_bank``, so a bank opened with ``np.load(path, mmap_mode="r")`` is never
    loaded whole. The query vectors are obtained before the pool's.

    Args:
        sample: The epoch drawn by :func:`sample_epoch`.
        clusters: (N,) integer cluster of every training image.
        feature_bank: (N, D) teacher vectors of every training image (numpy, memory map or
            tensor; float16 is fine); may be None when both ``query_vectors`` and
            ``pool_vectors`` are given.
        num_negatives: Negatives per query (reference: 5).
        query_vectors: (Q, D) vectors of ``sample.query_indices`` (e.g. from the student), or
            a :data:`VectorReader` called with them; None takes the bank's rows (teacher
            queries).
        pool_vectors: (P, D) vectors of ``sample.pool_indices``, or a :data:`VectorReader`
            called with them (e.g. the student's, for symmetric training); None takes the
            bank's rows (asymmetric training).
        candidates: See :func:`mine_hard_negatives`.
        query_chunk: See :func:`mine_hard_negatives`.
        device: See :func:`mine_hard_negatives`.
        backend: See :func:`mine_hard_negatives`.

    Returns:
        The epoch's tuples; negatives are image indices (``-1`` pads).

    Raises:
        AsymretError: as :func:`mine_hard_negatives`; a bank or cluster list whose length is
            not the number of training images the sample indexes; no bank for vectors that
            must come from it; supplied vectors with a row count other than the sample's.
    """
    if feature_bank is None and (query_vectors is None or pool_vectors is None):
        raise AsymretError("hard_negative_tuples: pass feature_bank, or both query_vectors and "
                           "pool_vectors")
    num_images = None if feature_bank is None else feature_bank.shape[0]
    clusters = _as_cluster_tensor("clusters", clusters, num_images)
    largest = max(
        (int(t.max()) for t in (sample.query_indices, sample.pool_indices) if t.numel()),
        default=-1,
    )
    if largest >= clusters.shape[0]:
        what = "clusters" if feature_bank is None else "feature_bank"
        raise AsymretError(
            f"{what} has {clusters.shape[0]} rows but the sample indexes image {largest}"
        )
    if num_negatives == 0:
        empty = torch.empty(len(sample.query_indices), 0, dtype=torch.int64)
        return sample.tuples(empty)
    queries = _vectors_of("query_vectors", query_vectors, feature_bank, sample.query_indices)
    pool = _vectors_of("pool_vectors", pool_vectors, feature_bank, sample.pool_indices)
    positions = mine_hard_negatives(
        queries,
        clusters[sample.query_indices],
        pool,
        clusters[sample.pool_indices],
        num_negatives,
        candidates=candidates,
        query_chunk=query_chunk,
        device=device,
        backend=backend,
    )
    return sample.tuples(positions)


def epoch_tuples(
    seed: int,
    epoch: int,
    query_indices: Indices,
    positive_indices: Indices,
    clusters: Indices,
    *,
    negatives: Literal["hard", "random", "none"] = "hard",
    num_pairs: int = 2000,
    pool_size: int = 20000,
    num_negatives: int = 5,
    feature_bank: Features | None = None,
    query_vectors: VectorReader | None = None,
    pool_vectors: VectorReader | None = None,
    device: str | torch.device = "cpu",
    backend: Literal["torch", "faiss"] = "torch",
) -> EpochTuples:
    """The training tuples of epoch ``epoch``, determined by ``(seed, epoch)`` and the vectors.

    One generator, :func:`epoch_generator` ``(seed, epoch)``, draws the pairs and the pool
    (:func:`sample_epoch`; no pool with ``negatives="none"``), then the random negatives
    (:func:`random_negative_tuples`); hard negatives are mined by :func:`hard_negative_tuples`
    with the query vectors and the pool vectors of the sampled images: the teacher's bank rows
    or the student's vectors, as the caller supplies them. Every query must get
    ``num_negatives`` negatives.

    Args:
        seed: Run seed.
        epoch: 0-based epoch.
        query_indices: (N_pairs,) query image of every training pair.
        positive_indices: (N_pairs,) positive image of every pair.
        clusters: (N,) integer cluster of every training image; N is the number of images.
        negatives: ``hard``, ``random`` or ``none`` (pairs only, (Q, 0) negatives).
        num_pairs: Training pairs per epoch.
        pool_size: Images in the negative pool.
        num_negatives: Negatives per query.
        feature_bank: (N, D) bank whose rows serve where a reader below is None.
        query_vectors: Reader of the query vectors for hard negatives (None: bank rows).
        pool_vectors: Reader of the pool vectors for hard negatives (None: bank rows).
        device: Where hard-negative scores are computed.
        backend: See :func:`mine_hard_negatives`.

    Returns:
        The epoch's tuples (image indices).

    Raises:
        AsymretError: an unknown ``negatives``; as :func:`sample_epoch` and the miners; a query
            whose pool holds fewer than ``num_negatives`` clusters besides its own.
    """
    if negatives not in NEGATIVE_MODES:
        raise AsymretError(f"negatives={negatives!r}; expected one of {', '.join(NEGATIVE_MODES)}")
    generator = epoch_generator(seed, epoch)
    clusters = _as_cluster_tensor("clusters", clusters, None)
    sample = sample_epoch(
        num_pairs, 0 if negatives == "none" else pool_size, query_indices, positive_indices,
        clusters.shape[0], generator,
    )
    if negatives == "none":
        return sample.tuples(torch.empty(len(sample.query_indices), 0, dtype=torch.int64))
    if negatives == "random":
        tuples = random_negative_tuples(sample, clusters, num_negatives, generator)
    else:
        tuples = hard_negative_tuples(
            sample, clusters, feature_bank, num_negatives, query_vectors=query_vectors,
            pool_vectors=pool_vectors, device=device, backend=backend,
        )
    if (tuples.negative_indices < 0).any():
        raise AsymretError(
            f"the negative pool of epoch {epoch} has fewer than {num_negatives} "
            "clusters besides some query's; raise mining.pool_size or lower "
            "mining.num_negatives"
        )
    return tuples


def random_negative_tuples(
    sample: EpochSample, clusters: Indices, num_negatives: int, generator: torch.Generator
) -> EpochTuples:
    """The epoch's tuples with :func:`random_negatives` drawn from the sampled pool.

    Args:
        sample: The epoch drawn by :func:`sample_epoch`.
        clusters: (N,) integer cluster of every training image.
        num_negatives: Negatives per query.
        generator: CPU generator.

    Returns:
        The epoch's tuples; negatives are image indices (``-1`` pads).
    """
    clusters = _as_cluster_tensor("clusters", clusters, None)
    positions = random_negatives(
        clusters[sample.query_indices], clusters[sample.pool_indices], num_negatives, generator
    )
    return sample.tuples(positions)


def _select_negatives(
    searches: Iterator[tuple[slice, CandidateSearch]],
    query_clusters: torch.Tensor,
    pool_clusters: torch.Tensor,
    num_negatives: int,
    initial_candidates: int,
) -> torch.Tensor:
    """Apply the one-per-cluster rule chunk by chunk, growing candidate lists where needed.

    Args:
        searches: ``(rows, search)`` per query chunk, covering all queries in order.
        query_clusters: (Q,) cluster per query, on the searches' device.
        pool_clusters: (P,) cluster per pool entry, on the searches' device.
        num_negatives: k.
        initial_candidates: First candidate list length.

    Returns:
        (Q, k) int64 CPU pool positions, ``-1`` padded.
    """
    num_pool = pool_clusters.shape[0]
    device = pool_clusters.device
    result = torch.full((query_clusters.shape[0], num_negatives), -1, dtype=torch.int64)
    if num_negatives == 0:
        return result
    distinct_pool_clusters = torch.unique(pool_clusters)
    own_cluster_in_pool = torch.isin(query_clusters, distinct_pool_clusters)
    # A query can get at most one negative per pool cluster other than its own.
    needed = (len(distinct_pool_clusters) - own_cluster_in_pool.long()).clamp(max=num_negatives)
    for rows, search in searches:
        chunk_clusters, chunk_needed = query_clusters[rows], needed[rows]
        chunk_result = torch.full(
            (chunk_clusters.shape[0], num_negatives), -1, dtype=torch.int64, device=device
        )
        pending = torch.nonzero(chunk_needed > 0).squeeze(1)
        num_candidates = min(initial_candidates, num_pool)
        while pending.numel():
            scores, positions = search(pending, num_candidates)
            picks, pick_scores = _first_per_cluster(
                scores, positions, chunk_clusters[pending], pool_clusters, num_negatives
            )
            # Every pool entry scored above the last candidate is a candidate, so picks scored
            # strictly above it are exact; a pick tied with it might hide a lower position.
            last_needed = pick_scores.gather(1, (chunk_needed[pending] - 1).unsqueeze(1))
            settled = (last_needed.squeeze(1) > scores.min(dim=1).values) | (
                num_candidates == num_pool
            )
            chunk_result[pending[settled]] = picks[settled]
            pending = pending[~settled]
            num_candidates = min(2 * num_candidates, num_pool)
        result[rows] = chunk_result.cpu()
    return result


def _first_per_cluster(
    scores: torch.Tensor,
    positions: torch.Tensor,
    query_clusters: torch.Tensor,
    pool_clusters: torch.Tensor,
    num_negatives: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row, the first k candidates (score desc, position asc) of distinct other clusters.

    Args:
        scores: (R, M) candidate scores, any order.
        positions: (R, M) candidate pool positions.
        query_clusters: (R,) cluster of each row's query.
        pool_clusters: (P,) cluster per pool position.
        num_negatives: k.

    Returns:
        ``(picks, pick_scores)``, shape (R, k): pool positions best first, ``-1`` past the
        last pick, and their scores, ``-inf`` past the last pick.
    """
    positions, order = positions.sort(dim=1)
    scores, order = scores.gather(1, order).sort(dim=1, descending=True, stable=True)
    positions = positions.gather(1, order)
    candidate_clusters = pool_clusters[positions]
    # A stable sort by cluster lists each cluster's candidates best first; the first of each
    # run is that cluster's best candidate. Scatter the flags back to ranking order.
    sorted_clusters, by_cluster = candidate_clusters.sort(dim=1, stable=True)
    run_starts = torch.ones_like(sorted_clusters, dtype=torch.bool)
    run_starts[:, 1:] = sorted_clusters[:, 1:] != sorted_clusters[:, :-1]
    best_of_cluster = torch.empty_like(run_starts).scatter_(1, by_cluster, run_starts)
    keep = best_of_cluster & (candidate_clusters != query_clusters.unsqueeze(1))
    rank = keep.cumsum(dim=1) - 1
    rows, columns = torch.nonzero(keep & (rank < num_negatives), as_tuple=True)
    slots = rank[rows, columns]
    picks = torch.full(
        (scores.shape[0], num_negatives), -1, dtype=torch.int64, device=scores.device
    )
    pick_scores = torch.full(
        (scores.shape[0], num_negatives), -torch.inf, dtype=scores.dtype, device=scores.device
    )
    picks[rows, slots] = positions[rows, columns]
    pick_scores[rows, slots] = scores[rows, columns]
    return picks, pick_scores


def _torch_searches(
    query_vectors: Features, pool_vectors: Features, query_chunk: int, device: torch.device
) -> Iterator[tuple[slice, CandidateSearch]]:
    """Score each query chunk against the whole pool; candidates by ``torch.topk``."""
    dtype = score_dtype_for(query_vectors, pool_vectors)
    pool = _check_finite_rows(_to_tensor(pool_vectors, device, dtype), "pool_vectors", 0)
    for start in range(0, query_vectors.shape[0], query_chunk):
        rows = slice(start, start + query_chunk)
        queries = _to_tensor(query_vectors[rows], device, dtype)
        scores = _check_finite_rows(queries, "query_vectors", start) @ pool.T
        yield rows, _topk_search(scores)


def _random_searches(
    num_queries: int, num_pool: int, generator: torch.Generator
) -> Iterator[tuple[slice, CandidateSearch]]:
    """Uniform random float64 keys per (query, pool entry): a random order of the pool."""
    query_chunk = max(1, _RANDOM_KEYS_PER_CHUNK // num_pool)
    for start in range(0, num_queries, query_chunk):
        rows = slice(start, start + query_chunk)
        count = min(num_queries, start + query_chunk) - start
        keys = torch.rand(count, num_pool, generator=generator, dtype=torch.float64)
        yield rows, _topk_search(keys)


def _topk_search(scores: torch.Tensor) -> CandidateSearch:
    def search(rows: torch.Tensor, num_candidates: int) -> tuple[torch.Tensor, torch.Tensor]:
        # rows are distinct and sorted: as many as the block means all, no copy needed.
        block = scores if len(rows) == len(scores) else scores[rows]
        return torch.topk(block, num_candidates, dim=1, sorted=False)

    return search


def _faiss_searches(
    query_vectors: Features, pool_vectors: Features, query_chunk: int
) -> Iterator[tuple[slice, CandidateSearch]]:
    """Candidates from an exact inner-product flat index over the pool (float32, CPU)."""
    try:
        import faiss
    except ImportError:
        raise AsymretError(_FAISS_MISSING) from None
    pool = _to_float32_numpy(pool_vectors)
    _check_finite_rows(torch.from_numpy(pool), "pool_vectors", 0)
    index = faiss.IndexFlatIP(pool.shape[1])
    index.add(pool)
    for start in range(0, query_vectors.shape[0], query_chunk):
        rows = slice(start, start + query_chunk)
        chunk = _to_float32_numpy(query_vectors[rows])
        _check_finite_rows(torch.from_numpy(chunk), "query_vectors", start)

        def search(
            pending: torch.Tensor, num_candidates: int, chunk: np.ndarray = chunk
        ) -> tuple[torch.Tensor, torch.Tensor]:
            scores, positions = index.search(chunk[pending.numpy()], num_candidates)
            return torch.from_numpy(scores), torch.from_numpy(positions)

        yield rows, search


def _vectors_of(
    name: str, given: Features | VectorReader | None, bank: Features | None, indices: torch.Tensor
) -> Features:
    """The vectors of images ``indices``: ``given`` as is, read by it, or the bank's rows."""
    if given is None:
        return _take_rows(bank, indices)
    vectors = given(indices) if callable(given) else given
    if getattr(vectors, "ndim", 0) >= 1 and vectors.shape[0] != len(indices):
        raise AsymretError(
            f"{name}: expected {len(indices)} rows (one per sampled image), got {vectors.shape[0]}"
        )
    return vectors


def _take_rows(bank: Features, indices: torch.Tensor) -> Features:
    """Rows ``indices`` of a bank; for a numpy memory map only those rows are read."""
    if isinstance(bank, torch.Tensor):
        return bank[indices.to(bank.device)]
    return bank[indices.numpy()]


def _check_vectors(query_vectors: Features, pool_vectors: Features) -> None:
    """Both non-empty 2-D floating-point arrays of one dimension (finiteness: see below)."""
    for name, array in (("query_vectors", query_vectors), ("pool_vectors", pool_vectors)):
        if not isinstance(array, np.ndarray | torch.Tensor):
            raise AsymretError(
                f"{name}: expected a numpy array or torch tensor, got {type(array).__name__}"
            )
        if array.ndim != 2 or 0 in array.shape:
            raise AsymretError(
                f"{name}: expected a non-empty 2-D array (rows, D), got shape {tuple(array.shape)}"
            )
        floating = (
            array.dtype.is_floating_point
            if isinstance(array, torch.Tensor)
            else np.issubdtype(array.dtype, np.floating)
        )
        if not floating:
            raise AsymretError(f"{name}: expected floating-point vectors, got dtype {array.dtype}")
    if query_vectors.shape[1] != pool_vectors.shape[1]:
        raise AsymretError(
            f"dimension mismatch: query vectors have D={query_vectors.shape[1]}, "
            f"pool vectors D={pool_vectors.shape[1]}"
        )


def _check_finite_rows(vectors: torch.Tensor, name: str, first_row: int) -> torch.Tensor:
    """Return ``vectors`` after checking that no row holds NaN or Inf.

    A row sum is non-finite exactly when the row holds NaN or Inf or its values are large
    enough to overflow (they would overflow the scores too); one reduction pass is several
    times cheaper than an element-wise ``isfinite``.
    """
    finite = torch.isfinite(vectors.sum(dim=1))
    if not bool(finite.all()):
        row = first_row + int(torch.argmin(finite.to(torch.uint8)))
        raise AsymretError(f"{name}: row {row} holds NaN, Inf or overflowing values")
    return vectors


def _to_tensor(array: Features, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    if isinstance(array, np.ndarray):
        # torch tensors must be writable: a read-only memory map is copied.
        array = torch.from_numpy(np.require(array, requirements=["C", "W"]))
    return array.to(device=device, dtype=dtype)


def _to_float32_numpy(array: Features) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        array = array.detach().to(device="cpu", dtype=torch.float32).numpy()
    return np.ascontiguousarray(array, dtype=np.float32)


def _initial_candidates(candidates: int | None, num_negatives: int) -> int:
    if candidates is None:
        return max(DEFAULT_CANDIDATES, num_negatives)
    if isinstance(candidates, bool) or not isinstance(candidates, int) or candidates < 1:
        raise AsymretError(f"candidates must be a positive integer, got {candidates!r}")
    return max(candidates, num_negatives)


def _check_count(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
        raise AsymretError(f"{name} must be an integer >= 0, got {value!r}")


def _as_index_tensor(name: str, values: Indices) -> torch.Tensor:
    if isinstance(values, torch.Tensor):
        tensor = values
    else:
        array = np.asarray(values)
        tensor = torch.from_numpy(array.astype(np.int64) if array.size == 0 else array)
    if tensor.ndim != 1:
        raise AsymretError(f"{name}: expected a 1-D array, got shape {tuple(tensor.shape)}")
    if tensor.dtype.is_floating_point or tensor.dtype.is_complex or tensor.dtype == torch.bool:
        raise AsymretError(f"{name}: expected integers, got dtype {tensor.dtype}")
    return tensor.to(device="cpu", dtype=torch.int64)


def _as_cluster_tensor(name: str, values: Indices, length: int | None) -> torch.Tensor:
    tensor = _as_index_tensor(name, values)
    if length is not None and tensor.shape[0] != length:
        raise AsymretError(f"{name}: expected {length} entries, got {tensor.shape[0]}")
    return tensor
