"""Datasets: revisited Oxford/Paris, R1M distractors, SfM-120k, your own photos, synth."""

from __future__ import annotations

from pathlib import Path

from asymret.data.root import DATA_ROOT_ENV, resolve_data_root

__all__ = [
    "DATA_ROOT_ENV",
    "load_test_set",
    "load_training_db",
    "load_whitening_pairs",
    "resolve_data_root",
]


def load_test_set(name_or_folder: str | Path, root: str | Path | None = None):
    """A revisitop-format test set by name under the data root, or a photo folder's test set.

    Returns:
        :class:`~asymret.data.revisitop.RevisitopDataset`.
    """
    from asymret.data.folder import CSV_NAME, PhotoFolder
    from asymret.data.revisitop import RevisitopDataset

    folder = Path(name_or_folder).expanduser()
    if (folder / CSV_NAME).is_file():
        return PhotoFolder.load(folder).test_set()
    return RevisitopDataset.load(str(name_or_folder), root)


def load_training_db(
    name_or_folder: str | Path,
    split: str = "train",
    root: str | Path | None = None,
    *,
    require_pairs: bool = True,
):
    """A training db by name under the data root, or a photo folder's training rows.

    ``name_or_folder`` is, in the order tried:

    1. a photo folder with ``images.csv``: its rows with role ``train`` (its only split,
       ``"train"``; clusters = instances, positives = every pair within an instance);
    2. an SfM-format training db name, e.g. ``retrieval-SfM-120k``:
       ``<root>/<name>/<name>.pkl``, split ``split``.

    Args:
        require_pairs: refuse a db without positive pairs (tuple losses need them; losses
            that sample images do not).

    Returns:
        ``(name, db)``: ``name`` names the db's stored vectors (a teacher bank's collection,
        see :meth:`~asymret.bank.TeacherBank.training_vectors`): the db name as given, or
        for a photo folder :meth:`~asymret.data.folder.PhotoFolder.training_name`, stable and
        without path separators. ``db`` is a :class:`~asymret.data.sfm120k.TrainingDb`.

    Raises:
        AsymretError: naming the folder or file and the problem: no such db or folder, a
            folder without ``images.csv``, a malformed CSV, no training rows, no pairs, or a
            split a photo folder does not have.
    """
    from asymret.data.folder import CSV_NAME, PhotoFolder
    from asymret.data.sfm120k import SFM120K_NAME, TrainingDb
    from asymret.errors import AsymretError

    folder = Path(name_or_folder).expanduser()
    if (folder / CSV_NAME).is_file():
        csv_path = folder / CSV_NAME
        if split != "train":
            raise AsymretError(
                f"{folder}: a photo folder has one training split, 'train' (its rows with role "
                f"train), not '{split}'"
            )
        photos = PhotoFolder.load(folder)
        name, db = photos.training_name(), photos.training_db()
        if len(db) == 0:
            raise AsymretError(
                f"{csv_path}: no training rows (role 'train', or empty); training needs "
                "images of each instance with role train"
            )
        if require_pairs and len(db.query_indices) == 0:
            raise AsymretError(
                f"{csv_path}: {len(db)} training rows but no positive pairs: no instance has "
                "two training images; give each instance at least two"
            )
        return name, db
    name = str(name_or_folder)
    db_path = resolve_data_root(root) / name / f"{name}.pkl"
    if not db_path.is_file():
        if folder.is_dir():
            raise AsymretError(
                f"{folder}: not a photo folder (no {CSV_NAME}) and not a training db ({db_path} "
                "not found)"
            )
        if len(Path(name).parts) > 1 or name.startswith(("~", ".")):
            raise AsymretError(f"{folder}: photo folder not found")
        hint = ("; get it with `asymret download sfm120k`" if name == SFM120K_NAME
                else f", and {name_or_folder} is not a folder with {CSV_NAME}")
        raise AsymretError(f"{db_path}: training db not found{hint}")
    db = TrainingDb.load(name, split, root)
    if require_pairs and len(db.query_indices) == 0:
        raise AsymretError(f"{db_path}: split '{split}' has no training pairs (qidxs is empty)")
    return name, db


def load_whitening_pairs(source: str | Path, root: str | Path | None = None,
                         split: str = "val"):
    """Matching pairs to learn a whitening from, and a short label of where they come from.

    ``source`` is, in the order tried:

    1. a photo folder with ``images.csv``: its training rows' pairs (label
       :meth:`~asymret.data.folder.PhotoFolder.training_name`, which changes with the
       folder's path and images);
    2. a ``*-whiten.pkl`` file: that whitening db (label: the file's stem);
    3. a whitening db name, e.g. ``retrieval-SfM-120k`` or ``retrieval-SfM-30k``:
       ``<name>-whiten.pkl`` under the data root (label ``<name>-whiten``; see
       :func:`~asymret.data.sfm120k.whitening_db_path`);
    4. an SfM-format training db name, e.g. ``retrieval-synth``: its ``split`` (label
       ``<name>-<split>``).

    Returns:
        ``(label, db)``: db is a :class:`~asymret.data.sfm120k.TrainingDb`.

    Raises:
        AsymretError: nothing found (naming where it looked) or a file of the wrong format.
    """
    from asymret.data.folder import CSV_NAME, PhotoFolder
    from asymret.data.sfm120k import (
        SFM120K_NAME,
        WHITEN_SUFFIX,
        WHITENING_DBS,
        TrainingDb,
        read_whitening_db,
        whitening_db_path,
    )
    from asymret.errors import AsymretError

    path = Path(source)
    if (path / CSV_NAME).is_file():
        photos = PhotoFolder.load(path)
        return photos.training_name(), photos.training_db()
    if path.suffix == ".pkl" and path.is_file():
        return path.stem, read_whitening_db(path)
    name = str(source)
    whiten_path = whitening_db_path(name, root)
    if whiten_path is not None:
        return f"{name}-whiten", read_whitening_db(whiten_path)
    data_root = resolve_data_root(root)
    training_path = data_root / name / f"{name}.pkl"
    if training_path.is_file():
        return f"{name}-{split}", TrainingDb.load(name, split, root)
    looked = [str(data_root / folder / f"{name}{WHITEN_SUFFIX}")
              for folder in dict.fromkeys((name, SFM120K_NAME))]
    hint = "; get it with `asymret download sfm120k`" if name in WHITENING_DBS else ""
    raise AsymretError(
        f"whitening db '{name}' not found: no {' or '.join(looked)}, no training db "
        f"{training_path}, and not a photo folder with {CSV_NAME}{hint}"
    )
