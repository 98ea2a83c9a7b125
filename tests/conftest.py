import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

from helpers import digit_like_images  # noqa: E402 (after the path)


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """Every test gets its own dataset cache, its own working folder (what a command writes by default
    lands there, never in the repository) and a fixed thread count."""
    monkeypatch.setenv("TINYDIFF_CACHE", str(tmp_path / "cache"))
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """A small model of 8x8 digits, trained enough to have a trajectory worth distilling (one per
    test module: its students are written beside it), with AdamW, as the distillation tests' bounds
    were measured."""
    from tinydiff.training import TrainConfig, Trainer

    root = tmp_path_factory.mktemp("teacher")
    np.savez(root / "digits.npz", x=digit_like_images(256), y=np.arange(256) % 4)
    config = TrainConfig(
        data=str(root / "digits.npz"), out=str(root / "teacher"), steps=80, batch_size=32, sample_grid=0,
        conditional=True, channels=16, ckpt_every=80, seed=1, optimizer="adamw",
    )  # fmt: skip
    Trainer(config).run(progress=False)
    return root
