"""Exponential moving average of the parameters (not the buffers) of a network."""

from __future__ import annotations

import copy

import torch
from torch import nn


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

    @torch.no_grad()
    def update(self, net: nn.Module, step: int) -> None:
        weight = 1.0 - self.decay_at(step)
        # one fused call over all tensors: the same arithmetic as a lerp_ per tensor, less overhead on CPU
        torch._foreach_lerp_(list(self.shadow.parameters()), [p.detach() for p in net.parameters()], weight)
        for shadow, buffer in zip(self.shadow.buffers(), net.buffers()):
            shadow.copy_(buffer)
