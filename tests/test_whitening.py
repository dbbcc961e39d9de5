"""Learned whitening against a slow reference written from the formula (cirtorch whitenlearn)."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from asymret.data.image_list import ImageList
from asymret.errors import AsymretError
from asymret.features import extract_vectors
from asymret.models import create_model, load_model, save_model
from asymret.whitening import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    Whitening,
    apply_whitening,
    fold_whitening,
    learn_whitening,
    load_whitening,
    save_whitening,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def reference_whitening(vectors, queries, positives):
    """``(m, P)`` one pair and one vector at a time, then Cholesky and eig as the reference."""
    dim = vectors.shape[1]
    mean = np.zeros(dim)
    for q in queries:
        mean += vectors[q]
    mean /= len(queries)
    covariance = np.zeros((dim, dim))
    for q, p in zip(queries, positives, strict=True):
        difference = vectors[q] - vectors[p]
        covariance += np.outer(difference, difference)
    covariance /= len(queries)
    pair_whitening = np.linalg.inv(np.linalg.cholesky(covariance))
    scatter = np.zeros((dim, dim))
    for x in vectors:
        whitened = pair_whitening @ (x - mean)
        scatter += np.outer(whitened, whitened)
    eigenvalues, eigenvectors = np.linalg.eig(scatter)
    order = np.argsort(eigenvalues.real)[::-1]
    eigenvectors = eigenvectors.real[:, order]
    for k in range(dim):  # sign convention: largest component positive
        column = eigenvectors[:, k]
        eigenvectors[:, k] = column * np.sign(column[np.argmax(np.abs(column))])
    return mean, eigenvectors.T @ pair_whitening


def reference_apply(vectors, mean, projection, dim):
    rows = []
    for x in vectors:
        y = projection[:dim] @ (x - mean)
        rows.append(y / np.sqrt(np.sum(y * y)))
    return np.array(rows)


def synthetic_pairs(count=300, dim=6, num_pairs=120, seed=0):
    """Unit vectors around a few clusters, with pairs inside a cluster, anisotropic noise."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(10, dim))
    labels = rng.integers(0, 10, size=count)
    scales = np.linspace(0.2, 1.0, dim)
    vectors = centres[labels] + rng.normal(size=(count, dim)) * scales
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    queries, positives = [], []
    while len(queries) < num_pairs:
        q, p = rng.integers(0, count, size=2)
        if q != p and labels[q] == labels[p]:
            queries.append(int(q))
            positives.append(int(p))
    return vectors, np.array(queries), np.array(positives)


def test_learned_whitening_equals_reference():
    vectors, queries, positives = synthetic_pairs()
    whitening = learn_whitening(vectors, queries, positives, chunk_size=7)
    mean, projection = reference_whitening(vectors, queries, positives)
    assert whitening.projection.dtype == np.float64 and whitening.num_pairs == len(queries)
    np.testing.assert_allclose(whitening.mean, mean, atol=1e-12)
    np.testing.assert_allclose(whitening.projection, projection, atol=1e-8)
    for dim in (None, 4):
        expected = reference_apply(vectors, mean, projection, dim or 6)
        whitened = apply_whitening(vectors, whitening, dim, chunk_size=50)
        assert isinstance(whitened, np.ndarray) and whitened.dtype == np.float32
        np.testing.assert_allclose(whitened, expected, atol=1e-5)


def test_whitened_pair_differences_have_identity_covariance():
    vectors, queries, positives = synthetic_pairs(dim=8, num_pairs=200, seed=3)
    whitening = learn_whitening(vectors, queries, positives)
    differences = (vectors[queries] - vectors[positives]) @ whitening.projection.T
    np.testing.assert_allclose(differences.T @ differences / len(queries), np.eye(8), atol=1e-9)
    centred = (vectors - whitening.mean) @ whitening.projection.T
    scatter = centred.T @ centred
    np.testing.assert_allclose(scatter - np.diag(np.diag(scatter)), 0, atol=1e-8)
    assert np.all(np.diff(np.diag(scatter)) < 0)


