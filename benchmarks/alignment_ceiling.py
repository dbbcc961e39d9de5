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
has not seen. ``--train-epochs E`` then fine-tunes the whole student (every layer, BatchNorm
statistics frozen) from the ridge start fitted on the most landmarks, with the regression
loss against the teacher's vectors, and prints the held-out cosine and asymmetric mAP after
each epoch. Usage (after ``asymret demo --out runs/demo``; about 8 minutes on 2 cores, and
about 5 minutes per training epoch)::

    PYTHONPATH=src python benchmarks/alignment_ceiling.py runs/demo --work /tmp/ceiling
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.transforms.functional import pil_to_tensor

from asymret.data.image_list import ImageList
from asymret.data.images import load_image
from asymret.data.revisitop import RevisitopDataset
from asymret.data.sfm120k import TrainingDb
from asymret.data.synth import SynthConfig, generate_synth
from asymret.demo import PLANS, STUDENT_ARCH
from asymret.evaluate import evaluate_retrieval
from asymret.features import extract_vectors
from asymret.files import write_text_atomic
from asymret.losses import build_loss
from asymret.models import RetrievalNet, create_model, load_network
from asymret.train.loop import make_optimizer
from asymret.train.projection import PooledFeatures, fit_ridge, set_projection
from bench_setup import add_machine_options, set_up_machine

PARTS = ("train", "queries", "database")


def prepare_data(run: Path, work: Path, train_landmarks: int) -> Path:
    """The run's synth parameters with ``train_landmarks`` changed, rendered in ``work/data``."""
    config = {**json.loads((run / "data" / "synth-config.json").read_text()),
              "train_landmarks": train_landmarks}
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


def same_size_batches(images: list[torch.Tensor], batch_size: int) -> list[list[int]]:
    """Shuffled batches of indices into ``images``, each batch of one image size."""
    by_size: dict[tuple[int, ...], list[int]] = {}
    for index, image in enumerate(images):
        by_size.setdefault(tuple(image.shape), []).append(index)
    batches = []
    for indices in by_size.values():
        order = [indices[i] for i in torch.randperm(len(indices)).tolist()]
        batches += [order[k : k + batch_size] for k in range(0, len(order), batch_size)]
    return [batches[i] for i in torch.randperm(len(batches)).tolist()]


def train_whole_student(
    net: RetrievalNet, paths: list[Path], targets: torch.Tensor, imsize: int, epochs: int,
    lr: float, report: Callable[[int], None],
) -> None:
    """Fine-tune every layer of ``net`` with the regression loss onto (N, D) ``targets``, the
    teacher's vectors of ``paths``; ``report(epoch)`` after each epoch."""
    images = [pil_to_tensor(load_image(path, imsize)) for path in paths]
    loss_fn = build_loss("regression")
    optimizer = make_optimizer(net, lr, 1e-6, torch.device("cpu"))
    net = net.to(memory_format=torch.channels_last)
    for epoch in range(1, epochs + 1):
        net.eval()  # BatchNorm statistics stay those of ImageNet; the weights train
        for batch in same_size_batches(images, 32):
            x = torch.stack([images[i] for i in batch]).float().div_(255)
            vectors = net(x.contiguous(memory_format=torch.channels_last))
            refs = targets[batch].unsqueeze(1)
            loss = loss_fn(vectors, refs, torch.ones(len(batch), 1, dtype=torch.bool))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        report(epoch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a finished `asymret demo` folder")
    parser.add_argument("--work", type=Path, required=True, help="folder for data and features")
    parser.add_argument("--landmarks", type=int, nargs="+", default=[50, 100, 200, 350],
                        help="training landmarks the map is fitted on")
    parser.add_argument("--held-out", type=int, default=50, help="training landmarks never fitted")
    parser.add_argument("--lambdas", type=float, nargs="+", default=[0.1, 0.3, 1.0])
    parser.add_argument("--train-epochs", type=int, default=0,
                        help="then fine-tune the whole student for this many epochs")
    parser.add_argument("--lr", type=float, default=5e-5, help="Adam learning rate of that")
    add_machine_options(parser)
    args = parser.parse_args()
    set_up_machine(args)
    args.work.mkdir(parents=True, exist_ok=True)
    imsize = PLANS["default"].imsize
    data = prepare_data(args.run, args.work, max(args.landmarks) + args.held_out)
    arrays = extract_all(args.run, data, imsize, args.work / "features.npz")
    student = {part: torch.from_numpy(arrays[f"student-{part}"]) for part in PARTS}
    teacher = {part: torch.from_numpy(arrays[f"teacher-{part}"]) for part in PARTS}
    clusters = torch.from_numpy(arrays["clusters"])
    test = RevisitopDataset.load("synth", data)
    gnd = test.gnd

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
    if args.train_epochs == 0:
        return
    fitted = clusters < max(args.landmarks)
    weight, bias = fit_ridge(student["train"][fitted], teacher["train"][fitted], min(args.lambdas))
    net = create_model(f"{STUDENT_ARCH}-{teacher['train'].shape[1]}", pretrained=True)
    set_projection(net, weight, bias)
    paths = TrainingDb.load("retrieval-synth", "train", data).paths
    held_out_images = ImageList([paths[i] for i in torch.nonzero(held_out).flatten()], imsize)

    def report(epoch: int) -> None:
        net.eval()
        queries = extract_vectors(net, test.query_images(imsize), progress=False)
        held = extract_vectors(net, held_out_images, progress=False)
        print(f"| {epoch} | {mean_cosine(held, teacher['train'][held_out]):.3f} "
              f"| {medium_map(queries):.1f} |", flush=True)

    torch.manual_seed(0)
    print(f"\nwhole student, regression loss, ridge start (λ {min(args.lambdas):g}), "
          f"{int(fitted.sum())} images, lr {args.lr:g}")
    print("| epoch | cos held-out landmarks | asym Medium |")
    print("|---:|---:|---:|")
    report(0)
    train_whole_student(net, [paths[i] for i in torch.nonzero(fitted).flatten()],
                        teacher["train"][fitted], imsize, args.train_epochs, args.lr, report)


if __name__ == "__main__":
    main()
