"""Decoding cost of a training image against the trainable stage's work on it.

``asymret demo`` trains its students on the synth benchmark's training images (JPEGs stored
at 160 px) at a smaller size (e.g. 80 px), with only the trunk's last stage trained on cached
activations of the frozen stages. Every epoch of every student decodes each image again, and
the activation cache hashes the decoded (normalised) tensor to find its activations. This
script generates a small synth benchmark in a temporary folder and times, per image, in one
run:

- full decode + LANCZOS resize to ``--imsize`` (today's protocol, the baseline),
- JPEG draft decode (DCT scaling, ``load_image(..., draft=True)``) to ``--imsize``,
- full decode at the stored size (no resize, what a teacher at the stored size pays),
- a hit in the in-memory decode cache (:class:`asymret.data.image_list.DecodeCache`),
- the activation-cache key of the normalised ``--imsize`` tensor
  (:func:`asymret.models.frozen_trunk.input_key`),
- EfficientNet-Lite0's trainable last stage (+ GeM, projection) on cached activations:
  forward, and forward + backward, per image in batches of ``--batch`` same-size images,
- the two full decodes again with the uint8 → float division in torch, as
  :func:`asymret.data.images.to_tensor` did it before (it now divides in NumPy, bit for bit
  the same values, without waking torch's threads),

and prints each as time per image and as a ratio to the baseline. It also prints how far
the draft-decoded pixels are from the fully decoded ones.

Run from the repository root::

    .venv/bin/python benchmarks/decode.py
    .venv/bin/python benchmarks/decode.py --size 320 --imsize 80      # 1/4 draft
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from asymret.data.image_list import DecodeCache, ImageList
from asymret.data.images import load_image, to_tensor
from asymret.data.sfm120k import TrainingDb
from asymret.data.synth import generate_synth, synth_config
from asymret.models import ActivationCache, create_model
from asymret.models.frozen_trunk import input_key
from asymret.train.loop import set_batchnorm_eval
from bench_setup import add_machine_options, set_up_machine


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=160, help="stored JPEG longer side")
    parser.add_argument("--imsize", type=int, default=80, help="student's longer side")
    parser.add_argument("--landmarks", type=int, default=16, help="training landmarks")
    parser.add_argument("--per-landmark", type=int, default=12, help="images per landmark")
    parser.add_argument("--model", default="tf_efficientnet_lite0-gem-1280")
    parser.add_argument("--batch", type=int, default=16, help="images per forward")
    parser.add_argument("--rounds", type=int, default=9, help="best of this many passes")
    add_machine_options(parser)
    return parser.parse_args()


def best_per_item(functions: list[Callable[[], int]], rounds: int) -> list[float]:
    """Per function (each returns how many items it did), its fastest time per item over
    ``rounds`` rounds; a round calls every function once, so the noise of a shared machine
    spreads over all of them."""
    best = [float("inf")] * len(functions)
    for _ in range(rounds):
        for index, function in enumerate(functions):
            start = time.perf_counter()
            count = function()
            best[index] = min(best[index], (time.perf_counter() - start) / count)
    return best


def main() -> None:
    args = parse_args()
    set_up_machine(args)
    with tempfile.TemporaryDirectory() as tmp:
        config = synth_config(
            "small", image_size=args.size, train_landmarks=args.landmarks,
            train_images_per_landmark=args.per_landmark,
        )
        generate_synth(tmp, seed=0, config=config, progress=False)
        paths = TrainingDb.load("retrieval-synth", "train", tmp).paths
        run(args, paths)


def run(args: argparse.Namespace, paths: list[Path]) -> None:
    imsize, rounds = args.imsize, args.rounds
    print(f"{len(paths)} training JPEGs stored at {args.size} px, student at {imsize} px")

    def decode(size: int | None, draft: bool, torch_division: bool = False) -> Callable[[], int]:
        def go() -> int:
            for path in paths:
                image = load_image(path, size, draft=draft)
                if torch_division:  # to_tensor before: torch's division, over its threads
                    array = np.asarray(image)
                    torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255.0)
                else:
                    to_tensor(image)
            return len(paths)
        return go

    cached = ImageList(paths, imsize, decode_cache=DecodeCache(max_bytes=1 << 30))
    for index in range(len(cached)):  # fill the cache
        cached[index]

    def cache_hits() -> int:
        for index in range(len(cached)):
            cached[index]
        return len(cached)

    student = create_model(args.model, pretrained=False).eval()
    images = [to_tensor(load_image(path, imsize)) for path in paths]
    normalised = [(image - student.mean[0]) / student.std[0] for image in images]

    def keys() -> int:
        for image in normalised:
            input_key(image)
        return len(normalised)

    # Same-size batches, as the trainer forms them.
    by_size: dict[tuple[int, ...], list[torch.Tensor]] = {}
    for image in images:
        by_size.setdefault(tuple(image.shape), []).append(image)
    batches = [torch.stack(group[start : start + args.batch])
               for group in by_size.values() for start in range(0, len(group), args.batch)]
    student.freeze_trunk(1, ActivationCache())
    student.to(memory_format=torch.channels_last)
    with torch.no_grad():
        for batch in batches:  # fill the activation cache (as after the first epoch)
            student(batch)

    def forward() -> int:
        with torch.no_grad():
            for batch in batches:
                student(batch)
        return len(images)

    def forward_backward() -> int:
        student.train()
        set_batchnorm_eval(student)  # as the trainer (optim.freeze_batchnorm)
        for batch in batches:
            student.zero_grad(set_to_none=True)
            student(batch).sum().backward()
        student.eval()
        return len(images)

    rows = [
        (f"full decode + resize to {imsize} px (baseline)", decode(imsize, False)),
        (f"draft decode to {imsize} px", decode(imsize, True)),
        (f"full decode at {args.size} px, no resize", decode(None, False)),
        (f"decode cache hit ({imsize} px tensor)", cache_hits),
        (f"activation-cache key of a {imsize} px input", keys),
        ("last stage forward, cached activations", forward),
        ("last stage forward + backward, cached activations", forward_backward),
        (f"full decode at {args.size} px, torch's division (before)", decode(None, False, True)),
        (f"full decode + resize to {imsize} px, torch's division", decode(imsize, False, True)),
    ]
    times = list(zip([label for label, _ in rows],
                     best_per_item([function for _, function in rows], rounds), strict=True))
    baseline = times[0][1]
    width = max(len(label) for label, _ in times)
    print(f"{'per image':<{width}}  {'ms':>7}  {'× baseline':>10}")
    for label, seconds in times:
        print(f"{label:<{width}}  {seconds * 1e3:7.3f}  {seconds / baseline:10.3f}")
    differences = torch.cat([
        (to_tensor(load_image(path, imsize, draft=True)) - image).abs().flatten()
        for path, image in zip(paths, images, strict=True)
    ]) * 255
    decode_and_key = (times[0][1] + times[4][1]) / times[6][1]
    draft_and_key = (times[1][1] + times[4][1]) / times[6][1]
    print(f"decode + key / (forward + backward): full decode {decode_and_key:.2f}, draft "
          f"{draft_and_key:.2f}; / forward alone (a mining pass): "
          f"{(times[0][1] + times[4][1]) / times[5][1]:.2f}, draft "
          f"{(times[1][1] + times[4][1]) / times[5][1]:.2f}")
    print(f"draft vs full decode, in 1/255: mean |Δ| {differences.mean():.2f}, "
          f"99th percentile {differences.quantile(0.99):.1f}, max {differences.max():.0f}")


if __name__ == "__main__":
    main()
