"""The run folder's logs: ``train_log.csv``, ``validation.csv`` and TensorBoard's ``tensorboard/``.

``train_log.csv`` holds a row per step (1-based ``epoch``, ``step`` counting the epoch's steps
done, ``global_step``, ``loss``, ``lr``, ``seconds``); ``validation.csv`` a row per validation
set and setting (``epoch``, ``dataset``, ``setting``, ``map_easy``, ``map_medium``,
``map_hard``). TensorBoard, when installed, gets the training loss per global step and each
validation's medium mAP per epoch. Only the main process writes. A resumed run first drops the
rows of steps after its checkpoint, and the validation rows of epochs after its last finished
validation: they are trained, validated and logged again. A validation replaces any rows of its
epoch, so a run killed between a validation and its checkpoint never logs an epoch twice.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

TRAIN_LOG_NAME = "train_log.csv"
VALIDATION_LOG_NAME = "validation.csv"
TENSORBOARD_NAME = "tensorboard"


def append_csv(path: Path, rows: list[dict]) -> None:
    """Append ``rows`` to a CSV file, writing the header (the first row's keys) if it is new."""
    if not rows:
        return
    new = not path.exists()
    with open(path, "a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        if new:
            writer.writeheader()
        writer.writerows(rows)


def _complete_rows(path: Path) -> list[dict]:
    """The rows of a log, without a last row cut short by a kill while it was written."""
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        return [row for row in reader if None not in row.values() and None not in row]


def _rewrite_csv(path: Path, rows: list[dict]) -> None:
    """Replace a log by ``rows`` through a temporary file (a kill keeps the old or the new)."""
    temporary = path.with_name(path.name + ".tmp")
    temporary.unlink(missing_ok=True)
    append_csv(temporary, rows)
    if rows:
        os.replace(temporary, path)
    else:
        path.unlink(missing_ok=True)


def trim_train_log(path: Path, epoch: int, step: int) -> None:
    """Drop the rows of steps after step ``step`` of 0-based epoch ``epoch`` (a checkpoint's)."""
    if not path.exists():
        return
    rows = _complete_rows(path)
    _rewrite_csv(
        path, [row for row in rows if (int(row["epoch"]) - 1, int(row["step"])) <= (epoch, step)]
    )


def trim_validation_log(path: Path, validated: int) -> None:
    """Drop the validation rows of epochs after ``validated`` (the checkpoint's last one)."""
    if path.exists():
        _rewrite_csv(path, [row for row in _complete_rows(path) if int(row["epoch"]) <= validated])


def write_validation(path: Path, epoch: int, rows: list[dict]) -> None:
    """Log the validation rows of ``epoch`` (1-based), replacing any earlier ones of it."""
    earlier = _complete_rows(path) if path.exists() else []
    if any(int(row["epoch"]) >= epoch for row in earlier):
        _rewrite_csv(path, [row for row in earlier if int(row["epoch"]) < epoch] + rows)
    else:
        append_csv(path, rows)


def tensorboard_writer(folder: Path):
    """A TensorBoard ``SummaryWriter`` logging to ``folder``; None if TensorBoard is missing."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(folder))


class TrainLog:
    """The logs of the run in ``run_dir``; with ``enabled=False`` (ranks other than the main
    one) every call does nothing.

    ``validation.csv`` rows are written with :func:`write_validation` by the validation
    itself; :meth:`validated` adds their TensorBoard scalars.
    """

    def __init__(self, run_dir: Path, enabled: bool = True):
        self.train_path = run_dir / TRAIN_LOG_NAME
        self.validation_path = run_dir / VALIDATION_LOG_NAME
        self.enabled = enabled
        self.writer = tensorboard_writer(run_dir / TENSORBOARD_NAME) if enabled else None

    def resume_at(self, epoch: int, step: int, validated: int) -> None:
        """Continue after step ``step`` of 0-based epoch ``epoch``, validated up to epoch
        ``validated`` (1-based): drop later rows."""
        if self.enabled:
            trim_train_log(self.train_path, epoch, step)
            trim_validation_log(self.validation_path, validated)

    def step(
        self, *, epoch: int, step: int, global_step: int, loss: float, lr: float, seconds: float
    ) -> None:
        """Log a finished step: ``epoch`` 1-based, ``step`` the steps of that epoch done."""
        if not self.enabled:
            return
        append_csv(self.train_path, [{
            "epoch": epoch, "step": step, "global_step": global_step,
            "loss": loss, "lr": lr, "seconds": seconds,
        }])
        if self.writer is not None:
            self.writer.add_scalar("train/loss", loss, global_step)

    def validated(self, epoch: int, rows: list[dict]) -> None:
        """TensorBoard scalars of a validation's rows (medium mAP per dataset and setting)."""
        if self.writer is None:
            return
        for row in rows:
            self.writer.add_scalar(
                f"{row['dataset']}/{row['setting']}/map_medium", row["map_medium"], epoch
            )

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
