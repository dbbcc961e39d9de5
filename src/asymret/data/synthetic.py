"""Synthetic landmarks ("synth"): an embedded benchmark in the official file formats.

:func:`generate_synth` writes, from a seed and nothing else,

- ``synth/gnd_synth.pkl`` and ``synth/jpg/<name>.jpg``: a revisitop-style test set (query
  images are their own files; each query has a ``bbx`` crop box and ``easy``/``hard``/``junk``
  database indices; the database holds distractors),
- ``retrieval-synth/retrieval-synth.pkl`` and ``retrieval-synth/ims/<cid[-2:]>/<cid[-4:-2]>/
  <cid[-6:-4]>/<cid>``: an SfM-120k-style training db with ``train`` and ``val`` splits,
- ``synth/meta.json``: seed, size, generator version, parameters and the true landmark of
  every image (for checks; the readers never need it),

so that every real code path (readers, training with mining, extraction, evaluation) runs on it
without a download.

The generation model. Every landmark is a building: a box with a façade texture on each side,
a roof silhouette (gable, arch, crenellations) and sometimes a tower with a spire. Façades
combine real photographs (the sample images scikit-image ships: walls tinted from ``brick``,
``gravel``, ``moon`` ...; murals, rose windows, mosaics, reliefs and signs cut from
``astronaut``, ``coffee``, ``rocket``, ``hubble_deep_field``, ``text`` ...) with procedural
structure (floors, bays, window grids with a per-landmark window shape, cornices, pilasters,
doors, colour blocks, stripes, checkers, clocks). Landmarks share this vocabulary of materials
and styles, as real buildings do; each has its own proportions, layout and details.

Every image is a pinhole-camera photograph of a 3D scene: sky with clouds, textured ground,
neighbouring buildings of random design (clutter), the landmark, and foreground objects that
occlude it (people, trees, poles, cars, statues, signs). Views vary in position around the
building (which side, yaw up to ``max_view_angle`` from a façade's normal), distance (scale,
truncation), camera height (keystone), in-plane rotation, field of view, sun position, cloud
cover, exposure and white balance, blur, noise and JPEG compression. Photographs cluster
around a few popular spots per landmark, plus views from anywhere, as on photo-sharing sites.

Ground truth comes from the geometry, never from chance: points sampled on the building's
walls are projected into every image (visible when facing the camera, inside the frame and
not hidden by an occluder or by the building itself). For a query, the relevant points are
those of its region of interest (a whole façade, a detail, the tower) seen in the query;
``bbx`` is that region's box in the query image. A database image of the same landmark is

- easy when it shows at least half of the query region, from within 30° of the query's
  viewing direction, at a similar scale, covering at least a tenth of the image, with at most
  a quarter of the region occluded and without extreme lighting;
- hard when, from within 70°, it shows at least a fifth of the region, or is a close-up mostly
  made of it, covering at least 1.5 % of the image;
- junk otherwise (the landmark is there but too little of the query region is seen to tell).

Images of other landmarks and of streets without a landmark are negatives. Training pairs
(``qidxs``, ``pidxs``) join two images of one landmark that share at least 40 % of the
first one's visible walls, from within 50° and a scale change of at most 3×.

Determinism: everything is drawn from ``numpy.random.default_rng([seed, stream, *key])``, one
stream per purpose and one key per landmark or image, so the files are byte-identical for a
seed whatever the number of worker processes; JPEG quality is fixed, and neither pickles nor
metadata hold a timestamp.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import itertools
import json
import multiprocessing
import os
import pickle
import shutil
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter
from skimage import data as skimage_data
from tqdm import tqdm

from asymret.errors import AsymretError

SYNTH_VERSION = "1.0"
"""Changes whenever the same seed and size would give different files."""

TEST_DIR = "synth"
TRAIN_DIR = "retrieval-synth"
GND_FILE = "gnd_synth.pkl"
TRAIN_DB_FILE = "retrieval-synth.pkl"
META_FILE = "meta.json"

# Label thresholds (see the module docstring).
EASY_MIN_OVERLAP = 0.5
EASY_MAX_ANGLE = 30.0
EASY_MIN_AREA = 0.10
EASY_MAX_OCCLUSION = 0.25
EASY_SCALE_RANGE = (0.4, 2.5)
HARD_MIN_OVERLAP = 0.2
HARD_MIN_CLOSEUP = 0.5
HARD_MAX_ANGLE = 70.0
HARD_MIN_AREA = 0.015
PAIR_MIN_OVERLAP = 0.4
PAIR_MAX_ANGLE = 50.0
PAIR_SCALE_RANGE = (1 / 3, 3.0)
MIN_QUERY_POSITIVES = 3
MIN_DEPICTED_FRACTION = 0.05  # of the frame, for training and distractor-landmark images
_VIEW_ATTEMPTS = 10

# One random stream per purpose: default_rng([seed, stream, *key]).
_STREAM_LANDMARK = 1  # key: landmark id
_STREAM_TEXTURE = 2  # key: landmark id
_STREAM_SPOTS = 3  # key: landmark id
_STREAM_QUERIES = 4  # key: landmark id
_STREAM_PAIRS = 5  # key: landmark id
_STREAM_VIEW_SPOT = 6  # key: image key
_STREAM_VIEW = 7  # key: image key
_STREAM_RENDER = 8  # key: image key
_STREAM_ORDER = 9  # key: none
_STREAM_GROUND = 10  # key: ground texture variant
_STREAM_NOISE = 11  # key: none

# An image's key is (group, role, number): group is the landmark id, or _NO_LANDMARK.
_NO_LANDMARK = 2**31 - 1
_ROLE_PHOTO = 0  # database or training image
_ROLE_QUERY = 1
_ROLE_STREET = 2
_ROLE_PLAIN_PHOTO = 3

_SAMPLES_PER_LANDMARK = 900
# Texture resolution for 224-pixel images (scaled with the image size).
_TEXTURE_PX_PER_METRE = 12.0
_TEXTURE_MAX_SIDE = 320
_FILLER_PX_PER_METRE = 6.0
_REFERENCE_IMAGE_SIZE = 224
_NEAR_PLANE = 0.05
_MAX_TILT = np.radians(55)  # steepest upward look of a photographer

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

_WALL_TINTS = (
    (0.82, 0.72, 0.55),  # sandstone
    (0.86, 0.84, 0.78),  # limestone
    (0.64, 0.34, 0.26),  # red brick
    (0.56, 0.57, 0.59),  # granite
    (0.80, 0.62, 0.34),  # ochre
    (0.93, 0.92, 0.89),  # stucco
    (0.62, 0.71, 0.80),  # pastel blue
    (0.86, 0.67, 0.66),  # pink
    (0.40, 0.37, 0.35),  # dark stone
    (0.55, 0.62, 0.50),  # green stucco
)
_ACCENT_COLOURS = (
    (0.80, 0.12, 0.10),
    (0.10, 0.25, 0.65),
    (0.95, 0.80, 0.15),
    (0.10, 0.45, 0.25),
    (0.95, 0.95, 0.93),
    (0.08, 0.08, 0.10),
    (0.55, 0.20, 0.55),
    (0.90, 0.50, 0.10),
)
_WINDOW_SHAPES = ("rect", "arch", "pointed", "round", "twin")
_PANEL_KINDS = (
    "mural",
    "rose",
    "mosaic",
    "relief",
    "sign",
    "blocks",
    "stripes",
    "checker",
    "clock",
    "logo",
    "emblem",
)
_OCCLUDER_KINDS = ("person", "person", "person", "tree", "tree", "pole", "car", "statue", "sign")


# --------------------------------------------------------------------------------------------
# Parameters
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SynthConfig:
    """Size and difficulty of the synthetic benchmark.

    Attributes:
        image_size: Longer side of every image in pixels (the other side is 3/4 of it).
        train_landmarks: Landmarks (clusters) of the ``train`` split.
        train_images_per_landmark: Images per training landmark.
        val_landmarks: Landmarks of the ``val`` split (disjoint from ``train``).
        val_images_per_landmark: Images per validation landmark.
        test_landmarks: Queried landmarks of the test set (disjoint from the training ones).
        queries_per_landmark: Queries per test landmark (each with its region of interest).
        database_images_per_landmark: Database images per test landmark, before images are
            added for a query that has fewer than ``MIN_QUERY_POSITIVES`` positives.
        distractor_landmarks: Landmarks in the database that no query asks for.
        images_per_distractor_landmark: Database images per distractor landmark.
        street_images: Database images of streets without a landmark.
        photo_images: Database images that are plain photographs (no building).
        max_view_angle: Largest yaw of a view away from a façade's normal, in degrees.
        wide_view_fraction: Share of views drawn anywhere rather than around a popular spot.
        occluders_per_image: Mean number of foreground objects per database/training image.
        extreme_light_fraction: Share of images at dusk or over-exposed.
        blur_fraction: Share of images with defocus blur.
        noise_level: Largest standard deviation of the sensor noise (0–255 scale).
        portrait_fraction: Share of images in portrait orientation.
        jpeg_quality: JPEG quality of every file.
    """

    image_size: int = 224
    train_landmarks: int = 100
    train_images_per_landmark: int = 24
    val_landmarks: int = 10
    val_images_per_landmark: int = 16
    test_landmarks: int = 10
    queries_per_landmark: int = 5
    database_images_per_landmark: int = 60
    distractor_landmarks: int = 30
    images_per_distractor_landmark: int = 15
    street_images: int = 300
    photo_images: int = 60
    max_view_angle: float = 80.0
    wide_view_fraction: float = 0.35
    occluders_per_image: float = 1.2
    extreme_light_fraction: float = 0.1
    blur_fraction: float = 0.3
    noise_level: float = 5.0
    portrait_fraction: float = 0.3
    jpeg_quality: int = 90

    def __post_init__(self) -> None:
        counts = {
            "image_size": self.image_size,
            "train_landmarks": self.train_landmarks,
            "train_images_per_landmark": self.train_images_per_landmark,
            "val_landmarks": self.val_landmarks,
            "val_images_per_landmark": self.val_images_per_landmark,
            "test_landmarks": self.test_landmarks,
            "queries_per_landmark": self.queries_per_landmark,
            "database_images_per_landmark": self.database_images_per_landmark,
        }
        for name, value in counts.items():
            if value < 1:
                raise AsymretError(f"SynthConfig.{name} must be at least 1, got {value}")
        if self.image_size < 32:
            raise AsymretError(f"SynthConfig.image_size must be at least 32, got {self.image_size}")
        if self.train_images_per_landmark < 2 or self.val_images_per_landmark < 2:
            raise AsymretError(
                "SynthConfig.train_images_per_landmark and val_images_per_landmark must be at "
                "least 2 (training pairs join two images of a landmark)"
            )
        for name in (
            "distractor_landmarks",
            "images_per_distractor_landmark",
            "street_images",
            "photo_images",
        ):
            if getattr(self, name) < 0:
                raise AsymretError(f"SynthConfig.{name} must not be negative")
        for name in (
            "wide_view_fraction",
            "extreme_light_fraction",
            "blur_fraction",
            "portrait_fraction",
        ):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise AsymretError(f"SynthConfig.{name} must lie in [0, 1]")
        if not 0.0 < self.max_view_angle < 89.0:
            raise AsymretError("SynthConfig.max_view_angle must lie in (0, 89) degrees")
        if self.occluders_per_image < 0 or self.noise_level < 0:
            raise AsymretError("SynthConfig: occluders_per_image and noise_level must be >= 0")
        if not 1 <= self.jpeg_quality <= 100:
            raise AsymretError("SynthConfig.jpeg_quality must lie in [1, 100]")


SIZE_PRESETS: dict[str, SynthConfig] = {
    "small": SynthConfig(
        image_size=128,
        train_landmarks=12,
        train_images_per_landmark=10,
        val_landmarks=3,
        val_images_per_landmark=8,
        test_landmarks=4,
        queries_per_landmark=3,
        database_images_per_landmark=24,
        distractor_landmarks=6,
        images_per_distractor_landmark=8,
        street_images=32,
        photo_images=8,
    ),
    "default": SynthConfig(),
    "large": SynthConfig(
        image_size=256,
        train_landmarks=300,
        train_images_per_landmark=32,
        val_landmarks=30,
        val_images_per_landmark=24,
        test_landmarks=14,
        queries_per_landmark=5,
        database_images_per_landmark=80,
        distractor_landmarks=90,
        images_per_distractor_landmark=20,
        street_images=1600,
        photo_images=400,
        wide_view_fraction=0.45,
        occluders_per_image=1.6,
    ),
}
"""``small`` for tests (seconds), ``default`` (well under a minute), ``large`` (harder)."""


def synth_config(size: str = "default", **overrides) -> SynthConfig:
    """The parameters of a named size, with any field changed by keyword.

    Raises:
        AsymretError: unknown size or field.
    """
    if size not in SIZE_PRESETS:
        raise AsymretError(f"unknown synth size {size!r}; expected one of {sorted(SIZE_PRESETS)}")
    try:
        return replace(SIZE_PRESETS[size], **overrides)
    except TypeError as exc:
        raise AsymretError(f"synth_config: {exc}") from exc


def _rng(seed: int, stream: int, *key: int) -> np.random.Generator:
    """The random generator of one purpose (stream) and one landmark or image (key)."""
    return np.random.default_rng([seed, stream, *key])


# --------------------------------------------------------------------------------------------
# Photographs shipped with scikit-image
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Geometry: cameras, planar quads, buildings
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class _Camera:
    """Pinhole camera; ``rotation`` rows are the camera's right, down and forward axes."""

    center: np.ndarray
    rotation: np.ndarray
    focal: float
    width: int
    height: int

    @property
    def intrinsics(self) -> np.ndarray:
        return np.array(
            [[self.focal, 0.0, self.width / 2], [0.0, self.focal, self.height / 2], [0, 0, 1]]
        )

    def to_camera(self, points: np.ndarray) -> np.ndarray:
        return (points - self.center) @ self.rotation.T

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pixel positions (N, 2) and depths (N,) of world points (N, 3)."""
        local = self.to_camera(points)
        depth = local[:, 2]
        safe = np.where(np.abs(depth) < 1e-6, 1e-6, depth)
        xy = self.focal * local[:, :2] / safe[:, None] + [self.width / 2, self.height / 2]
        return xy, depth

    def plane_homography(self, origin: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """3×3 map from plane coordinates (s, t) (point origin + s·u + t·v) to pixels."""
        columns = np.column_stack(
            [self.rotation @ u, self.rotation @ v, self.rotation @ (origin - self.center)]
        )
        return self.intrinsics @ columns

    def ray_elevations(self, step: int) -> np.ndarray:
        """Elevation (radians) above the horizon of the rays through every ``step``-th pixel."""
        xs = (np.arange(0, self.width, step) + step / 2 - self.width / 2) / self.focal
        ys = (np.arange(0, self.height, step) + step / 2 - self.height / 2) / self.focal
        up_in_camera = self.rotation @ np.array([0.0, 0.0, 1.0])
        heights = xs[None, :] * up_in_camera[0] + ys[:, None] * up_in_camera[1] + up_in_camera[2]
        norms = np.sqrt(xs[None, :] ** 2 + ys[:, None] ** 2 + 1.0)
        return np.arcsin(np.clip(heights / norms, -1, 1)).astype(np.float32)


def _look_at(center: np.ndarray, target: np.ndarray, roll: float) -> np.ndarray:
    """World-to-camera rotation of a camera at center looking at target, rolled (radians)."""
    forward = target - center
    forward = forward / np.linalg.norm(forward)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right = right / np.linalg.norm(right)
    down = np.cross(forward, right)
    cos_roll, sin_roll = np.cos(roll), np.sin(roll)
    return np.stack(
        [cos_roll * right + sin_roll * down, -sin_roll * right + cos_roll * down, forward]
    )


@dataclass(frozen=True, eq=False)
class _Quad:
    """A textured rectangle in 3D: the texture spans ``size`` metres along ``u`` and ``v``.

    ``wall_top`` metres from the texture's top edge is the roof line: above it the texture
    holds an ornament with transparency (gable, arch, merlons, spire).
    """

    origin: np.ndarray
    u: np.ndarray
    v: np.ndarray
    size: tuple[float, float]
    normal: np.ndarray
    wall_top: float

    def corners(self) -> np.ndarray:
        width, height = self.size
        return np.stack(
            [
                self.origin,
                self.origin + width * self.u,
                self.origin + width * self.u + height * self.v,
                self.origin + height * self.v,
            ]
        )

    def faces(self, camera_center: np.ndarray) -> bool:
        return float(np.dot(self.normal, camera_center - self.origin)) > 1e-3


# Box sides in order front (−y), right (+x), back (+y), left (−x): outward normal, direction of
# the texture's columns, and the top-left corner in units of (width/2, depth/2).
_BOX_SIDES = (
    ((0, -1, 0), (1, 0, 0), (-1, -1)),
    ((1, 0, 0), (0, 1, 0), (1, -1)),
    ((0, 1, 0), (-1, 0, 0), (1, 1)),
    ((-1, 0, 0), (0, -1, 0), (-1, 1)),
)


def _box_quads(
    center: tuple[float, float],
    base: float,
    size: tuple[float, float, float],
    yaw: float,
    ornaments: Sequence[float],
) -> list[_Quad]:
    """The four vertical sides of a box; ``ornaments[k]`` metres of texture above side k."""
    width, depth, height = size
    cos_yaw, sin_yaw = np.cos(yaw), np.sin(yaw)
    turn = np.array([[cos_yaw, -sin_yaw, 0.0], [sin_yaw, cos_yaw, 0.0], [0.0, 0.0, 1.0]])
    offset = np.array([center[0], center[1], base])
    quads = []
    for (normal, along, (cx, cy)), extra in zip(_BOX_SIDES, ornaments, strict=True):
        corner = np.array([cx * width / 2, cy * depth / 2, height + extra])
        side_width = width if normal[1] != 0 else depth
        quads.append(
            _Quad(
                origin=turn @ corner + offset,
                u=turn @ np.asarray(along, float),
                v=np.array([0.0, 0.0, -1.0]),
                size=(side_width, height + extra),
                normal=turn @ np.asarray(normal, float),
                wall_top=extra,
            )
        )
    return quads


@dataclass(frozen=True)
class _LandmarkPlan:
    """Shape of one landmark; its textures follow from (seed, landmark_id)."""

    landmark_id: int
    width: float
    depth: float
    height: float
    roof: str
    roof_height: float
    tower: tuple[float, float, float, float, float] | None  # x offset, width, depth, height, spire


def _plan_landmark(seed: int, landmark_id: int) -> _LandmarkPlan:
    """Proportions, roof and tower of a landmark, from (seed, landmark_id) alone."""
    rng = _rng(seed, _STREAM_LANDMARK, landmark_id)
    width = rng.uniform(14, 34)
    depth = rng.uniform(9, 24)
    height = rng.uniform(10, 24)
    tower = None
    if rng.random() < 0.4:
        tower_width = rng.uniform(0.22, 0.4) * width
        x_offset = rng.choice([0.0, 1.0, -1.0]) * (width - tower_width) / 2 * rng.uniform(0.6, 1)
        tower = (
            float(x_offset),
            float(tower_width),
            float(min(depth * 0.6, tower_width * rng.uniform(0.8, 1.3))),
            float(rng.uniform(0.5, 1.1) * height),
            float(rng.choice([0.0, rng.uniform(3, 10)])),
        )
        roof = str(rng.choice(["flat", "crenel"]))
    else:
        roof = str(rng.choice(["flat", "gable", "gable", "arch", "crenel", "stepped"]))
    roof_height = {
        "flat": 0.0,
        "crenel": 1.2,
        "gable": rng.uniform(0.25, 0.5) * width,
        "stepped": rng.uniform(0.3, 0.5) * width,
        "arch": rng.uniform(0.15, 0.3) * width,
    }[roof]
    return _LandmarkPlan(
        landmark_id=landmark_id,
        width=float(width),
        depth=float(depth),
        height=float(height),
        roof=roof,
        roof_height=float(roof_height),
        tower=tower,
    )


def _roof_ornaments(roof: str, roof_height: float) -> tuple[float, float, float, float]:
    """Metres of ornament above the front, right, back and left sides."""
    if roof == "crenel":
        return (roof_height,) * 4
    if roof in ("gable", "stepped"):
        return (roof_height, 0.0, roof_height, 0.0)
    if roof == "arch":
        return (roof_height, 0.0, 0.0, 0.0)
    return (0.0, 0.0, 0.0, 0.0)


@dataclass(frozen=True, eq=False)
class _LandmarkGeometry:
    """Quads of a landmark (0–3 main body, 4–7 tower) and points sampled on its walls."""

    quads: tuple[_Quad, ...]
    points: np.ndarray  # (N, 3)
    normals: np.ndarray  # (N, 3)
    quad_of_point: np.ndarray  # (N,) index into quads
    wall_uv: np.ndarray  # (N, 2) metres from the roof line's left end, along u and v
    spacing: float  # metres between neighbouring points
    body: tuple[np.ndarray, np.ndarray]  # min and max corner of the main body
    radius: float  # horizontal half-diagonal of the main body


@functools.lru_cache(maxsize=512)
def _landmark_geometry(plan: _LandmarkPlan) -> _LandmarkGeometry:
    """The landmark's quads in world coordinates (metres, z up, front facing −y)."""
    quads = _box_quads(
        (0.0, 0.0),
        0.0,
        (plan.width, plan.depth, plan.height),
        0.0,
        _roof_ornaments(plan.roof, plan.roof_height),
    )
    if plan.tower is not None:
        x_offset, tower_width, tower_depth, tower_height, spire = plan.tower
        quads += _box_quads(
            (x_offset, -plan.depth / 2 + tower_depth / 2 + 0.01),
            plan.height,
            (tower_width, tower_depth, tower_height),
            0.0,
            (spire,) * 4,
        )
    wall_area = sum(q.size[0] * (q.size[1] - q.wall_top) for q in quads)
    spacing = float(np.sqrt(wall_area / _SAMPLES_PER_LANDMARK))
    points, normals, owners, uvs = [], [], [], []
    for index, quad in enumerate(quads):
        wall_height = quad.size[1] - quad.wall_top
        n_u = max(2, round(quad.size[0] / spacing))
        n_v = max(2, round(wall_height / spacing))
        us = (np.arange(n_u) + 0.5) * quad.size[0] / n_u
        vs = (np.arange(n_v) + 0.5) * wall_height / n_v
        grid_u, grid_v = (g.ravel() for g in np.meshgrid(us, vs))
        top = quad.origin + quad.wall_top * quad.v
        points.append(top + grid_u[:, None] * quad.u + grid_v[:, None] * quad.v)
        normals.append(np.repeat(quad.normal[None], grid_u.size, axis=0))
        owners.append(np.full(grid_u.size, index))
        uvs.append(np.stack([grid_u, grid_v], axis=1))
    half = np.array([plan.width / 2, plan.depth / 2])
    return _LandmarkGeometry(
        quads=tuple(quads),
        points=np.concatenate(points),
        normals=np.concatenate(normals),
        quad_of_point=np.concatenate(owners),
        wall_uv=np.concatenate(uvs),
        spacing=spacing,
        body=(np.array([-half[0], -half[1], 0.0]), np.array([half[0], half[1], plan.height])),
        radius=float(np.linalg.norm(half)),
    )


