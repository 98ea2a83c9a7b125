"""Timestep embeddings."""

from __future__ import annotations

import math

import torch
from torch import nn


def sinusoidal_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Transformer sinusoidal embedding of (integer or real) timesteps t: [N] -> [N, dim]
    (Vaswani et al. 2017, Sec. 3.5; used for t by DDPM, Appendix B)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device) / half)
    angles = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)


class TimeEmbedding(nn.Module):
    """sinusoidal(t) -> Linear -> SiLU -> Linear; with ``use_time=False`` the network is blind to
    t (the "no time" ablation of a practitioner's MNIST notes): every timestep is embedded as t = 0."""

    def __init__(self, base_dim: int, out_dim: int, use_time: bool = True):
        super().__init__()
        self.base_dim, self.use_time = base_dim, use_time
        self.mlp = nn.Sequential(nn.Linear(base_dim, out_dim), nn.SiLU(), nn.Linear(out_dim, out_dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        if not self.use_time:
            t = torch.zeros_like(t)
        return self.mlp(sinusoidal_embedding(t, self.base_dim))
