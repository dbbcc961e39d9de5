"""Rendering: the photograph a view describes.

Sky with clouds, textured ground and neighbouring buildings of random design (clutter) are
drawn at half resolution, then the landmark's textured walls and the foreground objects at
full resolution; exposure and white balance, blur and sensor noise finish the image.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter

from asymret.data.synth.geometry import (
    _NEAR_PLANE,
    _box_quads,
    _Camera,
    _landmark_geometry,
    _LandmarkPlan,
    _Quad,
)
from asymret.data.synth.photos import (
    _COLOUR_PHOTOS,
    _GREY_PHOTOS,
    _GROUND_MATERIALS,
    _SIGN_PHOTOS,
    _jitter_colour,
    _low_frequency,
    _material,
    _photo_crop,
    _rgb255,
    _to_uint8,
)
from asymret.data.synth.scene import _Light, _occluder_layers, _View
from asymret.data.synth.streams import _STREAM_GROUND, _STREAM_NOISE, _STREAM_RENDER, _rng
from asymret.data.synth.textures import (
    _ACCENT_COLOURS,
    _REFERENCE_IMAGE_SIZE,
    _landmark_textures,
    _plain_facade,
    _random_style,
)

# Texture resolution of the neighbouring buildings for 224-pixel images (scaled likewise).
_FILLER_PX_PER_METRE = 6.0

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
