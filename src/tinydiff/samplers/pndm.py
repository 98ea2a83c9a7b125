"""PLMS, the pseudo linear multistep sampler of PNDM (Liu et al. 2022, "Pseudo Numerical Methods for Diffusion
Models on Manifolds"), with the warm-up of diffusers' ``PNDMScheduler(skip_prk_steps=True)`` and of the
latent-diffusion "plms" sampler.

PNDM splits a step from t to t_prev (the next timestep of the trajectory tau) into a gradient part, an estimate
e' of eps, and the transfer part phi, which is the deterministic DDIM step (DDIM eq. 12 with sigma = 0) applied
to e' (PNDM Sec. 3.3; diffusers' ``_get_prev_sample`` writes the same map in the paper's form, its formula 9):
    phi(x_t, e', t, t_prev) = sqrt(a_prev) (x_t - sqrt(1 - a) e') / sqrt(a) + sqrt(1 - a_prev) e'
with a = alpha_bar_t. PLMS takes e' from the fourth-order Adams-Bashforth formula over the network outputs e at
the current and the three previous timesteps of tau (PNDM's pseudo linear multistep method):
    e' = (55 e_t - 59 e_{t+1} + 37 e_{t+2} - 9 e_{t+3}) / 24          (e_{t+k}: the output k steps earlier)
The first three steps lack that history and use lower orders:
    step 0: pseudo improved Euler, e' = (e_t + eps(phi(x_t, e_t, t, t_prev), t_prev)) / 2: one extra network
            evaluation, whose output is not kept in the history;
    step 1: e' = (3 e_t - e_{t+1}) / 2;   step 2: e' = (23 e_t - 16 e_{t+1} + 5 e_{t+2}) / 12   (Adams-Bashforth).
As in PNDM and diffusers the coefficients assume equal steps; on a non-uniform trajectory ("quadratic") they are
used all the same, the step being one position along tau.

Why this warm-up and not the paper's pseudo Runge-Kutta one (F-PNDM): Runge-Kutta costs 4 network evaluations
for each of the first 3 steps (12 before the multistep part starts, most of a 10-20 evaluation budget) and
evaluates the network half-way between trajectory timesteps, which is not defined for an arbitrary trajectory
(e.g. neighbouring timesteps t, t - 1). The PLMS warm-up costs one extra evaluation, stays on tau's timesteps, is
what latent diffusion / Stable Diffusion ship as "plms", and can be checked against diffusers.

Clipping (``clip_x0``, the default) applies to the transfer part too: e' mixes outputs at several timesteps, and
the x0 it implies, (x_t - sqrt(1 - a) e') / sqrt(a), carries their differences multiplied by sigma_t =
sqrt((1 - a) / a). Unclipped, that error grows with sigma_t (the cosine schedule's sigma_t passes 100 in its last
ten timesteps): at 10 network evaluations the shipped MNIST model gives noise from t = 999. Clipped, and started
at sigma_t <= 80 (``samplers.timesteps``), every trajectory length gives digits. Without clipping the steps are
diffusers' exactly.

Network evaluations: S + 1 for a trajectory of S >= 2 timesteps, 1 for S = 1 (the only step then goes to t = -1,
where the network cannot be evaluated, so it is a plain DDIM step). S is the length of tau, as for every
sampler here and diffusers' ``num_inference_steps``; it cannot also be the number of evaluations because of the
warm-up's extra one: for a budget of N evaluations use S = N - 1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ..denoiser import Denoiser, clip_prediction
from ..schedule import NoiseSchedule
from .base import pairs, predict

# Adams-Bashforth coefficients by order, for the outputs at the current timestep first, then earlier ones.
ADAMS_BASHFORTH = {
    1: (1.0,),
    2: (3 / 2, -1 / 2),
    3: (23 / 12, -16 / 12, 5 / 12),
    4: (55 / 24, -59 / 24, 37 / 24, -9 / 24),
}


def _phi(x: torch.Tensor, eps: torch.Tensor, a: float, a_prev: float, clip_x0: bool) -> torch.Tensor:
    """The transfer part: DDIM eq. 12 with sigma = 0 from alpha_bar a to a_prev, driven by eps; with
    clip_x0 the x0 it implies is clipped to [-1, 1] (and eps recomputed), as every prediction is."""
    x0 = (x - math.sqrt(1 - a) * eps) / math.sqrt(a)  # DDIM eq. 12 "predicted x0"
    if clip_x0:
        eps, x0 = clip_prediction(x, x0, a)
    return math.sqrt(a_prev) * x0 + math.sqrt(1 - a_prev) * eps  # + "direction pointing to x_t"


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
    """x_T: [N, ...] standard normal -> x_0 [N, ...]. Deterministic: ``generator`` is accepted and unused."""
    x = x_T
    history: list[torch.Tensor] = []  # network eps at the previous timesteps of tau, newest first (at most 3)
    for i, (t, t_prev) in enumerate(pairs(schedule, timesteps)):
        eps, x0 = predict(denoise, x, t, schedule, clip_x0)
        a, a_prev = float(schedule.alpha_bar_at(t)), float(schedule.alpha_bar_at(t_prev))
        if i == 0 and t_prev >= 0:
            # pseudo improved Euler: average eps at x_t and at the DDIM (Euler) prediction of x_{t_prev}
            eps_next, _ = predict(denoise, _phi(x, eps, a, a_prev, clip_x0), t_prev, schedule, clip_x0)
            e_prime = (eps + eps_next) / 2
        else:
            outputs = [eps, *history]
            # PNDM's linear multistep gradient part: Adams-Bashforth of order len(outputs) (4 from step 3 on)
            e_prime = sum(c * e for c, e in zip(ADAMS_BASHFORTH[len(outputs)], outputs))
        history = [eps, *history][:3]
        x = _phi(x, e_prime, a, a_prev, clip_x0)  # transfer part: x_{t_prev} = phi(x_t, e', t, t_prev)
        if callback is not None:
            callback(i, t, x, x0)
    return x
