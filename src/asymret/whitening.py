"""Learned whitening from matching pairs (Radenović et al., ECCV 2016; cirtorch ``whitenlearn``).

Given vectors x_i (L2-normalised descriptors of a whitening set) and matching pairs (q, p):

1. m = mean of the query vectors x_q;
2. S = (1/M) Σ (x_q − x_p)(x_q − x_p)ᵀ over the M pairs (the covariance of the pair
   differences, uncentred as in the reference: a difference has zero mean in expectation);
3. P₁ = L⁻¹ with S = L Lᵀ (Cholesky): whitened pair differences have identity covariance;
4. PCA of P₁(x_i − m) over all vectors: eigenvectors V of Σ_i P₁(x_i − m)(x_i − m)ᵀP₁ᵀ,
   by decreasing eigenvalue;
5. P = Vᵀ P₁.

Applying it: x' = L2N(P[:d] (x − m)), keeping the first d (most varying) dimensions.

The fit runs in float64 and reads the vectors chunk by chunk, so a memory-mapped bank from a
:class:`~asymret.features.FeatureStore` is never loaded whole. Unlike the reference, which
adds a growing ridge to S until the Cholesky decomposition succeeds, a singular S is an error
here: it means too few or degenerate pairs, and silently whitening along directions with no
observed variation would blow them up.

Two ways to use it. :func:`apply_whitening` whitens stored vectors, e.g. to select it at
evaluation time. :func:`fold_whitening` puts it into a network without a projection layer, so
that it is saved with the model: the network normalises the pooled vector before its
``whiten`` layer and again after it, so ``whiten`` = Linear(weight P[:d], bias −P[:d] m)
gives exactly :func:`apply_whitening` of the plain network's single-scale vectors. With
multi-scale extraction the two differ: the folded network whitens every scale before they
are averaged (with exponent 1, as the reference does for networks with whitening), whereas
the reference's post-hoc whitening is applied to the combined multi-scale vector, which is
what :func:`apply_whitening` on multi-scale vectors does.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import safetensors.numpy
import torch
import torch.nn.functional as F
from torch import nn

from asymret.errors import AsymretError
from asymret.models.network import RetrievalNet

WEIGHTS_FILE = "whitening.safetensors"
CONFIG_FILE = "whitening.json"
FORMAT_NAME = "asymret-whitening"
FORMAT_VERSION = 1
DEFAULT_CHUNK_SIZE = 16384

Vectors = np.ndarray | torch.Tensor

_NOT_FINITE = (
    "learned whitening: the vectors contain NaN or infinite values (rows of images skipped "
    "as unreadable are NaN; leave them out)"
)


@dataclasses.dataclass(frozen=True, eq=False)
class Whitening:
    """A learned whitening x ↦ L2N(P[:d] (x − m)).

    Attributes:
        mean: (D,) float64 mean m of the query vectors.
        projection: (D, D) float64 matrix P; row k is the k-th output dimension, by
            decreasing variance over the whitening set.
        num_pairs: number of matching pairs it was learned from.
    """

    mean: np.ndarray
    projection: np.ndarray
    num_pairs: int

    @property
    def input_dim(self) -> int:
        """Dimension D of the vectors it applies to."""
        return int(self.mean.shape[0])

    def output_dim(self, dim: int | None) -> int:
        """Validate a requested output dimension d (``None``: all D)."""
        if dim is None:
            return self.input_dim
        if not 1 <= dim <= self.input_dim:
            raise AsymretError(
                f"whitening output dimension must be between 1 and {self.input_dim}, got {dim}"
            )
        return dim


def _rows(vectors: Vectors, indices: np.ndarray | slice) -> np.ndarray:
    """Rows of a numpy array or tensor as a float64 numpy array."""
    if isinstance(vectors, torch.Tensor):
        if isinstance(indices, np.ndarray):
            indices = torch.from_numpy(indices)
        return vectors[indices].detach().cpu().double().numpy()
    return np.asarray(vectors[indices], dtype=np.float64)


def _check_vectors(vectors: Vectors) -> None:
    if not isinstance(vectors, np.ndarray | torch.Tensor) or vectors.ndim != 2:
        raise AsymretError(
            f"vectors must be an (N, D) numpy array or tensor, got "
            f"{getattr(vectors, 'shape', type(vectors).__name__)}"
        )


def _check_pairs(
    query_indices: Sequence[int], positive_indices: Sequence[int], count: int
) -> tuple[np.ndarray, np.ndarray]:
    queries = np.asarray(query_indices, dtype=np.int64).reshape(-1)
    positives = np.asarray(positive_indices, dtype=np.int64).reshape(-1)
    if len(queries) != len(positives):
        raise AsymretError(
            f"{len(queries)} query indices but {len(positives)} positive indices; "
            "need one positive per query"
        )
    for name, indices in (("query", queries), ("positive", positives)):
        outside = indices[(indices < 0) | (indices >= count)]
        if len(outside):
            raise AsymretError(
                f"{name} index {int(outside[0])} is outside the {count} vectors"
            )
    return queries, positives


def learn_whitening(
    vectors: Vectors,
    query_indices: Sequence[int],
    positive_indices: Sequence[int],
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> Whitening:
    """Learn the whitening from matching pairs (cirtorch ``whitenlearn``), in float64.

    Args:
        vectors: (N, D) vectors of the whitening set (numpy array, memory map or tensor).
        query_indices: (M,) row of each pair's query.
        positive_indices: (M,) row of each pair's matching image.
        chunk_size: rows read at a time.

    Returns:
        The whitening, P of shape (D, D), m of shape (D,).

    Raises:
        AsymretError: mismatched or out-of-range indices, fewer than D pairs, non-finite
            vectors, or a singular covariance of the pair differences.
    """
    _check_vectors(vectors)
    count, dim = vectors.shape
    queries, positives = _check_pairs(query_indices, positive_indices, count)
    num_pairs = len(queries)
    if num_pairs < dim:
        raise AsymretError(
            f"learned whitening needs at least D = {dim} matching pairs to estimate the "
            f"{dim}×{dim} covariance of pair differences, got {num_pairs}"
        )

    query_sum = np.zeros(dim)
    difference_scatter = np.zeros((dim, dim))
    for start in range(0, num_pairs, chunk_size):
        query_rows = _rows(vectors, queries[start : start + chunk_size])
        differences = query_rows - _rows(vectors, positives[start : start + chunk_size])
        query_sum += query_rows.sum(axis=0)
        difference_scatter += differences.T @ differences
    if not (np.isfinite(query_sum).all() and np.isfinite(difference_scatter).all()):
        raise AsymretError(_NOT_FINITE)
    mean = query_sum / num_pairs
    covariance = difference_scatter / num_pairs

    eigenvalues = np.linalg.eigvalsh(covariance)
    tolerance = eigenvalues[-1] * dim * np.finfo(np.float64).eps
    rank = int((eigenvalues > tolerance).sum())
    if rank < dim:
        raise AsymretError(
            f"learned whitening: the covariance of the {num_pairs} pair differences is "
            f"singular (rank {rank} of {dim}); use more (and more varied) matching pairs, "
            "and vectors without constant dimensions"
        )
    pair_whitening = np.linalg.inv(np.linalg.cholesky(covariance))

    centred_scatter = np.zeros((dim, dim))
    for start in range(0, count, chunk_size):
        centred = _rows(vectors, slice(start, start + chunk_size)) - mean
        centred_scatter += centred.T @ centred
    if not np.isfinite(centred_scatter).all():
        raise AsymretError(_NOT_FINITE)
    whitened_scatter = pair_whitening @ centred_scatter @ pair_whitening.T
    _, eigenvectors = np.linalg.eigh((whitened_scatter + whitened_scatter.T) / 2)
    eigenvectors = eigenvectors[:, ::-1]
    # Eigenvectors are defined up to sign: make each one's largest component positive.
    largest = np.abs(eigenvectors).argmax(axis=0)
    eigenvectors = eigenvectors * np.sign(eigenvectors[largest, np.arange(dim)])
    projection = eigenvectors.T @ pair_whitening
    return Whitening(mean=mean, projection=np.ascontiguousarray(projection), num_pairs=num_pairs)


def apply_whitening(
    vectors: Vectors,
    whitening: Whitening,
    dim: int | None = None,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> Vectors:
    """Whiten vectors: L2N(P[:d] (x − m)) (cirtorch ``whitenapply``), in float32 chunks.

    Args:
        vectors: (N, D) vectors (numpy array, memory map or tensor).
        whitening: the learned whitening.
        dim: output dimension d; ``None`` keeps all D.
        chunk_size: rows processed at a time.

    Returns:
        (N, d) float32 unit vectors: a numpy array for numpy input, else a tensor on the
        input's device.

    Raises:
        AsymretError: the vectors' dimension is not the whitening's, or d is out of range.
    """
    _check_vectors(vectors)
    dim = whitening.output_dim(dim)
    if vectors.shape[1] != whitening.input_dim:
        raise AsymretError(
            f"whitening learned on {whitening.input_dim}-D vectors cannot apply to "
            f"{vectors.shape[1]}-D vectors"
        )
    device = vectors.device if isinstance(vectors, torch.Tensor) else torch.device("cpu")
    weight = torch.from_numpy(whitening.projection[:dim]).to(device, torch.float32)
    mean = torch.from_numpy(whitening.mean).to(device, torch.float32)
    chunks = []
    for start in range(0, vectors.shape[0], chunk_size):
        chunk = vectors[start : start + chunk_size]
        if isinstance(chunk, np.ndarray):
            chunk = torch.from_numpy(np.array(chunk, dtype=np.float32))
        chunks.append(F.normalize((chunk.detach().float() - mean) @ weight.T, dim=-1))
    whitened = torch.cat(chunks) if chunks else torch.empty(0, dim, device=device)
    return whitened.numpy() if isinstance(vectors, np.ndarray) else whitened


def fold_whitening(net: RetrievalNet, whitening: Whitening, dim: int | None = None) -> RetrievalNet:
    """A copy of ``net`` whose ``whiten`` layer applies the learned whitening.

    The copy's config gets ``dim = d`` (``whiten_dim = d`` with the conv head), so
    :func:`~asymret.models.save_model` saves the whitening with the model and ``load_model``
    rebuilds it.

    Args:
        net: a network without a projection layer, whose vectors the whitening was learned on.
        whitening: the learned whitening (D = ``net.pooled_dim``).
        dim: output dimension d; ``None`` keeps all D.

    Returns:
        A new network mapping images to L2N(P[:d] (net(images) − m)), shape (N, d).

    Raises:
        AsymretError: the network already has a projection, or the dimensions differ.
    """
    if net.whiten is not None:
        raise AsymretError(
            f"network '{net.config.name}' already has a projection layer; learned whitening "
            "can only be folded into a network without one"
        )
    if whitening.input_dim != net.pooled_dim:
        raise AsymretError(
            f"whitening learned on {whitening.input_dim}-D vectors does not fit network "
            f"'{net.config.name}' with {net.pooled_dim}-D vectors"
        )
    dim = whitening.output_dim(dim)
    weight = whitening.projection[:dim]
    parameter = next(net.parameters())
    linear = nn.Linear(whitening.input_dim, dim, device=parameter.device, dtype=parameter.dtype)
    with torch.no_grad():
        linear.weight.copy_(torch.from_numpy(weight))
        linear.bias.copy_(torch.from_numpy(-weight @ whitening.mean))
    folded = copy.deepcopy(net)
    folded.config = net.config.with_linear_dim(dim)
    folded.whiten = linear
    return folded


def save_whitening(whitening: Whitening, directory: str | Path) -> Path:
    """Write ``whitening.safetensors`` (mean, projection in float64) and ``whitening.json``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    safetensors.numpy.save_file(
        {"mean": whitening.mean, "projection": whitening.projection},
        str(directory / WEIGHTS_FILE),
    )
    config = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "input_dim": whitening.input_dim,
        "num_pairs": whitening.num_pairs,
    }
    (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    return directory


def load_whitening(directory: str | Path) -> Whitening:
    """Read a whitening written by :func:`save_whitening`.

    Raises:
        AsymretError: a missing, unreadable or inconsistent file (named in the message).
    """
    directory = Path(directory)
    config_path, weights_path = directory / CONFIG_FILE, directory / WEIGHTS_FILE
    try:
        config = json.loads(config_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise AsymretError(f"{config_path}: cannot read whitening config ({exc})") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT_NAME:
        raise AsymretError(f"{config_path}: not an asymret whitening config")
    try:
        tensors = safetensors.numpy.load_file(str(weights_path))
    except Exception as exc:
        raise AsymretError(f"{weights_path}: cannot read whitening ({exc})") from None
    mean, projection = tensors.get("mean"), tensors.get("projection")
    dim = config.get("input_dim")
    if (
        mean is None
        or projection is None
        or mean.shape != (dim,)
        or projection.shape != (dim, dim)
    ):
        raise AsymretError(
            f"{weights_path}: expected 'mean' ({dim},) and 'projection' ({dim}, {dim})"
        )
    return Whitening(
        mean=mean.astype(np.float64),
        projection=projection.astype(np.float64),
        num_pairs=int(config.get("num_pairs", 0)),
    )
