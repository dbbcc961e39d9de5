"""Evaluation from files: a revisitop ground-truth pickle and two bare ``.npy`` feature arrays.

This is ``asymret evaluate-features``: vectors computed by any tool, scored with the metrics of
:mod:`asymret.evaluate`. The ground truth is read by :func:`~asymret.data.revisitop.load_gnd`;
a feature file is one (rows, D) array saved with ``numpy.save``, memory-mapped on reading and
never unpickled.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from asymret.data.revisitop import load_gnd
from asymret.errors import AsymretError
from asymret.evaluate import DEFAULT_KAPPAS, RevisitedResult, evaluate_retrieval
from asymret.search import DEFAULT_CHUNK_SIZE


def evaluate_feature_files(
    gnd_path: str | Path,
    queries_path: str | Path,
    database_path: str | Path,
    kappas: Sequence[int] = DEFAULT_KAPPAS,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    device: str | torch.device = "cpu",
) -> RevisitedResult:
    """:func:`~asymret.evaluate.evaluate_retrieval` on a gnd pickle and two ``.npy`` files.

    The ``.npy`` files are memory-mapped, so only one database chunk is in memory at a time.

    Args:
        gnd_path: Revisitop ground-truth pickle.
        queries_path: ``.npy`` array (nq, D).
        database_path: ``.npy`` array (n, D).
        kappas: The k of precision@k.
        chunk_size: Database rows scored at a time.
        device: Where scores are computed and counted.

    Returns:
        The scores in percent.

    Raises:
        AsymretError: a missing or unreadable file (named), or any error of
            :func:`~asymret.evaluate.evaluate_retrieval`.
    """
    gnd = load_gnd(gnd_path)
    queries = load_feature_file(queries_path)
    database = load_feature_file(database_path)
    return evaluate_retrieval(queries, database, gnd, kappas, chunk_size=chunk_size, device=device)


def load_feature_file(path: str | Path) -> np.ndarray:
    """Memory-map a ``.npy`` feature array (no pickles allowed).

    Raises:
        AsymretError: the file is missing, unreadable, or not a single ``.npy`` array.
    """
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError as exc:
        raise AsymretError(f"{path}: no such file") from exc
    except (OSError, ValueError, EOFError) as exc:
        raise AsymretError(f"{path}: not a readable .npy file ({exc})") from exc
    if not isinstance(array, np.ndarray):
        array.close()
        raise AsymretError(f"{path}: expected a single .npy array, got an .npz archive")
    return array
