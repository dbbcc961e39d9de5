"""Resumable training checkpoints: the run's state and everything needed to continue it exactly.

A checkpoint (``<run>/checkpoints/last.pt``) holds the student's weights, the optimiser and the
learning-rate schedule, the epoch in progress and the steps of it done, the epoch's tuples, the
unreadable images skipped so far and the last validated epoch. Every random draw derives from
the seed, the epoch and the step, so no generator state is saved. It is written atomically: a
run killed while saving keeps the previous checkpoint.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from asymret.errors import AsymretError
from asymret.files import writing
from asymret.mining import EpochTuples

CHECKPOINT_NAME = "last.pt"
"""File name of a run's checkpoint, in the run folder's ``checkpoints/``."""

_TUPLE_FIELDS = ("query_indices", "positive_indices", "negative_indices")


@dataclass
class TrainState:
    """Where the run is: ``epoch`` in progress, ``step`` steps of it done, its tuples, and
    the last epoch whose validation finished."""

    epoch: int = 0
    step: int = 0
    tuples: EpochTuples | None = None
    skipped_images: int = 0
    validated: int = 0


def save_checkpoint(
    path: Path,
    state: TrainState,
    student: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
) -> None:
    """Write the checkpoint to a temporary file beside ``path``, then rename it over ``path``.

    Raises:
        AsymretError: naming ``path`` when the disk or quota is full; the previous checkpoint
            is kept and the temporary file removed.
    """
    tuples = state.tuples
    payload = {
        "student": student.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "epoch": state.epoch,
        "step": state.step,
        "skipped_images": state.skipped_images,
        "validated": state.validated,
        "tuples": None
        if tuples is None
        else {name: getattr(tuples, name) for name in _TUPLE_FIELDS},
    }
    temporary = path.with_suffix(".tmp")
    with writing(path, temporary):
        with open(temporary, "wb") as handle:  # a Python file: a full disk names its errno
            torch.save(payload, handle)
        os.replace(temporary, path)


def load_checkpoint(
    path: Path,
    student: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    device: torch.device,
) -> TrainState:
    """Restore the student, optimiser and schedule saved at ``path``; return the run's state.

    Raises:
        AsymretError: naming ``path``, when it cannot be read or is not a training checkpoint.
    """
    try:
        payload = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:
        raise AsymretError(f"{path}: cannot read checkpoint ({exc})") from exc
    try:
        student.load_state_dict(payload["student"])
        optimizer.load_state_dict(payload["optimizer"])
        scheduler.load_state_dict(payload["scheduler"])
        tuples = payload["tuples"]
        return TrainState(
            epoch=payload["epoch"],
            step=payload["step"],
            tuples=None
            if tuples is None
            else EpochTuples(*(tuples[name].cpu() for name in _TUPLE_FIELDS)),
            skipped_images=payload["skipped_images"],
            validated=payload["validated"],
        )
    except KeyError as exc:
        raise AsymretError(f"{path}: not a training checkpoint (no entry {exc})") from exc
