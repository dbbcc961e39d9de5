"""Negative mining against a slow per-query loop written straight from the rule."""

import sys

import numpy as np
import pytest
import torch

from asymret.errors import AsymretError
from asymret.mining import (
    EpochSample,
    check_backend,
    epoch_generator,
    epoch_tuples,
    hard_negative_tuples,
    mine_hard_negatives,
    random_negative_tuples,
    random_negatives,
    sample_epoch,
    sample_images,
)


def reference_hard_negatives(queries, query_clusters, pool, pool_clusters, k):
    """Per query: pool by decreasing score (ties: lower position), skip own and used clusters."""
    scores = np.asarray(queries, dtype=np.float64) @ np.asarray(pool, dtype=np.float64).T
    negatives = np.full((len(queries), k), -1, dtype=np.int64)
    for query, row in enumerate(scores):
        used = {int(query_clusters[query])}
        taken = []
        for position in np.argsort(-row, kind="stable"):
            if len(taken) == k:
                break
            if int(pool_clusters[position]) not in used:
                taken.append(position)
                used.add(int(pool_clusters[position]))
        negatives[query, : len(taken)] = taken
    return negatives


def clustered_vectors(rng, num_queries, num_pool, dim, num_clusters, spread=1):
    """Vectors of a few clusters, values multiples of 1/4: every score is exact in float16,
    float32 and float64 whatever the summation order, and equal scores are frequent.

    Cluster sizes are skewed, so a query's neighbours come from few clusters. Some queries
    belong to a cluster that has no image in the pool.
    """
    centers = rng.integers(-4, 5, (num_clusters, dim))
    weights = 1.0 / np.arange(1, num_clusters + 1)
    pool_clusters = rng.choice(num_clusters, num_pool, p=weights / weights.sum())
    query_clusters = rng.choice(num_clusters, num_queries, p=weights / weights.sum())
    query_clusters[::5] = num_clusters + 7
    pool = centers[pool_clusters] + rng.integers(-spread, spread + 1, (num_pool, dim))
    queries = centers[query_clusters % num_clusters] + rng.integers(-2, 3, (num_queries, dim))
    return (
        (queries / 4).astype(np.float32),
        query_clusters,
        (pool / 4).astype(np.float32),
        pool_clusters,
    )


@pytest.mark.parametrize(
    ("num_queries", "num_pool", "dim", "num_clusters", "k", "query_chunk", "candidates"),
    [
        (30, 200, 8, 40, 5, 7, 1),  # candidate lists grow from 5
        (30, 200, 8, 5, 5, 30, 2),  # fewer eligible clusters than k: padding
        (17, 500, 3, 100, 5, 4, None),  # tiny dimension: many equal scores
        (50, 300, 16, 3, 4, 1, 3),  # three clusters, one query per chunk
        (9, 1, 4, 1, 3, 100, None),  # a one-image pool
        (64, 1000, 32, 300, 10, 64, 8),  # chunk boundary at the last query
        (65, 1000, 32, 300, 10, 64, 8),  # a last chunk of one query
    ],
)
def test_matches_reference_loop(
    num_queries, num_pool, dim, num_clusters, k, query_chunk, candidates
):
    rng = np.random.default_rng(num_queries * 1000 + num_pool + k)
    queries, query_clusters, pool, pool_clusters = clustered_vectors(
        rng, num_queries, num_pool, dim, num_clusters
    )
    negatives = mine_hard_negatives(
        queries,
        query_clusters,
        pool,
        pool_clusters,
        k,
        candidates=candidates,
        query_chunk=query_chunk,
    )
    expected = reference_hard_negatives(queries, query_clusters, pool, pool_clusters, k)
    assert negatives.dtype == torch.int64 and negatives.device.type == "cpu"
    np.testing.assert_array_equal(negatives.numpy(), expected)


