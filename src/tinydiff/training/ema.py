"""Averages of the parameters (not the buffers) of a network: the exponential moving average that
sampling uses, and the power-function profiles from which any EMA length is made after training
(posthoc.py)."""

from __future__ import annotations

import copy

import torch
from torch import nn


@torch.no_grad()
def _blend(shadow: nn.Module, net: nn.Module, weight: float) -> None:
    """shadow's parameters move ``weight`` of the way to net's; its buffers are copied."""
    # one fused call over all tensors: the same arithmetic as a lerp_ per tensor, less overhead on CPU
    torch._foreach_lerp_(list(shadow.parameters()), [p.detach() for p in net.parameters()], weight)
    for mine, buffer in zip(shadow.buffers(), net.buffers()):
        mine.copy_(buffer)


class EMA:
    """shadow <- d * shadow + (1 - d) * params after every optimizer step.

    Only parameters are averaged; buffers (e.g. running statistics) are copied, since averaging
    them is wrong (one public DDIM implementation got black images from that). The decay warms
    up as min(decay, (1 + step) / (10 + step)) so that short runs are not dominated by the
    random initial weights.
    """

    def __init__(self, net: nn.Module, decay: float = 0.999):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.shadow = copy.deepcopy(net).eval().requires_grad_(False)

    def decay_at(self, step: int) -> float:
        return min(self.decay, (1 + step) / (10 + step))

    def update(self, net: nn.Module, step: int) -> None:
        _blend(self.shadow, net, 1.0 - self.decay_at(step))


# -- Power-function EMA profiles (Karras et al. 2024, "Analyzing and Improving the Training Dynamics
# of Diffusion Models", EDM2, Sec. 3.1 and App. C). The average at step t weighs the weights of step
# tau by p(tau) ~ tau^gamma on [0, t]: its length grows with the run, and is given as sigma_rel, the
# profile's standard deviation relative to t.


def gamma_of(sigma_rel: float) -> float:
    """The exponent gamma whose profile has relative standard deviation ``sigma_rel``: the largest
    real root of gamma^3 + 7 gamma^2 + (16 - s^-2) gamma + (12 - s^-2) = 0, which is EDM2's Eq. 3,
    sigma_rel = (gamma + 1)^1/2 (gamma + 2)^-1 (gamma + 3)^-1/2, squared and rearranged."""
    import numpy as np

    if not 0.0 < sigma_rel < 12**-0.5:  # gamma > 0 needs sigma_rel < sigma_rel(0) = 12^-1/2
        raise ValueError(f"sigma_rel must be in (0, {12**-0.5:.3f}), got {sigma_rel}")
    s = sigma_rel**-2
    return float(max(r.real for r in np.roots([1.0, 7.0, 16.0 - s, 12.0 - s]) if abs(r.imag) < 1e-9))


def sigma_rel_of(gamma: float) -> float:
    """EDM2's Eq. 3: the relative standard deviation of the profile tau^gamma."""
    return ((gamma + 1) / (gamma + 2) ** 2 / (gamma + 3)) ** 0.5


class PowerEMA:
    """shadow <- b * shadow + (1 - b) * params with b = (1 - 1/t)^(gamma + 1) after the t-th
    optimizer step (EDM2's Eq. 4, t counted from 1): the discrete form of the profile tau^gamma."""

    def __init__(self, net: nn.Module, sigma_rel: float):
        self.sigma_rel = sigma_rel
        self.gamma = gamma_of(sigma_rel)
        self.shadow = copy.deepcopy(net).eval().requires_grad_(False)

    def update(self, net: nn.Module, t: int) -> None:
        _blend(self.shadow, net, 1.0 - (1.0 - 1.0 / t) ** (self.gamma + 1))
