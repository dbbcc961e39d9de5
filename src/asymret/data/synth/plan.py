"""The benchmark planned from the seed alone: every view to render, the test set's ground truth
and the training db's splits and pairs (no image is rendered here)."""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from asymret.data.synth.config import TEST_DIR, TRAIN_DIR, SynthConfig
from asymret.data.synth.geometry import _landmark_geometry, _LandmarkPlan, _plan_landmark
from asymret.data.synth.labels import (
    MIN_QUERY_POSITIVES,
    _label_database,
    _query_region,
    _training_pairs,
)
from asymret.data.synth.scene import _observe, _View
from asymret.data.synth.streams import (
    _ROLE_PHOTO,
    _ROLE_QUERY,
    _STREAM_ORDER,
    _STREAM_PAIRS,
    _STREAM_VIEW_SPOT,
    _rng,
)
from asymret.data.synth.views import (
    _landmark_view,
    _landmark_views,
    _near_spot,
    _photo_view,
    _popular_spots,
    _query_spots,
    _random_spot,
    _street_view,
)
from asymret.errors import AsymretError


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
