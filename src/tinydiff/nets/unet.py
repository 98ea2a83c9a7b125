"""The denoising U-Net (DDPM, Ho et al. 2020, Appendix B; with ADM's adaptive GroupNorm,
Dhariwal & Nichol 2021, Sec. 3).

Structure: a 3x3 stem; per resolution level ``blocks_per_level`` residual blocks (one count for
all levels, or one per level), each optionally followed by self-attention, and a stride-2
downsample; a middle of ResBlock-Attention-ResBlock at the lowest resolution; the mirrored up
path, each block taking the matching skip by concatenation; GroupNorm-SiLU-conv out. The time
(and class) embedding modulates every ResBlock through adaptive GroupNorm: norm(h) * (1 + scale) + shift.
Any input size works (28x28 needs no padding): upsampling goes back to the skip's exact size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .embeddings import TimeEmbedding

# Presets, chosen by compute per 28x28 image (see benchmarks/train_throughput.py and
# docs/RESULTS.md for their parameter counts, GFLOPs and training images/s).
# "nano" (the default of `tinydiff train`) is "tiny" at half the width: in a 60-minute budget on a
# 2-core CPU it sees 2.5x the images and reached FID 9.99 against tiny's 10.81 (docs/RESULTS.md).
PRESETS = {
    "nano": dict(channels=16, channel_mults=(1, 2, 2), blocks_per_level=1),
    "tiny": dict(channels=32, channel_mults=(1, 2, 2), blocks_per_level=1),
    "small": dict(channels=64, channel_mults=(1, 2, 2), blocks_per_level=1),
    "medium": dict(channels=64, channel_mults=(1, 2, 2), blocks_per_level=2),
    "base": dict(channels=128, channel_mults=(1, 2, 2), blocks_per_level=2),
}


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with up to 32 groups of at least 4 channels each."""
    groups = max(1, min(32, channels // 4))
    while channels % groups:
        groups -= 1
    return nn.GroupNorm(groups, channels)


def zero_init(module: nn.Module) -> nn.Module:
    """Zero the last layer of a residual branch so every block starts as the identity."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ResBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, dropout: float = 0.0):
        super().__init__()
        self.norm1 = group_norm(in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * out_ch)
        self.norm2 = group_norm(out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = zero_init(nn.Conv2d(out_ch, out_ch, 3, padding=1))
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(F.silu(emb))[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift  # adaptive GroupNorm (ADM, Sec. 3)
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


class Attention(nn.Module):
    """Multi-head self-attention over the H*W positions, residual."""

    def __init__(self, channels: int, heads: int = 4):
        super().__init__()
        if channels % heads:
            raise ValueError(f"{channels} channels do not split into {heads} heads")
        self.heads = heads
        self.norm = group_norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = zero_init(nn.Conv2d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, h * w).unbind(1)
        # softmax(Q K^T / sqrt(d)) V (Vaswani et al. 2017, Eq. 1), q, k, v each [B, heads, d, HW]. Written
        # out: on CPU, for the 49 positions of nano's 7x7 level, F.scaled_dot_product_attention made a
        # training step 4 % slower (benchmarks/attention_speed.py); the values are the same to float rounding.
        weights = torch.softmax(torch.einsum("bhdi,bhdj->bhij", q, k) * (c // self.heads) ** -0.5, dim=-1)
        out = torch.einsum("bhij,bhdj->bhdi", weights, v)
        return x + self.proj(out.reshape(b, c, h, w))


class Block(nn.Module):
    """A ResBlock, followed by self-attention at the chosen levels."""

    def __init__(self, in_ch, out_ch, emb_dim, attention: bool, heads: int, dropout: float):
        super().__init__()
        self.res = ResBlock(in_ch, out_ch, emb_dim, dropout)
        self.attn = Attention(out_ch, heads) if attention else nn.Identity()

    def forward(self, x, emb):
        return self.attn(self.res(x, emb))


class UNet(nn.Module):
    """net(x_t, t, y=None, x_self=None) -> prediction with x_t's shape.

    x_t: [N, C, H, W]; t: [N] integer timesteps; y: [N] class labels in 0..num_classes-1, or
    num_classes for "no label" (the null class of classifier-free guidance); None = null. A network
    built with ``text_dim`` D takes prompt vectors y: [N, D] float (text.py) instead, the zero vector
    being the null condition (None = null); the vector enters through a small MLP into the time
    embedding, like a class label. (The encoder gives one vector per prompt: cross-attention over a
    single key would weigh it by softmax = 1, a linear map of the vector, so it adds nothing here.)
    x_self: [N, C, H, W] an estimate of x0, for a network built with self_condition=True (None = zeros).
    """

    edge_layers = ("stem", "out")  # read the image, write the prediction: AdamW's under --optimizer muon

    def __init__(
        self,
        in_channels: int = 1,
        channels: int = 32,
        channel_mults: tuple[int, ...] = (1, 2, 2),
        blocks_per_level: int | tuple[int, ...] = 1,
        attention_levels: tuple[int, ...] | None = None,
        heads: int = 4,
        dropout: float = 0.0,
        num_classes: int | None = None,
        text_dim: int | None = None,
        use_time: bool = True,
        self_condition: bool = False,
    ):
        super().__init__()
        levels = len(channel_mults)
        blocks = [blocks_per_level] * levels if isinstance(blocks_per_level, int) else list(blocks_per_level)
        if len(blocks) != levels:
            raise ValueError(
                f"blocks_per_level {blocks_per_level}: {len(blocks)} counts for {levels} resolution levels"
            )
        attention_levels = (levels - 1,) if attention_levels is None else tuple(attention_levels)
        emb_dim = 4 * channels
        self.num_classes = num_classes
        self.time = TimeEmbedding(channels, emb_dim, use_time)
        self.label = nn.Embedding(num_classes + 1, emb_dim) if num_classes else None
        self.text_dim = text_dim
        self.text = (
            nn.Sequential(nn.Linear(text_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim)) if text_dim else None
        )
        self.self_condition = self_condition  # x_self, an estimate of x0, enters as more input channels
        self.stem = nn.Conv2d(in_channels * (2 if self_condition else 1), channels, 3, padding=1)

        self.down = nn.ModuleList()
        skips, width = [channels], channels
        for level, mult in enumerate(channel_mults):
            for _ in range(blocks[level]):
                self.down.append(Block(width, channels * mult, emb_dim, level in attention_levels, heads, dropout))
                width = channels * mult
                skips.append(width)
            if level < levels - 1:
                self.down.append(nn.Conv2d(width, width, 3, stride=2, padding=1))
                skips.append(width)

        self.mid = nn.ModuleList(
            [Block(width, width, emb_dim, True, heads, dropout), Block(width, width, emb_dim, False, heads, dropout)]
        )

        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mults))):
            for _ in range(blocks[level] + 1):
                self.up.append(
                    Block(width + skips.pop(), channels * mult, emb_dim, level in attention_levels, heads, dropout)
                )
                width = channels * mult
            if level > 0:
                self.up.append(nn.Conv2d(width, width, 3, padding=1))  # after nearest upsampling

        self.out = nn.Sequential(group_norm(width), nn.SiLU(), zero_init(nn.Conv2d(width, in_channels, 3, padding=1)))

    def forward(
        self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None, x_self: torch.Tensor | None = None
    ) -> torch.Tensor:
        emb = self.time(t)
        if self.label is not None:
            if y is None:
                y = torch.full_like(t, self.num_classes)
            emb = emb + self.label(y)
        elif self.text is not None:
            if y is None:
                y = torch.zeros(len(t), self.text_dim, device=t.device)
            emb = emb + self.text(y.to(emb.dtype))

        if self.self_condition:  # self-conditioning (objectives.py): no estimate yet = zeros
            h = self.stem(torch.cat([x, torch.zeros_like(x) if x_self is None else x_self.to(x)], dim=1))
        elif x_self is not None:
            raise ValueError("x_self is for a network built with self_condition=True")
        else:
            h = self.stem(x)
        skips = [h]
        for layer in self.down:
            h = layer(h) if isinstance(layer, nn.Conv2d) else layer(h, emb)
            skips.append(h)
        for layer in self.mid:
            h = layer(h, emb)
        for layer in self.up:
            if isinstance(layer, nn.Conv2d):  # upsample to the next skip's exact size
                h = layer(F.interpolate(h, size=skips[-1].shape[-2:], mode="nearest"))
            else:
                h = layer(torch.cat([h, skips.pop()], dim=1), emb)
        return self.out(h)
