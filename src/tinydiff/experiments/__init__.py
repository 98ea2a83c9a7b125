"""The seed write-ups' experiments, one command each: ``tinydiff reproduce NAME``.

An experiment is a function ``run(lab) -> Report`` registered under a name with the claims it
checks (R1-R24, docs/REPRODUCTION.md). It asks the lab (lab.py) for models, samples and scores,
all cached as cells, and returns its tables, figures and a verdict per claim; the command line
writes them as docs/results/NAME.md and NAME.json.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from .lab import Lab, Report


@dataclass(frozen=True)
class Experiment:
    name: str
    claims: tuple[str, ...]
    run: Callable[[Lab], Report]
    summary: str


EXPERIMENTS: dict[str, Experiment] = {}
MODULES = ("forward", "sampling", "latent", "guidance", "training", "text", "rgb")  # each registers its experiments


def experiment(name: str, claims: tuple[str, ...]):
    """Register ``run(lab) -> Report`` as experiment ``name`` (its docstring's first line: the summary)."""

    def register(run: Callable[[Lab], Report]):
        EXPERIMENTS[name] = Experiment(name, claims, run, (run.__doc__ or "").strip().splitlines()[0])
        return run

    return register


def experiments() -> dict[str, Experiment]:
    for module in MODULES:
        importlib.import_module(f"{__name__}.{module}")
    return EXPERIMENTS
