"""Revisited Oxford and Paris (Radenović et al., CVPR 2018), and the R1M distractors.

Layout under the data root (as ``asymret download`` writes it)::

    <root>/roxford5k/gnd_roxford5k.pkl     <root>/roxford5k/jpg/<name>.jpg
    <root>/rparis6k/gnd_rparis6k.pkl       <root>/rparis6k/jpg/<name>.jpg
    <root>/revisitop1m/revisitop1m.txt     <root>/revisitop1m/jpg/<name>.jpg

The ground truth ``gnd_<name>.pkl`` is a pickle of ``{"imlist": [str], "qimlist": [str],
"gnd": [{"bbx": [x1, y1, x2, y2], "easy": [int], "hard": [int], "junk": [int]}]}``: the
database and query image names, and per query its crop box (optional) and the ``imlist``
indices of its easy, hard and junk images. :func:`load_gnd` reads and checks it,
:func:`write_gnd` writes it.

Any dataset in the same format (the embedded ``synth`` benchmark, your own photos) is read
by :class:`RevisitopDataset` too. Query images are cropped to their ``bbx`` box.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from asymret.data.image_list import ImageList
from asymret.data.root import resolve_data_root
from asymret.errors import AsymretError
from asymret.safe_pickle import load_pickle

OFFICIAL_TEST_SETS = ("roxford5k", "rparis6k")
DISTRACTORS_NAME = "revisitop1m"
GND_LISTS = ("easy", "hard", "junk")
"""The per-query index lists of a ground-truth file."""


def load_gnd(path: str | Path) -> dict[str, Any]:
    """Read and validate a revisitop ground-truth pickle (``gnd_roxford5k.pkl`` ...).

    Args:
        path: The pickle, read with the restricted unpickler.

    Returns:
        ``{"imlist": [str], "qimlist": [str], "gnd": [{"easy", "hard", "junk": [int],
        "bbx": [x1, y1, x2, y2] (when the file has it)}]}`` with one gnd entry per query.

    Raises:
        AsymretError: unreadable file, missing key, wrong type, or an index outside imlist;
            the message names the file and the key.
    """
    return _checked_gnd(load_pickle(path), str(path))


def write_gnd(
    path: str | Path,
    imlist: Sequence[str],
    qimlist: Sequence[str],
    gnd: Sequence[Mapping[str, Any]],
    *,
    protocol: int = 3,
) -> Path:
    """Write a revisitop ground-truth pickle that :func:`load_gnd` reads back unchanged.

    Args:
        path: The file to write (its folder is created).
        imlist: Database image names.
        qimlist: Query image names.
        gnd: Per query ``easy``, ``hard`` and ``junk`` (``imlist`` indices) and optionally
            ``bbx`` (four numbers); written as plain lists of ints and floats, in the key order
            ``bbx``, ``easy``, ``hard``, ``junk``.
        protocol: Pickle protocol.

    Returns:
        ``path`` as a Path.

    Raises:
        AsymretError: the content is one :func:`load_gnd` would refuse (nothing is written).
    """
    path = Path(path)
    checked = _checked_gnd(
        {"imlist": list(imlist), "qimlist": list(qimlist), "gnd": list(gnd)}, str(path)
    )
    checked["gnd"] = [
        {key: entry[key] for key in ("bbx", *GND_LISTS) if key in entry}
        for entry in checked["gnd"]
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(checked, protocol=protocol))
    return path


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
        collection: the name its stored vectors are kept under in a bank
            (:class:`~asymret.bank.TeacherBank`); ``None``: ``name``. A photo folder's
            names its folder's resolved path and its images' sizes and modification times
            (:meth:`~asymret.data.folder.PhotoFolder.test_set`), so that other photos of the
            same name never reuse its vectors.
    """

    name: str
    image_dir: Path
    imlist: list[str]
    qimlist: list[str]
    gnd: list[dict]
    suffix: str = ".jpg"
    collection: str | None = None

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


def _checked_gnd(data: Any, source: str) -> dict[str, Any]:
    """The ground truth as :func:`load_gnd` returns it, or an error naming ``source``."""
    if not isinstance(data, Mapping):
        raise AsymretError(f"{source}: expected a dict, got {type(data).__name__}")
    for key in ("imlist", "qimlist", "gnd"):
        if key not in data:
            raise AsymretError(f"{source}: missing key '{key}'")
        if not isinstance(data[key], list | tuple):
            raise AsymretError(f"{source}: '{key}' must be a list, got {type(data[key]).__name__}")
    imlist = _names(data["imlist"], f"{source}: 'imlist'")
    qimlist = _names(data["qimlist"], f"{source}: 'qimlist'")
    if len(data["gnd"]) != len(qimlist):
        raise AsymretError(
            f"{source}: 'gnd' has {len(data['gnd'])} entries but 'qimlist' has {len(qimlist)}"
        )
    gnd = [
        _query_gnd(entry, f"{source}: gnd[{query}]", len(imlist))
        for query, entry in enumerate(data["gnd"])
    ]
    return {"imlist": imlist, "qimlist": qimlist, "gnd": gnd}


def _names(value: Sequence[Any], what: str) -> list[str]:
    for position, name in enumerate(value):
        if not isinstance(name, str):
            raise AsymretError(f"{what}[{position}] must be a string, got {type(name).__name__}")
    return list(value)


def _query_gnd(entry: Any, what: str, num_images: int) -> dict[str, list]:
    if not isinstance(entry, Mapping):
        raise AsymretError(f"{what} must be a dict, got {type(entry).__name__}")
    checked: dict[str, list] = {}
    for name in GND_LISTS:
        if name not in entry:
            raise AsymretError(f"{what}: missing key '{name}'")
        array = np.asarray(entry[name])
        if array.ndim != 1 or (array.size and not np.issubdtype(array.dtype, np.integer)):
            raise AsymretError(f"{what}['{name}'] must be a list of integer indices")
        bad = array[(array < 0) | (array >= num_images)] if array.size else array
        if bad.size:
            raise AsymretError(
                f"{what}['{name}'] holds index {int(bad[0])} outside imlist ({num_images} images)"
            )
        checked[name] = array.astype(np.int64).tolist()
    if "bbx" in entry:
        box = np.asarray(entry["bbx"])
        if box.shape != (4,) or not np.issubdtype(box.dtype, np.number):
            raise AsymretError(f"{what}['bbx'] must be four numbers [x1, y1, x2, y2]")
        checked["bbx"] = box.astype(np.float64).tolist()
    return checked
