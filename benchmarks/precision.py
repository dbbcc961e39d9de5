"""Extraction precision: what bf16 autocast changes in the mAP, against fp32, in one run.

asymret extracts test vectors in fp32 by default (the published protocol); ``--precision bf16``
(``amp=True``) runs the network under bfloat16 autocast, which is much faster on GPUs. This
script measures the cost in retrieval quality on the embedded ``synth`` benchmark (``small``
size, generated into a temporary folder): an ImageNet-pretrained EfficientNet-Lite0 + GeM
(offline weights) extracts the queries (cropped) and the database in fp32 and in bf16, at a
single scale and at the published scales [1, 1/√2, 1/2], and the revisited Easy / Medium /
Hard mAP of each are printed side by side, with the cosine between the bf16 and the fp32
vector of every image and the extraction times.

Run from the repository root (about a minute on 2 CPU cores)::

    .venv/bin/python benchmarks/precision.py
    .venv/bin/python benchmarks/precision.py --device cuda --size default
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from asymret.data.images import DEFAULT_SCALES
from asymret.data.revisitop import RevisitopDataset
from asymret.data.synth import generate_synth
from asymret.evaluate import PROTOCOLS, evaluate_retrieval
from asymret.features import extract_vectors
from asymret.models import create_model
from bench_setup import add_machine_options, set_up_machine, timed_call


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tf_efficientnet_lite0-gem")
    parser.add_argument("--size", default="small", choices=("small", "default", "large"),
                        help="synth benchmark size (default: small)")
    parser.add_argument("--imsize", type=int, default=1024,
                        help="longer image side (default 1024: synth images are not shrunk)")
    parser.add_argument("--batch", type=int, default=32)
    add_machine_options(parser)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    device = set_up_machine(args)
    net = create_model(args.model, pretrained=True).eval()
    with tempfile.TemporaryDirectory() as tmp:
        generate_synth(Path(tmp), size=args.size, progress=False)
        dataset = RevisitopDataset.load("synth", tmp)
        queries, database = dataset.query_images(args.imsize), dataset.database_images(args.imsize)
        print(f"synth ({args.size}): {len(queries)} queries, {len(database)} database images; "
              f"{args.model}, imsize {args.imsize}, batch {args.batch}\n")
        header = (f"| scales | precision | seconds | {' | '.join(p.title() for p in PROTOCOLS)} "
                  "| cosine to fp32: mean / min |")
        print(header)
        print("|---|---|---:|" + "---:|" * len(PROTOCOLS) + "---:|")
        for scales in ((1.0,), DEFAULT_SCALES):
            label = "1" if len(scales) == 1 else "1, 1/√2, 1/2"
            vectors, maps = {}, {}
            for precision in ("fp32", "bf16"):
                def extract(images, amp=precision == "bf16", scales=scales):
                    return extract_vectors(net, images, batch_size=args.batch, scales=scales,
                                           device=device, amp=amp, progress=False).numpy()

                seconds_q, q = timed_call(lambda: extract(queries), device)
                seconds_x, x = timed_call(lambda: extract(database), device)
                vectors[precision] = np.concatenate([q, x])
                maps[precision] = evaluate_retrieval(q, x, dataset.gnd).map
                cosine = (vectors[precision] * vectors["fp32"]).sum(axis=1)
                cells = " | ".join(f"{maps[precision][p]:.2f}" for p in PROTOCOLS)
                agreement = "—" if precision == "fp32" else (
                    f"{cosine.mean():.5f} / {cosine.min():.5f}")
                print(f"| {label} | {precision} | {seconds_q + seconds_x:.1f} | {cells} "
                      f"| {agreement} |")
            deltas = " | ".join(f"{maps['bf16'][p] - maps['fp32'][p]:+.2f}" for p in PROTOCOLS)
            print(f"| {label} | bf16 − fp32 | | {deltas} | |")


if __name__ == "__main__":
    main()
