"""Training: the loop (trainer.py), checkpoints (checkpoint.py), weight averaging (ema.py)."""

from .trainer import TrainConfig, Trainer

__all__ = ["TrainConfig", "Trainer"]
