"""Teacher index at scale: exact inner-product search vs IVF-PQ, on generated teacher vectors.

The vectors are random but clustered like a landmark collection's global descriptors: views
of ``count / per-cluster`` places, each view its place's centre plus a within-place spread,
both drawn in a 512-D latent space with a decaying spectrum (variance of latent dimension i
∝ 1/i), embedded in 2048-D by a random orthonormal map, plus isotropic noise in every
dimension (a tenth of the signal's energy), then L2-normalised. They are generated in chunks
straight into a float32 ``.npy`` on disk (8 GiB at 1M), so generation never holds them in
memory; the exact index then holds them all (8 GiB at 1M, within a 24 GiB machine).

Both indexes are built by :func:`asymret.index.create_index` into index folders, as
``asymret index build`` writes them, and searched by :meth:`asymret.index.TeacherIndex.search`
one query at a time (a web page's case) on ``--threads`` threads. Queries are held-out views
generated from the same places. Printed: build seconds, index bytes (the faiss index, which is
what is in memory; IVF-PQ also keeps float16 vectors on disk for re-ranking, memory-mapped),
median ms per query, recall@10 against exact search on the held-out queries, and the recall
the build measures (sampled vectors as queries, their own images left out), with the ratios
of IVF-PQ to exact.

Then the student-query path end to end, as ``asymret search`` and ``asymret serve`` run it
on that IVF-PQ index: a generated query photo decoded and shrunk (``--query-imsize``), its
vector from a student (``--student``, random weights: only its cost matters, with a
projection to the index's dimension) through PyTorch and through its ONNX export
(onnxruntime), and the search; median ms of each step over ``--student-queries`` queries.

Run from the repository root::

    .venv/bin/python benchmarks/index_scale.py                  # 1M vectors (~35 GB disk)
    .venv/bin/python benchmarks/index_scale.py --count 200000   # a few minutes
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

try:
    import asymret
except ImportError:  # not installed: use the source tree
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    import asymret

import faiss

from asymret.index import IvfPqOptions, TeacherIndex, create_index, measure_recall

LATENT = 512
CHUNK = 20000


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1_000_000, help="database vectors")
    parser.add_argument("--dim", type=int, default=2048, help="vector dimension")
    parser.add_argument("--per-cluster", type=int, default=50, help="views per place")
    parser.add_argument("--queries", type=int, default=200, help="held-out queries")
    parser.add_argument("--exact-queries", type=int, default=50,
                        help="queries timed on the exact index (each is a full scan)")
    parser.add_argument("--threads", type=int, default=2, help="search threads")
    parser.add_argument("--nlist", type=int, help="IVF lists (default: the index's)")
    parser.add_argument("--nprobe", type=int, default=IvfPqOptions.nprobe)
    parser.add_argument("--rerank", type=int, default=IvfPqOptions.rerank)
    parser.add_argument("--recall-queries", type=int, default=1000,
                        help="sampled vectors of the build's own recall measure")
    parser.add_argument("--work", help="folder for the vectors and indexes (default: a "
                        "temporary one, removed at the end)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--student", default="tf_efficientnet_lite0-gem",
                        help="the query network of the end-to-end rows (projected to --dim)")
    parser.add_argument("--query-imsize", type=int, default=512,
                        help="longer side of the end-to-end queries")
    parser.add_argument("--student-queries", type=int, default=30,
                        help="queries timed end to end")
    return parser.parse_args()


class Collection:
    """Clustered unit vectors, generated chunk by chunk from ``(seed, stream, chunk)``."""

    def __init__(self, count: int, dim: int, per_cluster: int, seed: int):
        rng = np.random.default_rng([seed, 0])
        self.dim, self.seed = dim, seed
        self.embed = np.linalg.qr(rng.normal(size=(dim, LATENT)))[0].astype(np.float32).T
        self.spectrum = ((np.arange(LATENT) + 1.0) ** -0.5).astype(np.float32)
        self.centres = rng.normal(size=(max(1, count // per_cluster), LATENT)).astype(
            np.float32) * self.spectrum
        signal = float((self.spectrum ** 2).sum() * 1.25)  # centre + spread energy
        self.noise = np.sqrt(0.1 * signal / dim)

    def chunk(self, stream: int, number: int, size: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, stream, number])
        places = rng.integers(0, len(self.centres), size)
        latent = self.centres[places] + 0.5 * rng.normal(size=(size, LATENT)).astype(
            np.float32) * self.spectrum
        vectors = latent @ self.embed
        vectors += self.noise * rng.standard_normal((size, self.dim), dtype=np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors

    def write(self, path: Path, count: int) -> np.ndarray:
        array = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32,
                                          shape=(count, self.dim))
        for number, start in enumerate(range(0, count, CHUNK)):
            size = min(CHUNK, count - start)
            array[start : start + size] = self.chunk(1, number, size)
        array.flush()
        del array
        return np.load(path, mmap_mode="r")


def folder_bytes(path: Path, pattern: str) -> int:
    return sum(p.stat().st_size for p in path.glob(pattern))


def time_queries(index: TeacherIndex, queries: np.ndarray, k: int = 10) -> tuple[float, list]:
    """Median ms per query (one at a time) and each query's top-k rows."""
    index.search(queries[:1], k)  # warm-up
    times, rows = [], []
    for query in queries:
        start = time.perf_counter()
        _, found = index.search(query[None], k)
        times.append(time.perf_counter() - start)
        rows.append(found[0])
    return 1000 * float(np.median(times)), rows


