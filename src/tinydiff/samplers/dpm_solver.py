"""DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++: Fast Solver for Guided Sampling of Diffusion Probabilistic
Models", Algorithm 2): the second-order multistep solver of the probability-flow ODE in data prediction; with
``eta`` > 0 its stochastic counterpart, SDE-DPM-Solver++(2M) (the same paper, Appendix; Lu et al. 2023).

With alpha_t = sqrt(a), sigma_t = sqrt(1 - a) (a = alpha_bar_t) and the half log-SNR
lambda_t = log(alpha_t / sigma_t), a step from t_{i-1} to t_i along tau (h_i = lambda_{t_i} - lambda_{t_{i-1}}) is
    x_{t_i} = (sigma_{t_i} / sigma_{t_{i-1}}) x_{t_{i-1}} - alpha_{t_i} (e^{-h_i} - 1) D_i
where D_i combines the data predictions x0 at the current and the previous timestep, r_i = h_{i-1} / h_i:
    D_1 = x0_{t_0}                                                   (first step: first order, i.e. DDIM)
    D_i = (1 + 1 / (2 r_i)) x0_{t_{i-1}} - 1 / (2 r_i) x0_{t_{i-2}}
The last step goes to t = -1, clean data: alpha = 1, sigma = 0, lambda = +inf, so h = inf, e^{-h} = 0 and the
update is x = D; a second-order D would need 1 / (2 r) with r = h_{i-1} / inf = 0, so the last step is first order
and returns the data prediction x0 at the last timestep of tau. This is what diffusers'
``DPMSolverMultistepScheduler`` does with ``final_sigmas_type="zero"`` (its last step is then first order
whatever ``lower_order_final`` says). Like diffusers' spacings for this solver, use a trajectory that does not
end at t = 0 ("trailing", its default in ``samplers.timesteps``): ending there makes the step into t = 0
several times longer in lambda than the one before it, and the second-order extrapolation of x0 over it costs
accuracy at small step counts.

``eta`` >= 0 mixes in the reverse SDE (as k-diffusion's ``sample_dpmpp_2m_sde``): with g = eta h,
    x_{t_i} = (sigma_{t_i} / sigma_{t_{i-1}}) e^{-g} x_{t_{i-1}} + alpha_{t_i} (1 - e^{-h - g}) D_i
              + sigma_{t_i} sqrt(1 - e^{-2 g}) z
eta = 0 is the ODE step above; eta = 1 is SDE-DPM-Solver++(2M) with the midpoint D_i, diffusers'
``algorithm_type="sde-dpmsolver++"``. eta > 1 renews more of the noise at each step (a fraction 1 - e^{-2 g} of
its variance): if x_{t_{i-1}} = alpha x0 + sigma eps and D_i = x0, the step gives alpha_{t_i} x0 plus noise of
variance sigma_{t_i}^2 for every g >= 0, so any eta keeps the marginals; only the error of D_i is carried
differently (Karras et al. 2022, Sec. 4: fresh noise corrects the errors of earlier steps). Each step draws z
(the last one too, where sigma = 0 cancels it). Deterministic at eta = 0. Network evaluations: S, the length of tau.
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
    clip_x0: bool = True,
    generator: torch.Generator | None = None,
    callback=None,
) -> torch.Tensor:
    """x_T: [N, ...] standard normal -> x_0 [N, ...]. ``generator`` draws the noise of eta > 0."""
    if not eta >= 0.0:
        raise ValueError(f"eta must be >= 0, got {eta}")
    x = x_T
    x0_before, h_before = None, None  # x0 and h of the previous step (Algorithm 2's buffer Q)
    for i, (t, t_prev) in enumerate(pairs(schedule, timesteps)):
        _, x0 = predict(denoise, x, t, schedule, clip_x0)
        if t_prev < 0:
            x = x0  # last step to sigma = 0: e^{-h} = 0 and first order, x = alpha D = x0
            if eta > 0:
                noise_like(x, generator)  # drawn and multiplied by sigma = 0, as diffusers does
        else:
            a, a_prev = float(schedule.alpha_bar_at(t)), float(schedule.alpha_bar_at(t_prev))
            h = 0.5 * math.log(a_prev / (1 - a_prev)) - 0.5 * math.log(a / (1 - a))  # lambda_{t_i} - lambda_{t_{i-1}}
            if x0_before is None:
                D = x0  # first step: first order
            else:
                r = h_before / h
                D = (1 + 1 / (2 * r)) * x0 - 1 / (2 * r) * x0_before  # Algorithm 2: D_i
            g = eta * h
            x = (
                math.sqrt((1 - a_prev) / (1 - a)) * math.exp(-g) * x - math.sqrt(a_prev) * math.expm1(-h - g) * D
            )  # Algorithm 2: x_{t_i} (g = 0); with eta > 0 the SDE step's mean
            if eta > 0:
                x = x + math.sqrt(1 - a_prev) * math.sqrt(-math.expm1(-2 * g)) * noise_like(x, generator)
            x0_before, h_before = x0, h
        if callback is not None:
            callback(i, t, x, x0)
    return x
