"""Shared test helpers: the exact denoiser for Gaussian data, small image files, a small random U-Net,
stand-in emoji."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from tinydiff.nets import UNet
from tinydiff.schedule import NoiseSchedule, broadcast


def gaussian_denoiser(schedule: NoiseSchedule, mu: float, s: float):
    """The exact (eps, x0) predictor for data x0 ~ N(mu, s^2 I).

    x_t = sqrt(a) x0 + sqrt(1 - a) eps is Gaussian, so E[eps | x_t] = sqrt(1 - a) (x_t - sqrt(a) mu) / v
    with v = a s^2 + 1 - a; E[x0 | x_t] follows from x_t's definition.
    """

    def denoise(x_t, t):
        t = torch.as_tensor(t).expand(x_t.shape[0])
        a = broadcast(schedule.alpha_bar_at(t), x_t)
        eps = (1 - a).sqrt() * (x_t - a.sqrt() * mu) / (a * s**2 + 1 - a)
        return eps, (x_t - (1 - a).sqrt() * eps) / a.sqrt()

    return denoise


def digit_like_images(n: int = 64, size: int = 8, seed: int = 0) -> np.ndarray:
    """uint8 [n, 1, size, size] images with some structure (bars at random places)."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n, 1, size, size), dtype=np.uint8)
    for i in range(n):
        r = rng.integers(0, size - 2)
        x[i, 0, r : r + 2, 1:-1] = 255
        x[i, 0, :, rng.integers(0, size)] = 200
    return x


def random_unet(**kw) -> UNet:
    """A small U-Net (8 channels, 2 levels) in eval mode with every weight drawn from N(0, 0.05^2), seed 0:
    a fresh one's zero-initialised output layer would make every prediction 0."""
    torch.manual_seed(0)
    net = UNet(1, channels=8, channel_mults=(1, 2), **kw).eval()
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.05)
    return net


class FakeInception:
    """Cheap stand-in for the Inception network: per-image pixel statistics as features."""

    weights_hash = "fake"

    def __init__(self, *args, **kwargs):
        self.calls = 0

    def __call__(self, images, progress=False):
        self.calls += 1
        x = images.float().flatten(1)
        return torch.stack([x.mean(1), x.std(1), x[:, ::7].mean(1), x.max(1).values], 1).double().numpy()


def stand_in_emoji(cache: Path, count: int = 120) -> None:
    """The emoji caches (data/emoji.py's layout) with random RGBA 64x64 images in 9 categories,
    every tenth held out, for commands that read ``--data emoji``."""
    for style in ("google", "twitter"):
        rgba = np.random.default_rng(len(style)).integers(0, 256, (count, 4, 64, 64), dtype=np.uint8)
        np.savez(cache / f"emoji-{style}.npz", x=rgba, y=np.arange(count) % 9, test=np.arange(count) % 10 == 9)
