"""DDIM (Song, Meng & Ermon 2020): the generalised, possibly deterministic, sampler.

One step from t to t_prev along the trajectory tau (``timesteps``), eq. 12:
    x_prev = sqrt(a_prev) x0                                  "predicted x0"
           + sqrt(1 - a_prev - sigma^2) eps                   "direction pointing to x_t"
           + sigma z                                          "random noise"
with a = alpha_bar_t and, eq. 16, sigma(eta) = eta sqrt((1 - a_prev) / (1 - a)) sqrt(1 - a / a_prev).
eta = 0 is the deterministic DDIM; eta = 1 is DDPM with the posterior variance.
``sigma_hat=True`` is Table 1's sigma-hat = sqrt(1 - a / a_prev): the eta = 1 mean with the
larger DDPM noise beta (it cannot be put into eq. 12 directly, whose square root would go
negative).
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
    eta: float = 0.0,
    sigma_hat: bool = False,
    clip_x0: bool = True,
    generator: torch.Generator | None = None,
    callback=None,
) -> torch.Tensor:
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta must be in [0, 1], got {eta}")
    x = x_T
    for i, (t, t_prev) in enumerate(pairs(schedule, timesteps)):
        eps, x0 = predict(denoise, x, t, schedule, clip_x0)
        a, a_prev = float(schedule.alpha_bar_at(t)), float(schedule.alpha_bar_at(t_prev))
        eta_mean = 1.0 if sigma_hat else eta
        sigma = eta_mean * math.sqrt((1 - a_prev) / (1 - a)) * math.sqrt(1 - a / a_prev)  # eq. 16
        x = math.sqrt(a_prev) * x0 + math.sqrt(max(1 - a_prev - sigma**2, 0.0)) * eps  # eq. 12
        noise_std = math.sqrt(1 - a / a_prev) if sigma_hat else sigma
        if t_prev >= 0 and noise_std > 0:
            x = x + noise_std * noise_like(x, generator)
        if callback is not None:
            callback(i, t, x, x0)
    return x
