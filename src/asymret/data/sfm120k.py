"""SfM-120k training database (Radenović et al.) and any training db in its format.

Layout under the data root::

    <root>/retrieval-SfM-120k/retrieval-SfM-120k.pkl
    <root>/retrieval-SfM-120k/ims/<cid[-2:]>/<cid[-4:-2]>/<cid[-6:-4]>/<cid>

The pickle holds ``train`` and ``val`` splits, each with ``cids`` (image ids), ``cluster``
(3D-model id per image), and ``qidxs`` / ``pidxs`` (query and matching positive index of
each training pair). The embedded ``synth`` benchmark writes the same format.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from asymret.data.image_list import ImageList
from asymret.data.root import resolve_data_root
from asymret.errors import AsymretError
from asymret.safe_pickle import load_pickle

SFM120K_NAME = "retrieval-SfM-120k"
SPLITS = ("train", "val")
_SPLIT_KEYS = ("cids", "cluster", "qidxs", "pidxs")


def cid_to_relative_path(cid: str) -> Path:
    """Image path of ``cid`` relative to the db folder, as the reference project stores it."""
    return Path("ims", cid[-2:], cid[-4:-2], cid[-6:-4], cid)


@dataclass
class TrainingDb:
    """One split of an SfM-format training db.

    Attributes:
        split: ``"train"`` or ``"val"``.
        cids: (N,) image ids.
        paths: (N,) image files.
        clusters: (N,) int64 cluster (3D model / landmark) per image.
        query_indices: (P,) int64 query image of each training pair.
        positive_indices: (P,) int64 matching positive image of each pair.
    """

    split: str
    cids: list[str]
    paths: list[Path]
    clusters: np.ndarray
    query_indices: np.ndarray
    positive_indices: np.ndarray

    @classmethod
    def load(
        cls, name: str = SFM120K_NAME, split: str = "train", root: str | Path | None = None
    ) -> TrainingDb:
        """Read ``<root>/<name>/<name>.pkl`` (restricted unpickler) and check it.

        Raises:
            AsymretError: missing file, unknown split, missing keys, or indices out of range.
        """
        if split not in SPLITS:
            raise AsymretError(f"unknown split '{split}'; expected one of {', '.join(SPLITS)}")
        directory = resolve_data_root(root) / name
        db_path = directory / f"{name}.pkl"
        if not db_path.is_file():
            hint = "; get it with `asymret download sfm120k`" if name == SFM120K_NAME else ""
            raise AsymretError(f"{db_path}: training db not found{hint}")
        data = load_pickle(db_path)
        if not isinstance(data, dict) or split not in data:
            raise AsymretError(f"{db_path}: no '{split}' split")
        part = data[split]
        missing = [k for k in _SPLIT_KEYS if k not in part]
        if missing:
            raise AsymretError(f"{db_path}: split '{split}' lacks {', '.join(missing)}")
        cids = [str(c) for c in part["cids"]]
        clusters = np.asarray(part["cluster"], dtype=np.int64)
        queries = np.asarray(part["qidxs"], dtype=np.int64)
        positives = np.asarray(part["pidxs"], dtype=np.int64)
        if len(clusters) != len(cids) or len(queries) != len(positives):
            raise AsymretError(
                f"{db_path}: split '{split}' has {len(cids)} cids but {len(clusters)} clusters, "
                f"or {len(queries)} qidxs but {len(positives)} pidxs"
            )
        for key, indices in (("qidxs", queries), ("pidxs", positives)):
            if len(indices) and (indices.min() < 0 or indices.max() >= len(cids)):
                raise AsymretError(
                    f"{db_path}: split '{split}' {key} out of range 0..{len(cids) - 1}"
                )
        paths = [directory / cid_to_relative_path(c) for c in cids]
        return cls(split, cids, paths, clusters, queries, positives)

    def __len__(self) -> int:
        return len(self.cids)

    def images(self, imsize: int | None = None, skip_unreadable: bool = False) -> ImageList:
        """All images of the split, longer side ≤ ``imsize``."""
        return ImageList(self.paths, imsize, skip_unreadable=skip_unreadable)
