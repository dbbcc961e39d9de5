"""SfM-120k training database (Radenović et al.) and any training db in its format.

Layout under the data root::

    <root>/retrieval-SfM-120k/retrieval-SfM-120k.pkl
    <root>/retrieval-SfM-120k/ims/<cid[-2:]>/<cid[-4:-2]>/<cid[-6:-4]>/<cid>

The pickle holds ``train`` and ``val`` splits, each with ``cids`` (image ids), ``cluster``
(3D-model id per image), and ``qidxs`` / ``pidxs`` (query and matching positive index of
each training pair). The embedded ``synth`` benchmark writes the same format, with
:func:`write_training_db`.

The whitening dbs of the reference test protocol, ``retrieval-SfM-120k-whiten.pkl`` and
``retrieval-SfM-30k-whiten.pkl``, are one such split at the top level (a dict with ``cids``,
``qidxs``, ``pidxs`` and ``cluster``) whose images are the SfM-120k images;
:func:`load_whitening_db` reads them and :func:`write_whitening_db` writes one.
``asymret download sfm120k`` puts both beside the training db::

    <root>/retrieval-SfM-120k/retrieval-SfM-120k-whiten.pkl
    <root>/retrieval-SfM-120k/retrieval-SfM-30k-whiten.pkl

(the reference project's own layout, ``<root>/<name>/<name>-whiten.pkl`` with the images
under ``<root>/<name>/ims``, is found too).
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from asymret.data.image_list import ImageList
from asymret.data.root import resolve_data_root
from asymret.errors import AsymretError
from asymret.safe_pickle import load_pickle

SFM120K_NAME = "retrieval-SfM-120k"
SPLITS = ("train", "val")
WHITENING_DBS = ("retrieval-SfM-120k", "retrieval-SfM-30k")
"""Whitening dbs of the reference test protocol (``<name>-whiten.pkl``)."""
WHITEN_SUFFIX = "-whiten.pkl"
_SPLIT_KEYS = ("cids", "cluster", "qidxs", "pidxs")
_WHITEN_KEYS = ("cids", "qidxs", "pidxs")


def cid_to_relative_path(cid: str) -> Path:
    """Image path of ``cid`` relative to the db folder, as the reference project stores it."""
    return Path("ims", cid[-2:], cid[-4:-2], cid[-6:-4], cid)


@dataclass
class TrainingDb:
    """One split of an SfM-format training db.

    Attributes:
        split: ``"train"`` or ``"val"`` (``"whiten"`` for a whitening db).
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
        if not isinstance(part, dict):
            raise AsymretError(f"{db_path}: split '{split}' is a {type(part).__name__}, not a dict")
        missing = [k for k in _SPLIT_KEYS if k not in part]
        if missing:
            raise AsymretError(f"{db_path}: split '{split}' lacks {', '.join(missing)}")
        return cls._from_part(part, split, directory, f"{db_path}: split '{split}'")

    @classmethod
    def _from_part(cls, part: dict, split: str, directory: Path, where: str) -> TrainingDb:
        """Check one split's ``cids``, ``qidxs``, ``pidxs`` (and ``cluster`` when present)."""
        cids = part["cids"]
        if isinstance(cids, str | bytes) or not hasattr(cids, "__len__"):
            raise AsymretError(f"{where}: cids must be a list of image ids")
        cids = [str(c) for c in cids]
        try:
            clusters = np.asarray(part.get("cluster", [-1] * len(cids)), dtype=np.int64)
            queries = np.asarray(part["qidxs"], dtype=np.int64)
            positives = np.asarray(part["pidxs"], dtype=np.int64)
        except (TypeError, ValueError) as exc:
            raise AsymretError(
                f"{where}: cluster, qidxs and pidxs must be integers ({exc})"
            ) from None
        if clusters.ndim != 1 or queries.ndim != 1 or positives.ndim != 1:
            raise AsymretError(f"{where}: cluster, qidxs and pidxs must be flat lists")
        if len(clusters) != len(cids):
            raise AsymretError(f"{where}: {len(cids)} cids but {len(clusters)} clusters")
        if len(queries) != len(positives):
            raise AsymretError(
                f"{where}: {len(queries)} qidxs but {len(positives)} pidxs; need one positive "
                "per query"
            )
        for key, indices in (("qidxs", queries), ("pidxs", positives)):
            if len(indices) and (indices.min() < 0 or indices.max() >= len(cids)):
                bad = indices[(indices < 0) | (indices >= len(cids))][0]
                raise AsymretError(
                    f"{where}: {key} out of range 0..{len(cids) - 1} (index {int(bad)})"
                )
        paths = [directory / cid_to_relative_path(c) for c in cids]
        return cls(split, cids, paths, clusters, queries, positives)

    def __len__(self) -> int:
        return len(self.cids)

    def images(self, imsize: int | None = None, skip_unreadable: bool = False) -> ImageList:
        """All images of the split, longer side ≤ ``imsize``."""
        return ImageList(self.paths, imsize, skip_unreadable=skip_unreadable)