def recall_at_10(found: list, truth: list) -> float:
    return float(np.mean([len(set(a[:10]) & set(b[:10])) / 10 for a, b in zip(found, truth,
                                                                              strict=False)]))


def main() -> int:
    args = parse_args()
    faiss.omp_set_num_threads(args.threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="index-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, "
          f"{args.threads} search threads, faiss {faiss.__version__}, asymret "
          f"{asymret.__version__}")
    print(f"collection: {args.count} x {args.dim}-D, {args.count // args.per_cluster} places; "
          f"{args.queries} held-out queries")
    try:
        collection = Collection(args.count, args.dim, args.per_cluster, args.seed)
        start = time.perf_counter()
        vectors = collection.write(work / "vectors.npy", args.count)
        print(f"generated in {time.perf_counter() - start:.1f} s")
        queries = collection.chunk(2, 0, args.queries)
        names = [str(i) for i in range(args.count)]
        common = dict(teacher={"spec": None, "pretrained": False, "name": "generated",
                               "config": {}, "fingerprint": "sha256:" + "0" * 64},
                      preprocessing={"imsize": None, "scales": [1.0], "precision": "fp32"})
        rows = {}
        for kind in ("exact", "ivfpq"):
            options = IvfPqOptions(nlist=args.nlist, nprobe=args.nprobe, rerank=args.rerank)
            start = time.perf_counter()
            index = create_index(work / kind, vectors, names, names, kind=kind, ivfpq=options,
                                 recall_queries=0, **common)
            build = time.perf_counter() - start
            measured = None
            if kind == "ivfpq":
                start = time.perf_counter()
                measured = measure_recall(index, args.recall_queries)
                measured["seconds"] = time.perf_counter() - start
            timed = queries[: args.exact_queries] if kind == "exact" else queries
            latency, found = time_queries(index, timed)
            if kind == "exact":
                _, truth = index.search(queries, 10)
            rows[kind] = {
                "build": build, "index": folder_bytes(work / kind, "index-*.faiss"),
                "disk": folder_bytes(work / kind, "vectors-*.npy"), "latency": latency,
                "recall": recall_at_10(found, list(truth)), "measured": measured,
                "factory": "IndexFlatIP" if kind == "exact" else index.meta["ivfpq"]["factory"],
            }
            if kind == "ivfpq":
                student_path = time_student_path(index, work, args)
            del index
        report(rows, args)
        report_student_path(student_path, args)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB → GiB
        print(f"peak process memory: {peak:.1f} GiB")
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    return 0


