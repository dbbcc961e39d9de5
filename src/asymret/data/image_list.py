"""A dataset of image files read on demand, optionally cropped, and resized."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch.utils.data import Dataset

from asymret.data.images import ImageReadError, load_image, to_tensor


class ImageList(Dataset):
    """Images by path; item ``i`` is ``(image (3, H, W) in [0, 1], i)``.

    Args:
        paths: image files.
        imsize: longer side after resizing (never enlarged); ``None`` keeps the size.
        bboxes: optional ``[x1, y1, x2, y2]`` crop per image (``None`` entries: no crop).
        skip_unreadable: return ``None`` for an unreadable image instead of raising, and
            remember its path in :attr:`skipped` (training can then skip it and count).
    """

    def __init__(
        self,
        paths: Sequence[str | Path],
        imsize: int | None = None,
        bboxes: Sequence[Sequence[float] | None] | None = None,
        skip_unreadable: bool = False,
    ):
        if bboxes is not None and len(bboxes) != len(paths):
            raise ValueError(f"{len(bboxes)} boxes for {len(paths)} images")
        self.paths = [Path(p) for p in paths]
        self.imsize = imsize
        self.bboxes = bboxes
        self.skip_unreadable = skip_unreadable
        self.skipped: list[Path] = []

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, indices: Sequence[int]) -> ImageList:
        """The images ``indices`` (in that order) with the same size, boxes and skipping."""
        return ImageList(
            [self.paths[int(i)] for i in indices],
            self.imsize,
            bboxes=None if self.bboxes is None else [self.bboxes[int(i)] for i in indices],
            skip_unreadable=self.skip_unreadable,
        )

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int] | None:
        bbox = self.bboxes[index] if self.bboxes is not None else None
        try:
            image = load_image(self.paths[index], self.imsize, bbox)
        except ImageReadError:
            if not self.skip_unreadable:
                raise
            self.skipped.append(self.paths[index])
            return None
        return to_tensor(image), index
