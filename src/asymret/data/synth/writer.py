"""Writing the benchmark: :func:`generate_synth` renders every view, in worker processes, and
writes the test set, the training db and ``meta.json``."""

from __future__ import annotations

import contextlib
import functools
import json
import multiprocessing
import os
import shutil
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path

import numpy as np
from tqdm import tqdm

from asymret.data.revisitop import write_gnd
from asymret.data.sfm120k import write_training_db
from asymret.data.synth.config import (
    GND_FILE,
    META_FILE,
    SIZE_PRESETS,
    SYNTH_VERSION,
    TEST_DIR,
    TRAIN_DB_FILE,
    TRAIN_DIR,
    SynthConfig,
    synth_config,
)
from asymret.data.synth.geometry import _LandmarkPlan
from asymret.data.synth.plan import _Benchmark, _call, _plan_benchmark
from asymret.data.synth.render import _render
from asymret.data.synth.scene import _View
from asymret.errors import AsymretError


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
            :data:`~asymret.data.synth.config.SIZE_PRESETS`.
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

    write_gnd(root / TEST_DIR / GND_FILE, **benchmark.gnd)
    write_training_db(root / TRAIN_DIR / TRAIN_DB_FILE, **benchmark.train_db)
    meta = {
        # The generator's module when SYNTH_VERSION 1.0 was fixed: part of the files' bytes.
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
