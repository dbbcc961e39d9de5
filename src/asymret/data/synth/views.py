"""Viewpoints: where every photograph is taken from.

Views vary in position around the building (which side, yaw up to ``max_view_angle`` from a
façade's normal), distance (scale, truncation), camera height (keystone), in-plane rotation and
field of view. Photographs cluster around a few popular spots per landmark, plus views from
anywhere, as on photo-sharing sites. Queries frame their region of interest (a whole façade, a
detail, the tower) steadily, unoccluded and well lit. Streets without a landmark and plain
photographs complete the database.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from asymret.data.synth.config import SynthConfig
from asymret.data.synth.geometry import (
    _Camera,
    _landmark_geometry,
    _LandmarkGeometry,
    _LandmarkPlan,
    _look_at,
    _wall_extent,
)
from asymret.data.synth.photos import _quadruple
from asymret.data.synth.scene import (
    _depicted_fraction,
    _Observation,
    _observe,
    _sample_effects,
    _sample_light,
    _sample_occluders,
    _View,
)
from asymret.data.synth.streams import (
    _NO_LANDMARK,
    _ROLE_PHOTO,
    _ROLE_PLAIN_PHOTO,
    _ROLE_QUERY,
    _ROLE_STREET,
    _STREAM_QUERIES,
    _STREAM_SPOTS,
    _STREAM_VIEW,
    _STREAM_VIEW_SPOT,
    _rng,
)

MIN_DEPICTED_FRACTION = 0.05  # of the frame, for training and distractor-landmark images
_VIEW_ATTEMPTS = 10
_MAX_TILT = np.radians(55)  # steepest upward look of a photographer


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
