"""DDIM's latent space: inversion (the eta = 0 DDIM map run backwards, x_0 -> x_T) and slerp.

DDIM with eta = 0 discretises the probability-flow ODE (DDIM Sec. 4.3, eq. 14): in terms of
x / sqrt(a) and sigma = sqrt((1 - a) / a) it is an Euler step, so it can be run in either
direction. Inversion takes the same trajectory tau in increasing order; each step from t_prev
to t (t_prev = -1 is the clean image) applies eq. 12 with sigma = 0,
    x_t = sqrt(a_t) x0_hat + sqrt(1 - a_t) eps_hat,
with (eps_hat, x0_hat) predicted at x_{t_prev}, timestep t_prev. On the first step (t_prev = -1)
x0_hat is the image itself and eps_hat is predicted at tau's first timestep, where the network
is defined (the usual approximation; the error it adds vanishes with the step size). Decoding
the result with DDIM eta = 0 on the same tau reconstructs x_0, with an error that vanishes as
the number of steps S grows (DDIM Table 2).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ..denoiser import Denoiser
from ..schedule import NoiseSchedule
from .base import pairs


def invert(
    denoise: Denoiser,
    schedule: NoiseSchedule,
    x_0: torch.Tensor,
    timesteps: Sequence[int],
    *,
    callback=None,
) -> torch.Tensor:
    """x_0: [N, ...] in [-1, 1] -> the latent x_T [N, ...] that DDIM (eta = 0, same steps and
    spacing) decodes back to x_0. No clipping: inversion must stay on the ODE."""
    x = x_0
    steps = list(reversed(pairs(schedule, timesteps)))  # (t, t_prev) from the clean end upwards
    for i, (t, t_prev) in enumerate(steps):
        a = float(schedule.alpha_bar_at(t))
        if t_prev < 0:  # from the clean image: x0 is known, eps is predicted at tau's first timestep
            eps, _ = denoise(x, t)
            x0 = x
        else:
            eps, x0 = denoise(x, t_prev)
        x = math.sqrt(a) * x0 + math.sqrt(1 - a) * eps  # eq. 12 with sigma = 0, from t_prev up to t
        if callback is not None:
            callback(i, t, x, x0)
    return x


def slerp(z0: torch.Tensor, z1: torch.Tensor, alpha: float) -> torch.Tensor:
    """Spherical interpolation between latents [N, ...] (per sample), as in DDIM Sec. 5.3:
        z = sin((1 - alpha) theta) / sin(theta) z0 + sin(alpha theta) / sin(theta) z1,
    theta = the angle between z0 and z1. Gaussian latents of dimension d live near the sphere
    of radius sqrt(d); slerp keeps interpolants there, where a linear mix (norm shrinking by up
    to 1/sqrt(2) halfway between independent latents) leaves it. Falls back to the linear mix
    when the latents are (nearly) parallel."""
    flat0, flat1 = z0.flatten(1).double(), z1.flatten(1).double()
    cos = (flat0 * flat1).sum(1) / (flat0.norm(dim=1) * flat1.norm(dim=1))
    theta = cos.clamp(-1, 1).arccos()
    sin = theta.sin()
    parallel = sin.abs() < 1e-6
    safe = torch.where(parallel, torch.ones_like(sin), sin)
    w0 = torch.where(parallel, 1 - alpha, ((1 - alpha) * theta).sin() / safe)
    w1 = torch.where(parallel, torch.full_like(sin, alpha), (alpha * theta).sin() / safe)
    shape = (-1,) + (1,) * (z0.ndim - 1)
    return (w0.view(shape) * z0.double() + w1.view(shape) * z1.double()).to(z0.dtype)