def _hidden_by_box(
    start: np.ndarray, points: np.ndarray, box: tuple[np.ndarray, np.ndarray]
) -> np.ndarray:
    """Whether the segment from ``start`` to each point passes through the box's inside."""
    low, high = box[0] + 1e-3, box[1] - 1e-3
    direction = points - start
    with np.errstate(divide="ignore", invalid="ignore"):
        t_low = (low - start) / direction
        t_high = (high - start) / direction
    t_near = np.nanmax(np.minimum(t_low, t_high), axis=1)
    t_far = np.nanmin(np.maximum(t_low, t_high), axis=1)
    return (t_near < t_far) & (t_far > 0) & (t_near < 1 - 1e-6)


# --------------------------------------------------------------------------------------------
# What an image shows, and how it is lit
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Light:
    """Sun, sky and camera exposure of one photograph."""

    exposure: float
    sun_azimuth: float
    sun_elevation: float
    overcast: float
    white_balance: tuple[float, float, float]

    @property
    def extreme(self) -> bool:
        return self.exposure < 0.5 or self.exposure > 1.7

    @property
    def sun_direction(self) -> np.ndarray:
        return np.array(
            [
                np.cos(self.sun_elevation) * np.cos(self.sun_azimuth),
                np.cos(self.sun_elevation) * np.sin(self.sun_azimuth),
                np.sin(self.sun_elevation),
            ]
        )

    def shade(self, normal: np.ndarray) -> np.ndarray:
        """RGB light falling on a surface with this outward normal."""
        ambient = (0.5 + 0.3 * self.overcast) * np.array([0.92, 0.96, 1.05])
        direct = (1.0 - self.overcast) * 0.65 * max(0.0, float(normal @ self.sun_direction))
        return (ambient + direct * np.array([1.05, 1.0, 0.9])).astype(np.float32)


@dataclass(frozen=True)
class _Occluder:
    """A foreground object, placed in pixels: horizontal centre, bottom row, height."""

    kind: str
    x: float
    base: float
    height: float
    shape_seed: int


