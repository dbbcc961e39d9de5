"""Geometry: pinhole cameras, textured quads in 3D, and the landmark buildings made of them.

Every landmark is a building: a box with a façade on each side, a roof silhouette (gable,
arch, crenellations) and sometimes a tower with a spire, its proportions drawn from (seed,
landmark id) alone. Points sampled on its walls are what the ground truth is decided on
(:mod:`asymret.data.synth.labels`).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from asymret.data.synth.streams import _STREAM_LANDMARK, _rng

_SAMPLES_PER_LANDMARK = 900  # wall points on which the ground truth is decided
_NEAR_PLANE = 0.05  # metres: nearer points are behind a camera


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


def _wall_extent(quad: _Quad) -> tuple[float, float]:
    """Width and height (metres) of a quad's wall, below its ornament."""
    return quad.size[0], quad.size[1] - quad.wall_top


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
