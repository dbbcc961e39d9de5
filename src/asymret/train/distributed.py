"""Multi-process training under torchrun: rank bookkeeping and gathering sharded work.

Launch with ``torchrun --nproc_per_node=N -m asymret train ...``. Only the student is
wrapped in DistributedDataParallel; the frozen teacher's vectors come from a precomputed
bank. Each rank takes a shard of every step's tuples and of every extraction; rank 0 alone
writes logs and checkpoints.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job (rank 0 of 1 when not distributed)."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str) -> DistInfo:
    """Join the torchrun job if ``WORLD_SIZE`` > 1 (gloo on CPU, nccl on CUDA).

    Each CUDA rank uses the GPU of its ``LOCAL_RANK``.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    target = torch.device(device)
    if world_size <= 1:
        return DistInfo(0, 1, target)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if target.type == "cuda":
        target = torch.device("cuda", local_rank)
        torch.cuda.set_device(target)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if target.type == "cuda" else "gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size(), target)


def shard(items: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """This rank's share of a 1-D or row tensor: rows ``rank, rank + world, ...``."""
    return items[info.rank :: info.world_size]


def gather_shards(local: torch.Tensor, total: int, info: DistInfo) -> torch.Tensor:
    """Reassemble rows sharded by :func:`shard` on every rank into the full (total, ...) tensor."""
    if not info.distributed:
        return local
    per_rank = (total + info.world_size - 1) // info.world_size
    padded = local.new_zeros((per_rank, *local.shape[1:]))
    padded[: local.shape[0]] = local
    gathered = [torch.empty_like(padded) for _ in range(info.world_size)]
    dist.all_gather(gathered, padded)
    result = local.new_empty((total, *local.shape[1:]))
    for rank, rows in enumerate(gathered):
        count = len(range(rank, total, info.world_size))
        result[rank :: info.world_size] = rows[:count]
    return result


def sum_across_ranks(value: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum a tensor over all ranks (identity when not distributed)."""
    if info.distributed:
        value = value.clone()
        dist.all_reduce(value)
    return value


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()


def shutdown(info: DistInfo) -> None:
    if info.distributed and dist.is_initialized():
        dist.destroy_process_group()
