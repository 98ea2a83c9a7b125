"""What a run shows while it trains, besides log.jsonl: grids of EMA samples from the same noise
every --grid-every steps (OUT/grids/step-NNNNNN.png) and, with --logger tensorboard, the records and
grids as TensorBoard events (OUT/tensorboard; ``tensorboard --logdir OUT``)."""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import TinydiffError

GRID_IMAGES = 16


def open_tensorboard(out: Path):
    """A SummaryWriter into OUT/tensorboard, or a TinydiffError saying how to install it."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise TinydiffError("--logger tensorboard needs TensorBoard: pip install 'tinydiff[tensorboard]'") from None
    return SummaryWriter(str(out / "tensorboard"))


def write_record(writer, record: dict) -> None:
    """One log.jsonl record as scalars: loss, lr, images/s and the loss in each band of timesteps."""
    step = record["step"]
    for key in ("loss", "lr", "images_per_s"):
        writer.add_scalar(key, record[key], step)
    for band, value in enumerate(record["loss_t"]):
        writer.add_scalar(f"loss_t/band{band}", value, step)


@torch.inference_mode()
def grid(model, step: int, out: Path, seed: int, writer=None) -> Path:
    """GRID_IMAGES samples of ``model`` (the EMA weights so far) from the same noise at every call (the
    classes in turn for a conditional model), saved as OUT/grids/step-NNNNNN.png and sent to ``writer``."""
    from ..api import sample
    from ..viz import make_grid, save_grid

    images = sample(model, GRID_IMAGES, sampler="dpm++2m", steps=20, seed=seed, **model.every_class(GRID_IMAGES))
    path = save_grid(images, out / "grids" / f"step-{step:06d}.png", nrow=8)
    if writer is not None:
        writer.add_image("samples", make_grid(images, nrow=8), step, dataformats="HWC")
    return path
