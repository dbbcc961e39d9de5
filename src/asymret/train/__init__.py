"""Training: configuration, the loop, checkpoints and resume, multi-GPU."""

from asymret.train.config import TrainConfig, load_config, save_config
from asymret.train.loop import Trainer, TrainingDiverged, train

__all__ = ["TrainConfig", "Trainer", "TrainingDiverged", "load_config", "save_config", "train"]