def test_neighbours_from_few_clusters_force_candidate_growth():
    # Every query has 15 near copies in the pool; all 300 copies belong to clusters 0-2 (the
    # query's own and two others). Only two negatives can come from them: the other four lie
    # beyond at least 15 skipped candidates, several doublings of a 4-entry list.
    rng = np.random.default_rng(3)
    dim = 16
    queries = rng.integers(-4, 5, (20, dim)).astype(np.float32)
    near = np.repeat(queries, 15, axis=0) + rng.integers(-1, 2, (300, dim))
    far = -np.repeat(queries, 10, axis=0) + rng.integers(-1, 2, (200, dim))
    pool = np.concatenate([far[:100], near, far[100:]]).astype(np.float32)
    pool_clusters = np.concatenate(
        [rng.integers(10, 60, 100), rng.integers(0, 3, 300), rng.integers(10, 60, 100)]
    )
    query_clusters = np.arange(20) % 3
    negatives = mine_hard_negatives(
        queries, query_clusters, pool, pool_clusters, 6, candidates=4, query_chunk=6
    )
    expected = reference_hard_negatives(queries, query_clusters, pool, pool_clusters, 6)
    far_positions = [*range(100), *range(400, 500)]
    assert np.isin(expected[:, 2:], far_positions).all()
    np.testing.assert_array_equal(negatives.numpy(), expected)


def test_equal_scores_go_to_the_lower_pool_position():
    pool = np.ones((60, 4), dtype=np.float32)
    pool_clusters = np.repeat([5, 3, 3, 9, 1, 0], 10)
    queries = np.ones((3, 4), dtype=np.float32)
    negatives = mine_hard_negatives(queries, [3, 7, 0], pool, pool_clusters, 3, candidates=2)
    np.testing.assert_array_equal(negatives.numpy(), [[0, 30, 40], [0, 10, 30], [0, 10, 30]])


def test_duplicate_vectors_across_clusters_and_chunks():
    rng = np.random.default_rng(5)
    queries, query_clusters, pool, pool_clusters = clustered_vectors(rng, 40, 400, 6, 60)
    pool[-100:] = pool[:100]  # same vectors, same or other clusters, far apart in position
    pool_clusters[-50:] = pool_clusters[:50]
    negatives = mine_hard_negatives(
        queries, query_clusters, pool, pool_clusters, 7, candidates=3, query_chunk=9
    )
    expected = reference_hard_negatives(queries, query_clusters, pool, pool_clusters, 7)
    np.testing.assert_array_equal(negatives.numpy(), expected)


def test_padding_when_pool_has_fewer_clusters_than_k():
    pool = np.eye(4, dtype=np.float32)
    pool_clusters = [2, 2, 8, 4]
    queries = np.eye(4, dtype=np.float32)[[0, 2, 3]]
    negatives = mine_hard_negatives(queries, [2, 9, 4], pool, pool_clusters, 4)
    np.testing.assert_array_equal(
        negatives.numpy(), [[2, 3, -1, -1], [2, 0, 3, -1], [0, 2, -1, -1]]
    )
    only_own = mine_hard_negatives(queries[:1], [2], pool[:2], [2, 2], 3)
    np.testing.assert_array_equal(only_own.numpy(), [[-1, -1, -1]])


@pytest.mark.parametrize("pool_type", ["numpy", "torch"])
def test_float16_pool_and_tensor_inputs(pool_type):
    rng = np.random.default_rng(7)
    queries, query_clusters, pool, pool_clusters = clustered_vectors(rng, 33, 700, 24, 80)
    pool16 = pool.astype(np.float16)
    assert (pool16.astype(np.float32) == pool).all()  # the float16 copy is exact
    pool_input = torch.from_numpy(pool16) if pool_type == "torch" else pool16
    negatives = mine_hard_negatives(
        torch.from_numpy(queries),
        torch.from_numpy(query_clusters),
        pool_input,
        torch.from_numpy(pool_clusters),
        5,
        query_chunk=10,
    )
    expected = reference_hard_negatives(queries, query_clusters, pool, pool_clusters, 5)
    np.testing.assert_array_equal(negatives.numpy(), expected)


