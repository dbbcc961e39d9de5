"""Extract a test set with one or two networks and evaluate it, symmetric and asymmetric.

Vectors are cached in feature stores (``<features>/<dataset>/<model>-<fingerprint>/{queries,
database}``), so a teacher's database is extracted once and reused by every student, and a
killed extraction resumes. Settings:

- ``symmetric``: student queries against the student's database (f–f);
- ``asymmetric``: student queries against the teacher's database (f–g);
- ``teacher``: teacher queries against the teacher's database (g–g).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from asymret.data.revisitop import RevisitopDataset, distractor_paths
from asymret.evaluate import RevisitedResult, evaluate_retrieval
from asymret.features import FeatureStore, extract_to_store, model_fingerprint
from asymret.models import RetrievalNet


def store_name(net: RetrievalNet) -> str:
    """Folder name of a network's stores: its name and a short weights fingerprint."""
    return f"{net.config.name}-{model_fingerprint(net).rpartition(':')[2][:12]}"


def extract_test_set(
    net: RetrievalNet,
    dataset: RevisitopDataset,
    out: str | Path,
    *,
    imsize: int = 1024,
    scales: Sequence[float] = (1.0,),
    distractors_root: str | Path | None = None,
    with_distractors: bool = False,
    device: str | torch.device = "cpu",
    batch_size: int = 32,
    num_workers: int = 0,
    progress: bool = True,
) -> tuple[FeatureStore, FeatureStore]:
    """Query (cropped) and database vectors of a test set into ``out/queries``, ``out/database``.

    With ``with_distractors`` the R1M distractors follow the database images.
    """
    out = Path(out)
    distractors = distractor_paths(distractors_root) if with_distractors else []
    options = dict(scales=scales, device=device, batch_size=batch_size,
                   num_workers=num_workers, progress=progress)
    queries = extract_to_store(
        net, dataset.query_images(imsize), dataset.qimlist, out / "queries", **options
    )
    database_ids = dataset.imlist + [str(p) for p in distractors]
    database = extract_to_store(
        net, dataset.database_images(imsize, distractors), database_ids, out / "database",
        **options,
    )
    return queries, database


def evaluate_networks(
    dataset: RevisitopDataset,
    student: RetrievalNet,
    teacher: RetrievalNet | None,
    features_dir: str | Path,
    **extract_options,
) -> dict[str, RevisitedResult]:
    """Revisited results per setting (symmetric; with a teacher also asymmetric and teacher).

    Args:
        dataset: the test set.
        student: the query-side network.
        teacher: the database-side network, or ``None`` for the symmetric test only.
        features_dir: cache of feature stores.
        **extract_options: passed to :func:`extract_test_set`.
    """
    cache = Path(features_dir) / dataset.name
    stores = {"student": extract_test_set(student, dataset, cache / store_name(student),
                                          **extract_options)}
    if teacher is not None:
        stores["teacher"] = extract_test_set(teacher, dataset, cache / store_name(teacher),
                                             **extract_options)
    settings = {"symmetric": ("student", "student")}
    if teacher is not None:
        settings |= {"asymmetric": ("student", "teacher"), "teacher": ("teacher", "teacher")}
    return {
        setting: evaluate_retrieval(
            np.asarray(stores[query_side][0].vectors),
            stores[database_side][1].vectors,
            dataset.gnd,
            device=extract_options.get("device", "cpu"),
        )
        for setting, (query_side, database_side) in settings.items()
    }