def time_student_path(index: TeacherIndex, work: Path, args: argparse.Namespace) -> dict:
    """Median ms of each step of a student query on ``index``: decode and shrink the photo,
    the student's vector (PyTorch, and onnxruntime on the export), the search."""
    import torch
    from PIL import Image

    from asymret.export import OnnxQueryModel, export_onnx
    from asymret.index import TorchQueryModel, load_queries, model_vectors
    from asymret.models import create_model, save_model

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    student = create_model(f"{args.student}-{args.dim}", pretrained=False).eval()
    save_model(student, work / "student")
    export_onnx(work / "student", work / "student.onnx")
    models = {"PyTorch": TorchQueryModel(student),
              "ONNX": OnnxQueryModel(work / "student.onnx")}
    rng = np.random.default_rng(args.seed)
    photo = work / "query.jpg"
    coarse = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    Image.fromarray(coarse).resize((1024, 768), Image.Resampling.BICUBIC).save(photo,
                                                                            quality=90)
    steps: dict[str, list[float]] = {"decode": [], "search": [], **{m: [] for m in models}}
    for number in range(args.student_queries + 1):  # the first is a warm-up
        start = time.perf_counter()
        images = load_queries([photo], imsize=args.query_imsize)
        decoded = time.perf_counter()
        vectors = {}
        for name, model in models.items():
            begin = time.perf_counter()
            vectors[name] = model_vectors(model, images)
            if number:
                steps[name].append(time.perf_counter() - begin)
        begin = time.perf_counter()
        index.hits(vectors["ONNX"], 10)
        if number:
            steps["decode"].append(decoded - start)
            steps["search"].append(time.perf_counter() - begin)
    size = tuple(images[0].shape[1:])
    return {"size": size, **{step: 1000 * float(np.median(t)) for step, t in steps.items()}}


def report_student_path(timed: dict, args: argparse.Namespace) -> None:
    print(f"\nstudent query end to end: {args.student}-{args.dim} (random weights), a "
          f"{timed['size'][1]}x{timed['size'][0]} query from a 1024x768 JPEG, IVF-PQ search, "
          f"median of {args.student_queries}")
    print("\n| query model | decode + shrink (ms) | student vector (ms) | search (ms) | "
          "total (ms) | search share |")
    print("|---|---|---|---|---|---|")
    for name in ("PyTorch", "ONNX"):
        total = timed["decode"] + timed[name] + timed["search"]
        print(f"| {name} | {timed['decode']:.1f} | {timed[name]:.1f} | {timed['search']:.2f} "
              f"| {total:.1f} | {timed['search'] / total:.3f} |")


def report(rows: dict, args: argparse.Namespace) -> None:
    exact, ivfpq = rows["exact"], rows["ivfpq"]
    print()
    print("| index | build (s) | index in memory (MB) | re-rank vectors on disk (MB) | "
          "ms / query | recall@10 vs exact |")
    print("|---|---|---|---|---|---|")
    for kind, row in rows.items():
        name = row["factory"] + (f", nprobe {args.nprobe}, rerank {args.rerank}"
                                 if kind == "ivfpq" else "")
        print(f"| {kind}: {name} | {row['build']:.1f} | {row['index'] / 1e6:.1f} | "
              f"{row['disk'] / 1e6:.1f} | {row['latency']:.2f} | {row['recall']:.3f} |")
    print(f"| IVF-PQ / exact | {ivfpq['build'] / exact['build']:.2f}× | "
          f"{ivfpq['index'] / exact['index']:.3f}× | | "
          f"{ivfpq['latency'] / exact['latency']:.3f}× | |")
    measured = ivfpq["measured"]
    print(f"\nrecall@10 as `index build` measures it: {measured['recall']:.3f} "
          f"({measured['queries']} sampled vectors, own images left out; "
          f"{measured['seconds']:.1f} s)")


if __name__ == "__main__":
    sys.exit(main())
