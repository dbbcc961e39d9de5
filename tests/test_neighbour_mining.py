"""Teacher-neighbour mining (asymret.neighbours) against a brute-force loop; faiss and torch
agree; the bank cache is reused only for the same vectors and K."""

import json

import numpy as np
import pytest
import torch

from asymret.errors import AsymretError
from asymret.features.store import FeatureStore
from asymret.neighbours import bank_neighbours, cache_paths, teacher_neighbours


def brute_force_neighbours(vectors, k):
    """Per row: every other row by decreasing dot product, ties to the lower index; first k."""
    table = []
    for i in range(len(vectors)):
        scored = [(-float(np.dot(vectors[i], vectors[j])), j)
                  for j in range(len(vectors)) if j != i]
        table.append([j for _, j in sorted(scored)[:k]])
    return torch.tensor(table, dtype=torch.int64)


def unit_vectors(count, dim, seed):
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((count, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


@pytest.mark.parametrize(("count", "k", "chunk"), [(2, 1, 1), (30, 5, 7), (41, 40, 64)])
def test_torch_backend_equals_the_brute_force_loop(count, k, chunk):
    vectors = unit_vectors(count, 6, seed=count)
    table = teacher_neighbours(vectors, k, query_chunk=chunk)
    assert table.dtype == torch.int64 and table.shape == (count, k)
    assert torch.equal(table, brute_force_neighbours(vectors, k))
    assert not (table == torch.arange(count)[:, None]).any()


def test_ties_go_to_the_lower_index_and_the_image_itself_is_excluded_even_among_duplicates():
    # Rows 0–3 are one vector; row 4 another. Row 3's 3 neighbours are 0, 1, 2 although the
    # search's first K + 1 = 4 entries (0, 1, 2, 3) hold it last; row 0's are 1, 2, 3.
    base = np.array([1.0, 0.0], dtype=np.float32)
    vectors = np.stack([base, base, base, base, np.array([0.6, 0.8], dtype=np.float32)])
    table = teacher_neighbours(vectors, 3)
    assert table[0].tolist() == [1, 2, 3]
    assert table[3].tolist() == [0, 1, 2]
    assert table[4].tolist() == [0, 1, 2]
    assert torch.equal(table, brute_force_neighbours(vectors, 3))


def test_more_duplicates_than_k_drop_the_last_entry_when_the_row_is_not_listed():
    # Six identical rows, K = 2: row 5's first K + 1 entries are 0, 1, 2 (not itself).
    vectors = np.tile(np.array([[0.0, 1.0]], dtype=np.float32), (6, 1))
    table = teacher_neighbours(vectors, 2)
    assert table[5].tolist() == [0, 1]
    assert table[1].tolist() == [0, 2]


def test_faiss_and_torch_agree():
    pytest.importorskip("faiss")
    vectors = unit_vectors(200, 16, seed=3)
    torch_table = teacher_neighbours(vectors, 12, query_chunk=50)
    faiss_table = teacher_neighbours(vectors, 12, backend="faiss", query_chunk=50)
    assert torch.equal(torch_table, faiss_table)


def test_a_torch_tensor_and_a_float64_array_give_the_same_table():
    vectors = unit_vectors(25, 4, seed=5)
    expected = brute_force_neighbours(vectors, 4)
    assert torch.equal(teacher_neighbours(torch.from_numpy(vectors), 4), expected)
    assert torch.equal(teacher_neighbours(vectors.astype(np.float64), 4), expected)


@pytest.mark.parametrize(("k", "message"), [
    (0, r"neighbours per image must be an integer in \[1, 9\].*got 0"),
    (10, r"in \[1, 9\] \(the bank holds 10 images\), got 10"),
    (2.0, r"got 2.0"),
])
def test_bad_k_is_refused(k, message):
    with pytest.raises(AsymretError, match=message):
        teacher_neighbours(unit_vectors(10, 3, seed=0), k)


@pytest.mark.parametrize("backend", ["torch", "faiss"])
def test_unreadable_images_rows_are_nobodys_neighbour(backend):
    vectors = unit_vectors(12, 4, seed=2)
    vectors[[3, 8]] = np.nan  # two unreadable images of a data.skip_unreadable bank
    table = teacher_neighbours(vectors, 4, backend=backend)
    readable = [i for i in range(12) if i not in (3, 8)]
    expected = brute_force_neighbours(vectors[readable], 4)
    assert torch.equal(table[readable], torch.tensor(readable)[expected])
    assert (table[[3, 8]] == -1).all()
    assert not torch.isin(table[readable], torch.tensor([3, 8])).any()


def test_bad_vectors_and_backend_are_refused():
    vectors = unit_vectors(10, 3, seed=0)
    vectors[2:] = np.nan
    with pytest.raises(AsymretError, match=r"\[1, 1\].*got 2 \(2 of 10 rows are finite"):
        teacher_neighbours(vectors, 2)
    with pytest.raises(AsymretError, match="expected a 2-D array"):
        teacher_neighbours(unit_vectors(10, 3, seed=0)[0], 2)
    with pytest.raises(AsymretError, match="unknown mining backend 'annoy'"):
        teacher_neighbours(unit_vectors(10, 3, seed=0), 2, backend="annoy")


def _store(path, vectors):
    store = FeatureStore.create(path, [f"img{i}" for i in range(len(vectors))],
                                vectors.shape[1], meta={"network": "test"})
    store.write(0, vectors)
    return FeatureStore.open(path)


def test_bank_cache_is_written_once_and_reused_for_the_same_vectors_and_k(tmp_path, monkeypatch):
    vectors = unit_vectors(20, 5, seed=1)
    store = _store(tmp_path / "bank", vectors)
    first = bank_neighbours(store, 3)
    assert torch.equal(first, brute_force_neighbours(vectors, 3))
    table_path, meta_path = cache_paths(store, 3)
    assert table_path.is_file() and json.loads(meta_path.read_text())["k"] == 3

    def must_not_search(*args, **kwargs):
        raise AssertionError("the cache should have been reused")

    monkeypatch.setattr("asymret.neighbours.teacher_neighbours", must_not_search)
    assert torch.equal(bank_neighbours(FeatureStore.open(store.path), 3), first)
    with pytest.raises(AssertionError, match="reused"):  # another K is another cache
        bank_neighbours(store, 4)


def test_bank_cache_of_other_vectors_is_recomputed(tmp_path):
    store = _store(tmp_path / "bank", unit_vectors(20, 5, seed=1))
    bank_neighbours(store, 3)
    table_path, meta_path = cache_paths(store, 3)
    # The same folder refilled with other vectors (another teacher): the checksum differs.
    other = unit_vectors(20, 5, seed=2)
    moved = tmp_path / "other"
    other_store = _store(moved, other)
    (moved / table_path.name).write_bytes(table_path.read_bytes())
    (moved / meta_path.name).write_bytes(meta_path.read_bytes())
    assert torch.equal(bank_neighbours(other_store, 3), brute_force_neighbours(other, 3))
    assert json.loads(cache_paths(other_store, 3)[1].read_text())["vectors"] == \
        other_store.meta["checksum"]