@dataclass(frozen=True, eq=False)
class _View:
    """Everything needed to render one image and to decide its ground truth."""

    key: tuple[int, int, int]  # (group, role, number): seeds the view and its rendering
    path: str  # relative to the output root
    kind: str  # "landmark", "street" or "photo"
    landmark: int  # landmark id, −1 without one
    width: int
    height: int
    camera: _Camera | None
    light: _Light
    blur: float  # defocus (box blur) radius in pixels, 0 for none
    noise: float  # standard deviation of the sensor noise (0–255 scale)
    occluders: tuple[_Occluder, ...] = ()


def _sample_light(rng: np.random.Generator, config: SynthConfig, calm: bool) -> _Light:
    """Daylight of a photograph; ``calm`` (queries) rules out dusk and over-exposure."""
    overcast = float(rng.uniform(0, 1) ** 1.5)
    sun_elevation = float(np.radians(rng.uniform(15, 65)))
    warmth, tint = rng.normal(0, 0.04), rng.normal(0, 0.015)
    white_balance = (1.0 + warmth, 1.0 + tint, 1.0 - warmth)
    exposure = float(np.exp(rng.uniform(np.log(0.75), np.log(1.3))))
    if calm:
        exposure = float(rng.uniform(0.85, 1.15))
    elif rng.random() < config.extreme_light_fraction:
        if rng.random() < 0.6:  # dusk: low, warm light
            exposure = float(rng.uniform(0.3, 0.48))
            sun_elevation = float(np.radians(rng.uniform(2, 10)))
            white_balance = (1.15, 0.97, 0.8)
        else:  # backlit or over-exposed
            exposure = float(rng.uniform(1.75, 2.3))
    return _Light(
        exposure=exposure,
        sun_azimuth=float(rng.uniform(0, 2 * np.pi)),
        sun_elevation=sun_elevation,
        overcast=overcast,
        white_balance=_triple(white_balance),
    )


def _sample_effects(
    rng: np.random.Generator, config: SynthConfig, width: int, height: int, calm: bool
) -> dict[str, float]:
    """Blur radius and noise level of a photograph."""
    blur = 0.0
    if not calm and rng.random() < config.blur_fraction:
        blur = float(rng.uniform(0.4, 1.3) * max(width, height) / 224)
    noise = float(rng.uniform(0.0, config.noise_level / (2 if calm else 1)))
    return {"blur": blur, "noise": noise}


def _sample_occluders(
    rng: np.random.Generator, width: int, height: int, mean_count: float
) -> tuple[_Occluder, ...]:
    """A Poisson number (at most 5) of foreground objects standing near the frame's bottom."""
    occluders = []
    for _ in range(min(int(rng.poisson(mean_count)), 5)):
        kind = str(rng.choice(_OCCLUDER_KINDS))
        scale = {
            "person": (0.25, 0.85),
            "tree": (0.45, 1.3),
            "pole": (0.5, 1.2),
            "car": (0.15, 0.35),
            "statue": (0.3, 0.7),
            "sign": (0.3, 0.6),
        }[kind]
        occluders.append(
            _Occluder(
                kind=kind,
                x=float(rng.uniform(-0.05, 1.05) * width),
                base=float(rng.uniform(0.8, 1.15) * height),
                height=float(rng.uniform(*scale) * height),
                shape_seed=int(rng.integers(2**31)),
            )
        )
    return tuple(occluders)


def _occluder_layers(occluder: _Occluder, width: int, height: int) -> list[tuple[str, Image.Image]]:
    """Masks (mode L, frame size) of an occluder's parts, drawn back to front, with roles."""
    shape = np.random.default_rng(occluder.shape_seed)
    x, base, tall = occluder.x, occluder.base, occluder.height

    def layer(role: str) -> tuple[str, Image.Image, ImageDraw.ImageDraw]:
        mask = Image.new("L", (width, height), 0)
        return role, mask, ImageDraw.Draw(mask)

    layers = []
    if occluder.kind == "person":
        role, mask, draw = layer("clothes")
        half = tall * shape.uniform(0.11, 0.16)
        draw.rounded_rectangle(
            [x - half, base - tall * 0.82, x + half, base], radius=half * 0.6, fill=255
        )
        layers.append((role, mask))
        role, mask, draw = layer("skin")
        head = tall * 0.09
        draw.ellipse([x - head, base - tall, x + head, base - tall + 2.1 * head], fill=255)
        layers.append((role, mask))
    elif occluder.kind == "tree":
        role, mask, draw = layer("trunk")
        trunk = tall * 0.04
        draw.rectangle([x - trunk, base - tall * 0.55, x + trunk, base], fill=255)
        layers.append((role, mask))
        role, mask, draw = layer("foliage")
        for _ in range(6):
            cx = x + shape.normal(0, tall * 0.15)
            cy = base - tall * shape.uniform(0.55, 0.85)
            radius = tall * shape.uniform(0.13, 0.25)
            draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=255)
        layers.append((role, mask))
    elif occluder.kind == "pole":
        role, mask, draw = layer("metal")
        thick = max(1.0, tall * 0.015)
        draw.rectangle([x - thick, base - tall, x + thick, base], fill=255)
        draw.ellipse(
            [x - 4 * thick, base - tall - 3 * thick, x + 4 * thick, base - tall + thick], fill=255
        )
        layers.append((role, mask))
    elif occluder.kind == "car":
        length = tall * shape.uniform(2.2, 3.0)
        role, mask, draw = layer("paint")
        draw.rounded_rectangle(
            [x - length / 2, base - tall * 0.65, x + length / 2, base - tall * 0.12],
            radius=tall * 0.12,
            fill=255,
        )
        draw.rounded_rectangle(
            [x - length * 0.3, base - tall, x + length * 0.25, base - tall * 0.5],
            radius=tall * 0.15,
            fill=255,
        )
        layers.append((role, mask))
        role, mask, draw = layer("glass")
        draw.rectangle(
            [x - length * 0.25, base - tall * 0.92, x + length * 0.2, base - tall * 0.62], fill=255
        )
        layers.append((role, mask))
        role, mask, draw = layer("tyre")
        wheel = tall * 0.2
        for wx in (x - length * 0.3, x + length * 0.3):
            draw.ellipse([wx - wheel, base - 2 * wheel, wx + wheel, base], fill=255)
        layers.append((role, mask))
    elif occluder.kind == "statue":
        role, mask, draw = layer("stone")
        pedestal = tall * 0.45
        draw.rectangle([x - tall * 0.3, base - pedestal, x + tall * 0.3, base], fill=255)
        layers.append((role, mask))
        role, mask, _ = layer("bronze")
        horse = _horse_silhouette()
        horse_h = max(2, round(tall - pedestal))
        horse_w = max(2, round(horse_h * horse.width / horse.height))
        horse = horse.resize((horse_w, horse_h), Image.Resampling.BILINEAR)
        if shape.random() < 0.5:
            horse = horse.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        mask.paste(horse, (round(x - horse_w / 2), round(base - tall)), horse)
        layers.append((role, mask))
    else:  # sign on a post
        role, mask, draw = layer("metal")
        draw.rectangle([x - tall * 0.02, base - tall, x + tall * 0.02, base], fill=255)
        layers.append((role, mask))
        role, mask, draw = layer("board")
        board_w = tall * shape.uniform(0.4, 0.8)
        draw.rectangle([x - board_w / 2, base - tall, x + board_w / 2, base - tall * 0.6], fill=255)
        layers.append((role, mask))
    return layers


def _occlusion_mask(view: _View) -> np.ndarray:
    """Boolean (height, width): pixels covered by a foreground object."""
    covered = np.zeros((view.height, view.width), dtype=bool)
    for occluder in view.occluders:
        for _, mask in _occluder_layers(occluder, view.width, view.height):
            covered |= np.asarray(mask) > 127
    return covered


@dataclass(frozen=True, eq=False)
class _Observation:
    """Which wall points of the landmark an image shows, and at what scale."""

    visible: np.ndarray  # (N,) facing, in the frame, not hidden
    in_view: np.ndarray  # (N,) facing and in the frame (hidden or not)
    pixels_per_metre: np.ndarray  # (N,)
    cos_incidence: np.ndarray  # (N,)
    camera_center: np.ndarray
    frame_area: float
    extreme_light: bool


def _observe(view: _View, geometry: _LandmarkGeometry) -> _Observation:
    """Project the landmark's wall points into a view and find the visible ones."""
    camera = view.camera
    assert camera is not None
    xy, depth = camera.project(geometry.points)
    to_camera = camera.center - geometry.points
    distance = np.linalg.norm(to_camera, axis=1)
    cos_incidence = np.einsum("ij,ij->i", to_camera, geometry.normals) / distance
    in_frame = (
        (depth > _NEAR_PLANE)
        & (xy[:, 0] >= 0)
        & (xy[:, 0] < view.width)
        & (xy[:, 1] >= 0)
        & (xy[:, 1] < view.height)
    )
    in_view = in_frame & (cos_incidence > 0.02)
    visible = in_view.copy()
    on_tower = in_view & (geometry.quad_of_point >= 4)
    if on_tower.any():
        visible[on_tower] &= ~_hidden_by_box(
            camera.center, geometry.points[on_tower], geometry.body
        )
    if view.occluders:
        covered = _occlusion_mask(view)
        rows = np.clip(xy[:, 1].astype(int), 0, view.height - 1)
        cols = np.clip(xy[:, 0].astype(int), 0, view.width - 1)
        visible &= ~covered[rows, cols]
    return _Observation(
        visible=visible,
        in_view=in_view,
        pixels_per_metre=(camera.focal / np.maximum(depth, _NEAR_PLANE)).astype(np.float32),
        cos_incidence=np.clip(cos_incidence, 0, 1).astype(np.float32),
        camera_center=camera.center,
        frame_area=float(view.width * view.height),
        extreme_light=view.light.extreme,
    )


# --------------------------------------------------------------------------------------------
# Viewpoints
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Spot:
    """Where a photograph is taken from, relative to a region of one of the landmark's walls."""

    quad: int
    region: tuple[float, float, float, float]  # u0, v0, u1, v1 metres from the roof line
    yaw: float  # radians away from the wall's normal
    framing: float  # region's extent as a fraction of the frame's shorter side
    camera_height: float


def _frame_size(rng: np.random.Generator, config: SynthConfig) -> tuple[int, int]:
    """(width, height) of a photograph: 4:3 landscape or 3:4 portrait."""
    long_side, short_side = config.image_size, round(config.image_size * 3 / 4)
    if rng.random() < config.portrait_fraction:
        return short_side, long_side
    return long_side, short_side


def _wall_extent(quad: _Quad) -> tuple[float, float]:
    """Width and height (metres) of a quad's wall, below its ornament."""
    return quad.size[0], quad.size[1] - quad.wall_top


def _random_spot(
    rng: np.random.Generator, geometry: _LandmarkGeometry, config: SynthConfig, wide: bool
) -> _Spot:
    """A wall (the front most often) or a part of one, seen from a random yaw.

    The yaw stays within ``max_view_angle``, and within 40° unless ``wide``.
    """
    weights = np.array([0.45, 0.2, 0.12, 0.2] + [0.08] * (len(geometry.quads) - 4))
    quad_index = int(rng.choice(len(geometry.quads), p=weights / weights.sum()))
    wall_w, wall_h = _wall_extent(geometry.quads[quad_index])
    if rng.random() < 0.6:  # the whole wall
        region = (0.0, 0.0, wall_w, wall_h)
    else:  # a part of it
        part_w, part_h = rng.uniform(0.3, 0.7) * wall_w, rng.uniform(0.35, 0.8) * wall_h
        u0, v0 = rng.uniform(0, wall_w - part_w), rng.uniform(0, wall_h - part_h)
        region = (u0, v0, u0 + part_w, v0 + part_h)
    limit = config.max_view_angle if wide else min(config.max_view_angle, 40.0)
    return _Spot(
        quad=quad_index,
        region=_quadruple(region),
        yaw=float(np.radians(rng.uniform(-limit, limit))),
        framing=float(np.exp(rng.uniform(np.log(0.35), np.log(1.6)))),
        camera_height=float(_camera_height(rng)),
    )


def _camera_height(rng: np.random.Generator) -> float:
    """Eye level mostly, sometimes a window or a terrace."""
    return rng.uniform(1.4, 2.2) if rng.random() < 0.8 else rng.uniform(4, 12)


def _near_spot(rng: np.random.Generator, spot: _Spot, config: SynthConfig) -> _Spot:
    """A photograph taken near a popular spot."""
    u0, v0, u1, v1 = spot.region
    shift_u, shift_v = rng.normal(0, 0.1, 2) * [u1 - u0, v1 - v0]
    limit = np.radians(config.max_view_angle)
    return _Spot(
        quad=spot.quad,
        region=_quadruple((u0 + shift_u, v0 + shift_v, u1 + shift_u, v1 + shift_v)),
        yaw=float(np.clip(spot.yaw + np.radians(rng.normal(0, 12)), -limit, limit)),
        framing=float(spot.framing * np.exp(rng.normal(0, 0.3))),
        camera_height=float(max(1.2, spot.camera_height + rng.normal(0, 0.6))),
    )


