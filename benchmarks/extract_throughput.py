"""Extraction throughput: asymret's batched extraction vs the reference one-image-at-a-time loop.

Both sides compute the same descriptors of the same JPEG files (checked to 1e-4 before
timing). The reference re-creates cirtorch's ``extract_vectors``: every image decoded,
resized and run through the network on its own, at batch size 1, in fp32, NCHW. asymret's
:func:`asymret.features.extract_vectors` groups images of one size into batches (no
distortion), runs them channels-last (bf16 autocast on CUDA) and, like the ``asymret``
command, runs with glibc's allocator tuned (:func:`asymret.runtime.tune_cpu_allocator`;
``--default-allocator`` leaves it).

Run from the repository root::

    .venv/bin/python benchmarks/extract_throughput.py
    .venv/bin/python benchmarks/extract_throughput.py --device cuda --model resnet101-gem \\
        --imsize 1024 --images 512 --batch 64
"""

from __future__ import annotations

import argparse
import math
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from asymret.data.image_list import ImageList
from asymret.features import extract_vectors
from asymret.models import create_model
from bench_setup import add_machine_options, set_up_machine, timed_call


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mobilenetv2_100-gem")
    parser.add_argument("--imsize", type=int, default=256, help="longer side after resizing")
    parser.add_argument("--images", type=int, default=96, help="half landscape, half portrait")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2, help="the best round of each counts")
    add_machine_options(parser)
    return parser.parse_args()


def write_images(folder: Path, count: int) -> list[Path]:
    """``count`` random-texture JPEGs, half 1024×768 and half 768×1024."""
    rng = np.random.default_rng(0)
    paths = []
    for index in range(count):
        size = (1024, 768) if index % 2 == 0 else (768, 1024)
        coarse = rng.integers(0, 256, (size[1] // 16, size[0] // 16, 3), dtype=np.uint8)
        picture = Image.fromarray(coarse).resize(size, Image.Resampling.BICUBIC)
        path = folder / f"{index:04d}.jpg"
        picture.save(path, quality=90)
        paths.append(path)
    return paths


def reference_extract(net, images: ImageList, device: torch.device) -> torch.Tensor:
    """cirtorch style: each image decoded, resized and run alone (batch 1, fp32, NCHW)."""
    net.eval().to(device).to(memory_format=torch.contiguous_format)
    vectors = []
    with torch.no_grad():
        for index in range(len(images)):
            image, _ = images[index]
            image = image.to(device)
            vectors.append(net(image[None]).float().cpu()[0])
    return torch.stack(vectors)


def main() -> None:
    args = parse_args()
    device = set_up_machine(args)
    cuda = device.type == "cuda"
    torch.manual_seed(0)
    net = create_model(args.model, pretrained=False)
    with tempfile.TemporaryDirectory() as folder:
        images = ImageList(write_images(Path(folder), args.images), args.imsize)
        print(f"model {args.model}, {args.images} JPEGs (1024x768 / 768x1024) at imsize "
              f"{args.imsize}, batch {args.batch}")
        best = {"reference": math.inf, "asymret": math.inf}
        for _ in range(args.rounds):
            seconds, reference = timed_call(lambda: reference_extract(net, images, device), device)
            best["reference"] = min(best["reference"], seconds)
            seconds, ours = timed_call(lambda: extract_vectors(
                net, images, batch_size=args.batch, device=device, amp=cuda, progress=False),
                device)
            best["asymret"] = min(best["asymret"], seconds)
            difference = float((ours - reference).abs().max())
            assert difference < (5e-2 if cuda else 1e-4), difference
    print(f"largest difference between the two sides' vectors: {difference:.1e}")
    print(f"\n{'method':10s} {'img/s':>8s} {'speed-up':>9s}")
    for method, seconds in best.items():
        print(f"{method:10s} {args.images / seconds:8.1f} {best['reference'] / seconds:8.1f}x")


if __name__ == "__main__":
    main()