def test_tensor_and_memmap_inputs(tmp_path):
    vectors, queries, positives = synthetic_pairs()
    expected = learn_whitening(vectors, queries, positives)
    np.save(tmp_path / "v.npy", vectors.astype(np.float32))
    mapped = np.load(tmp_path / "v.npy", mmap_mode="r")
    from_memmap = learn_whitening(mapped, queries, positives, chunk_size=32)
    from_tensor = learn_whitening(torch.from_numpy(vectors), queries.tolist(), positives)
    np.testing.assert_allclose(from_tensor.projection, expected.projection, atol=1e-10)
    np.testing.assert_allclose(from_memmap.projection, expected.projection, atol=1e-4)
    whitened = apply_whitening(torch.from_numpy(vectors), expected, 3)
    assert isinstance(whitened, torch.Tensor) and whitened.shape == (len(vectors), 3)
    np.testing.assert_allclose(
        whitened.numpy(), apply_whitening(mapped, expected, 3), atol=1e-5
    )


def test_errors_are_clear():
    vectors, queries, positives = synthetic_pairs()
    with pytest.raises(AsymretError, match="at least D = 6 matching pairs"):
        learn_whitening(vectors, queries[:5], positives[:5])
    with pytest.raises(AsymretError, match="5 positive indices"):
        learn_whitening(vectors, queries, positives[:5])
    with pytest.raises(AsymretError, match="positive index 300 is outside the 300 vectors"):
        learn_whitening(vectors, queries, np.append(positives[:-1], 300))
    degenerate = vectors.copy()
    degenerate[:, 5] = degenerate[:, 4]  # pair differences never vary along e4 − e5
    with pytest.raises(AsymretError, match=r"singular \(rank 5 of 6\)"):
        learn_whitening(degenerate, queries, positives)
    broken = vectors.copy()
    broken[queries[0], 0] = np.nan
    with pytest.raises(AsymretError, match="NaN"):
        learn_whitening(broken, queries, positives)
    whitening = learn_whitening(vectors, queries, positives)
    with pytest.raises(AsymretError, match="between 1 and 6"):
        apply_whitening(vectors, whitening, 7)
    with pytest.raises(AsymretError, match="6-D vectors cannot apply to 5-D"):
        apply_whitening(vectors[:, :5], whitening)


def test_save_load_round_trip(tmp_path):
    vectors, queries, positives = synthetic_pairs()
    whitening = learn_whitening(vectors, queries, positives)
    save_whitening(whitening, tmp_path / "lw")
    loaded = load_whitening(tmp_path / "lw")
    np.testing.assert_array_equal(loaded.mean, whitening.mean)
    np.testing.assert_array_equal(loaded.projection, whitening.projection)
    assert loaded.num_pairs == whitening.num_pairs and loaded.input_dim == 6
    (tmp_path / "lw" / CONFIG_FILE).write_text(json.dumps({"format": "other"}))
    with pytest.raises(AsymretError, match=CONFIG_FILE):
        load_whitening(tmp_path / "lw")
    save_whitening(Whitening(whitening.mean[:5], whitening.projection, 1), tmp_path / "bad")
    with pytest.raises(AsymretError, match=WEIGHTS_FILE):
        load_whitening(tmp_path / "bad")


def test_folded_network_equals_applying_whitening_to_its_vectors(tmp_path):
    torch.manual_seed(0)
    net = create_model("test_resnet-gem").eval()
    rng = np.random.default_rng(0)
    paths = []
    for index, (width, height) in enumerate([(48, 32), (32, 48), (40, 40), (48, 32)]):
        path = tmp_path / f"{index}.png"
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    images = ImageList(paths)
    # A whitening of the right dimension; fitted on random unit vectors for speed.
    bank = rng.normal(size=(400, net.trunk_dim)) + 0.3
    bank /= np.linalg.norm(bank, axis=1, keepdims=True)
    whitening = learn_whitening(bank, np.arange(0, 400, 2), np.arange(1, 400, 2))
    plain = extract_vectors(net, images, progress=False)
    for dim in (None, 16):
        folded = fold_whitening(net, whitening, dim)
        assert folded.outputdim == (dim or net.trunk_dim)
        assert folded.config.name == f"test_resnet-gem-{dim or net.trunk_dim}"
        expected = apply_whitening(plain, whitening, dim)
        vectors = extract_vectors(folded, images, progress=False)
        torch.testing.assert_close(vectors, expected, atol=1e-5, rtol=0)
    assert net.whiten is None  # the original is untouched
    reloaded = load_model(save_model(folded, tmp_path / "whitened"))
    torch.testing.assert_close(extract_vectors(reloaded, images, progress=False), vectors)
    with pytest.raises(AsymretError, match="already has a projection"):
        fold_whitening(folded, whitening)
    small = learn_whitening(*synthetic_pairs()[:3])
    with pytest.raises(AsymretError, match="6-D vectors does not fit"):
        fold_whitening(net, small)