def _spot_camera(
    rng: np.random.Generator,
    geometry: _LandmarkGeometry,
    spot: _Spot,
    width: int,
    height: int,
    steady: bool,
) -> _Camera:
    """A camera that frames the spot's region from its yaw, distance and height."""
    quad = geometry.quads[spot.quad]
    u0, v0, u1, v1 = spot.region
    top = quad.origin + quad.wall_top * quad.v
    target = top + (u0 + u1) / 2 * quad.u + (v0 + v1) / 2 * quad.v
    hfov = np.radians(rng.uniform(50, 68) if steady else rng.uniform(42, 72))
    focal = width / 2 / np.tan(hfov / 2)
    extent = max((u1 - u0) * np.cos(spot.yaw), v1 - v0)
    distance = max(4.0, focal * extent / (spot.framing * min(width, height)))
    # Step back until looking up at the target takes at most _MAX_TILT.
    distance = max(distance, (target[2] - spot.camera_height) / np.tan(_MAX_TILT))
    sideways = np.cross([0.0, 0.0, 1.0], quad.normal)
    heading = np.cos(spot.yaw) * quad.normal + np.sin(spot.yaw) * sideways
    center = target + distance * heading
    center[2] = min(spot.camera_height, target[2] + 0.6 * distance)
    pan = 0.03 if steady else 0.12
    look = target + distance * (
        rng.normal(0, pan) * sideways * np.cos(spot.yaw)
        + rng.normal(0, pan / 2) * np.array([0, 0, 1])
    )
    if steady:
        roll = np.radians(rng.normal(0, 1.5))
    elif rng.random() < 0.12:
        roll = np.radians(rng.uniform(-25, 25))
    else:
        roll = np.radians(rng.normal(0, 3))
    return _Camera(
        center=center,
        rotation=_look_at(center, look, roll),
        focal=float(focal),
        width=width,
        height=height,
    )


def _landmark_view(
    seed: int,
    key: tuple[int, int, int],
    path: str,
    plan: _LandmarkPlan,
    spot: _Spot,
    config: SynthConfig,
    attempt: int = 0,
) -> _View:
    """A photograph of a landmark from a spot; queries are steady, unoccluded and well lit."""
    is_query = key[1] == _ROLE_QUERY
    rng = _rng(seed, _STREAM_VIEW, *key, attempt)
    width, height = _frame_size(rng, config)
    camera = _spot_camera(rng, _landmark_geometry(plan), spot, width, height, steady=is_query)
    mean_occluders = 0.0 if is_query else config.occluders_per_image
    return _View(
        key=key,
        path=path,
        kind="landmark",
        landmark=plan.landmark_id,
        width=width,
        height=height,
        camera=camera,
        light=_sample_light(rng, config, calm=is_query),
        occluders=_sample_occluders(rng, width, height, mean_occluders),
        **_sample_effects(rng, config, width, height, calm=is_query),
    )


def _landmark_views(
    seed: int, plan: _LandmarkPlan, paths: Sequence[str], config: SynthConfig
) -> list[tuple[_View, _Observation]]:
    """Photographs around the landmark's popular spots, or anywhere (``wide_view_fraction``).

    As in a 3D reconstruction, which registers only photographs that show enough of the
    landmark, a view is drawn again (up to ``_VIEW_ATTEMPTS`` times) until the landmark covers
    ``MIN_DEPICTED_FRACTION`` of the frame.
    """
    geometry = _landmark_geometry(plan)
    spots = _popular_spots(seed, plan, config)
    views = []
    for number, path in enumerate(paths):
        key = (plan.landmark_id, _ROLE_PHOTO, number)
        for attempt in range(_VIEW_ATTEMPTS):
            rng = _rng(seed, _STREAM_VIEW_SPOT, *key, attempt)
            if rng.random() < config.wide_view_fraction:
                spot = _random_spot(rng, geometry, config, wide=True)
            else:
                spot = _near_spot(rng, spots[int(rng.integers(len(spots)))], config)
            view = _landmark_view(seed, key, path, plan, spot, config, attempt)
            seen = _observe(view, geometry)
            if _depicted_fraction(seen, geometry, seen.visible) >= MIN_DEPICTED_FRACTION:
                break
        views.append((view, seen))
    return views


def _popular_spots(seed: int, plan: _LandmarkPlan, config: SynthConfig) -> list[_Spot]:
    """Three to five places from which a landmark is often photographed."""
    rng = _rng(seed, _STREAM_SPOTS, plan.landmark_id)
    geometry = _landmark_geometry(plan)
    return [_random_spot(rng, geometry, config, wide=False) for _ in range(rng.integers(3, 6))]


def _query_spots(seed: int, plan: _LandmarkPlan, config: SynthConfig, count: int) -> list[_Spot]:
    """Regions of interest of a landmark's queries: façades, details, the tower."""
    rng = _rng(seed, _STREAM_QUERIES, plan.landmark_id)
    geometry = _landmark_geometry(plan)
    front_w, front_h = _wall_extent(geometry.quads[0])
    side = int(rng.choice([1, 3]))
    side_w, side_h = _wall_extent(geometry.quads[side])
    part_w, part_h = rng.uniform(0.4, 0.6) * front_w, rng.uniform(0.45, 0.7) * front_h
    u0, v0 = rng.uniform(0, front_w - part_w), rng.uniform(0, front_h - part_h)
    regions = [
        (0, (0.0, 0.0, front_w, front_h)),
        (side, (0.0, 0.0, side_w, side_h)),
        (0, (u0, v0, u0 + part_w, v0 + part_h)),
    ]
    if len(geometry.quads) > 4:
        regions.append((4, (0.0, 0.0, *_wall_extent(geometry.quads[4]))))
    else:
        regions.append((2, (0.0, 0.0, *_wall_extent(geometry.quads[2]))))
    regions.append((0, (0.0, 0.0, front_w, front_h)))
    spots = []
    for k in range(count):
        quad, region = regions[k] if k < len(regions) else (0, None)
        if region is None:  # further details of the front
            part_w, part_h = rng.uniform(0.35, 0.6) * front_w, rng.uniform(0.4, 0.7) * front_h
            u0, v0 = rng.uniform(0, front_w - part_w), rng.uniform(0, front_h - part_h)
            region = (u0, v0, u0 + part_w, v0 + part_h)
        spots.append(
            _Spot(
                quad=quad,
                region=_quadruple(region),
                yaw=float(np.radians(rng.uniform(-10, 10))),
                framing=float(rng.uniform(0.7, 0.9)),
                camera_height=float(rng.uniform(1.5, 2.0)),
            )
        )
    return spots


def _street_view(seed: int, number: int, config: SynthConfig) -> _View:
    """A street of ordinary buildings, without a landmark."""
    key = (_NO_LANDMARK, _ROLE_STREET, number)
    rng = _rng(seed, _STREAM_VIEW, *key)
    width, height = _frame_size(rng, config)
    hfov = np.radians(rng.uniform(45, 72))
    center = np.array([0.0, 0.0, _camera_height(rng)])
    pitch = np.radians(rng.uniform(-3, 15))
    look = center + np.array([0.0, np.cos(pitch), np.sin(pitch)])
    return _View(
        key=key,
        path="",
        kind="street",
        landmark=-1,
        width=width,
        height=height,
        camera=_Camera(
            center=center,
            rotation=_look_at(center, look, np.radians(rng.normal(0, 3))),
            focal=float(width / 2 / np.tan(hfov / 2)),
            width=width,
            height=height,
        ),
        light=_sample_light(rng, config, calm=False),
        occluders=_sample_occluders(rng, width, height, config.occluders_per_image),
        **_sample_effects(rng, config, width, height, calm=False),
    )


def _photo_view(seed: int, number: int, config: SynthConfig) -> _View:
    """A plain photograph without a building."""
    key = (_NO_LANDMARK, _ROLE_PLAIN_PHOTO, number)
    rng = _rng(seed, _STREAM_VIEW, *key)
    width, height = _frame_size(rng, config)
    return _View(
        key=key,
        path="",
        kind="photo",
        landmark=-1,
        width=width,
        height=height,
        camera=None,
        light=_sample_light(rng, config, calm=False),
        **_sample_effects(rng, config, width, height, calm=False),
    )


# --------------------------------------------------------------------------------------------
# Ground truth
# --------------------------------------------------------------------------------------------


def _query_region(view: _View, geometry: _LandmarkGeometry, spot: _Spot) -> tuple[np.ndarray, list]:
    """The query's relevant wall points and its box [x1, y1, x2, y2] in the query image."""
    quad = geometry.quads[spot.quad]
    u0, v0, u1, v1 = spot.region
    uv = geometry.wall_uv
    in_region = (
        (geometry.quad_of_point == spot.quad)
        & (uv[:, 0] >= u0)
        & (uv[:, 0] <= u1)
        & (uv[:, 1] >= v0)
        & (uv[:, 1] <= v1)
    )
    top = quad.origin + quad.wall_top * quad.v
    corners = np.stack(
        [top + u * quad.u + v * quad.v for u, v in ((u0, v0), (u1, v0), (u1, v1), (u0, v1))]
    )
    assert view.camera is not None
    xy, _ = view.camera.project(corners)
    x1, y1 = np.clip(xy.min(axis=0), 0, [view.width, view.height])
    x2, y2 = np.clip(xy.max(axis=0), 0, [view.width, view.height])
    box = [round(float(x1), 1), round(float(y1), 1), round(float(x2), 1), round(float(y2), 1)]
    return in_region & _observe(view, geometry).visible, box


def _label_database(
    region: np.ndarray,
    query: _Observation,
    geometry: _LandmarkGeometry,
    database: Sequence[_Observation],
) -> list[str]:
    """``"easy"``, ``"hard"`` or ``"junk"`` for each image of the query's landmark."""
    labels = []
    region_size = max(1, int(region.sum()))
    for seen in database:
        common = region & seen.visible
        n_common = int(common.sum())
        if n_common == 0:
            labels.append("junk")
            continue
        overlap = n_common / region_size
        closeup = n_common / max(1, int(seen.visible.sum()))
        centroid = geometry.points[common].mean(axis=0)
        angle = _angle_between(query.camera_center - centroid, seen.camera_center - centroid)
        scale = float(seen.pixels_per_metre[common].mean() / query.pixels_per_metre[common].mean())
        area = _depicted_fraction(seen, geometry, common)
        framed = region & seen.in_view
        occlusion = 1.0 - n_common / max(1, int(framed.sum()))
        if (
            overlap >= EASY_MIN_OVERLAP
            and angle <= EASY_MAX_ANGLE
            and area >= EASY_MIN_AREA
            and occlusion <= EASY_MAX_OCCLUSION
            and EASY_SCALE_RANGE[0] <= scale <= EASY_SCALE_RANGE[1]
            and not seen.extreme_light
        ):
            labels.append("easy")
        elif (
            (overlap >= HARD_MIN_OVERLAP or closeup >= HARD_MIN_CLOSEUP)
            and angle <= HARD_MAX_ANGLE
            and area >= HARD_MIN_AREA
        ):
            labels.append("hard")
        else:
            labels.append("junk")
    return labels


def _depicted_fraction(
    seen: _Observation, geometry: _LandmarkGeometry, points: np.ndarray
) -> float:
    """Fraction of the frame covered by the selected wall points (boolean mask, (N,))."""
    patch = (geometry.spacing * seen.pixels_per_metre[points]) ** 2 * seen.cos_incidence[points]
    return float(patch.sum() / seen.frame_area)


def _angle_between(a: np.ndarray, b: np.ndarray) -> float:
    """Angle between two vectors, in degrees."""
    cosine = float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
    return float(np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0))))


