"""What every sampler shares: the trajectory it steps along, the clipped (eps, x0) prediction and
seeded noise.

A sampler is a pure function
    sample(denoise, schedule, x_T, timesteps, *, generator=None, callback=None, **options) -> x_0
where ``denoise(x_t, t) -> (eps, x0)`` (see :mod:`tinydiff.denoiser`), ``timesteps``
is the trajectory tau, a decreasing sequence of integer timesteps (the sampler steps from each to
the next and from the last to -1, clean data; ``samplers.timesteps`` makes one from a length and a
spacing), and ``callback(i, t, x_t, x0_pred)`` is called after step i with the new x_t and the x0
predicted at timestep t (for trajectory GIFs and analysis). Samplers keep no state between calls.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..denoiser import Denoiser, clip_prediction
from ..schedule import NoiseSchedule


def predict(denoise: Denoiser, x_t: torch.Tensor, t: int, schedule: NoiseSchedule, clip_x0: bool):
    """(eps, x0) at integer timestep t. With clip_x0, x0 is clipped to [-1, 1] and eps recomputed
    from it so that the pair stays consistent with x_t (DDPM eq. 4 solved for eps)."""
    eps, x0 = denoise(x_t, t)
    if clip_x0:
        return clip_prediction(x_t, x0, float(schedule.alpha_bar_at(t)))
    return eps, x0


def pairs(schedule: NoiseSchedule, timesteps: Sequence[int] | torch.Tensor) -> list[tuple[int, int]]:
    """The steps (t, t_prev) along the trajectory ``timesteps``, ending with (tau_1, -1): the previous
    timestep is the next element of tau, never computed as t - T // S. Refuses a trajectory that is
    empty, not strictly decreasing or outside the schedule's [0, T - 1]."""
    tau = [int(t) for t in (timesteps.tolist() if isinstance(timesteps, torch.Tensor) else timesteps)]
    T = schedule.num_timesteps
    if not tau or any(a <= b for a, b in zip(tau, tau[1:])) or tau[-1] < 0 or tau[0] >= T:
        shown = tau if len(tau) <= 8 else [*tau[:4], "...", *tau[-2:]]
        raise ValueError(f"timesteps must be a non-empty decreasing sequence in [0, {T - 1}], got {shown}")
    return list(zip(tau, tau[1:] + [-1]))


def noise_like(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Standard normal noise shaped like x, drawn from ``generator`` if given."""
    if generator is None:
        return torch.randn_like(x)
    return torch.randn(x.shape, generator=generator, device=generator.device, dtype=x.dtype).to(x.device)
