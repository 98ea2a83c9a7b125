"""What every sampler shares: the clipped (eps, x0) prediction and seeded noise.

A sampler is a pure function
    sample(denoise, schedule, x_T, *, steps, generator=None, callback=None, **options) -> x_0
where ``denoise(x_t, t) -> (eps, x0)`` (see :func:`tinydiff.objectives.as_denoiser`) and
``callback(i, t, x_t, x0_pred)`` is called after step i with the new x_t and the x0 predicted
at timestep t (for trajectory GIFs and analysis). Samplers keep no state between calls.
"""

from __future__ import annotations

import torch

from ..objectives import Denoiser, clip_prediction
from ..schedule import NoiseSchedule


def predict(denoise: Denoiser, x_t: torch.Tensor, t: int, schedule: NoiseSchedule, clip_x0: bool):
    """(eps, x0) at integer timestep t. With clip_x0, x0 is clipped to [-1, 1] and eps recomputed
    from it so that the pair stays consistent with x_t (DDPM eq. 4 solved for eps)."""
    eps, x0 = denoise(x_t, t)
    if clip_x0:
        return clip_prediction(x_t, x0, float(schedule.alpha_bar_at(t)))
    return eps, x0


def trajectory(schedule: NoiseSchedule, steps: int, spacing: str) -> list[tuple[int, int]]:
    """Pairs (t, t_prev) along the decreasing trajectory tau, ending with (tau_1, -1): the previous
    timestep is looked up in tau, never computed as t - T // S."""
    timesteps = schedule.timesteps(steps, spacing).tolist()
    return list(zip(timesteps, timesteps[1:] + [-1]))


def noise_like(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Standard normal noise shaped like x, drawn from ``generator`` if given."""
    if generator is None:
        return torch.randn_like(x)
    return torch.randn(x.shape, generator=generator, device=generator.device, dtype=x.dtype).to(x.device)
