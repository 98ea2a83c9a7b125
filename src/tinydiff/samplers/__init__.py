"""Samplers: pure functions with one signature (see base.py), registered by CLI name."""

from __future__ import annotations

from . import ddim, ddpm, dpm_solver, heun, pndm

SAMPLERS = {
    "ddpm": ddpm.sample,
    "ddim": ddim.sample,
    "pndm": pndm.sample,
    "heun": heun.sample,
    "dpm++2m": dpm_solver.sample,
}


def get_sampler(name: str):
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; choose from {', '.join(SAMPLERS)}")
    return SAMPLERS[name]