def test_unit_float_vectors_match_reference():
    rng = np.random.default_rng(11)
    centers = rng.standard_normal((50, 64))
    pool_clusters = rng.integers(0, 50, 2000)
    query_clusters = rng.integers(0, 50, 100)
    pool = centers[pool_clusters] + 0.8 * rng.standard_normal((2000, 64))
    queries = centers[query_clusters] + 0.8 * rng.standard_normal((100, 64))
    pool /= np.linalg.norm(pool, axis=1, keepdims=True)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    pool, queries = pool.astype(np.float32), queries.astype(np.float32)
    negatives = mine_hard_negatives(queries, query_clusters, pool, pool_clusters, 5)
    expected = reference_hard_negatives(queries, query_clusters, pool, pool_clusters, 5)
    np.testing.assert_array_equal(negatives.numpy(), expected)


def test_zero_negatives_and_float64_inputs():
    rng = np.random.default_rng(13)
    queries, query_clusters, pool, pool_clusters = clustered_vectors(rng, 10, 50, 4, 8)
    empty = mine_hard_negatives(queries, query_clusters, pool, pool_clusters, 0)
    assert empty.shape == (10, 0) and empty.dtype == torch.int64
    negatives = mine_hard_negatives(
        queries.astype(np.float64), query_clusters, pool, pool_clusters, 3, candidates=1
    )
    expected = reference_hard_negatives(queries, query_clusters, pool, pool_clusters, 3)
    np.testing.assert_array_equal(negatives.numpy(), expected)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"query_clusters": [0, 1]}, "query_clusters: expected 3 entries"),
        ({"pool_clusters": np.zeros(5)}, "pool_clusters: expected integers"),
        ({"num_negatives": -1}, "num_negatives must be an integer >= 0"),
        ({"candidates": 0}, "candidates must be a positive integer"),
        ({"query_chunk": 0}, "query_chunk must be a positive integer"),
        ({"backend": "annoy"}, "unknown mining backend 'annoy'"),
        ({"backend": "faiss", "device": "cuda"}, "faiss backend runs on the CPU"),
        ({"pool_vectors": np.zeros((5, 3), dtype=np.float32)}, "dimension mismatch"),
    ],
)
def test_invalid_arguments(change, message):
    arguments = {
        "query_vectors": np.zeros((3, 4), dtype=np.float32),
        "query_clusters": [0, 1, 2],
        "pool_vectors": np.zeros((5, 4), dtype=np.float32),
        "pool_clusters": [0, 1, 2, 3, 4],
        "num_negatives": 2,
    }
    arguments.update(change)
    with pytest.raises(AsymretError, match=message):
        mine_hard_negatives(**arguments)


@pytest.mark.parametrize("backend", ["torch", "faiss"])
@pytest.mark.parametrize(("name", "row", "value"), [("pool", 3, np.nan), ("query", 6, -np.inf)])
def test_non_finite_vectors_are_rejected(backend, name, row, value):
    if backend == "faiss":
        pytest.importorskip("faiss")
    vectors = {"pool": np.zeros((5, 4), np.float32), "query": np.zeros((8, 4), np.float32)}
    vectors[name][row, 1] = value
    with pytest.raises(AsymretError, match=f"{name}_vectors: row {row} holds NaN, Inf"):
        mine_hard_negatives(
            vectors["query"],
            np.zeros(8, np.int64),
            vectors["pool"],
            np.arange(5),
            query_chunk=4,
            backend=backend,
        )


def test_empty_pool_is_rejected():
    with pytest.raises(AsymretError, match=r"pool_vectors: expected a non-empty 2-D array"):
        mine_hard_negatives(np.zeros((2, 4), np.float32), [0, 1], np.zeros((0, 4)), [])


