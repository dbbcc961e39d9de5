"""How well can a student's frozen features be mapped onto the demo teacher's space?

Takes a finished ``asymret demo`` run folder, renders a synth benchmark like the run's but
with more training landmarks, and passes every image through the run's (centred) teacher and
through the demo student's frozen, ImageNet-pretrained trunk (EfficientNet-Lite0, pooled
features before any projection). It then fits the closed-form ridge projection, the demo's
``ridge`` start, on the images of the first N training landmarks and prints, per N and
ridge λ, the mean cosine between projected student vectors and teacher vectors on the fitted
images, on the images of held-out training landmarks and on the test database, with the
asymmetric Medium mAP (projected student queries against the teacher's database).

The gap between the fitted and the held-out cosine, and how slowly the held-out cosine grows
with N, say how much a student that keeps this trunk can align with the teacher on images it
has not seen. Usage (after ``asymret demo --out runs/demo``; about 5 minutes on 2 cores)::

    PYTHONPATH=src python benchmarks/alignment_ceiling.py runs/demo --work /tmp/ceiling
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from asymret.data.image_list import ImageList
from asymret.data.revisitop import RevisitopDataset
from asymret.data.sfm120k import TrainingDb
from asymret.data.synthetic import SynthConfig, generate_synth
from asymret.demo import STUDENT_ARCH
from asymret.evaluate import evaluate_retrieval
from asymret.features import extract_vectors
from asymret.files import write_text_atomic
from asymret.models import create_model, load_network
from asymret.train.projection import PooledFeatures, fit_ridge
from bench_setup import add_machine_options, set_up_machine

PARTS = ("train", "queries", "database")


def prepare_data(run: Path, work: Path, train_landmarks: int) -> Path:
    """The run's synth parameters with ``train_landmarks`` changed, rendered in ``work/data``."""
    config = json.loads((run / "data" / "synth-config.json").read_text())
    config["train_landmarks"] = train_landmarks
    marker = work / "data" / "synth-config.json"
    wanted = json.dumps(config, sort_keys=True)
    if not (marker.is_file() and marker.read_text() == wanted):
        generate_synth(work / "data", config=SynthConfig(**config), overwrite=True)
        write_text_atomic(marker, wanted)
    return work / "data"


def extract_all(run: Path, data: Path, imsize: int, cache: Path) -> dict[str, np.ndarray]:
    """Student pooled features and teacher vectors of every part (cached in ``cache``)."""
    if cache.is_file():
        return dict(np.load(cache))
    db = TrainingDb.load("retrieval-synth", "train", data)
    test = RevisitopDataset.load("synth", data)
    images = {"train": ImageList(db.paths, imsize), "queries": test.query_images(imsize),
              "database": test.database_images(imsize)}
    student = PooledFeatures(create_model(STUDENT_ARCH, pretrained=True).eval())
    teacher = load_network(run / "teacher" / "centred").eval()
    arrays = {"clusters": np.asarray(db.clusters)}
    for part in PARTS:
        arrays[f"student-{part}"] = extract_vectors(student, images[part]).numpy()
        arrays[f"teacher-{part}"] = extract_vectors(teacher, images[part]).numpy()
    np.savez(cache, **arrays)
    return arrays


def mean_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean cosine between matching rows of (N, D) ``a`` and ``b``."""
    return (F.normalize(a, dim=1) * F.normalize(b, dim=1)).sum(1).mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a finished `asymret demo` folder")
    parser.add_argument("--work", type=Path, required=True, help="folder for data and features")
    parser.add_argument("--landmarks", type=int, nargs="+", default=[50, 100, 200, 350],
                        help="training landmarks the map is fitted on")
    parser.add_argument("--held-out", type=int, default=50, help="training landmarks never fitted")
    parser.add_argument("--lambdas", type=float, nargs="+", default=[0.1, 0.3, 1.0])
    add_machine_options(parser)
    args = parser.parse_args()
    set_up_machine(args)
    args.work.mkdir(parents=True, exist_ok=True)
    imsize = json.loads((args.run / "data" / "synth-config.json").read_text())["image_size"]
    data = prepare_data(args.run, args.work, max(args.landmarks) + args.held_out)
    arrays = extract_all(args.run, data, imsize, args.work / "features.npz")
    student = {part: torch.from_numpy(arrays[f"student-{part}"]) for part in PARTS}
    teacher = {part: torch.from_numpy(arrays[f"teacher-{part}"]) for part in PARTS}
    clusters = torch.from_numpy(arrays["clusters"])
    gnd = RevisitopDataset.load("synth", data).gnd

    def medium_map(queries: torch.Tensor) -> float:
        return evaluate_retrieval(queries.numpy(), teacher["database"].numpy(), gnd).map["medium"]

    held_out = clusters >= max(args.landmarks)
    print(f"teacher symmetric Medium mAP on this test set: {medium_map(teacher['queries']):.1f}")
    print("| landmarks | images | λ | cos fitted | cos held-out landmarks | cos test db | "
          "asym Medium |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for landmarks in args.landmarks:
        fitted = clusters < landmarks
        for ridge_lambda in args.lambdas:
            weight, bias = fit_ridge(student["train"][fitted], teacher["train"][fitted],
                                     ridge_lambda)
            project = {part: student[part] @ weight.T + bias for part in PARTS}
            print(f"| {landmarks} | {int(fitted.sum())} | {ridge_lambda:g} "
                  f"| {mean_cosine(project['train'][fitted], teacher['train'][fitted]):.3f} "
                  f"| {mean_cosine(project['train'][held_out], teacher['train'][held_out]):.3f} "
                  f"| {mean_cosine(project['database'], teacher['database']):.3f} "
                  f"| {medium_map(F.normalize(project['queries'], dim=1)):.1f} |", flush=True)


if __name__ == "__main__":
    main()
