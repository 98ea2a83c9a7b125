"""Denoising networks and the config -> network factory used by checkpoints."""

from __future__ import annotations

import torch
from torch import nn

from .mlp import MLP
from .unet import PRESETS, UNet

NET_KINDS = ("unet", "mlp", "diffusers")  # diffusers: the baseline, nets/foreign.py


def net_config(kind: str = "unet", preset: str | None = "nano", image_shape=(1, 28, 28), **overrides) -> dict:
    """A JSON-able description of a network: everything :func:`build_net` needs."""
    if kind not in NET_KINDS:
        raise ValueError(f"unknown network {kind!r}; choose from {', '.join(NET_KINDS)}")
    config = {"kind": kind, "image_shape": list(image_shape)}
    if kind == "unet":
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
        config.update({k: list(v) if isinstance(v, tuple) else v for k, v in PRESETS[preset].items()})
    config.update({k: v for k, v in overrides.items() if v is not None})
    return config


def build_net(config: dict) -> nn.Module:
    config = dict(config)
    kind, image_shape = config.pop("kind"), config.pop("image_shape")
    if kind == "diffusers":
        from .foreign import DiffusersUNet

        return DiffusersUNet(image_shape, **config)
    if kind == "mlp":
        config.pop("num_classes", None)
        config.pop("text_dim", None)
        return MLP(image_shape, **config)
    return UNet(in_channels=image_shape[0], **config)


def count_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def gflops_per_image(net: nn.Module, image_shape) -> float:
    """Forward GFLOPs for one image (multiply-add = 2 FLOPs), counted by torch's FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(1, *image_shape)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        net(x, torch.zeros(1, dtype=torch.long))
    return counter.get_total_flops() / 1e9
