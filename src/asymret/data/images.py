"""Image reading: decode, crop a query box, shrink the longer side, convert to tensors.

A query crop is shrunk by the same factor as its full image, as the reference test code
(cirtorch / AML ``ImagesFromList``: ``imresize(crop, imsize * max(crop.size) /
max(image.size))``): its longer side may be at most ``⌊imsize · crop side / image side⌋``
(:func:`crop_imsize`), so a query's object appears at the scale it would have in a database
image. The header-only size prediction (:func:`asymret.features.resized_size`) follows the
same rule (:func:`loaded_size`).

JPEG draft decoding (``load_image(..., draft=True)``, off by default: the published protocol
decodes every image in full) lets libjpeg decode at 1/2, 1/4 or 1/8 scale (DCT scaling) when
the image is to shrink at least that much, then resamples to exactly the size a full decode
gives. Sizes are unchanged; pixel values differ slightly (``benchmarks/decode.py``), so a
feature store records it (:func:`asymret.features.extraction_meta`).

Errors name the file and the problem (missing, unreadable, corrupt, too many pixels), so a
bad image among 100,000 can be found and fixed.

Odd inputs, and what they become:

- 16-bit images (PNG ``I;16``, and Pillow's 32-bit ``I`` mode, read as 16-bit values) are
  scaled to 8 bits, ``round(v · 255 / 65535)``; Pillow's own ``convert("RGB")`` clips them
  to 255, all white. Float images (``F``) are refused: their range is not known.
- An image of more than :func:`max_image_pixels` pixels (default 100 million; the
  environment variable ``ASYMRET_MAX_IMAGE_PIXELS`` sets it, 0 for Pillow's own limit only)
  is refused from its header, before it is decoded: a 13,000² PNG would take 1.5 GB.
- A query box reaching outside its image is clipped to the image, with a warning naming the
  file (:class:`BoxClippedWarning`); one wholly outside is refused. The revisited protocol's
  query is the image content inside the box: what lies beyond the image is no part of it,
  and the official boxes all lie inside their images. The reference code crops with PIL,
  which pads the outside black, and the features would then describe the padding.
"""

from __future__ import annotations

import math
import os
import warnings
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

DRAFT_SCALES = (8, 4, 2)
"""The reductions a JPEG decoder can apply while decoding (DCT scaling), largest first."""


DEFAULT_MAX_IMAGE_PIXELS = 100_000_000
"""Most pixels an image may have unless ``ASYMRET_MAX_IMAGE_PIXELS`` says otherwise."""

MAX_PIXELS_VARIABLE = "ASYMRET_MAX_IMAGE_PIXELS"

_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


class ImageReadError(AsymretError):
    """An image file is missing, unreadable or corrupt; the message names it."""


class BoxClippedWarning(UserWarning):
    """A crop box reached outside its image and was clipped to it; the message names the file."""


def max_image_pixels() -> int | None:
    """The pixel limit: ``$ASYMRET_MAX_IMAGE_PIXELS`` if set (0: none of ours, Pillow's
    decompression-bomb error still applies), else :data:`DEFAULT_MAX_IMAGE_PIXELS`.

    Raises:
        AsymretError: the variable is not a whole number of 0 or more.
    """
    text = os.environ.get(MAX_PIXELS_VARIABLE, "").strip()
    if not text:
        return DEFAULT_MAX_IMAGE_PIXELS
    try:
        limit = int(text)
    except ValueError:
        limit = -1
    if limit < 0:
        raise AsymretError(f"{MAX_PIXELS_VARIABLE}={text!r}: expected a whole number of pixels "
                           "(0 for no limit)")
    return limit or None


@contextmanager
def open_image(path: Path, action: str) -> Iterator[Image.Image]:
    """``Image.open`` whose failures become ImageReadError naming the file and ``action``;
    an image over :func:`max_image_pixels` is refused from its header."""
    limit = max_image_pixels()
    try:
        with warnings.catch_warnings():
            # Our own limit replaces Pillow's warning (its hard error above twice its limit
            # stays).
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            opened = Image.open(path)
        with opened as handle:
            width, height = handle.size
            if limit is not None and width * height > limit:
                raise ImageReadError(
                    f"{path}: {width}x{height} = {width * height:,} pixels, over the limit of "
                    f"{limit:,}; shrink the image or raise {MAX_PIXELS_VARIABLE}"
                )
            yield handle
    except ImageReadError:
        raise
    except FileNotFoundError:
        raise ImageReadError(f"{path}: image file not found") from None
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageReadError(f"{path}: cannot {action} ({exc})") from None


