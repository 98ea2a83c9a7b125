"""Multistep consistency sampling (Song et al. 2023, "Consistency Models", Algorithm 1), for a
consistency-distilled student (training/consistency.py), which maps any x_t to clean data directly.

At the first timestep of the trajectory tau the student's x0 is the sample; each later timestep
puts fresh noise back on it and asks again:
    x0 = f(x_tau1, tau1);   for tau in tau_2, ...:   x_tau = sqrt(a_tau) x0 + sqrt(1 - a_tau) z,   x0 = f(x_tau, tau)
with a = alpha_bar and f the (clipped) x0 prediction. One timestep is the one-step generator. On an
ordinary diffusion model this is a poor sampler (its x0 at large t is a blurred average): it is for
consistency models.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ..denoiser import Denoiser
from ..schedule import NoiseSchedule
from .base import noise_like, pairs, predict


def sample(
    denoise: Denoiser,
    schedule: NoiseSchedule,
    x_T: torch.Tensor,
    timesteps: Sequence[int],
    *,
    clip_x0: bool = True,
    generator: torch.Generator | None = None,
    callback=None,
) -> torch.Tensor:
    x = x_T
    for i, (t, t_prev) in enumerate(pairs(schedule, timesteps)):
        _, x0 = predict(denoise, x, t, schedule, clip_x0)
        a_prev = float(schedule.alpha_bar_at(t_prev))  # 1 at t_prev = -1: x = x0
        x = math.sqrt(a_prev) * x0 + math.sqrt(1 - a_prev) * noise_like(x, generator) if t_prev >= 0 else x0
        if callback is not None:
            callback(i, t, x, x0)
    return x
