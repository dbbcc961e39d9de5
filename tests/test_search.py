"""Chunked exact search against a full stable sort of the score matrix."""

import re

import numpy as np
import pytest
import torch

from asymret.errors import AsymretError
from asymret.search import exact_search


def reference_top_k(queries, database, k):
    """Top-k of the full score matrix; equal scores by lower database index."""
    scores = np.asarray(queries, dtype=np.float64) @ np.asarray(database, dtype=np.float64).T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, axis=1), order


def integer_vectors(rng, rows, dim):
    """Small integers: exact scores in any precision and many ties."""
    return rng.integers(-2, 3, (rows, dim)).astype(np.float32)


@pytest.mark.parametrize(
    ("num_database", "k", "chunk_size"),
    [(1, 1, 1), (50, 1, 7), (50, 7, 7), (50, 8, 7), (50, 20, 3), (50, 50, 16), (300, 25, 64)],
)
def test_matches_full_sort_with_ties_across_chunk_boundaries(num_database, k, chunk_size):
    rng = np.random.default_rng(num_database + k + chunk_size)
    queries, database = integer_vectors(rng, 9, 3), integer_vectors(rng, num_database, 3)
    database[-3:] = database[:3]  # duplicate vectors in different chunks
    scores, indices = exact_search(queries, database, k, chunk_size=chunk_size)
    expected_scores, expected_indices = reference_top_k(queries, database, k)
    assert scores.dtype == torch.float32 and indices.dtype == torch.int64
    np.testing.assert_array_equal(indices.numpy(), expected_indices)
    np.testing.assert_array_equal(scores.numpy(), expected_scores)


def test_all_scores_equal_returns_the_lowest_indices():
    queries = np.ones((2, 4), dtype=np.float32)
    database = np.ones((100, 4), dtype=np.float32)
    _, indices = exact_search(queries, database, 10, chunk_size=7)
    np.testing.assert_array_equal(indices.numpy(), np.tile(np.arange(10), (2, 1)))


def test_random_float_data_matches_topk():
    rng = np.random.default_rng(0)
    queries = rng.standard_normal((16, 32)).astype(np.float32)
    database = rng.standard_normal((5000, 32)).astype(np.float32)
    scores, indices = exact_search(torch.from_numpy(queries), database, 100, chunk_size=999)
    expected_scores, expected_indices = reference_top_k(queries, database, 100)
    np.testing.assert_array_equal(indices.numpy(), expected_indices)
    np.testing.assert_allclose(scores.numpy(), expected_scores, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_database_accumulates_in_float32(dtype):
    rng = np.random.default_rng(1)
    # Integer vectors with scores beyond float16's exact integer range (2048): a float16
    # accumulation would round them, float32 keeps them exact.
    queries = rng.integers(-16, 17, (8, 64)).astype(np.float32)
    database = rng.integers(-16, 17, (500, 64)).astype(np.float32)
    scores, indices = exact_search(queries, torch.from_numpy(database).to(dtype), 30, chunk_size=77)
    expected_scores, expected_indices = reference_top_k(queries, database, 30)
    assert scores.dtype == torch.float32
    assert np.abs(expected_scores).max() > 2048
    np.testing.assert_array_equal(indices.numpy(), expected_indices)
    np.testing.assert_array_equal(scores.numpy(), expected_scores)


def test_float16_numpy_database_and_float64_inputs():
    rng = np.random.default_rng(2)
    queries, database = integer_vectors(rng, 4, 8), integer_vectors(rng, 200, 8)
    expected_scores, expected_indices = reference_top_k(queries, database, 12)
    _, indices = exact_search(queries, database.astype(np.float16), 12, chunk_size=50)
    np.testing.assert_array_equal(indices.numpy(), expected_indices)
    scores, indices = exact_search(queries.astype(np.float64), database, 12, chunk_size=50)
    assert scores.dtype == torch.float64
    np.testing.assert_array_equal(indices.numpy(), expected_indices)
    np.testing.assert_array_equal(scores.numpy(), expected_scores)


@pytest.mark.parametrize(
    ("queries", "database", "k", "chunk_size", "message"),
    [
        (np.ones((2, 3)), np.ones((5, 3)), 0, 4, "k must be an integer in [1, 5]"),
        (np.ones((2, 3)), np.ones((5, 3)), 6, 4, "k must be an integer in [1, 5]"),
        (np.ones((2, 3)), np.ones((5, 4)), 1, 4, "dimension mismatch: queries have D=3"),
        (np.ones(3), np.ones((5, 3)), 1, 4, "queries: expected a 2-D array"),
        (np.ones((2, 3)), np.ones((5, 3), dtype=np.int32), 1, 4, "database: expected floating"),
        (np.ones((2, 3)), np.ones((0, 3)), 1, 4, "database: empty array"),
        (np.ones((2, 3)), np.ones((5, 3)), 1, 0, "chunk_size must be a positive integer"),
        ([[1.0]], np.ones((5, 1)), 1, 4, "queries: expected a numpy array or torch tensor"),
    ],
)
def test_rejects_bad_input(queries, database, k, chunk_size, message):
    with pytest.raises(AsymretError, match=re.escape(message)):
        exact_search(queries, database, k, chunk_size=chunk_size)


def test_non_finite_database_row_is_named():
    database = np.ones((10, 3), dtype=np.float32)
    database[8, 1] = np.nan
    with pytest.raises(AsymretError, match="database: row 8 holds NaN or Inf"):
        exact_search(np.ones((2, 3), dtype=np.float32), database, 1, chunk_size=4)