def to_rgb(image: Image.Image, path: Path) -> Image.Image:
    """A decoded image as 8-bit RGB: 16-bit grey (``I;16*``, ``I``) scaled by 255/65535
    with rounding, every other mode by Pillow's ``convert``.

    Raises:
        ImageReadError: naming ``path``, for a float (``F``) image.
    """
    if image.mode in _SIXTEEN_BIT_MODES:
        values = np.clip(np.asarray(image, dtype=np.int64), 0, 65535)
        grey = ((values * 255 + 32767) // 65535).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    if image.mode == "F":
        raise ImageReadError(f"{path}: 32-bit float image, whose range is unknown; save it "
                             "with 8 or 16 bits per channel")
    return image.convert("RGB")


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


def thumbnail_size(width: int, height: int, imsize: int | None) -> tuple[int, int]:
    """Size of a ``width`` × ``height`` image after PIL's ``Image.thumbnail`` to
    ``(imsize, imsize)`` (its aspect-preserving rounding).

    Returns:
        ``(width, height)``; unchanged when ``imsize`` is ``None`` or not exceeded.
    """
    if imsize is None or max(width, height) <= imsize:
        return width, height
    aspect = width / height
    if aspect <= 1:
        new_width = min(
            math.floor(imsize * aspect),
            math.ceil(imsize * aspect),
            key=lambda n: abs(aspect - n / imsize),
        )
        return max(new_width, 1), imsize
    new_height = min(
        math.floor(imsize / aspect),
        math.ceil(imsize / aspect),
        key=lambda n: 0 if n == 0 else abs(aspect - imsize / n),
    )
    return imsize, max(new_height, 1)


def crop_pixels(
    path: str | Path, bbox: Sequence[float], image_size: Sequence[int] | None = None
) -> tuple[int, int, int, int]:
    """The whole-pixel box ``(x1, y1, x2, y2)`` PIL's ``crop`` makes of ``bbox`` (it rounds),
    clipped to an image of ``image_size`` ``(width, height)`` when given: a box reaching
    outside it warns (:class:`BoxClippedWarning`, naming the file, once per box and process).

    Raises:
        ImageReadError: naming ``path``, when the box is not finite, is empty, rounds to no
            whole pixel, or lies wholly outside the image.
    """
    x1, y1, x2, y2 = (float(v) for v in bbox)
    if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
        raise ImageReadError(f"{path}: crop box {list(bbox)} holds a non-finite number")
    box = (round(x1), round(y1), round(x2), round(y2))
    if not (x2 > x1 and y2 > y1) or box[2] <= box[0] or box[3] <= box[1]:
        raise ImageReadError(f"{path}: empty crop box {list(bbox)}")
    if image_size is None:
        return box
    width, height = image_size
    clipped = (max(box[0], 0), max(box[1], 0), min(box[2], width), min(box[3], height))
    if clipped == box:
        return box
    if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
        raise ImageReadError(
            f"{path}: crop box {list(bbox)} lies outside the {width}x{height} image"
        )
    warnings.warn(
        f"{path}: crop box {list(bbox)} reaches outside the {width}x{height} image; clipped "
        f"to {list(clipped)} (check the box with `asymret data check`)",
        BoxClippedWarning,
        stacklevel=1,
    )
    return clipped


def loaded_size(
    path: str | Path,
    image_size: Sequence[int],
    imsize: int | None = None,
    bbox: Sequence[float] | None = None,
) -> tuple[int, int]:
    """``(width, height)`` that :func:`load_image` returns for an image of ``image_size``
    pixels (with or without draft decoding): the crop, then the shrink to ``imsize``, a crop
    by its full image's factor (:func:`crop_imsize`).

    Raises:
        ImageReadError: naming ``path``, when the box is empty or outside the image.
    """
    width, height = image_size
    if bbox is not None:
        x1, y1, x2, y2 = crop_pixels(path, bbox, image_size)
        width, height = x2 - x1, y2 - y1
        if imsize is not None:
            imsize = crop_imsize(imsize, (width, height), image_size)
    return thumbnail_size(width, height, imsize)


def draft_scale(
    image_size: Sequence[int], imsize: int | None, box: Sequence[int] | None = None
) -> int:
    """The JPEG decoder's reduction for loading an image of ``image_size`` to ``imsize``: the
    largest of 8, 4, 2 that is at most ``max(image_size) / imsize``, else 1 (no draft).

    A crop (``box``, whole pixels, before clipping) shrinks by its full image's factor, so the
    same reduction applies; a box reaching outside the image (which is clipped) is decoded in
    full, as without draft.
    """
    if imsize is None:
        return 1
    width, height = image_size
    if box is not None and not (0 <= box[0] and 0 <= box[1] and box[2] <= width
                                and box[3] <= height):
        return 1
    for scale in DRAFT_SCALES:
        if scale * imsize <= max(width, height) and scale <= min(width, height):
            return scale
    return 1


def load_image(
    path: str | Path,
    imsize: int | None = None,
    bbox: Sequence[float] | None = None,
    *,
    draft: bool = False,
) -> Image.Image:
    """Read an RGB image, crop it to ``bbox`` and shrink it as the full image to ``imsize``.

    Args:
        path: image file.
        imsize: maximum length of the full image's longer side (aspect ratio kept, never
            enlarged); a crop is shrunk by the same factor, to at most :func:`crop_imsize`.
            ``None`` keeps the size.
        bbox: ``[x1, y1, x2, y2]`` crop box in pixels (revisitop query boxes); PIL rounds
            it to whole pixels; it is clipped to the image (:func:`crop_pixels`).
        draft: let a JPEG decode at 1/2, 1/4 or 1/8 scale (:func:`draft_scale`) when the
            full image is to shrink at least that much, then resample (LANCZOS) the box's
            region of the smaller image to the size a full decode gives
            (:func:`loaded_size`). Faster; pixel values differ slightly. Other formats, and
            images that shrink less than 2×, are decoded in full.

    Raises:
        ImageReadError: the file is missing, cannot be decoded, has too many pixels or a float
            mode, or the box is empty or outside the image.
    """
    path = Path(path)
    region = None
    with open_image(path, "decode image") as handle:
        full_size = handle.size
        box = None if bbox is None else crop_pixels(path, bbox, full_size)
        unclipped = None if bbox is None else crop_pixels(path, bbox)
        scale = draft_scale(full_size, imsize, unclipped) if draft else 1
        if scale > 1 and handle.draft("RGB", (full_size[0] // scale,
                                              full_size[1] // scale)) is not None:
            # Drafted pixel (i, j) covers full-size pixels [i·s, (i+1)·s) × [j·s, (j+1)·s).
            region = tuple(v / scale for v in (box or (0, 0, *full_size)))
        handle.load()
        image = to_rgb(handle, path)
    if region is not None and image.size != full_size:
        target = loaded_size(path, full_size, imsize, bbox)
        return image.resize(target, Image.Resampling.LANCZOS, box=region, reducing_gap=2.0)
    limit = imsize
    if box is not None:
        image = image.crop(box)
        if imsize is not None:
            limit = crop_imsize(imsize, image.size, full_size)
    if limit is not None and max(image.size) > limit:
        image.thumbnail((limit, limit), Image.Resampling.LANCZOS)
    return image


def to_tensor(image: Image.Image) -> torch.Tensor:
    """PIL RGB image → (3, H, W) float32 tensor in [0, 1]."""
    return unit_tensor(np.asarray(image, dtype=np.uint8))


def unit_tensor(pixels: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 pixels → (3, H, W) float32 tensor ``pixels / 255`` (a channels-last
    view, as :func:`to_tensor` has always returned).

    The division runs in NumPy: bit for bit what ``tensor.float().div_(255)`` gives (the same
    IEEE division of each of the 256 values, checked in the tests), but in the calling thread.
    Torch splits a tensor of more than 32k elements (a 160 px image) over its OpenMP threads;
    on an idle CPU that is as fast, but on the shared 2-core VM, with the other core busy,
    decoding 160 px images one after another took 17 ms an image instead of 0.2 ms.
    """
    return torch.from_numpy(pixels.astype(np.float32) / np.float32(255.0)).permute(2, 0, 1)


def rescale(images: torch.Tensor, scale: float) -> torch.Tensor:
    """(N, 3, H, W) → (N, 3, ⌊H·s⌋, ⌊W·s⌋), bilinear as the reference project; s = 1 is a no-op."""
    if scale == 1.0:
        return images
    return F.interpolate(images, scale_factor=scale, mode="bilinear", align_corners=False)