def whitening_db_path(name: str, root: str | Path | None = None) -> Path | None:
    """Where the whitening db ``<name>-whiten.pkl`` is, or ``None``.

    Looks in ``<root>/<name>/`` (the reference project's layout), then in
    ``<root>/retrieval-SfM-120k/`` (where ``asymret download sfm120k`` puts both).
    """
    data_root = resolve_data_root(root)
    for folder in dict.fromkeys((name, SFM120K_NAME)):
        candidate = data_root / folder / f"{name}{WHITEN_SUFFIX}"
        if candidate.is_file():
            return candidate
    return None


def read_whitening_db(path: str | Path) -> TrainingDb:
    """Read a ``*-whiten.pkl`` file (restricted unpickler); its images are under ``ims/``
    beside it.

    Returns:
        The pairs as a :class:`TrainingDb` of split ``"whiten"`` (``clusters`` is −1 per
        image when the file has no ``cluster``).

    Raises:
        AsymretError: one line naming the file and the problem: unreadable, not a dict, a
            missing key, qidxs and pidxs of different lengths, or an index out of range.
    """
    path = Path(path)
    data = load_pickle(path)
    if not isinstance(data, dict):
        raise AsymretError(
            f"{path}: not a whitening db (expected a dict with {', '.join(_WHITEN_KEYS)}, got "
            f"a {type(data).__name__})"
        )
    missing = [key for key in _WHITEN_KEYS if key not in data]
    if missing:
        hint = " (this looks like a training db with splits)" if set(SPLITS) <= set(data) else ""
        raise AsymretError(f"{path}: whitening db lacks {', '.join(missing)}{hint}")
    return TrainingDb._from_part(data, "whiten", path.parent, str(path))


def load_whitening_db(name: str, root: str | Path | None = None) -> TrainingDb:
    """The whitening db ``name`` (e.g. ``retrieval-SfM-120k``) under the data root.

    Raises:
        AsymretError: no ``<name>-whiten.pkl`` (naming where it was looked for), or a file of
            the wrong format.
    """
    path = whitening_db_path(name, root)
    if path is None:
        data_root = resolve_data_root(root)
        places = " or ".join(
            str(data_root / folder / f"{name}{WHITEN_SUFFIX}")
            for folder in dict.fromkeys((name, SFM120K_NAME))
        )
        hint = "; get it with `asymret download sfm120k`" if name in WHITENING_DBS else ""
        raise AsymretError(f"{places}: whitening db not found{hint}")
    return read_whitening_db(path)


def write_training_db(path: str | Path, train: Mapping, val: Mapping, *, protocol: int = 3) -> Path:
    """Write an SfM-format training db (``<root>/<name>/<name>.pkl``) that
    :meth:`TrainingDb.load` reads back unchanged.

    Args:
        path: The file to write (its folder is created).
        train, val: The splits, each with ``cids`` (image ids), ``cluster`` (one int per
            image), ``qidxs`` and ``pidxs`` (query and positive index of each pair); written as
            plain lists of strings and ints, in that key order.
        protocol: Pickle protocol.

    Returns:
        ``path`` as a Path.

    Raises:
        AsymretError: a split :meth:`TrainingDb.load` would refuse (nothing is written).
    """
    path = Path(path)
    data = {
        split: _split_to_write(part, _SPLIT_KEYS, f"{path}: split '{split}'")
        for split, part in zip(SPLITS, (train, val), strict=True)
    }
    return _write_pickle(path, data, protocol)


def write_whitening_db(path: str | Path, db: Mapping, *, protocol: int = 3) -> Path:
    """Write a whitening db (``*-whiten.pkl``) that :func:`read_whitening_db` reads back
    unchanged.

    Args:
        path: The file to write (its folder is created).
        db: ``cids``, ``qidxs`` and ``pidxs`` as in a training db split, and optionally
            ``cluster`` (left out of the file when absent).
        protocol: Pickle protocol.

    Returns:
        ``path`` as a Path.

    Raises:
        AsymretError: content :func:`read_whitening_db` would refuse (nothing is written).
    """
    path = Path(path)
    return _write_pickle(path, _split_to_write(db, _WHITEN_KEYS, f"{path}: whitening db"), protocol)


def _split_to_write(part: Mapping, required: tuple[str, ...], where: str) -> dict[str, list]:
    """A split checked as the readers check it, as plain lists: cids, cluster, qidxs, pidxs."""
    missing = [key for key in required if key not in part]
    if missing:
        raise AsymretError(f"{where} lacks {', '.join(missing)}")
    db = TrainingDb._from_part(part, "", Path(), where)
    written: dict[str, list] = {"cids": db.cids}
    if "cluster" in part:
        written["cluster"] = db.clusters.tolist()
    written["qidxs"] = db.query_indices.tolist()
    written["pidxs"] = db.positive_indices.tolist()
    return written


def _write_pickle(path: Path, data: dict, protocol: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(data, protocol=protocol))
    return path