def _training_pairs(
    rng: np.random.Generator, geometry: _LandmarkGeometry, observations: Sequence[_Observation]
) -> list[int | None]:
    """For each image, a random partner sharing enough of its walls, or None."""
    visible = np.stack([o.visible for o in observations]).astype(np.float32)  # (n, N)
    ppm = np.stack([o.pixels_per_metre for o in observations])
    # einsum, not matmul: multi-threaded BLAS is very slow for such small products on a
    # loaded machine.
    shared = np.einsum("ik,jk->ij", visible, visible)
    scale_sums = np.einsum("ik,jk->ij", visible, visible * ppm)  # [i, j]: j's scale on shared
    scale = scale_sums / np.maximum(scale_sums.T, 1e-6)  # [i, j]: scale of j relative to i
    points = geometry.points.astype(np.float32)
    centroids = (
        np.stack(
            [np.einsum("ik,jk->ij", visible * points[:, axis], visible) for axis in range(3)],
            axis=2,
        )
        / np.maximum(shared, 1.0)[..., None]
    )  # (n, n, 3): centre of the walls both see
    cameras = np.stack([o.camera_center for o in observations])
    from_i = cameras[:, None, :] - centroids
    from_j = cameras[None, :, :] - centroids
    cosine = np.einsum("ijd,ijd->ij", from_i, from_j) / (
        np.linalg.norm(from_i, axis=2) * np.linalg.norm(from_j, axis=2)
    )
    angle = np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0)))
    counts = visible.sum(axis=1)
    allowed = (
        (shared >= PAIR_MIN_OVERLAP * counts[:, None])
        & (shared > 0)
        & (scale >= PAIR_SCALE_RANGE[0])
        & (scale <= PAIR_SCALE_RANGE[1])
        & (angle <= PAIR_MAX_ANGLE)
    )
    np.fill_diagonal(allowed, False)
    partners: list[int | None] = []
    for row in allowed:
        candidates = np.flatnonzero(row)
        partners.append(int(rng.choice(candidates)) if candidates.size else None)
    return partners


# --------------------------------------------------------------------------------------------
# Textures
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Style:
    """Architectural vocabulary shared by all walls of one building."""

    material: str
    wall: tuple[float, float, float]
    trim: tuple[float, float, float]
    accent: tuple[float, float, float]
    glass: tuple[float, float, float]
    floor_height: float
    bay_width: float
    window_shape: str
    window_size: tuple[float, float]  # fraction of the bay width and of the floor height
    shutters: bool
    pilasters: bool
    cornices: bool
    mullions: bool
    arcade: bool


def _random_style(rng: np.random.Generator) -> _Style:
    """Materials, colours and rhythm of a building."""
    wall = _jitter_colour(rng, _WALL_TINTS[int(rng.integers(len(_WALL_TINTS)))], 0.05)
    trim = np.clip(wall * rng.choice([0.7, 1.2]) + rng.normal(0, 0.04, 3), 0.05, 0.97)
    return _Style(
        material=str(rng.choice(_WALL_MATERIALS)),
        wall=_triple(wall),
        trim=_triple(trim),
        accent=_triple(_jitter_colour(rng, _ACCENT_COLOURS[int(rng.integers(8))], 0.06)),
        glass=_triple(_jitter_colour(rng, (0.16, 0.2, 0.26), 0.05)),
        floor_height=float(rng.uniform(3.0, 5.0)),
        bay_width=float(rng.uniform(2.5, 5.0)),
        window_shape=str(rng.choice(_WINDOW_SHAPES)),
        window_size=(float(rng.uniform(0.35, 0.7)), float(rng.uniform(0.45, 0.75))),
        shutters=bool(rng.random() < 0.25),
        pilasters=bool(rng.random() < 0.4),
        cornices=bool(rng.random() < 0.6),
        mullions=bool(rng.random() < 0.5),
        arcade=bool(rng.random() < 0.3),
    )


def _window_outline(shape: str, box: Sequence[float]) -> list[list[tuple[float, float]]]:
    """Polygons of a window of the given shape inside box (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = box
    width = x1 - x0
    if shape == "twin":
        gap = width * 0.12
        half = (width - gap) / 2
        return _window_outline("arch", (x0, y0, x0 + half, y1)) + _window_outline(
            "arch", (x1 - half, y0, x1, y1)
        )
    if shape == "rect":
        return [[(x0, y0), (x1, y0), (x1, y1), (x0, y1)]]
    if shape == "round":
        angles = np.linspace(0, 2 * np.pi, 20, endpoint=False)
        cx, cy, rx, ry = (x0 + x1) / 2, (y0 + y1) / 2, width / 2, (y1 - y0) / 2
        return [[(cx + rx * np.cos(a), cy + ry * np.sin(a)) for a in angles]]
    radius = width / 2
    spring = min(y1, y0 + radius)
    if shape == "pointed":
        return [
            [(x0, y1), (x0, spring), ((x0 + x1) / 2, y0 - radius * 0.3), (x1, spring), (x1, y1)]
        ]
    angles = np.linspace(np.pi, 2 * np.pi, 10)
    arch = [((x0 + x1) / 2 + radius * np.cos(a), spring + radius * np.sin(a)) for a in angles]
    return [[(x0, y1), *arch, (x1, y1)]]


def _panel(
    rng: np.random.Generator, kind: str, width: int, height: int, style: _Style
) -> tuple[np.ndarray, Image.Image]:
    """A decorative panel: RGB (height, width, 3) in [0, 1] and its mask."""
    mask = Image.new("L", (width, height), 255)
    trim = _rgb255(style.trim)
    if kind == "mural":
        picture = _photo_crop(rng, str(rng.choice(_COLOUR_PHOTOS)), width, height)
    elif kind == "rose":
        side = min(width, height)
        picture = _photo_crop(rng, str(rng.choice(_ROUND_PHOTOS)), width, height, 0.5)
        mask = Image.new("L", (width, height), 0)
        box = ((width - side) / 2, (height - side) / 2, (width + side) / 2, (height + side) / 2)
        ImageDraw.Draw(mask).ellipse(box, fill=255)
        image = Image.fromarray(_to_uint8(picture))
        draw = ImageDraw.Draw(image)
        cx, cy, radius = width / 2, height / 2, side / 2
        for angle in np.linspace(0, 2 * np.pi, int(rng.integers(6, 13)), endpoint=False):
            draw.line(
                [(cx, cy), (cx + radius * np.cos(angle), cy + radius * np.sin(angle))],
                fill=trim,
                width=max(1, side // 24),
            )
        draw.ellipse(box, outline=trim, width=max(1, side // 14))
        picture = np.asarray(image, dtype=np.float32) / 255.0
    elif kind == "mosaic":
        tiles = int(rng.integers(5, 12))
        small = _photo_crop(
            rng, str(rng.choice(_COLOUR_PHOTOS)), tiles, max(2, tiles * height // width)
        )
        image = Image.fromarray(_to_uint8(small)).resize((width, height), Image.Resampling.NEAREST)
        picture = np.asarray(image, dtype=np.float32) / 255.0
    elif kind == "relief":
        grey = _photo_crop(rng, str(rng.choice(_GREY_PHOTOS)), width, height).mean(axis=2)
        embossed = Image.fromarray(_to_uint8(grey)).filter(ImageFilter.EMBOSS)
        shade = np.asarray(embossed, dtype=np.float32) / 255.0
        picture = np.clip(
            (0.55 + 0.9 * (shade - 0.5))[..., None] * np.asarray(style.wall) * 1.1, 0, 1
        )
    elif kind == "sign":
        text = _photo_crop(rng, str(rng.choice(("text", "page"))), width, height, 0.4).mean(axis=2)
        ink, paper = (
            (style.accent, (0.95, 0.93, 0.88))
            if rng.random() < 0.5
            else ((0.95, 0.93, 0.88), style.accent)
        )
        picture = text[..., None] * np.asarray(paper) + (1 - text[..., None]) * np.asarray(ink)
    elif kind == "blocks":
        picture = np.empty((height, width, 3), np.float32)
        picture[:] = style.accent
        for _ in range(int(rng.integers(3, 7))):
            bx0, bx1 = sorted(rng.integers(0, width + 1, 2))
            by0, by1 = sorted(rng.integers(0, height + 1, 2))
            picture[by0:by1, bx0:bx1] = _ACCENT_COLOURS[int(rng.integers(8))]
        image = Image.fromarray(_to_uint8(picture))
        draw = ImageDraw.Draw(image)
        for _ in range(3):
            x = int(rng.integers(0, width))
            draw.line([(x, 0), (x, height)], fill=(20, 20, 20), width=max(1, width // 30))
        picture = np.asarray(image, dtype=np.float32) / 255.0
    elif kind == "stripes":
        period = rng.uniform(0.08, 0.3) * max(width, height)
        angle = rng.choice([0.0, np.pi / 2, np.pi / 4, -np.pi / 4])
        ys, xs = np.mgrid[0:height, 0:width]
        phase = (xs * np.cos(angle) + ys * np.sin(angle)) / period
        second = np.asarray(_ACCENT_COLOURS[int(rng.integers(8))], np.float32)
        picture = np.where(((phase % 1) < 0.5)[..., None], np.asarray(style.accent), second)
    elif kind == "checker":
        cells = int(rng.integers(3, 9))
        pattern = _photo_crop(rng, "checkerboard", width, height, 0.2).mean(axis=2)
        ys, xs = np.mgrid[0:height, 0:width]
        checker = ((xs * cells // width + ys * cells // max(1, width)) % 2).astype(np.float32)
        mix = 0.7 * checker + 0.3 * pattern
        picture = mix[..., None] * np.asarray(style.accent) + (1 - mix[..., None]) * 0.9
    elif kind == "clock":
        side = min(width, height)
        picture = np.empty((height, width, 3), np.float32)
        picture[:] = style.trim
        image = Image.fromarray(_to_uint8(picture))
        draw = ImageDraw.Draw(image)
        cx, cy, radius = width / 2, height / 2, side / 2 * 0.95
        draw.ellipse(
            [cx - radius, cy - radius, cx + radius, cy + radius],
            fill=(238, 236, 225),
            outline=_rgb255(style.accent),
            width=max(1, side // 12),
        )
        for tick in range(12):
            angle = tick * np.pi / 6
            draw.line(
                [
                    (cx + 0.75 * radius * np.cos(angle), cy + 0.75 * radius * np.sin(angle)),
                    (cx + 0.9 * radius * np.cos(angle), cy + 0.9 * radius * np.sin(angle)),
                ],
                fill=(25, 25, 25),
                width=max(1, side // 30),
            )
        for length, angle in ((0.5, rng.uniform(0, 2 * np.pi)), (0.8, rng.uniform(0, 2 * np.pi))):
            draw.line(
                [
                    (cx, cy),
                    (cx + length * radius * np.cos(angle), cy + length * radius * np.sin(angle)),
                ],
                fill=(25, 25, 25),
                width=max(1, side // 20),
            )
        picture = np.asarray(image, dtype=np.float32) / 255.0
    elif kind == "logo":
        picture = _photo_crop(rng, str(rng.choice(_SIGN_PHOTOS)), width, height, 0.6)
        picture = picture * 0.8 + 0.2 * np.asarray(style.accent)
    else:  # emblem: a shield with a small picture
        picture = np.empty((height, width, 3), np.float32)
        picture[:] = style.accent
        picture[:, width // 2 :] = _ACCENT_COLOURS[int(rng.integers(8))]
        inner_w, inner_h = max(2, width // 2), max(2, height // 2)
        picture[height // 4 : height // 4 + inner_h, width // 4 : width // 4 + inner_w] = (
            _photo_crop(rng, str(rng.choice(_COLOUR_PHOTOS)), inner_w, inner_h)
        )
        mask = Image.new("L", (width, height), 0)
        ImageDraw.Draw(mask).polygon(
            [(0, 0), (width, 0), (width, height * 0.6), (width / 2, height), (0, height * 0.6)],
            fill=255,
        )
    if kind in ("mural", "mosaic", "sign", "blocks", "logo"):
        image = Image.fromarray(_to_uint8(picture))
        ImageDraw.Draw(image).rectangle(
            [0, 0, width - 1, height - 1], outline=trim, width=max(1, min(width, height) // 12)
        )
        picture = np.asarray(image, dtype=np.float32) / 255.0
    return picture.astype(np.float32), mask


def _facade_texture(
    rng: np.random.Generator,
    style: _Style,
    quad: _Quad,
    px_per_metre: float,
    ornament: str,
    role: str,
) -> Image.Image:
    """RGBA texture of one wall: material, floors, bays, windows, panels, roof ornament.

    Args:
        ornament: Shape above the roof line: "gable", "stepped", "arch", "crenel", "spire".
        role: "front", "side", "back" or "tower".
    """
    wall_m, height_m = _wall_extent(quad)
    width = max(8, round(quad.size[0] * px_per_metre))
    roof_px = round(quad.wall_top * px_per_metre)
    wall_px = max(8, round(height_m * px_per_metre))
    total = roof_px + wall_px
    ppm = width / quad.size[0]

    surface = _material(rng, style.material, style.wall, width, total)
    surface *= (0.88 + 0.2 * _low_frequency(rng, width, total, 4))[..., None]
    grime = np.linspace(0.0, 1.0, total, dtype=np.float32) ** 3
    surface *= (1.0 - 0.18 * grime)[:, None, None]
    image = Image.fromarray(_to_uint8(surface))
    draw = ImageDraw.Draw(image)
    trim, accent = _rgb255(style.trim), _rgb255(style.accent)

    floors = max(1, round(height_m / style.floor_height))
    floor_px = wall_px / floors
    bays = max(1, round(wall_m / style.bay_width))
    bay_px = width / bays
    top = roof_px

    draw.rectangle([0, total - max(2, 0.9 * ppm), width, total], fill=trim)
    draw.rectangle([0, top, width, top + max(1, 0.45 * ppm)], fill=trim)
    if style.cornices:
        for floor in range(1, floors):
            y = top + floor * floor_px
            draw.rectangle([0, y - max(1, 0.15 * ppm), width, y + max(1, 0.15 * ppm)], fill=trim)
    if style.pilasters:
        for bay in range(bays + 1):
            x = bay * bay_px
            draw.rectangle([x - 0.25 * ppm, top, x + 0.25 * ppm, total], fill=trim)

    occupied = np.zeros((floors, bays), dtype=bool)
    panels = {"front": (1, 4), "side": (0, 2), "back": (0, 2), "tower": (0, 1)}
    for _ in range(int(rng.integers(*panels[role]))):
        span_f = int(rng.integers(1, min(3, floors) + 1))
        span_b = int(rng.integers(1, min(4, bays) + 1))
        floor0 = int(rng.integers(0, floors - span_f + 1))
        bay0 = int(rng.integers(0, bays - span_b + 1))
        if occupied[floor0 : floor0 + span_f, bay0 : bay0 + span_b].any():
            continue
        occupied[floor0 : floor0 + span_f, bay0 : bay0 + span_b] = True
        x0 = int(bay0 * bay_px + 0.12 * bay_px)
        x1 = int((bay0 + span_b) * bay_px - 0.12 * bay_px)
        y0 = int(top + floor0 * floor_px + 0.12 * floor_px)
        y1 = int(top + (floor0 + span_f) * floor_px - 0.12 * floor_px)
        if x1 - x0 < 3 or y1 - y0 < 3:
            continue
        kind = str(rng.choice(_PANEL_KINDS)) if role != "tower" else "clock"
        picture, mask = _panel(rng, kind, x1 - x0, y1 - y0, style)
        image.paste(Image.fromarray(_to_uint8(picture)), (x0, y0), mask)

    glass_mask = Image.new("L", (width, total), 0)
    glass_draw = ImageDraw.Draw(glass_mask)
    frames = []
    door_bay = bays // 2 if role == "front" else -1
    for floor in range(floors):
        for bay in range(bays):
            if occupied[floor, bay]:
                continue
            y_floor = top + floor * floor_px
            x_bay = bay * bay_px
            if floor == floors - 1 and bay == door_bay:
                door_w = bay_px * 0.6
                box = (
                    x_bay + (bay_px - door_w) / 2,
                    y_floor + floor_px * 0.15,
                    x_bay + (bay_px + door_w) / 2,
                    total - 0.9 * ppm,
                )
                for polygon in _window_outline("arch", box):
                    draw.polygon(polygon, fill=_rgb255(np.asarray(style.accent) * 0.45))
                    frames.append(polygon)
                continue
            shape = "arch" if style.arcade and floor == floors - 1 else style.window_shape
            win_w = bay_px * style.window_size[0]
            win_h = floor_px * style.window_size[1]
            box = (
                x_bay + (bay_px - win_w) / 2,
                y_floor + (floor_px - win_h) * 0.55,
                x_bay + (bay_px + win_w) / 2,
                y_floor + (floor_px + win_h) * 0.55,
            )
            if style.shutters and shape == "rect":
                draw.rectangle([box[0] - win_w * 0.35, box[1], box[0], box[3]], fill=accent)
                draw.rectangle([box[2], box[1], box[2] + win_w * 0.35, box[3]], fill=accent)
            for polygon in _window_outline(shape, box):
                glass_draw.polygon(polygon, fill=255)
                frames.append(polygon)
            if style.mullions:
                frames.append([((box[0] + box[2]) / 2, box[1]), ((box[0] + box[2]) / 2, box[3])])

    gradient = np.linspace(1.3, 0.7, total, dtype=np.float32)[:, None, None]
    reflection = _photo_crop(
        rng, str(rng.choice(_COLOUR_PHOTOS)), max(1, width // 4), max(1, total // 4), 0.6
    )
    reflection = Image.fromarray(_to_uint8(reflection)).resize((width, total))
    glass = np.asarray(style.glass, np.float32) * gradient * 0.8 + 0.22 / 255.0 * np.asarray(
        reflection, np.float32
    )
    image.paste(Image.fromarray(_to_uint8(glass)), (0, 0), glass_mask)
    frame_width = max(1, round(0.2 * ppm))
    for polygon in frames:
        draw.line(
            [*polygon, polygon[0]] if len(polygon) > 2 else polygon, fill=trim, width=frame_width
        )

    alpha = Image.new("L", (width, total), 0)
    alpha_draw = ImageDraw.Draw(alpha)
    alpha_draw.rectangle([0, roof_px, width, total], fill=255)
    if roof_px > 0:
        _draw_ornament(alpha_draw, image, ornament, roof_px, ppm, style, rng)
    image.putalpha(alpha)
    return image


def _plain_facade(
    rng: np.random.Generator, style: _Style, quad: _Quad, px_per_metre: float
) -> Image.Image:
    """Cheap RGBA texture of a neighbouring building: material, window grid, trim bands."""
    width = max(4, round(quad.size[0] * px_per_metre))
    height = max(4, round(quad.size[1] * px_per_metre))
    surface = _material(rng, style.material, style.wall, width, height)
    floors = max(1, round(quad.size[1] / style.floor_height))
    bays = max(1, round(quad.size[0] / style.bay_width))
    rows = (np.arange(height) + 0.5) / height * floors % 1.0
    cols = (np.arange(width) + 0.5) / width * bays % 1.0
    low = (1 - style.window_size[1]) / 2
    in_rows = (rows > low) & (rows < 1 - low * 0.6)
    in_rows[int(height * (floors - 1) / floors) :] &= rng.random() < 0.5  # shop windows or not
    in_cols = np.abs(cols - 0.5) < style.window_size[0] / 2
    surface[in_rows[:, None] & in_cols[None, :]] = style.glass
    band = max(1, round(0.5 * px_per_metre))
    surface[:band] = style.trim
    surface[-band:] = np.asarray(style.trim) * 0.7
    alpha = np.full((height, width, 1), 255, np.uint8)
    return Image.fromarray(np.concatenate([_to_uint8(surface), alpha], axis=2))


def _draw_ornament(
    alpha: ImageDraw.ImageDraw,
    image: Image.Image,
    ornament: str,
    roof_px: int,
    ppm: float,
    style: _Style,
    rng: np.random.Generator,
) -> None:
    """Shape above the roof line (into the alpha mask) and its trim and decoration."""
    width = image.width
    draw = ImageDraw.Draw(image)
    trim = _rgb255(style.trim)
    if ornament == "crenel":
        merlon = max(2, int(1.2 * ppm))
        for x in range(0, width, 2 * merlon):
            alpha.rectangle([x, 0, x + merlon - 1, roof_px], fill=255)
        return
    if ornament in ("gable", "spire"):
        outline = [(0, roof_px), (width / 2, 0), (width, roof_px)]
    elif ornament == "stepped":
        steps = int(rng.integers(3, 6))
        outline = [(0, roof_px)]
        for step in range(steps):
            x_in = width / 2 * step / steps
            y = roof_px * (1 - (step + 1) / steps)
            outline += [(x_in, roof_px * (1 - step / steps)), (x_in, y)]
        outline += [(width - x, y) for x, y in reversed(outline[1:])] + [(width, roof_px)]
    else:  # arch
        angles = np.linspace(np.pi, 2 * np.pi, 16)
        outline = [
            (width / 2 + width * 0.4 * np.cos(a), roof_px + roof_px * np.sin(a)) for a in angles
        ]
    alpha.polygon(outline, fill=255)
    draw.line(outline, fill=trim, width=max(1, int(0.4 * ppm)))
    if ornament != "spire" and roof_px > 6 and rng.random() < 0.7:
        radius = roof_px * 0.28
        cx, cy = width / 2, roof_px * 0.62
        picture = _photo_crop(rng, str(rng.choice(_ROUND_PHOTOS)), int(2 * radius), int(2 * radius))
        disc = Image.new("L", picture.shape[1::-1], 0)
        ImageDraw.Draw(disc).ellipse([0, 0, disc.width - 1, disc.height - 1], fill=255)
        image.paste(Image.fromarray(_to_uint8(picture)), (int(cx - radius), int(cy - radius)), disc)
        draw.ellipse(
            [cx - radius, cy - radius, cx + radius, cy + radius],
            outline=trim,
            width=max(1, int(0.3 * ppm)),
        )


def _mip_pyramid(texture: Image.Image) -> tuple[Image.Image, ...]:
    """The texture and its halvings, for sampling without aliasing at any distance."""
    levels = [texture]
    while min(levels[-1].size) >= 16:
        levels.append(levels[-1].reduce(2))
    return tuple(levels)


@functools.lru_cache(maxsize=6)
def _landmark_textures(
    seed: int, plan: _LandmarkPlan, image_size: int
) -> tuple[tuple[Image.Image, ...], ...]:
    """Mip pyramids of the textures of a landmark's quads (in the order of its geometry)."""
    rng = _rng(seed, _STREAM_TEXTURE, plan.landmark_id)
    style = _random_style(rng)
    tower_style = replace(
        _random_style(rng), material=style.material, wall=style.wall, trim=style.trim
    )
    geometry = _landmark_geometry(plan)
    largest = max(max(q.size) for q in geometry.quads)
    ppm = min(_TEXTURE_PX_PER_METRE, _TEXTURE_MAX_SIDE / largest)
    ppm *= image_size / _REFERENCE_IMAGE_SIZE
    pyramids = []
    for index, quad in enumerate(geometry.quads):
        if index >= 4:
            texture = _facade_texture(rng, tower_style, quad, ppm, "spire", "tower")
        else:
            role = ("front", "side", "back", "side")[index]
            texture = _facade_texture(rng, style, quad, ppm, plan.roof, role)
        pyramids.append(_mip_pyramid(texture))
    return tuple(pyramids)


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------


