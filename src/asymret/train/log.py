"""The run folder's logs: ``train_log.csv``, ``validation.csv`` and TensorBoard's ``tensorboard/``.

``train_log.csv`` holds a row per step (1-based ``epoch``, ``step`` counting the epoch's steps
done, ``global_step``, ``loss``, ``lr``, ``seconds``); ``validation.csv`` a row per validation
set and setting (``epoch``, ``dataset``, ``setting``, ``map_easy``, ``map_medium``,
``map_hard``). TensorBoard, when installed, gets the training loss per global step and each
validation's medium mAP per epoch. Only the main process writes. A resumed run first drops the
rows of steps after its checkpoint: they are trained, and logged, again.
"""

from __future__ import annotations

import csv
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


def trim_train_log(path: Path, epoch: int, step: int) -> None:
    """Drop the rows of steps after step ``step`` of 0-based epoch ``epoch`` (a checkpoint's)."""
    if not path.exists():
        return
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    kept = [row for row in rows if (int(row["epoch"]) - 1, int(row["step"])) <= (epoch, step)]
    path.unlink()
    append_csv(path, kept)


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

    ``validation.csv`` rows are appended with :func:`append_csv` by the validation itself;
    :meth:`validated` adds their TensorBoard scalars.
    """

    def __init__(self, run_dir: Path, enabled: bool = True):
        self.train_path = run_dir / TRAIN_LOG_NAME
        self.enabled = enabled
        self.writer = tensorboard_writer(run_dir / TENSORBOARD_NAME) if enabled else None

    def resume_at(self, epoch: int, step: int) -> None:
        """Continue after step ``step`` of 0-based epoch ``epoch``: drop later rows."""
        if self.enabled:
            trim_train_log(self.train_path, epoch, step)

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
