"""Samplers: pure functions with one signature (see base.py), registered by CLI name."""

from __future__ import annotations

from . import ddim, ddpm

SAMPLERS = {
    "ddpm": ddpm.sample,
    "ddim": ddim.sample,
}


def get_sampler(name: str):
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; choose from {', '.join(SAMPLERS)}")
    return SAMPLERS[name]
