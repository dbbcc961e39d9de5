"""A dataset of image files read on demand, optionally cropped, and resized; and an
in-memory cache of the decoded images that a training process can share between runs.

Why a decode cache: ``asymret demo`` trains some fifteen students on the same training
images, each for several epochs and mining passes, and each pass decodes every image again.
With only the trunk's last stage trained on cached activations, decoding and resizing a
160 px JPEG to 80 px costs 0.6× the image's forward and backward through that stage, and
2.2× a mining pass's forward of it (``benchmarks/decode.py``; draft decoding: 0.26× and 0.9×).
:class:`DecodeCache` keeps the decoded images (uint8, a quarter of the float size) so that
each is decoded once per process; a hit costs 0.03× a decode.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from asymret.data.images import ImageReadError, load_image, unit_tensor

DecodeKey = tuple[Hashable, ...]


class DecodeCache:
    """Decoded images in memory, as (H, W, 3) uint8 arrays, the least recently used dropped
    once they exceed ``max_bytes``.

    An entry is keyed by the file (path, size in bytes and modification time, so a rewritten
    file is decoded again) and by how it was decoded (imsize, crop box, draft). The arrays
    are returned as they were decoded; :class:`ImageList` converts a copy to float.

    Args:
        max_bytes: most bytes of pixels kept (0 keeps nothing).

    Attributes:
        hits, misses: look-ups that found / did not find their image.
    """

    def __init__(self, max_bytes: int):
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be 0 or more, got {max_bytes}")
        self.max_bytes = int(max_bytes)
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[DecodeKey, np.ndarray] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def __getstate__(self) -> dict:
        """A cache travels empty (to a DataLoader worker, which would not use it anyway)."""
        return {**self.__dict__, "bytes": 0, "_entries": OrderedDict()}

    @staticmethod
    def key(
        path: Path, imsize: int | None, bbox: Sequence[float] | None, draft: bool
    ) -> DecodeKey | None:
        """The entry's key, or ``None`` when the file cannot be examined (it is then decoded
        and fails as usual)."""
        try:
            stat = os.stat(path)
        except OSError:
            return None
        box = None if bbox is None else tuple(float(v) for v in bbox)
        return (str(path), stat.st_size, stat.st_mtime_ns, imsize, box, bool(draft))

    def get(self, key: DecodeKey) -> np.ndarray | None:
        """The image stored under ``key`` (now the most recently used), or ``None``."""
        image = self._entries.get(key)
        if image is None:
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return image

    def put(self, key: DecodeKey, image: np.ndarray) -> None:
        """Keep ``image`` under ``key``, dropping the least recently used past the bound."""
        if image.nbytes > self.max_bytes:
            return
        previous = self._entries.pop(key, None)
        if previous is not None:
            self.bytes -= previous.nbytes
        self._entries[key] = image
        self.bytes += image.nbytes
        self._evict()

    def resize(self, max_bytes: int) -> None:
        """Change the bound, dropping the least recently used images past it."""
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be 0 or more, got {max_bytes}")
        self.max_bytes = int(max_bytes)
        self._evict()

    def _evict(self) -> None:
        while self.bytes > self.max_bytes:
            _, dropped = self._entries.popitem(last=False)
            self.bytes -= dropped.nbytes

    def clear(self) -> None:
        self._entries.clear()
        self.bytes = 0


_SHARED_CACHE: DecodeCache | None = None


def shared_decode_cache(max_bytes: int) -> DecodeCache:
    """This process's decode cache, bounded to ``max_bytes`` (created on the first call, its
    bound changed on later ones): every training run of the process reads the same one."""
    global _SHARED_CACHE
    if _SHARED_CACHE is None:
        _SHARED_CACHE = DecodeCache(max_bytes)
    else:
        _SHARED_CACHE.resize(max_bytes)
    return _SHARED_CACHE


class ImageList(Dataset):
    """Images by path; item ``i`` is ``(image (3, H, W) in [0, 1], i)``.

    Args:
        paths: image files.
        imsize: longer side after resizing (never enlarged); ``None`` keeps the size.
        bboxes: optional ``[x1, y1, x2, y2]`` crop per image (``None`` entries: no crop).
        skip_unreadable: return ``None`` for an unreadable image instead of raising, and
            remember its path in :attr:`skipped` (training can then skip it and count).
        draft: JPEG draft decoding (see :func:`~asymret.data.images.load_image`): faster
            when images shrink 2× or more, same sizes, slightly different pixels. Off as the
            published protocol; a feature store records it.
        decode_cache: keep decoded images in this cache and read them from it (the items
            are the same as without it). Used in the main process only: a DataLoader worker
            decodes as without a cache (its copy would be dropped with the worker).
    """

    def __init__(
        self,
        paths: Sequence[str | Path],
        imsize: int | None = None,
        bboxes: Sequence[Sequence[float] | None] | None = None,
        skip_unreadable: bool = False,
        *,
        draft: bool = False,
        decode_cache: DecodeCache | None = None,
    ):
        if bboxes is not None and len(bboxes) != len(paths):
            raise ValueError(f"{len(bboxes)} boxes for {len(paths)} images")
        self.paths = [Path(p) for p in paths]
        self.imsize = imsize
        self.bboxes = bboxes
        self.skip_unreadable = skip_unreadable
        self.draft = bool(draft)
        self.decode_cache = decode_cache
        self.skipped: list[Path] = []

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, indices: Sequence[int]) -> ImageList:
        """The images ``indices`` (in that order) with the same size, boxes, skipping,
        decoding and decode cache."""
        return ImageList(
            [self.paths[int(i)] for i in indices],
            self.imsize,
            bboxes=None if self.bboxes is None else [self.bboxes[int(i)] for i in indices],
            skip_unreadable=self.skip_unreadable,
            draft=self.draft,
            decode_cache=self.decode_cache,
        )

    def drafted(self, draft: bool = True) -> ImageList:
        """The same images, decoded with (or, ``draft=False``, without) JPEG draft mode."""
        images = self.subset(range(len(self)))
        images.draft = bool(draft)
        return images

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int] | None:
        path = self.paths[index]
        bbox = self.bboxes[index] if self.bboxes is not None else None
        cache = self.decode_cache if get_worker_info() is None else None
        key = None if cache is None else cache.key(path, self.imsize, bbox, self.draft)
        image = None if key is None else cache.get(key)
        if image is None:
            try:
                decoded = load_image(path, self.imsize, bbox, draft=self.draft)
                image = np.asarray(decoded, dtype=np.uint8)
            except ImageReadError:
                if not self.skip_unreadable:
                    raise
                self.skipped.append(path)
                return None
            if key is not None:
                cache.put(key, image)
        return unit_tensor(image), index