# The canvas holds radiance divided by this, so that lit surfaces may be brighter than their
# texture; the final tone curve multiplies it back.
_HEADROOM = 1.6


def _tone_curves(gains: Sequence[float], gamma: float) -> list[int]:
    """Lookup table for ``Image.point``: each channel scaled by its gain, then gamma."""
    levels = np.arange(256, dtype=np.float64) / 255.0
    table = [
        (255.0 * np.clip(levels * gain, 0.0, 1.0) ** gamma + 0.5).astype(int) for gain in gains
    ]
    return np.concatenate(table).tolist()


def _draw_quad(
    canvas: Image.Image,
    camera: _Camera,
    quad: _Quad,
    pyramid: Sequence[Image.Image],
    light: np.ndarray,
) -> None:
    """Paint a textured quad (RGBA mip pyramid), lit by RGB ``light``, onto the canvas."""
    corners = quad.corners()
    depths = camera.to_camera(corners)[:, 2]
    if (depths <= _NEAR_PLANE).all():
        return
    centre = corners.mean(axis=0)
    to_camera = camera.center - centre
    distance = float(np.linalg.norm(to_camera))
    slant = max(0.05, abs(float(quad.normal @ to_camera)) / distance)
    image_ppm = camera.focal / max(distance, _NEAR_PLANE) * np.sqrt(slant)
    texture_ppm = pyramid[0].width / quad.size[0]
    level = int(np.clip(np.floor(np.log2(max(texture_ppm / image_ppm, 1.0))), 0, len(pyramid) - 1))
    texture = pyramid[level]
    metres_per_texel = (quad.size[0] / texture.width, quad.size[1] / texture.height)
    to_image = camera.plane_homography(quad.origin, quad.u, quad.v) @ np.diag(
        [metres_per_texel[0], metres_per_texel[1], 1.0]
    )
    try:
        to_texture = np.linalg.inv(to_image)
    except np.linalg.LinAlgError:
        return
    clipped = bool((depths <= _NEAR_PLANE).any())
    left, top, right, bottom = 0, 0, camera.width, camera.height
    if not clipped:  # warp only the quad's bounding box
        xy, _ = camera.project(corners)
        left, top = np.clip(np.floor(xy.min(axis=0)).astype(int), 0, [camera.width, camera.height])
        right, bottom = np.clip(
            np.ceil(xy.max(axis=0)).astype(int) + 1, 0, [camera.width, camera.height]
        )
    if right <= left or bottom <= top:
        return
    to_texture = to_texture @ np.array([[1.0, 0.0, left], [0.0, 1.0, top], [0.0, 0.0, 1.0]])
    if abs(to_texture[2, 2]) < 1e-12:
        return
    warped = texture.transform(
        (int(right - left), int(bottom - top)),
        Image.Transform.PERSPECTIVE,
        tuple((to_texture / to_texture[2, 2]).ravel()[:8]),
        Image.Resampling.BILINEAR,
    )
    mask = warped.getchannel("A")
    light_colour = (*_rgb255(np.asarray(light) / _HEADROOM), 255)
    warped = ImageChops.multiply(warped, Image.new("RGBA", warped.size, light_colour))
    if clipped:
        mask = ImageChops.multiply(mask, _front_mask(camera, corners))
    canvas.paste(warped, (int(left), int(top)), mask)


