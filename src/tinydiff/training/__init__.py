"""Training: the loop (trainer.py), weight averaging (ema.py), data-parallel processes (distributed.py).

The options of a run are tinydiff.config.TrainConfig; checkpoints are tinydiff.checkpoint."""

from .trainer import TrainConfig, Trainer

__all__ = ["TrainConfig", "Trainer"]