@pytest.mark.parametrize(
    ("num_queries", "num_pool", "num_clusters", "k", "candidates"),
    [(40, 500, 60, 5, 1), (30, 200, 4, 5, None), (25, 800, 200, 8, 3)],
)
def test_faiss_backend_equals_torch_backend(num_queries, num_pool, num_clusters, k, candidates):
    pytest.importorskip("faiss")
    rng = np.random.default_rng(num_pool)
    queries, query_clusters, pool, pool_clusters = clustered_vectors(
        rng, num_queries, num_pool, 12, num_clusters
    )
    pool[-40:] = pool[:40]
    options = {"candidates": candidates, "query_chunk": 8}
    with_faiss = mine_hard_negatives(
        queries, query_clusters, pool, pool_clusters, k, backend="faiss", **options
    )
    with_torch = mine_hard_negatives(queries, query_clusters, pool, pool_clusters, k, **options)
    np.testing.assert_array_equal(with_faiss.numpy(), with_torch.numpy())
    expected = reference_hard_negatives(queries, query_clusters, pool, pool_clusters, k)
    np.testing.assert_array_equal(with_faiss.numpy(), expected)


def test_faiss_backend_without_faiss_names_the_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)  # import faiss now raises ImportError
    with pytest.raises(AsymretError, match="pip install faiss-cpu"):
        mine_hard_negatives(np.eye(3), [0, 1, 2], np.eye(3), [0, 1, 2], 1, backend="faiss")


def check_negative_rule(negatives, query_clusters, pool_clusters, k):
    """Picks form a prefix, never the own cluster, distinct clusters, as many as possible."""
    pool_clusters = np.asarray(pool_clusters)
    for row, own in zip(negatives.numpy(), query_clusters, strict=True):
        picks = row[row >= 0]
        assert (row[: len(picks)] >= 0).all()
        clusters = pool_clusters[picks]
        assert own not in clusters
        assert len(set(clusters.tolist())) == len(picks)
        assert len(picks) == min(k, len(set(pool_clusters.tolist()) - {own}))


def test_random_negatives_follow_the_rule_and_are_deterministic():
    rng = np.random.default_rng(17)
    pool_clusters = rng.integers(0, 12, 300)
    query_clusters = rng.integers(0, 14, 700)
    draw = random_negatives(query_clusters, pool_clusters, 6, epoch_generator(1, 0))
    assert draw.shape == (700, 6) and draw.dtype == torch.int64
    check_negative_rule(draw, query_clusters, pool_clusters, 6)
    again = random_negatives(query_clusters, pool_clusters, 6, epoch_generator(1, 0))
    other = random_negatives(query_clusters, pool_clusters, 6, epoch_generator(1, 1))
    assert torch.equal(draw, again)
    assert not torch.equal(draw, other)


