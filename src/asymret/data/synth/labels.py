"""Ground truth: the easy, hard and junk images of every query, and the training pairs.

Ground truth comes from the geometry, never from chance: points sampled on the building's
walls are projected into every image (visible when facing the camera, inside the frame and
not hidden by an occluder or by the building itself). For a query, the relevant points are
those of its region of interest (a whole façade, a detail, the tower) seen in the query;
``bbx`` is that region's box in the query image. A database image of the same landmark is

- easy when it shows at least half of the query region (``EASY_MIN_OVERLAP``), from within
  30° of the query's viewing direction (``EASY_MAX_ANGLE``), at a similar scale
  (``EASY_SCALE_RANGE``: 0.4× to 2.5×), covering at least a tenth of the image
  (``EASY_MIN_AREA``), with at most a quarter of the region occluded
  (``EASY_MAX_OCCLUSION``) and without extreme lighting;
- hard when, from within 70° (``HARD_MAX_ANGLE``), it shows at least a fifth of the region
  (``HARD_MIN_OVERLAP``), or is a close-up mostly made of it (``HARD_MIN_CLOSEUP``), covering
  at least 1.5 % of the image (``HARD_MIN_AREA``);
- junk otherwise (the landmark is there but too little of the query region is seen to tell).

Images of other landmarks and of streets without a landmark are negatives: they are in no
list. Every query has at least ``MIN_QUERY_POSITIVES`` easy or hard images (the plan adds
database images near a query until it has).

Training pairs (``qidxs``, ``pidxs``) join two images of one landmark that share at least
40 % of the first one's visible walls (``PAIR_MIN_OVERLAP``), from within 50°
(``PAIR_MAX_ANGLE``) and a scale change of at most 3× (``PAIR_SCALE_RANGE``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from asymret.data.synth.geometry import _LandmarkGeometry
from asymret.data.synth.scene import _depicted_fraction, _Observation, _observe, _View
from asymret.data.synth.views import _Spot

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
