"""Heun's 2nd-order ODE sampler (Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based
Generative Models" (EDM), Algorithm 1), on the discrete timesteps of a trajectory tau.

EDM's variable is x_sigma = x_t / sqrt(a) (a = alpha_bar_t) with noise level sigma_t = sqrt((1 - a) / a):
dividing DDPM eq. 4 by sqrt(a) gives x_sigma = x0 + sigma_t eps. The probability-flow ODE is
dx/dsigma = (x - D(x; sigma)) / sigma (EDM eqs. 1 and 3 with sigma(t) = t, s(t) = 1), and its slope
d = (x - x0) / sigma_t equals the predicted eps, so the denoiser is evaluated, at timestep t, on the VP input
x_t = sqrt(a) x_sigma. Each step from t to t_prev (sigma_i -> sigma_{i+1}, Algorithm 1 lines 4-8; Heun, i.e. alpha = 1):
    x' = x + (sigma_{i+1} - sigma_i) d_i                                  Euler step
    x  = x + (sigma_{i+1} - sigma_i) (d_i + d'_i) / 2,  d'_i = d(x', t_prev)   Heun's correction
The last step, to t = -1 (sigma = 0, a = 1), is the Euler step alone, as in EDM (line 6); it lands on x0.
No stochastic churn (Algorithm 2's S_churn = 0): the sampler is deterministic. The noise levels are those of
tau's timesteps, where the network was trained; EDM's rho = 7 spacing of sigmas is not used, and by default
(``samplers.timesteps``) tau is spaced uniformly in log-SNR, which also concentrates steps at low noise.

The trapezoidal correction multiplies the change of the slope over a step by the step's length in sigma. EDM
starts at sigma_max = 80; the cosine schedule's last timestep is at sigma = 20,000 (its betas are clipped at
0.999), where one step's (d'_i - d_i) (sigma_{i+1} - sigma_i) / 2 is thousands of times the data's scale and
the samples are noise. The default trajectory therefore starts at the largest timestep with sigma_t <= 80
(the linear schedule's t = 999 is at sigma = 157, so it starts lower too).

x_T is the VP x_T ~ N(0, I): it is mapped to x_sigma = x_T / sqrt(a_T) (variance about sigma_max^2 + 1, as
diffusers' ``init_noise_sigma`` for "leading"), and the result at sigma = 0 is the VP x_0 itself (a = 1).
Network evaluations: 2 S - 1 for a trajectory of S timesteps.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ..denoiser import Denoiser
from ..schedule import NoiseSchedule
from .base import pairs, predict


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
    """x_T: [N, ...] standard normal -> x_0 [N, ...]. Deterministic: ``generator`` is accepted and unused.

    ``callback`` gets the VP state x_{t_prev} = sqrt(alpha_bar_{t_prev}) x_sigma, like the other samplers."""
    steps = pairs(schedule, timesteps)
    a = float(schedule.alpha_bar_at(steps[0][0]))
    x = x_T / math.sqrt(a)  # x_sigma at sigma_max
    for i, (t, t_prev) in enumerate(steps):
        a, a_prev = float(schedule.alpha_bar_at(t)), float(schedule.alpha_bar_at(t_prev))
        sigma, sigma_prev = math.sqrt((1 - a) / a), math.sqrt((1 - a_prev) / a_prev)  # sigma(-1) = 0
        # line 4: d_i = (x - D(x; sigma_i)) / sigma_i, which is the predicted eps at x_t = sqrt(a) x
        d, x0 = predict(denoise, math.sqrt(a) * x, t, schedule, clip_x0)
        x_next = x + (sigma_prev - sigma) * d  # line 5: Euler step
        if t_prev >= 0:  # line 6: if sigma_{i+1} != 0
            d_next, _ = predict(denoise, math.sqrt(a_prev) * x_next, t_prev, schedule, clip_x0)  # line 7: d'_i
            x_next = x + (sigma_prev - sigma) * (d + d_next) / 2  # line 8: trapezoidal (Heun) correction
        x = x_next
        if callback is not None:
            callback(i, t, math.sqrt(a_prev) * x, x0)
    return x  # sigma = 0: x_sigma is the VP x_0