def test_random_negatives_pad_when_few_clusters():
    draw = random_negatives([0, 1, 5], [0, 0, 1, 1], 3, epoch_generator(0, 0)).numpy()
    assert draw[0, 0] in (2, 3) and draw[1, 0] in (0, 1)
    assert sorted(draw[2, :2] // 2) == [0, 1]  # one image of each pool cluster
    assert (draw[:2, 1:] == -1).all() and (draw[2, 2] == -1).all()


def test_random_first_negative_is_uniform_over_eligible_images():
    pool_clusters = np.repeat(np.arange(8), [1, 2, 3, 4, 5, 6, 7, 8])  # own cluster 0: 1 image
    num_queries = 17500
    draw = random_negatives(
        np.zeros(num_queries, np.int64), pool_clusters, 3, epoch_generator(2, 0)
    )
    counts = np.bincount(draw[:, 0].numpy(), minlength=len(pool_clusters))
    assert counts[0] == 0
    expected = num_queries / (len(pool_clusters) - 1)  # 500 per eligible image
    assert np.abs(counts[1:] - expected).max() < 0.2 * expected  # 4.5 standard deviations
    every_slot = np.bincount(draw.numpy().ravel(), minlength=len(pool_clusters))
    assert (every_slot[1:] > 0).all()


def sfm_like_pairs(rng, num_images=1000, num_pairs=300):
    clusters = rng.integers(0, 40, num_images)
    queries = rng.integers(0, num_images, num_pairs)
    positives = rng.integers(0, num_images, num_pairs)
    return clusters, queries, positives


def test_sample_epoch_sizes_and_consistency():
    rng = np.random.default_rng(19)
    _, queries, positives = sfm_like_pairs(rng)
    sample = sample_epoch(100, 250, queries, positives, 1000, epoch_generator(0, 3))
    assert sample.pair_indices.shape == (100,) and len(sample.pair_indices.unique()) == 100
    assert (sample.query_indices.numpy() == queries[sample.pair_indices.numpy()]).all()
    assert (sample.positive_indices.numpy() == positives[sample.pair_indices.numpy()]).all()
    pool = sample.pool_indices
    assert pool.shape == (250,) and pool.dtype == torch.int64
    assert (pool[1:] > pool[:-1]).all() and pool.min() >= 0 and pool.max() < 1000
    capped = sample_epoch(10**6, 10**6, queries, positives, 1000, epoch_generator(0, 3))
    assert len(capped.pair_indices) == 300 and len(capped.pool_indices) == 1000


def test_sample_epoch_is_reproducible_and_resumable():
    rng = np.random.default_rng(23)
    _, queries, positives = sfm_like_pairs(rng)

    def epoch(generator):
        return sample_epoch(50, 200, queries, positives, 1000, generator)

    first = [epoch(epoch_generator(42, e)) for e in range(3)]
    resumed = epoch(epoch_generator(42, 2))
    for name in ("pair_indices", "query_indices", "positive_indices", "pool_indices"):
        assert torch.equal(getattr(first[2], name), getattr(resumed, name))
    assert not torch.equal(first[0].pool_indices, first[1].pool_indices)
    assert not torch.equal(first[2].pair_indices, epoch(epoch_generator(43, 2)).pair_indices)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ((-1, 5, [0], [1], 3), "num_pairs must be"),
        ((1, 5, [0, 1], [1], 3), "differ in length"),
        ((1, 5, [0], [3], 3), "positive_indices: image index out of range"),
        ((1, 5, [[0]], [[1]], 3), "expected a 1-D array"),
    ],
)
def test_sample_epoch_rejects_bad_input(arguments, message):
    with pytest.raises(AsymretError, match=message):
        sample_epoch(*arguments, epoch_generator(0, 0))


def test_memory_mapped_bank_gives_tuples_in_image_space(tmp_path):
    rng = np.random.default_rng(29)
    num_images = 1200
    queries, _, pool_rows, _ = clustered_vectors(rng, num_images, num_images, 16, 60)
    clusters = rng.integers(0, 60, num_images)
    path = tmp_path / "teacher.npy"
    np.save(path, pool_rows.astype(np.float16))
    bank = np.load(path, mmap_mode="r")
    assert isinstance(bank, np.memmap)
    pair_queries = rng.integers(0, num_images, 200)
    pair_positives = rng.integers(0, num_images, 200)
    sample = sample_epoch(64, 500, pair_queries, pair_positives, num_images, epoch_generator(5, 0))

    teacher_tuples = hard_negative_tuples(sample, clusters, bank, 5, candidates=2, query_chunk=20)
    pool = sample.pool_indices.numpy()
    query_rows = pool_rows[sample.query_indices.numpy()]
    expected = reference_hard_negatives(
        query_rows, clusters[sample.query_indices.numpy()], pool_rows[pool], clusters[pool], 5
    )
    np.testing.assert_array_equal(teacher_tuples.negative_indices.numpy(), pool[expected])
    assert torch.equal(teacher_tuples.query_indices, sample.query_indices)
    assert torch.equal(teacher_tuples.positive_indices, sample.positive_indices)
    assert len(teacher_tuples) == 64

    student_queries = queries[:64]
    student_tuples = hard_negative_tuples(sample, clusters, bank, 5, query_vectors=student_queries)
    expected = reference_hard_negatives(
        student_queries, clusters[sample.query_indices.numpy()], pool_rows[pool], clusters[pool], 5
    )
    np.testing.assert_array_equal(student_tuples.negative_indices.numpy(), pool[expected])

    in_memory = hard_negative_tuples(sample, clusters, torch.from_numpy(np.array(bank)), 5)
    assert torch.equal(in_memory.negative_indices, teacher_tuples.negative_indices)
    assert hard_negative_tuples(sample, clusters, bank, 0).negative_indices.shape == (64, 0)


