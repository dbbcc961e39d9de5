"""Datasets: revisited Oxford/Paris, R1M distractors, SfM-120k, your own photos, synth."""

from __future__ import annotations

from pathlib import Path

from asymret.data.root import DATA_ROOT_ENV, resolve_data_root

__all__ = ["DATA_ROOT_ENV", "load_test_set", "resolve_data_root"]


def load_test_set(name_or_folder: str | Path, root: str | Path | None = None):
    """A revisitop-format test set by name under the data root, or a photo folder's test set.

    Returns:
        :class:`~asymret.data.revisitop.RevisitopDataset`.
    """
    from asymret.data.folder import CSV_NAME, PhotoFolder
    from asymret.data.revisitop import RevisitopDataset

    if (Path(name_or_folder) / CSV_NAME).is_file():
        return PhotoFolder.load(name_or_folder).test_set()
    return RevisitopDataset.load(str(name_or_folder), root)