def _front_mask(camera: _Camera, corners: np.ndarray) -> Image.Image:
    """Mask (frame size) of the part of a planar polygon in front of the camera's near plane."""
    local = camera.to_camera(corners)
    kept = []
    for current, following in zip(local, np.roll(local, -1, axis=0), strict=True):
        if current[2] > _NEAR_PLANE:
            kept.append(current)
        if (current[2] > _NEAR_PLANE) != (following[2] > _NEAR_PLANE):
            t = (_NEAR_PLANE - current[2]) / (following[2] - current[2])
            kept.append(current + t * (following - current))
    mask = Image.new("L", (camera.width, camera.height), 0)
    if len(kept) >= 3:
        points = np.array(kept)
        xy = camera.focal * points[:, :2] / points[:, 2:] + [camera.width / 2, camera.height / 2]
        xy = np.clip(xy, -1e5, 1e5)
        ImageDraw.Draw(mask).polygon([tuple(p) for p in xy], fill=255)
    return mask


_HAZE = np.array([0.72, 0.74, 0.76], np.float32)


def _sky(rng: np.random.Generator, camera: _Camera, light: _Light) -> Image.Image:
    """Sky with clouds above the horizon, haze below it (computed coarse, then upscaled)."""
    elevation = camera.ray_elevations(4)
    clear_zenith = np.array([0.22, 0.42, 0.78], np.float32)
    grey = np.array([0.72, 0.74, 0.77], np.float32)
    zenith = clear_zenith * (1 - light.overcast) + grey * light.overcast
    horizon = np.array([0.78, 0.84, 0.9], np.float32) * (1 - light.overcast) + grey * light.overcast
    if light.sun_elevation < np.radians(12):
        horizon = np.array([0.95, 0.65, 0.42], np.float32)
    t = np.clip(elevation / 0.7, 0, 1)[..., None] ** 0.6
    sky = horizon * (1 - t) + zenith * t
    clouds = _low_frequency(rng, elevation.shape[1], elevation.shape[0], int(rng.integers(3, 8)))
    cover = np.clip((clouds - (0.75 - 0.5 * light.overcast)) * 3, 0, 1)[..., None]
    sky = sky * (1 - cover) + np.float32(0.9) * cover
    below = np.clip(-elevation / 0.03, 0, 1)[..., None]
    sky = sky * (1 - below) + _HAZE * below
    return Image.fromarray(_to_uint8(sky / _HEADROOM)).resize(
        (camera.width, camera.height), Image.Resampling.BILINEAR
    )


def _draw_ground(
    canvas: Image.Image, seed: int, rng: np.random.Generator, camera: _Camera, light: _Light
) -> None:
    """Textured ground plane in front of the camera, fading into haze with distance."""
    forward = camera.rotation[2].copy()
    pitch = np.arcsin(np.clip(forward[2], -1, 1))
    forward[2] = 0.0
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    ground_centre = np.array([camera.center[0], camera.center[1], 0.0])
    near = 1.0 + max(0.0, camera.center[2] * np.tan(pitch))
    quad = _Quad(
        origin=ground_centre + _GROUND_FAR * forward - _GROUND_FAR * right,
        u=right,
        v=-forward,
        size=(2 * _GROUND_FAR, _GROUND_FAR - near),
        normal=np.array([0.0, 0.0, 1.0]),
        wall_top=0.0,
    )
    texture = _ground_texture(seed, int(rng.integers(_GROUND_VARIANTS)))
    _draw_quad(canvas, camera, quad, (texture,), light.shade(quad.normal))


_GROUND_TINTS = ((0.5, 0.48, 0.45), (0.45, 0.55, 0.35), (0.6, 0.55, 0.45))
_GROUND_VARIANTS = 24
_GROUND_FAR = 120.0


@functools.lru_cache(maxsize=_GROUND_VARIANTS)
def _ground_texture(seed: int, variant: int) -> Image.Image:
    """One of a few pavements and lawns, fading into haze towards its far (top) edge."""
    rng = _rng(seed, _STREAM_GROUND, variant)
    material = str(rng.choice(_GROUND_MATERIALS))
    tint = _jitter_colour(rng, _GROUND_TINTS[int(rng.integers(len(_GROUND_TINTS)))], 0.05)
    texels = 160
    distance = _GROUND_FAR * (1.0 - (np.arange(texels) + 0.5) / texels)
    fog = (1.0 - np.exp(-distance / 70.0)).astype(np.float32)[:, None, None]
    surface = _material(rng, material, tint, texels, texels) * (1 - fog) + _HAZE * fog
    return Image.fromarray(_to_uint8(surface)).convert("RGBA")


def _draw_neighbours(
    canvas: Image.Image,
    rng: np.random.Generator,
    camera: _Camera,
    light: _Light,
    around: np.ndarray,
    keep_out: float,
    count: int,
) -> None:
    """Neighbouring buildings of random design around a point, far ones first."""
    direction = camera.center[:2] - around[:2]
    away = np.arctan2(direction[1], direction[0]) + np.pi
    boxes = []
    for _ in range(count):
        size = (rng.uniform(8, 24), rng.uniform(8, 18), rng.uniform(6, 28))
        angle = away + rng.uniform(-1.8, 1.8)
        reach = keep_out + np.hypot(size[0], size[1]) / 2 + rng.uniform(2, 25)
        centre = around[:2] + reach * np.array([np.cos(angle), np.sin(angle)])
        boxes.append((float(np.linalg.norm(centre - camera.center[:2])), centre, size))
    ppm = _FILLER_PX_PER_METRE * max(camera.width, camera.height) / _REFERENCE_IMAGE_SIZE
    for _, centre, size in sorted(boxes, key=lambda box: -box[0]):
        style = _random_style(rng)
        yaw = float(
            np.arctan2(*(camera.center[:2] - centre)[::-1]) - np.pi / 2 + rng.uniform(-0.6, 0.6)
        )
        for quad in _box_quads(tuple(centre), 0.0, size, yaw, (0.0,) * 4):
            if quad.faces(camera.center):
                texture = _plain_facade(rng, style, quad, ppm)
                _draw_quad(canvas, camera, quad, (texture,), light.shade(quad.normal))


_SKIN_TONES = ((0.92, 0.76, 0.64), (0.78, 0.57, 0.42), (0.55, 0.38, 0.26), (0.36, 0.24, 0.17))
_PLAIN_FILLS = {
    "trunk": (0.3, 0.22, 0.15),
    "metal": (0.18, 0.19, 0.2),
    "glass": (0.12, 0.15, 0.2),
    "tyre": (0.06, 0.06, 0.06),
}


def _occluder_fill(rng: np.random.Generator, role: str, width: int, height: int) -> Image.Image:
    """What a part of a foreground object looks like, as an RGB image of the given size."""
    if role == "clothes":
        fill = _photo_crop(rng, str(rng.choice(_COLOUR_PHOTOS)), width, height, 0.2) * 0.8
    elif role == "foliage":
        leaves = _jitter_colour(rng, (0.25, 0.42, 0.18), 0.05)
        fill = _material(rng, "grass", leaves, width, height)
    elif role == "board":
        fill = _photo_crop(rng, str(rng.choice(_SIGN_PHOTOS)), width, height)
    else:
        if role == "skin":
            colour = np.asarray(_SKIN_TONES[int(rng.integers(len(_SKIN_TONES)))])
        elif role == "paint":
            colour = _jitter_colour(rng, _ACCENT_COLOURS[int(rng.integers(8))], 0.05)
        elif role in ("stone", "bronze"):
            base = (0.6, 0.6, 0.58) if role == "stone" else (0.35, 0.42, 0.33)
            colour = _jitter_colour(rng, base, 0.05)
        else:
            colour = np.asarray(_PLAIN_FILLS[role])
        return Image.new("RGB", (width, height), _rgb255(colour / _HEADROOM))
    return Image.fromarray(_to_uint8(fill / _HEADROOM))


def _draw_occluders(canvas: Image.Image, rng: np.random.Generator, view: _View) -> None:
    """Paint the view's foreground objects, part by part."""
    for occluder in view.occluders:
        for role, mask in _occluder_layers(occluder, view.width, view.height):
            box = mask.getbbox()
            if box is not None:
                fill = _occluder_fill(rng, role, box[2] - box[0], box[3] - box[1])
                canvas.paste(fill, box[:2], mask.crop(box))


def _draw_photo(rng: np.random.Generator, view: _View) -> Image.Image:
    """A plain photograph (no building), slightly warped."""
    name = str(rng.choice(_COLOUR_PHOTOS + _GREY_PHOTOS))
    crop = _photo_crop(rng, name, view.width * 2, view.height * 2, 0.4)
    picture = Image.fromarray(_to_uint8(crop / _HEADROOM))
    w, h = picture.size
    corners = np.array([[0, 0], [0, h], [w, h], [w, 0]], float)
    corners += rng.normal(0, 0.05, corners.shape) * [w, h]
    return picture.transform(
        (view.width, view.height),
        Image.Transform.QUAD,
        tuple(np.clip(corners, [0, 0], [w, h]).ravel()),
        Image.Resampling.BILINEAR,
    )


def _render(seed: int, view: _View, plan: _LandmarkPlan | None) -> Image.Image:
    """The photograph a view describes."""
    rng = _rng(seed, _STREAM_RENDER, *view.key)
    light = view.light
    if view.camera is None:
        canvas = _draw_photo(rng, view)
    else:
        camera = view.camera
        # The background (sky, ground, neighbouring buildings) is drawn at half resolution:
        # faster, and slightly out of focus behind the landmark.
        coarse = replace(
            camera, focal=camera.focal / 2, width=camera.width // 2, height=camera.height // 2
        )
        canvas = _sky(rng, coarse, light)
        _draw_ground(canvas, seed, rng, coarse, light)
        if plan is None:
            _draw_neighbours(
                canvas,
                rng,
                coarse,
                light,
                camera.center + 40 * camera.rotation[2],
                10.0,
                int(rng.integers(2, 6)),
            )
        else:
            geometry = _landmark_geometry(plan)
            _draw_neighbours(
                canvas, rng, coarse, light, np.zeros(3), geometry.radius, int(rng.integers(0, 3))
            )
        canvas = canvas.resize((camera.width, camera.height), Image.Resampling.BILINEAR)
        if plan is not None:
            pyramids = _landmark_textures(seed, plan, max(camera.width, camera.height))
            for index in [*range(4, len(geometry.quads)), *range(4)]:  # tower behind the body
                quad = geometry.quads[index]
                if quad.faces(camera.center):
                    _draw_quad(canvas, camera, quad, pyramids[index], light.shade(quad.normal))
        _draw_occluders(canvas, rng, view)
    gains = light.exposure * np.asarray(light.white_balance)
    picture = canvas.point(_tone_curves(gains * _HEADROOM, gamma=rng.uniform(0.9, 1.1)))
    if view.blur > 0:
        picture = picture.filter(ImageFilter.BoxBlur(view.blur))
    noisy = np.asarray(picture, np.float32) + 0.5
    bank = _noise_bank(seed, max(1 << 20, 4 * noisy.size))
    start = int(rng.integers(bank.size - noisy.size))
    noisy += view.noise * bank[start : start + noisy.size].reshape(noisy.shape)
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


@functools.lru_cache(maxsize=1)
def _noise_bank(seed: int, length: int) -> np.ndarray:
    """Standard normal samples from which every image takes its sensor noise (a random slice)."""
    return _rng(seed, _STREAM_NOISE).standard_normal(length, dtype=np.float32)


# --------------------------------------------------------------------------------------------
# The benchmark: images, ground truth, training pairs
# --------------------------------------------------------------------------------------------


def _cid(seed: int, split: str, number: int) -> str:
    """An SfM-120k-like image id: 32 hexadecimal characters."""
    return hashlib.md5(f"synth-{seed}-{split}-{number}".encode()).hexdigest()


def _cid_path(cid: str) -> str:
    """Where SfM-120k keeps an image: ``ims/<cid[-2:]>/<cid[-4:-2]>/<cid[-6:-4]>/<cid>``."""
    return f"{TRAIN_DIR}/ims/{cid[-2:]}/{cid[-4:-2]}/{cid[-6:-4]}/{cid}"


def _plan_training_landmark(
    seed: int, plan: _LandmarkPlan, paths: Sequence[str], config: SynthConfig
) -> tuple[list[_View], list[int | None]]:
    """A training landmark's photographs, and for each a partner photograph (or None)."""
    geometry = _landmark_geometry(plan)
    views, observations = zip(*_landmark_views(seed, plan, paths, config), strict=True)
    partners = _training_pairs(_rng(seed, _STREAM_PAIRS, plan.landmark_id), geometry, observations)
    return list(views), partners


