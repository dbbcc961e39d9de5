"""Image reading: decode, crop a query box, shrink the longer side, convert to tensors.

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


def load_image(
    path: str | Path,
    imsize: int | None = None,
    bbox: Sequence[float] | None = None,
) -> Image.Image:
    """Read an RGB image, crop it to ``bbox`` and shrink it so its longer side is ≤ ``imsize``.

    Args:
        path: image file.
        imsize: maximum length of the longer side after the crop (aspect ratio kept, never
            enlarged); ``None`` keeps the size.
        bbox: ``[x1, y1, x2, y2]`` crop box in pixels (revisitop query boxes).

    Raises:
        ImageReadError: the file is missing, cannot be decoded, or the box is empty.
    """
    path = Path(path)
    with open_image(path, "decode image") as handle:
        handle.load()
        image = handle.convert("RGB")
    if bbox is not None:
        x1, y1, x2, y2 = (float(v) for v in bbox)
        if not (x2 > x1 and y2 > y1):
            raise ImageReadError(f"{path}: empty crop box {list(bbox)}")
        image = image.crop((x1, y1, x2, y2))
    if imsize is not None and max(image.size) > imsize:
        image.thumbnail((imsize, imsize), Image.Resampling.LANCZOS)
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
