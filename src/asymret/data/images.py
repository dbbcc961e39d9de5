"""Image reading: decode, crop a query box, shrink the longer side, convert to tensors.

A query crop is shrunk by the same factor as its full image, as the reference test code
(cirtorch / AML ``ImagesFromList``: ``imresize(crop, imsize * max(crop.size) /
max(image.size))``): its longer side may be at most ``⌊imsize · crop side / image side⌋``
(:func:`crop_imsize`), so a query's object appears at the scale it would have in a database
image. The header-only size prediction (:func:`asymret.features.resized_size`) follows the
same rule.

Errors name the file and the problem (missing, unreadable, corrupt), so a bad image among
100,000 can be found and fixed.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from asymret.errors import AsymretError

DEFAULT_SCALES = (1.0, 1 / math.sqrt(2), 0.5)
"""Multi-scale extraction as the reference project: scales 1, 1/√2 and 1/2."""


class ImageReadError(AsymretError):
    """An image file is missing, unreadable or corrupt; the message names it."""


@contextmanager
def open_image(path: Path, action: str) -> Iterator[Image.Image]:
    """``Image.open`` whose failures become ImageReadError naming the file and ``action``."""
    try:
        with Image.open(path) as handle:
            yield handle
    except FileNotFoundError:
        raise ImageReadError(f"{path}: image file not found") from None
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageReadError(f"{path}: cannot {action} ({exc})") from None


def crop_imsize(imsize: int, crop_size: Sequence[int], image_size: Sequence[int]) -> int:
    """Longest side allowed for a crop of an image resized to ``imsize``.

    The crop shrinks by the image's factor ``imsize / max(image_size)``:
    ``⌊imsize · max(crop_size) / max(image_size)⌋`` (the reference passes this float to PIL's
    ``thumbnail``, which floors it), at least 1. For a crop that is the whole image it is
    ``imsize``.

    Args:
        imsize: longer side of the full image after resizing.
        crop_size: ``(width, height)`` of the crop in pixels.
        image_size: ``(width, height)`` of the full image in pixels.
    """
    return max(1, math.floor(imsize * max(crop_size) / max(image_size)))


def load_image(
    path: str | Path,
    imsize: int | None = None,
    bbox: Sequence[float] | None = None,
) -> Image.Image:
    """Read an RGB image, crop it to ``bbox`` and shrink it as the full image to ``imsize``.

    Args:
        path: image file.
        imsize: maximum length of the full image's longer side (aspect ratio kept, never
            enlarged); a crop is shrunk by the same factor, to at most :func:`crop_imsize`.
            ``None`` keeps the size.
        bbox: ``[x1, y1, x2, y2]`` crop box in pixels (revisitop query boxes); PIL rounds
            it to whole pixels.

    Raises:
        ImageReadError: the file is missing, cannot be decoded, or the box is empty.
    """
    path = Path(path)
    with open_image(path, "decode image") as handle:
        handle.load()
        image = handle.convert("RGB")
    limit = imsize
    if bbox is not None:
        x1, y1, x2, y2 = (float(v) for v in bbox)
        if not (x2 > x1 and y2 > y1):
            raise ImageReadError(f"{path}: empty crop box {list(bbox)}")
        full_size = image.size
        image = image.crop((x1, y1, x2, y2))
        if min(image.size) <= 0:  # the box rounds to no whole pixel
            raise ImageReadError(f"{path}: empty crop box {list(bbox)}")
        if imsize is not None:
            limit = crop_imsize(imsize, image.size, full_size)
    if limit is not None and max(image.size) > limit:
        image.thumbnail((limit, limit), Image.Resampling.LANCZOS)
    return image


def to_tensor(image: Image.Image) -> torch.Tensor:
    """PIL RGB image → (3, H, W) float32 tensor in [0, 1]."""
    array = np.asarray(image, dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255.0)


def rescale(images: torch.Tensor, scale: float) -> torch.Tensor:
    """(N, 3, H, W) → (N, 3, ⌊H·s⌋, ⌊W·s⌋), bilinear as the reference project; s = 1 is a no-op."""
    if scale == 1.0:
        return images
    return F.interpolate(images, scale_factor=scale, mode="bilinear", align_corners=False)