def test_bank_shorter_than_sample_is_rejected():
    sample = sample_epoch(2, 10, [0, 1], [1, 0], 10, epoch_generator(0, 0))
    with pytest.raises(AsymretError, match="feature_bank has 5 rows"):
        hard_negative_tuples(sample, np.zeros(5, np.int64), np.zeros((5, 4), np.float32))


def test_tuples_map_pool_positions_to_images_and_keep_padding():
    sample = EpochSample(
        pair_indices=torch.tensor([1, 0]),
        query_indices=torch.tensor([7, 3]),
        positive_indices=torch.tensor([8, 4]),
        pool_indices=torch.tensor([2, 5, 9]),
    )
    tuples = sample.tuples(torch.tensor([[2, 0, -1], [1, -1, -1]]))
    np.testing.assert_array_equal(tuples.negative_indices.numpy(), [[9, 2, -1], [5, -1, -1]])
    with pytest.raises(AsymretError, match=r"out of range -1\.\.2"):
        sample.tuples(torch.tensor([[3], [0]]))
    with pytest.raises(AsymretError, match=r"expected shape \(2, k\)"):
        sample.tuples(torch.tensor([[0]]))


def test_random_negative_tuples_never_take_the_query_cluster():
    rng = np.random.default_rng(31)
    clusters, queries, positives = sfm_like_pairs(rng)
    sample = sample_epoch(100, 300, queries, positives, 1000, epoch_generator(9, 0))
    tuples = random_negative_tuples(sample, clusters, 5, epoch_generator(9, 0))
    negatives = tuples.negative_indices.numpy()
    assert (negatives >= 0).all()
    negative_clusters = clusters[negatives]
    assert (negative_clusters != clusters[tuples.query_indices.numpy()][:, None]).all()
    assert all(len(set(row)) == 5 for row in negative_clusters.tolist())
    assert np.isin(negatives, sample.pool_indices.numpy()).all()


def test_sample_images_draws_distinct_images_without_pairs():
    tuples = sample_images(40, 100, epoch_generator(2, 5))
    assert tuples.query_indices.shape == (40,) and len(tuples.query_indices.unique()) == 40
    assert torch.equal(tuples.positive_indices, tuples.query_indices)
    assert tuples.negative_indices.shape == (40, 0)
    assert tuples.query_indices.min() >= 0 and tuples.query_indices.max() < 100
    again = sample_images(40, 100, epoch_generator(2, 5))
    assert torch.equal(again.query_indices, tuples.query_indices)
    other_epoch = sample_images(40, 100, epoch_generator(2, 6))
    assert not torch.equal(other_epoch.query_indices, tuples.query_indices)
    everything = sample_images(10**6, 100, epoch_generator(2, 5))
    assert sorted(everything.query_indices.tolist()) == list(range(100))
    with pytest.raises(AsymretError, match="num_images_per_epoch"):
        sample_images(-1, 100, epoch_generator(0, 0))


