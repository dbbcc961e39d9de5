"""What one photograph shows, and how it is lit.

A view holds everything needed to render an image and to decide its ground truth: the camera,
the light (sun, cloud cover, exposure, white balance), the foreground objects that occlude the
landmark (people, trees, poles, cars, statues, signs), blur and sensor noise. Observing a view
projects the landmark's wall points into it: a point is visible when it faces the camera, lies
inside the frame and is hidden neither by an occluder nor by the building itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from asymret.data.synth.config import SynthConfig
from asymret.data.synth.geometry import _NEAR_PLANE, _Camera, _hidden_by_box, _LandmarkGeometry
from asymret.data.synth.photos import _horse_silhouette, _triple

_OCCLUDER_KINDS = ("person", "person", "person", "tree", "tree", "pole", "car", "statue", "sign")


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


def _depicted_fraction(
    seen: _Observation, geometry: _LandmarkGeometry, points: np.ndarray
) -> float:
    """Fraction of the frame covered by the selected wall points (boolean mask, (N,))."""
    patch = (geometry.spacing * seen.pixels_per_metre[points]) ** 2 * seen.cos_incidence[points]
    return float(patch.sum() / seen.frame_area)
