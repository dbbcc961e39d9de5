"""The training presets shipped with asymret, and the paper's table they reproduce.

Each preset is a YAML file in ``asymret/presets/`` (installed with the package): one per row
of the paper's table (Budnik & Avrithis, CVPR 2021; published numbers in its header), plus
``synth-*`` recipes sized for a laptop CPU. ``asymret train --config NAME`` takes a preset by
name; the demo and ``asymret reproduce`` build their runs from the same files, so their
recipes cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from asymret.errors import AsymretError

PRESETS_DIR = Path(__file__).resolve().parents[1] / "presets"
"""Folder of the shipped presets."""


@dataclass(frozen=True)
class PaperRow:
    """One row of the paper's table.

    Attributes:
        label: the row as the paper names it.
        preset: the preset that trains it; ``None`` for the teacher alone.
        published: dataset → (Medium, Hard) mAP of the symmetric test.
    """

    label: str
    preset: str | None
    published: dict[str, tuple[float, float]]


PAPER_ROWS: tuple[PaperRow, ...] = (
    PaperRow("teacher RN101-GeM alone", None,
             {"roxford5k": (65.4, 40.1), "rparis6k": (76.7, 55.2)}),
    PaperRow("student EN-B3 alone", "sym-student-alone",
             {"roxford5k": (59.6, 33.3), "rparis6k": (75.1, 51.9)}),
    PaperRow("Contr⁺ asym", "asym-contrastive-plus",
             {"roxford5k": (66.8, 42.5), "rparis6k": (77.1, 55.5)}),
    PaperRow("Contr asym", "asym-contrastive",
             {"roxford5k": (66.3, 41.3), "rparis6k": (77.4, 55.5)}),
    PaperRow("Triplet asym", "asym-triplet",
             {"roxford5k": (39.5, 11.6), "rparis6k": (69.4, 45.8)}),
    PaperRow("MS asym", "asym-multi-similarity",
             {"roxford5k": (39.9, 11.7), "rparis6k": (69.7, 46.2)}),
    PaperRow("Reg", "regression",
             {"roxford5k": (64.9, 40.5), "rparis6k": (74.4, 52.4)}),
    PaperRow("RKD", "rkd",
             {"roxford5k": (56.3, 30.5), "rparis6k": (73.0, 50.4)}),
    PaperRow("DarkRank", "darkrank",
             {"roxford5k": (40.3, 11.8), "rparis6k": (69.9, 46.4)}),
)
"""The paper's table, in its order: Medium and Hard mAP of the symmetric test, EN-B3 student,
RN101-GeM teacher, d = 2048."""


def list_presets(presets_dir: str | Path = PRESETS_DIR) -> list[str]:
    """Names of the presets in ``presets_dir``, sorted."""
    return sorted(path.stem for path in Path(presets_dir).glob("*.yaml"))


def preset_path(name: str, presets_dir: str | Path = PRESETS_DIR) -> Path:
    """The YAML file of preset ``name``.

    Raises:
        AsymretError: no such preset (the message lists the known ones).
    """
    path = Path(presets_dir) / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(list_presets(presets_dir)) or "none"
        raise AsymretError(f"{path}: no preset '{name}' (presets: {known})")
    return path


def resolve_config_path(spec: str | Path) -> Path:
    """A config file, or the file of a preset given by name (``asym-contrastive-plus``).

    An existing file wins over a preset of the same name.

    Raises:
        AsymretError: neither a file nor a preset.
    """
    path = Path(spec)
    if path.is_file() or path.suffix in (".yaml", ".yml") or len(path.parts) > 1:
        return path
    return preset_path(str(spec))