def _plan_test_landmark(
    seed: int, plan: _LandmarkPlan, first_query: int, config: SynthConfig
) -> tuple[list[_View], list[list[float]], list[_View], list[list[str]]]:
    """Queries of one landmark, its database images, and their labels per query.

    Database images are drawn near the queries' viewpoints, near other popular spots, or
    anywhere; images near a query are added while it has fewer than ``MIN_QUERY_POSITIVES``
    positives.

    Returns:
        Query views, query boxes, database views (paths not yet assigned), and per query one
        label per database view.
    """
    geometry = _landmark_geometry(plan)
    spots = _query_spots(seed, plan, config, config.queries_per_landmark)
    others = _popular_spots(seed, plan, config)
    queries, boxes, regions, query_seen = [], [], [], []
    for number, spot in enumerate(spots):
        path = f"{TEST_DIR}/jpg/query_{first_query + number:03d}.jpg"
        view = _landmark_view(
            seed, (plan.landmark_id, _ROLE_QUERY, number), path, plan, spot, config
        )
        region, box = _query_region(view, geometry, spot)
        queries.append(view)
        boxes.append(box)
        regions.append(region)
        query_seen.append(_observe(view, geometry))

    database: list[_View] = []
    labels: list[list[str]] = [[] for _ in queries]

    def add(near_query: int | None) -> None:
        key = (plan.landmark_id, _ROLE_PHOTO, len(database))
        rng = _rng(seed, _STREAM_VIEW_SPOT, *key)
        if near_query is not None:
            spot = _near_spot(rng, spots[near_query], config)
        elif rng.random() < config.wide_view_fraction:
            spot = _random_spot(rng, geometry, config, wide=True)
        elif rng.random() < 0.75:
            spot = _near_spot(rng, spots[int(rng.integers(len(spots)))], config)
        else:
            spot = _near_spot(rng, others[int(rng.integers(len(others)))], config)
        view = _landmark_view(seed, key, "", plan, spot, config)
        seen = _observe(view, geometry)
        database.append(view)
        for query_labels, region, query in zip(labels, regions, query_seen, strict=True):
            query_labels += _label_database(region, query, geometry, [seen])

    for _ in range(config.database_images_per_landmark):
        add(None)
    for q, query_labels in enumerate(labels):
        for _ in range(20 * MIN_QUERY_POSITIVES):
            if sum(label != "junk" for label in query_labels) >= MIN_QUERY_POSITIVES:
                break
            add(q)
        else:
            raise AsymretError(
                f"synth: query {first_query + q} (landmark {plan.landmark_id}) still has fewer "
                f"than {MIN_QUERY_POSITIVES} positives; try another seed"
            )
    return queries, boxes, database, labels


def _plan_distractor_landmark(seed: int, plan: _LandmarkPlan, config: SynthConfig) -> list[_View]:
    """Database photographs of a landmark that no query asks for."""
    paths = [""] * config.images_per_distractor_landmark
    return [view for view, _ in _landmark_views(seed, plan, paths, config)]


def _call(job: tuple) -> object:
    """Run ``function(*arguments)``: the unit of work sent to a worker process."""
    function, *arguments = job
    return function(*arguments)


@dataclass
class _Benchmark:
    """Every image to render, and the content of the files that describe them."""

    landmarks: dict[int, _LandmarkPlan]
    views: list[_View] = field(default_factory=list)
    gnd: dict = field(default_factory=dict)
    train_db: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)


def _plan_benchmark(
    seed: int, config: SynthConfig, run: Callable[[list[tuple]], Iterator[object]]
) -> _Benchmark:
    """Every view and the ground truth, from the seed alone (no image is rendered).

    Args:
        run: Maps :func:`_call` over jobs, in order (possibly in worker processes).
    """
    counts = (
        config.train_landmarks,
        config.val_landmarks,
        config.test_landmarks,
        config.distractor_landmarks,
    )
    bounds = np.cumsum((0, *counts))
    train_ids, val_ids, test_ids, distractor_ids = (
        list(range(int(lo), int(hi))) for lo, hi in itertools.pairwise(bounds)
    )
    landmarks = {i: _plan_landmark(seed, i) for i in range(int(bounds[-1]))}
    benchmark = _Benchmark(landmarks=landmarks)

    splits = (
        ("train", train_ids, config.train_images_per_landmark),
        ("val", val_ids, config.val_images_per_landmark),
    )
    jobs: list[tuple] = []
    for split, ids, per_landmark in splits:
        for position, landmark_id in enumerate(ids):
            first = position * per_landmark
            paths = [_cid_path(_cid(seed, split, first + k)) for k in range(per_landmark)]
            jobs.append((_plan_training_landmark, seed, landmarks[landmark_id], paths, config))
    jobs += [
        (
            _plan_test_landmark,
            seed,
            landmarks[landmark_id],
            number * config.queries_per_landmark,
            config,
        )
        for number, landmark_id in enumerate(test_ids)
    ]
    jobs += [(_plan_distractor_landmark, seed, landmarks[i], config) for i in distractor_ids]
    results = iter(run(jobs))

    for split, ids, _ in splits:
        cids, clusters, qidxs, pidxs = [], [], [], []
        for landmark_id in ids:
            views, partners = next(results)
            for k, partner in enumerate(partners):
                if partner is not None:
                    qidxs.append(len(cids) + k)
                    pidxs.append(len(cids) + partner)
            cids += [Path(view.path).name for view in views]
            clusters += [landmark_id] * len(views)
            benchmark.views += views
        benchmark.train_db[split] = {
            "cids": cids,
            "cluster": clusters,
            "qidxs": qidxs,
            "pidxs": pidxs,
        }

    queries: list[_View] = []
    boxes: list[list[float]] = []
    database: list[_View] = []
    query_labels: list[tuple[int, list[str]]] = []  # (first database view, labels) per query
    for _ in test_ids:
        landmark_queries, landmark_boxes, landmark_database, labels = next(results)
        query_labels += [(len(database), query) for query in labels]
        queries += landmark_queries
        boxes += landmark_boxes
        database += landmark_database
    for _ in distractor_ids:
        database += next(results)
    database += [_street_view(seed, number, config) for number in range(config.street_images)]
    database += [_photo_view(seed, number, config) for number in range(config.photo_images)]

    order = _rng(seed, _STREAM_ORDER).permutation(len(database))
    position = np.empty(len(database), dtype=int)
    position[order] = np.arange(len(database))
    database = [
        replace(view, path=f"{TEST_DIR}/jpg/synth_{position[k]:05d}.jpg")
        for k, view in enumerate(database)
    ]
    gnd = []
    for box, (offset, labels) in zip(boxes, query_labels, strict=True):
        entry: dict = {"bbx": box}
        for name in ("easy", "hard", "junk"):
            entry[name] = sorted(
                int(position[offset + k]) for k, label in enumerate(labels) if label == name
            )
        gnd.append(entry)
    by_position = [database[k] for k in order]
    benchmark.gnd = {
        "imlist": [Path(view.path).stem for view in by_position],
        "qimlist": [Path(view.path).stem for view in queries],
        "gnd": gnd,
    }
    benchmark.views += queries + database
    benchmark.meta = {
        "landmarks": {
            "train": train_ids,
            "val": val_ids,
            "test": test_ids,
            "distractor": distractor_ids,
        },
        "query_landmark": [view.landmark for view in queries],
        "database_landmark": [view.landmark for view in by_position],
        "database_kind": [view.kind for view in by_position],
    }
    return benchmark


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def _render_views(
    seed: int, plan: _LandmarkPlan | None, views: list[_View], root: str, quality: int
) -> int:
    """Render and save a group of views (one landmark's, or scenes without one)."""
    made: set[Path] = set()
    for view in views:
        path = Path(root) / view.path
        if path.parent not in made:
            path.parent.mkdir(parents=True, exist_ok=True)
            made.add(path.parent)
        _render(seed, view, plan).save(path, format="JPEG", quality=quality)
    return len(views)


def _render_jobs(seed: int, benchmark: _Benchmark, root: Path, quality: int) -> list[tuple]:
    """Rendering jobs, one per landmark and chunks of scenes without one, largest first."""
    by_landmark: dict[int, list[_View]] = {}
    for view in benchmark.views:
        by_landmark.setdefault(view.landmark, []).append(view)
    jobs = []
    for landmark_id, views in by_landmark.items():
        plan = benchmark.landmarks.get(landmark_id)
        chunk = len(views) if plan is not None else 32
        for start in range(0, len(views), chunk):
            jobs.append(
                (_render_views, seed, plan, views[start : start + chunk], str(root), quality)
            )
    return sorted(jobs, key=lambda job: -len(job[3]))


def generate_synth(
    out_dir: str | os.PathLike,
    seed: int = 0,
    size: str = "default",
    *,
    config: SynthConfig | None = None,
    workers: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Write the synthetic benchmark (test set and training db) under ``out_dir``.

    Args:
        out_dir: Data root; ``synth/`` and ``retrieval-synth/`` are created in it.
        seed: Non-negative integer; the same seed and parameters give byte-identical files.
        size: ``"small"`` (tests, seconds), ``"default"`` or ``"large"``; see
            :data:`SIZE_PRESETS`.
        config: Parameters to use instead of the named size's.
        workers: Rendering processes (default: up to 2, as many as CPUs); the files do not
            depend on it.
        overwrite: Replace existing ``synth/`` and ``retrieval-synth/`` folders under
            ``out_dir`` (otherwise a non-empty one is an error).
        progress: Show a progress bar on stderr.

    Returns:
        ``out_dir`` as a Path: ``synth/gnd_synth.pkl`` with ``synth/jpg/``, and
        ``retrieval-synth/retrieval-synth.pkl`` with ``retrieval-synth/ims/`` inside it.

    Raises:
        AsymretError: bad seed, size or worker count, or an output folder in the way.
    """
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise AsymretError(f"synth seed must be a non-negative integer, got {seed!r}")
    seed = int(seed)
    if config is None:
        config = synth_config(size)
    if workers is None:
        workers = min(2, os.cpu_count() or 1)
    if workers < 1:
        raise AsymretError(f"synth workers must be at least 1, got {workers}")
    root = Path(out_dir)
    for folder in (root / TEST_DIR, root / TRAIN_DIR):
        if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
            if not overwrite:
                raise AsymretError(
                    f"{folder} already exists and is not empty; pass overwrite=True "
                    "(CLI: --overwrite) to replace it"
                )
            shutil.rmtree(folder) if folder.is_dir() else folder.unlink()

    with contextlib.ExitStack() as stack:
        run: Callable[[list[tuple]], Iterator[object]] = functools.partial(map, _call)
        if workers > 1:
            # fork: no __main__ guard needed in the caller's script, and the workers inherit
            # the loaded photographs; they only run numpy and PIL code.
            methods = multiprocessing.get_all_start_methods()
            context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
            pool = stack.enter_context(ProcessPoolExecutor(workers, mp_context=context))
            run = functools.partial(pool.map, _call)
        benchmark = _plan_benchmark(seed, config, run)
        jobs = _render_jobs(seed, benchmark, root, config.jpeg_quality)
        bar = stack.enter_context(
            tqdm(total=len(benchmark.views), desc="synth", unit="img", disable=not progress)
        )
        for count in run(jobs):
            bar.update(count)

    (root / TEST_DIR / GND_FILE).write_bytes(pickle.dumps(benchmark.gnd, protocol=3))
    (root / TRAIN_DIR / TRAIN_DB_FILE).write_bytes(pickle.dumps(benchmark.train_db, protocol=3))
    meta = {
        "generator": "asymret.data.synthetic",
        "description": (
            "Synthetic landmarks: test set synth/gnd_synth.pkl (revisitop format, images in "
            "synth/jpg), training db retrieval-synth/retrieval-synth.pkl (SfM-120k format). "
            "query_landmark and database_landmark give the true landmark of every test image "
            "(-1: none); regenerate with the same seed, size and version for identical files."
        ),
        "version": SYNTH_VERSION,
        "seed": seed,
        "size": size if config == SIZE_PRESETS.get(size) else "custom",
        "config": asdict(config),
        "counts": {
            "queries": len(benchmark.gnd["qimlist"]),
            "database": len(benchmark.gnd["imlist"]),
            "train": len(benchmark.train_db["train"]["cids"]),
            "train_pairs": len(benchmark.train_db["train"]["qidxs"]),
            "val": len(benchmark.train_db["val"]["cids"]),
            "val_pairs": len(benchmark.train_db["val"]["qidxs"]),
        },
        **benchmark.meta,
    }
    (root / TEST_DIR / META_FILE).write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
    return root
