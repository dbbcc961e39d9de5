"""Your own photos: a folder of images plus ``images.csv``.

The CSV has a header and one row per image::

    path,instance,role,x1,y1,x2,y2
    train/bridge_001.jpg,bridge,train,,,,
    train/bridge_002.jpg,bridge,train,,,,
    test/tower_q1.jpg,tower,query,40,30,380,410
    test/tower_017.jpg,tower,database,,,,
    test/street_003.jpg,none,database,,,,

- ``path``: image file, relative to the folder holding the CSV.
- ``instance``: the object or place shown; images with the same instance match.
- ``role`` (optional column): ``train`` (default when empty), ``query`` or ``database``.
- ``x1,y1,x2,y2`` (optional columns): the query's box in pixels; empty = whole image.

Rows with role ``train`` form a training db in the SfM-120k structure: clusters are
instances and every ordered pair of images of one instance is a positive pair. Rows with
roles ``query`` and ``database`` form a test set in the revisitop structure: a query's
positives are the database images of its instance, all listed as ``easy`` (so Easy and
Medium agree and Hard has no positives); ``junk`` is empty.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from asymret.data.images import ImageReadError, load_image
from asymret.data.revisitop import RevisitopDataset
from asymret.data.sfm120k import TrainingDb
from asymret.errors import AsymretError

CSV_NAME = "images.csv"
ROLES = ("train", "query", "database")
BOX_COLUMNS = ("x1", "y1", "x2", "y2")


@dataclass(frozen=True)
class PhotoRow:
    """One CSV row: image path (relative), instance, role, optional query box."""

    path: str
    instance: str
    role: str
    bbox: tuple[float, float, float, float] | None


@dataclass
class PhotoFolder:
    """A parsed photo folder. Build with :meth:`load`."""

    directory: Path
    rows: list[PhotoRow]
    problems: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, directory: str | Path, strict: bool = True) -> PhotoFolder:
        """Parse ``<directory>/images.csv``.

        Args:
            directory: the photo folder.
            strict: raise on the first malformed row; otherwise collect problems in
                :attr:`problems` and skip those rows.

        Raises:
            AsymretError: missing CSV or columns, or (strict) a malformed row, naming the line.
        """
        directory = Path(directory)
        csv_path = directory / CSV_NAME
        if not csv_path.is_file():
            raise AsymretError(f"{csv_path}: not found; a photo folder needs an {CSV_NAME}")
        try:
            text = csv_path.read_bytes().decode("utf-8-sig")  # a spreadsheet's BOM is fine
        except UnicodeDecodeError as exc:
            line = csv_path.read_bytes()[: exc.start].count(b"\n") + 1
            raise AsymretError(
                f"{csv_path}:{line}: not UTF-8 text (byte {exc.object[exc.start]:#04x} at "
                f"offset {exc.start}); save the CSV as UTF-8"
            ) from None
        reader = csv.DictReader(io.StringIO(text, newline=""))
        columns = [c.strip() for c in reader.fieldnames or []]
        if not {"path", "instance"} <= set(columns):
            raise AsymretError(f"{csv_path}: header must name 'path' and 'instance' columns")
        folder = cls(directory, [])
        seen: set[str] = set()
        try:
            for line_number, raw in enumerate(reader, start=2):
                row = {k.strip(): (v or "").strip() for k, v in raw.items() if k is not None}
                try:
                    parsed = _parse_row(row)
                    if parsed.path in seen:
                        raise ValueError(f"'{parsed.path}' is listed twice")
                except ValueError as exc:
                    message = f"{csv_path}:{line_number}: {exc}"
                    if strict:
                        raise AsymretError(message) from None
                    folder.problems.append(message)
                    continue
                seen.add(parsed.path)
                folder.rows.append(parsed)
        except csv.Error as exc:
            raise AsymretError(f"{csv_path}:{reader.line_num}: malformed CSV ({exc})") from None
        return folder

    def image_path(self, row: PhotoRow) -> Path:
        return self.directory / row.path

    def find_unreadable(self) -> list[str]:
        """Decode every image; one message per missing or unreadable file."""
        messages = []
        for row in self.rows:
            try:
                image = load_image(self.image_path(row))
            except ImageReadError as exc:
                messages.append(str(exc))
                continue
            if row.bbox is not None:
                x2, y2 = row.bbox[2:]
                if x2 > image.width or y2 > image.height:
                    messages.append(
                        f"{self.image_path(row)}: box {list(row.bbox)} exceeds the image "
                        f"{image.width}x{image.height}"
                    )
        return messages

    def training_db(self) -> TrainingDb:
        """Rows with role ``train`` as a training db; positives: all pairs within an instance."""
        train = [r for r in self.rows if r.role == "train"]
        names = sorted({r.instance for r in train})
        cluster_of = {name: i for i, name in enumerate(names)}
        clusters = np.array([cluster_of[r.instance] for r in train], dtype=np.int64)
        pairs = [
            (i, j)
            for i in range(len(train))
            for j in np.flatnonzero(clusters == clusters[i]).tolist()
            if j != i
        ]
        pair_array = np.array(pairs, dtype=np.int64).reshape(-1, 2)
        return TrainingDb(
            split="train",
            cids=[r.path for r in train],
            paths=[self.image_path(r) for r in train],
            clusters=clusters,
            query_indices=pair_array[:, 0],
            positive_indices=pair_array[:, 1],
        )

    def training_name(self) -> str:
        """A name for the training rows' stored vectors (a teacher bank's collection):
        ``<folder name>-<8 hex digits>`` (:meth:`collection_name` of the training rows)."""
        return self.collection_name(("train",))

    def collection_name(self, roles: Sequence[str]) -> str:
        """A name for the stored vectors of the rows with ``roles`` (a bank's collection):
        ``<folder name>-<8 hex digits>``, the digits a digest of the folder's resolved path
        and, per row, its path, instance, role and box, and its image's resolved path, size
        in bytes and modification time. Stable while none of them changes, with no path
        separator; two folders of the same name, a folder whose rows were edited, or one with
        an image rewritten, replaced or re-linked get different names, so their vectors are
        never mixed (a missing image counts as such, and fails when it is read)."""
        directory = self.directory.expanduser().resolve()
        digest = hashlib.sha256(str(directory).encode())
        for row in self.rows:
            if row.role in roles:
                digest.update(f"\n{row.path}\t{row.instance}\t{row.role}\t{row.bbox}\t"
                              f"{_file_stamp(self.image_path(row))}".encode())
        return f"{directory.name or 'photos'}-{digest.hexdigest()[:8]}"

    def test_set(self) -> RevisitopDataset:
        """Rows with roles ``query`` / ``database`` as a revisitop-structured test set."""
        queries = [r for r in self.rows if r.role == "query"]
        database = [r for r in self.rows if r.role == "database"]
        database_instances = np.array([r.instance for r in database], dtype=object)
        gnd = []
        for query in queries:
            if query.bbox is not None:
                bbox = list(query.bbox)
            else:
                width, height = load_image(self.image_path(query)).size
                bbox = [0.0, 0.0, float(width), float(height)]
            positives = np.flatnonzero(database_instances == query.instance).tolist()
            gnd.append({"bbx": bbox, "easy": positives, "hard": [], "junk": []})
        return RevisitopDataset(
            name=self.directory.name,
            image_dir=self.directory,
            imlist=[r.path for r in database],
            qimlist=[r.path for r in queries],
            gnd=gnd,
            suffix="",
            collection=self.collection_name(("query", "database")),
        )

    def summary(self) -> str:
        """Counts of images per role and of instances."""
        counts = {role: sum(r.role == role for r in self.rows) for role in ROLES}
        instances = len({r.instance for r in self.rows})
        return (
            f"{len(self.rows)} images of {instances} instances: {counts['train']} train, "
            f"{counts['query']} query, {counts['database']} database"
        )


def _file_stamp(path: Path) -> str:
    """``<resolved path>:<size>:<mtime in ns>`` of an image file, or ``<path>:missing``."""
    try:
        resolved = os.path.realpath(path)
        stat = os.stat(resolved)
    except OSError:
        return f"{path}:missing"
    return f"{resolved}:{stat.st_size}:{stat.st_mtime_ns}"


def _parse_row(row: dict[str, str]) -> PhotoRow:
    path, instance = row.get("path", ""), row.get("instance", "")
    if not path:
        raise ValueError("empty path")
    if any(ord(character) < 32 for character in path):
        raise ValueError(f"{path!r} holds a control character")
    if not instance:
        raise ValueError(f"'{path}' has no instance")
    role = row.get("role", "") or "train"
    if role not in ROLES:
        raise ValueError(f"'{path}' has role '{role}'; expected one of {', '.join(ROLES)}")
    box_values = [row.get(c, "") for c in BOX_COLUMNS]
    bbox = None
    if any(box_values):
        try:
            x1, y1, x2, y2 = (float(v) for v in box_values)
        except ValueError:
            raise ValueError(f"'{path}' has an incomplete or non-numeric box") from None
        if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
            raise ValueError(f"'{path}' has a box with a non-finite number {box_values}")
        if not (0 <= x1 < x2 and 0 <= y1 < y2):
            raise ValueError(f"'{path}' has an empty or negative box {box_values}")
        if role != "query":
            raise ValueError(f"'{path}' has a box but role '{role}'; boxes are for queries")
        bbox = (x1, y1, x2, y2)
    return PhotoRow(path, instance, role, bbox)
