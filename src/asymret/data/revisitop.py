"""Revisited Oxford and Paris (Radenović et al., CVPR 2018), and the R1M distractors.

Layout under the data root (as ``asymret download`` writes it)::

    <root>/roxford5k/gnd_roxford5k.pkl     <root>/roxford5k/jpg/<name>.jpg
    <root>/rparis6k/gnd_rparis6k.pkl       <root>/rparis6k/jpg/<name>.jpg
    <root>/revisitop1m/revisitop1m.txt     <root>/revisitop1m/jpg/<name>.jpg

Any dataset in the same format (the embedded ``synth`` benchmark, your own photos) is read
by :class:`RevisitopDataset` too. Query images are cropped to their ``bbx`` box.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from asymret.data.image_list import ImageList
from asymret.data.root import resolve_data_root
from asymret.errors import AsymretError
from asymret.evaluate import load_gnd

OFFICIAL_TEST_SETS = ("roxford5k", "rparis6k")
DISTRACTORS_NAME = "revisitop1m"


@dataclass
class RevisitopDataset:
    """A revisitop-format test set: ground truth plus the query and database image paths.

    Attributes:
        name: e.g. ``"roxford5k"``.
        image_dir: folder the image names are relative to (``<root>/<name>/jpg``).
        imlist: database image names.
        qimlist: query image names.
        gnd: per query ``bbx``, ``easy``, ``hard``, ``junk``.
        suffix: appended to a name to give its file (``.jpg`` in the official sets).
    """

    name: str
    image_dir: Path
    imlist: list[str]
    qimlist: list[str]
    gnd: list[dict]
    suffix: str = ".jpg"

    @classmethod
    def load(cls, name: str, root: str | Path | None = None) -> RevisitopDataset:
        """Read ``<root>/<name>/gnd_<name>.pkl`` (restricted unpickler).

        Raises:
            AsymretError: the folder or ground-truth file is missing or malformed.
        """
        directory = resolve_data_root(root) / name
        gnd_path = directory / f"gnd_{name}.pkl"
        if not gnd_path.is_file():
            raise AsymretError(
                f"{gnd_path}: ground truth not found; get it with `asymret download {name}`"
                if name in OFFICIAL_TEST_SETS
                else f"{gnd_path}: ground truth not found"
            )
        data = load_gnd(gnd_path)
        imlist, qimlist = list(data["imlist"]), list(data["qimlist"])
        return cls(name, directory / "jpg", imlist, qimlist, data["gnd"])

    def image_path(self, image_name: str) -> Path:
        return self.image_dir / f"{image_name}{self.suffix}"

    def query_images(self, imsize: int | None = None) -> ImageList:
        """Query images cropped to their boxes, longer side ≤ ``imsize``."""
        return ImageList(
            [self.image_path(n) for n in self.qimlist],
            imsize,
            bboxes=[g.get("bbx") for g in self.gnd],
        )

    def database_images(
        self, imsize: int | None = None, distractors: list[Path] | None = None
    ) -> ImageList:
        """Database images, followed by ``distractors`` (indices in ``gnd`` stay valid)."""
        paths = [self.image_path(n) for n in self.imlist] + list(distractors or [])
        return ImageList(paths, imsize)


def distractor_paths(root: str | Path | None = None) -> list[Path]:
    """The R1M distractor images ``jpg/<line>``, in the order of ``revisitop1m.txt``.

    Raises:
        AsymretError: the list file is missing.
    """
    directory = resolve_data_root(root) / DISTRACTORS_NAME
    listing = directory / f"{DISTRACTORS_NAME}.txt"
    if not listing.is_file():
        raise AsymretError(
            f"{listing}: distractor list not found; get it with `asymret download revisitop1m`"
        )
    names = [line.strip() for line in listing.read_text().splitlines() if line.strip()]
    return [directory / "jpg" / name for name in names]
