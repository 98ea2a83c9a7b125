"""DDPM ancestral sampling (Ho et al. 2020, Algorithm 2), optionally on a respaced trajectory.

Each step draws x_{t_prev} ~ N(mu~(x_t, x0), sigma^2 I) with the posterior mean of eq. 7 and
sigma^2 = beta~ (the posterior variance, eq. 7) or beta (the "large" choice of Sec. 3.2).
On a trajectory tau that skips steps, beta is replaced by the respaced
beta'_t = 1 - alpha_bar_t / alpha_bar_{t_prev} (improved-diffusion's respacing); with all T
steps this is exactly Algorithm 2. ``respace=False`` is the naive step skipping that DDPM's Markov
chain does not allow: each visited t takes Algorithm 2's one step to t - 1 with the original beta_t
and the result is used as if it were x_{t_prev} (an ablation; it leaves noise behind).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ..denoiser import Denoiser
from ..schedule import NoiseSchedule
from .base import noise_like, pairs, predict

VARIANCES = ("posterior", "beta")


def sample(
    denoise: Denoiser,
    schedule: NoiseSchedule,
    x_T: torch.Tensor,
    timesteps: Sequence[int],
    *,
    variance: str = "posterior",
    respace: bool = True,
    clip_x0: bool = True,
    generator: torch.Generator | None = None,
    callback=None,
) -> torch.Tensor:
    if variance not in VARIANCES:
        raise ValueError(f"unknown DDPM variance {variance!r}; choose from {', '.join(VARIANCES)}")
    x = x_T
    for i, (t, t_prev) in enumerate(pairs(schedule, timesteps)):
        eps, x0 = predict(denoise, x, t, schedule, clip_x0)
        alpha_bar = float(schedule.alpha_bar_at(t))
        alpha_bar_prev = float(schedule.alpha_bar_at(t_prev if respace else t - 1))  # naive: as if t_prev = t - 1
        beta = 1 - alpha_bar / alpha_bar_prev  # beta_t (respaced)
        # eq. 7: mu~ = sqrt(a_prev) beta / (1 - a) x0 + sqrt(1 - beta) (1 - a_prev) / (1 - a) x_t
        mean = (math.sqrt(alpha_bar_prev) * beta / (1 - alpha_bar)) * x0 + (
            math.sqrt(1 - beta) * (1 - alpha_bar_prev) / (1 - alpha_bar)
        ) * x
        # eq. 7: beta~ = (1 - a_prev) / (1 - a) beta;  Algorithm 2: no noise on the last step
        var = beta * (1 - alpha_bar_prev) / (1 - alpha_bar) if variance == "posterior" else beta
        x = mean + math.sqrt(var) * noise_like(x, generator) if t_prev >= 0 else mean
        if callback is not None:
            callback(i, t, x, x0)
    return x
