"""Datasets: revisited Oxford/Paris, R1M distractors, SfM-120k, your own photos, synth."""

from asymret.data.root import DATA_ROOT_ENV, resolve_data_root

__all__ = ["DATA_ROOT_ENV", "resolve_data_root"]
