"""Samplers: pure functions over an explicit trajectory (see base.py), registered by CLI name with
the trajectory each starts from by default (:func:`timesteps`)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from ..schedule import NoiseSchedule
from . import consistency, ddim, ddpm, dpm_solver, heun, pndm


@dataclass(frozen=True)
class Sampler:
    """A sampler and its default trajectory: ``steps`` timesteps (None: all T) spaced by ``spacing``,
    starting at the largest timestep whose noise level sigma_t is at most ``sigma_max``.

    The samplers that step on the clipped x0 prediction (DDPM, DDIM, DPM-Solver++) are well-posed
    from any noise level and start at T - 1. Heun and PNDM extrapolate eps over a step, an error
    that grows with sigma_t; they start at EDM's sigma_max = 80 (Karras et al. 2022, Table 1), where the
    cosine schedule's last timestep is at 20,000 (samplers/heun.py, samplers/pndm.py)."""

    sample: Callable
    spacing: str = "uniform"
    steps: int | None = 50
    sigma_max: float = math.inf
    extra_evaluations: int = 0  # network evaluations beyond one per step: pndm's warm-up (+1)
    per_step: int = 1  # evaluations per step: heun's correction makes 2 (but the last step: 2 S - 1)

    def __call__(self, *args, **kwargs):
        return self.sample(*args, **kwargs)

    def steps_for(self, evaluations: int) -> int:
        """The trajectory length S that costs at most ``evaluations`` network evaluations per image."""
        return max(1, (evaluations - self.extra_evaluations + self.per_step - 1) // self.per_step)


SAMPLERS = {
    "ddpm": Sampler(ddpm.sample, steps=None),
    "ddim": Sampler(ddim.sample),
    "pndm": Sampler(pndm.sample, sigma_max=80.0, extra_evaluations=1),
    "heun": Sampler(heun.sample, spacing="logsnr", sigma_max=80.0, per_step=2),
    "dpm++2m": Sampler(dpm_solver.sample, spacing="trailing"),  # see samplers/dpm_solver.py
}
# for consistency-distilled students only (training/consistency.py): not a sampler of diffusion models
STUDENT_SAMPLERS = {"consistency": Sampler(consistency.sample, spacing="trailing", steps=4)}


def get_sampler(name: str) -> Sampler:
    every = {**SAMPLERS, **STUDENT_SAMPLERS}
    if name not in every:
        raise ValueError(f"unknown sampler {name!r}; choose from {', '.join(every)}")
    return every[name]


def timesteps(name: str, schedule: NoiseSchedule, steps: int | None = None, spacing: str | None = None) -> list[int]:
    """The trajectory sampler ``name`` takes by default: ``steps`` timesteps (its default if None)
    spaced by ``spacing`` (its default if None), from the first timestep where it is well-posed."""
    sampler = get_sampler(name)
    start = schedule.start_below(sampler.sigma_max)
    if steps is None:
        steps = sampler.steps or start + 1
    return schedule.timesteps(steps, spacing or sampler.spacing, start).tolist()
