"""Hard-negative mining: asymret's vectorised search vs the reference per-query loop.

Both methods get the same inputs: query vectors, pool vectors, the pool's image indices and
the cluster of every training image; both return each query's negatives as image indices.
The reference is a re-creation of cirtorch's ``TuplesDataset.create_epoch_tuples`` selection:
one (pool × queries) score matrix, a full sort of every column, then a Python loop per query
over its ranking (minus cirtorch's running average of negative distances, a logging
statistic). Its sort is made stable so both methods break equal scores the same way.

The data are clustered unit vectors shaped like an SfM-120k epoch: hundreds of clusters of
skewed sizes, grouped so that some clusters resemble each other (a query's nearest neighbours
come from its own cluster and a few similar ones). The script checks that the two methods
return the same negatives and prints seconds (best of ``--repeats``) and speed-ups.

Run from the repository root::

    .venv/bin/python benchmarks/mining.py               # reference epoch: 2000 x 20000 x 2048
    .venv/bin/python benchmarks/mining.py --queries 500 --pool 5000 --dim 512   # quicker
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

try:
    import asymret
except ImportError:  # not installed: use the source tree
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    import asymret

from asymret.mining import mine_hard_negatives


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=2000, help="queries per epoch")
    parser.add_argument("--pool", type=int, default=20000, help="negative pool size")
    parser.add_argument("--dim", type=int, default=2048, help="vector dimension")
    parser.add_argument("--negatives", type=int, default=5, help="negatives per query")
    parser.add_argument("--images", type=int, default=91642, help="training images")
    parser.add_argument("--clusters", type=int, default=551, help="clusters (3D models)")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs; the best is kept")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def clustered_epoch(args: argparse.Namespace) -> dict[str, torch.Tensor]:
    """Unit vectors of skewed, grouped clusters; queries and a pool of distinct images."""
    generator = torch.Generator().manual_seed(args.seed)
    groups = torch.randn(args.clusters // 10 + 1, args.dim, generator=generator)
    group_of_cluster = torch.randint(0, len(groups), (args.clusters,), generator=generator)
    groups = torch.nn.functional.normalize(groups, dim=1)
    centers = groups[group_of_cluster] + 0.8 * torch.randn(
        args.clusters, args.dim, generator=generator
    )
    centers = torch.nn.functional.normalize(centers, dim=1)
    sizes = 1.0 / torch.arange(1, args.clusters + 1) ** 0.8
    clusters = torch.multinomial(sizes, args.images, replacement=True, generator=generator)

    def vectors(images: torch.Tensor) -> torch.Tensor:
        noise = torch.randn(len(images), args.dim, generator=generator)
        return torch.nn.functional.normalize(centers[clusters[images]] + 0.9 * noise, dim=1)

    query_indices = torch.randperm(args.images, generator=generator)[: args.queries]
    pool_indices = torch.randperm(args.images, generator=generator)[: args.pool].sort().values
    return {
        "clusters": clusters,
        "query_indices": query_indices,
        "pool_indices": pool_indices,
        "query_vectors": vectors(query_indices),
        "pool_vectors": vectors(pool_indices),
    }


def reference_loop(
    query_vectors: torch.Tensor,
    query_indices: torch.Tensor,
    pool_vectors: torch.Tensor,
    pool_indices: torch.Tensor,
    clusters: list[int],
    num_negatives: int,
    stage_seconds: dict[str, float],
) -> list[list[int]]:
    """cirtorch-style selection: full column sort, then a Python loop per query."""
    start = time.perf_counter()
    qvecs, poolvecs = query_vectors.t(), pool_vectors.t()  # (D, Q) and (D, P), as cirtorch
    scores = torch.mm(poolvecs.t(), qvecs)
    stage_seconds["scores"] = time.perf_counter() - start
    start = time.perf_counter()
    scores, ranks = torch.sort(scores, dim=0, descending=True, stable=True)
    stage_seconds["sort"] = time.perf_counter() - start
    start = time.perf_counter()
    nidxs = []
    for q in range(len(query_indices)):
        used_clusters = [clusters[query_indices[q]]]
        negatives = []
        r = 0
        while len(negatives) < num_negatives:
            potential = pool_indices[ranks[r, q]]
            if clusters[potential] not in used_clusters:
                negatives.append(int(potential))
                used_clusters.append(clusters[potential])
            r += 1
        nidxs.append(negatives)
    stage_seconds["loop"] = time.perf_counter() - start
    return nidxs


def cpu_name() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def best_time(function: Callable[[], object], repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return min(times), result


def main() -> None:
    args = parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    epoch = clustered_epoch(args)
    clusters_list = epoch["clusters"].tolist()
    query_clusters = epoch["clusters"][epoch["query_indices"]]
    pool_clusters = epoch["clusters"][epoch["pool_indices"]]

    def ours(backend: str) -> Callable[[], torch.Tensor]:
        def run() -> torch.Tensor:
            positions = mine_hard_negatives(
                epoch["query_vectors"],
                query_clusters,
                epoch["pool_vectors"],
                pool_clusters,
                args.negatives,
                backend=backend,
            )
            return epoch["pool_indices"][positions]

        return run

    stages: dict[str, float] = {}
    best_stages: dict[str, float] = {}

    def reference() -> list[list[int]]:
        negatives = reference_loop(
            epoch["query_vectors"],
            epoch["query_indices"],
            epoch["pool_vectors"],
            epoch["pool_indices"],
            clusters_list,
            args.negatives,
            stages,
        )
        if not best_stages or sum(stages.values()) < sum(best_stages.values()):
            best_stages.update(stages)
        return negatives

    rows = []
    reference_seconds, expected = best_time(reference, args.repeats)
    rows.append(("reference per-query loop (cirtorch-style)", reference_seconds))
    matmul_seconds, _ = best_time(
        lambda: epoch["query_vectors"] @ epoch["pool_vectors"].T, args.repeats
    )
    backends = ["torch"]
    try:
        import faiss  # noqa: F401

        backends.append("faiss")
    except ImportError:
        print("faiss not installed: faiss backend skipped")
    all_equal = True
    for backend in backends:
        seconds, negatives = best_time(ours(backend), args.repeats)
        same = negatives.tolist() == expected
        all_equal &= same
        rows.append((f"asymret mine_hard_negatives, {backend} backend", seconds))
        print(f"{backend} backend returns the reference's negatives: {same}")

    cpu = cpu_name()
    print(
        f"\nmachine: {cpu}, {os.cpu_count()} CPU cores, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), asymret {asymret.__version__}"
    )
    print(
        f"epoch: {args.queries} queries x {args.pool} pool images x {args.dim}-D float32, "
        f"{args.clusters} clusters, {args.negatives} negatives, best of {args.repeats}\n"
    )
    print(f"{'method':<48} {'seconds':>9} {'speed-up':>9}")
    for name, seconds in rows:
        print(f"{name:<48} {seconds:>9.3f} {reference_seconds / seconds:>8.1f}x")
    stage_text = ", ".join(f"{name} {seconds:.3f}" for name, seconds in best_stages.items())
    print(f"\nreference stages (s): {stage_text}")
    print(f"score matrix product alone (s): {matmul_seconds:.3f}")
    if not all_equal:
        raise SystemExit("FAILED: negatives differ from the reference loop")


if __name__ == "__main__":
    main()
