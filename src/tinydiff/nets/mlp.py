"""A plain MLP denoiser: the baseline of the U-Net-against-MLP ablation (tinydiff reproduce ablations)."""

from __future__ import annotations

import torch
from torch import nn

from .embeddings import TimeEmbedding


class MLP(nn.Module):
    """Flatten x_t, concatenate the time embedding, ``depth`` hidden SiLU layers, reshape back."""

    def __init__(self, image_shape, hidden: int = 512, depth: int = 3, time_dim: int = 128, use_time: bool = True):
        super().__init__()
        self.image_shape = tuple(image_shape)
        size = int(torch.tensor(self.image_shape).prod())
        self.time = TimeEmbedding(time_dim, time_dim, use_time)
        layers, width = [], size + time_dim
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.SiLU()]
            width = hidden
        self.body = nn.Sequential(*layers, nn.Linear(width, size))
        self.edge_layers = ("body.0", f"body.{len(self.body) - 1}")  # read x_t, write the prediction (training/muon.py)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y=None) -> torch.Tensor:
        h = torch.cat([x.flatten(1), self.time(t)], dim=1)
        return self.body(h).view(x.shape)
