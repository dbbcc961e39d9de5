"""Photographs shipped with scikit-image, and the surfaces and colours made from them.

Walls are tinted from grey photographs used as materials (``brick``, ``gravel``, ``moon`` ...);
murals, rose windows, mosaics, reliefs and signs are cut from ``astronaut``, ``coffee``,
``rocket``, ``hubble_deep_field``, ``text`` ...
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
from PIL import Image
from skimage import data as skimage_data

_WALL_MATERIALS = ("brick", "gravel", "moon", "cell", "coins", "camera")
_GROUND_MATERIALS = ("gravel", "brick", "grass", "coins", "moon")
_COLOUR_PHOTOS = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "immunohistochemistry",
    "hubble_deep_field",
    "retina",
    "colorwheel",
    "motorcycle",
)
_GREY_PHOTOS = ("camera", "coins", "moon", "clock", "cell", "astronaut", "chelsea")
_SIGN_PHOTOS = ("text", "page", "logo", "checkerboard")
_ROUND_PHOTOS = ("colorwheel", "immunohistochemistry", "hubble_deep_field", "retina", "coffee")


@functools.cache
def _photo(name: str) -> np.ndarray:
    """A scikit-image sample photograph as float32 (H, W, 3) in [0, 1], longer side <= 512."""
    if name == "motorcycle":
        image = skimage_data.stereo_motorcycle()[0]
    else:
        image = getattr(skimage_data, name)()
    array = np.asarray(image)
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    array = array.astype(np.float32)
    if array.shape[2] == 4:
        alpha = array[..., 3:] / 255.0
        array = array[..., :3] * alpha + 255.0 * (1.0 - alpha)
    picture = Image.fromarray(array.round().astype(np.uint8))
    picture.thumbnail((512, 512), Image.Resampling.LANCZOS)
    return np.asarray(picture, dtype=np.float32) / 255.0


@functools.cache
def _horse_silhouette() -> Image.Image:
    """The scikit-image horse as a mask (255 on the horse), cropped to its bounding box."""
    horse = ~np.asarray(skimage_data.horse(), dtype=bool)
    rows, cols = np.flatnonzero(horse.any(axis=1)), np.flatnonzero(horse.any(axis=0))
    horse = horse[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    return Image.fromarray(horse.astype(np.uint8) * 255)


@functools.cache
def _photo_image(name: str) -> Image.Image:
    """A photograph as an RGB image."""
    return Image.fromarray(_to_uint8(_photo(name)))


def _photo_crop(
    rng: np.random.Generator, name: str, width: int, height: int, min_scale: float = 0.3
) -> np.ndarray:
    """A random crop of a photograph with the aspect of (width, height), resized to it."""
    photo = _photo_image(name)
    pw, ph = photo.size
    aspect = width / height
    scale = rng.uniform(min_scale, 1.0)
    crop_w = min(pw, max(4.0, scale * min(pw, ph * aspect)))
    crop_h = min(ph, crop_w / aspect)
    crop_w = crop_h * aspect
    x0 = rng.uniform(0, pw - crop_w)
    y0 = rng.uniform(0, ph - crop_h)
    picture = photo.resize(
        (max(1, width), max(1, height)),
        Image.Resampling.BILINEAR,
        box=(x0, y0, x0 + crop_w, y0 + crop_h),
    )
    crop = np.asarray(picture, dtype=np.float32) / 255.0
    return crop[:, ::-1] if rng.random() < 0.5 else crop


@functools.cache
def _material_tile(name: str) -> tuple[Image.Image, float, float]:
    """A grey photograph mirrored into a seamless tile (>= 1024 px), with its mean and std."""
    grey = _photo(name).mean(axis=2)
    tile = np.concatenate([grey, grey[::-1]], axis=0)
    tile = np.concatenate([tile, tile[:, ::-1]], axis=1)
    tile = np.tile(tile, (-(-1024 // tile.shape[0]), -(-1024 // tile.shape[1])))
    return Image.fromarray(_to_uint8(tile)), float(tile.mean()), float(tile.std())


def _material(
    rng: np.random.Generator, name: str, tint: Sequence[float], width: int, height: int
) -> np.ndarray:
    """A grey photograph used as a surface: tiled crop, contrast-normalised, tinted (H, W, 3)."""
    tile, mean, std = _material_tile(name)
    texel = rng.uniform(0.5, 1.4)
    crop_w, crop_h = min(width * texel, tile.width), min(height * texel, tile.height)
    x0, y0 = rng.uniform(0, tile.width - crop_w), rng.uniform(0, tile.height - crop_h)
    patch = tile.resize(
        (width, height), Image.Resampling.BILINEAR, box=(x0, y0, x0 + crop_w, y0 + crop_h)
    )
    contrast = rng.uniform(0.08, 0.18) / (std + 1e-3)
    shade = 1.0 + contrast * (np.asarray(patch, dtype=np.float32) / 255.0 - mean)
    return np.clip(shade[..., None] * np.asarray(tint, np.float32), 0.0, 1.0)


def _low_frequency(rng: np.random.Generator, width: int, height: int, cells: int) -> np.ndarray:
    """Smooth random field in [0, 1], shape (height, width)."""
    grid = rng.random((cells, cells)).astype(np.float32)
    field_image = Image.fromarray((grid * 255).astype(np.uint8)).resize(
        (width, height), Image.Resampling.BICUBIC
    )
    return np.asarray(field_image, dtype=np.float32) / 255.0


def _jitter_colour(rng: np.random.Generator, colour: Sequence[float], amount: float) -> np.ndarray:
    """A colour moved at random by about ``amount`` per channel."""
    return np.clip(np.asarray(colour, np.float32) + rng.normal(0, amount, 3), 0.02, 0.98).astype(
        np.float32
    )


def _to_uint8(array: np.ndarray) -> np.ndarray:
    """[0, 1] floats to 8-bit values, rounded."""
    return (np.clip(array, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _triple(values: Sequence[float]) -> tuple[float, float, float]:
    """Three numbers as plain floats (an RGB colour, gains)."""
    first, second, third = (float(v) for v in values)
    return first, second, third


def _quadruple(values: Sequence[float]) -> tuple[float, float, float, float]:
    """Four numbers as plain floats (a region u0, v0, u1, v1)."""
    first, second, third, fourth = (float(v) for v in values)
    return first, second, third, fourth


def _rgb255(colour: Sequence[float]) -> tuple[int, int, int]:
    """A [0, 1] RGB colour as PIL draws it."""
    red, green, blue = (round(float(c) * 255) for c in np.clip(colour, 0, 1))
    return red, green, blue