def test_epoch_tuples_compose_the_sample_and_the_miners():
    rng = np.random.default_rng(37)
    clusters, queries, positives = sfm_like_pairs(rng)
    bank = rng.normal(size=(1000, 8)).astype(np.float32)
    student = rng.normal(size=(1000, 8)).astype(np.float32)
    requested = []

    def read_student(indices):
        requested.append(indices.clone())
        return torch.from_numpy(student[indices.numpy()])

    settings = {"num_pairs": 50, "pool_size": 300, "num_negatives": 4}
    tuples = epoch_tuples(3, 2, queries, positives, clusters, feature_bank=bank,
                          query_vectors=read_student, **settings)
    generator = epoch_generator(3, 2)
    sample = sample_epoch(50, 300, queries, positives, 1000, generator)
    expected = reference_hard_negatives(
        student[sample.query_indices.numpy()], clusters[sample.query_indices.numpy()],
        bank[sample.pool_indices.numpy()], clusters[sample.pool_indices.numpy()], 4,
    )
    np.testing.assert_array_equal(tuples.negative_indices.numpy(),
                                  sample.pool_indices.numpy()[expected])
    assert torch.equal(tuples.query_indices, sample.query_indices)
    assert [r.tolist() for r in requested] == [sample.query_indices.tolist()], "queries only"

    symmetric = epoch_tuples(3, 2, queries, positives, clusters, query_vectors=read_student,
                             pool_vectors=read_student, **settings)
    assert requested[-1].tolist() == sample.pool_indices.tolist(), "queries, then the pool"
    by_hand = hard_negative_tuples(sample, clusters, None, 4, query_vectors=read_student,
                                   pool_vectors=torch.from_numpy(student[sample.pool_indices]))
    assert torch.equal(symmetric.negative_indices, by_hand.negative_indices)

    random = epoch_tuples(3, 2, queries, positives, clusters, negatives="random", **settings)
    sample = sample_epoch(50, 300, queries, positives, 1000, generator := epoch_generator(3, 2))
    assert torch.equal(random.negative_indices,
                       random_negative_tuples(sample, clusters, 4, generator).negative_indices)
    pairs_only = epoch_tuples(3, 2, queries, positives, clusters, negatives="none", **settings)
    assert pairs_only.negative_indices.shape == (50, 0)


def test_epoch_tuples_errors_are_specific():
    clusters = np.arange(10) % 5
    pairs = ([0, 1, 2], [5, 6, 7])
    bank = np.eye(10, dtype=np.float32)
    with pytest.raises(AsymretError, match="negatives='semi'"):
        epoch_tuples(0, 0, *pairs, clusters, negatives="semi", feature_bank=bank)
    with pytest.raises(AsymretError, match=r"epoch 1 has fewer than 3 clusters.*pool_size"):
        epoch_tuples(0, 1, *pairs, clusters, pool_size=2, num_negatives=3, feature_bank=bank)
    with pytest.raises(AsymretError, match="pass feature_bank, or both"):
        epoch_tuples(0, 0, *pairs, clusters, num_negatives=1, query_vectors=lambda i: bank[i])
    with pytest.raises(AsymretError, match=r"pool_vectors: expected 10 rows .*got 2"):
        epoch_tuples(0, 0, *pairs, clusters, num_negatives=1, feature_bank=bank,
                     pool_vectors=lambda indices: bank[:2])
    with pytest.raises(AsymretError, match="clusters has 10 rows but the sample indexes image 12"):
        sample = EpochSample(torch.tensor([0]), torch.tensor([12]), torch.tensor([1]),
                             torch.arange(3))
        hard_negative_tuples(sample, clusters, None, 1, query_vectors=bank[:1],
                             pool_vectors=bank[:3])


def test_check_backend_refuses_what_cannot_run(monkeypatch):
    check_backend("torch", "cuda:1")
    with pytest.raises(AsymretError, match="unknown mining backend 'annoy'"):
        check_backend("annoy")
    with pytest.raises(AsymretError, match="faiss backend runs on the CPU, got device 'cuda:1'"):
        check_backend("faiss", torch.device("cuda:1"))
    monkeypatch.setitem(sys.modules, "faiss", None)
    with pytest.raises(AsymretError, match="pip install faiss-cpu"):
        check_backend("faiss", "cpu")
