"""diffusers' UNet2DModel behind tinydiff's ``net(x_t, t, y=None)`` signature: the baseline that
the quality benchmark trains with tinydiff's own loop, schedule and EMA (``--net diffusers``).

The default configuration is diffusers' unconditional training example at MNIST size:
block_out_channels (32, 64, 128), layers_per_block 2, attention at the two lower resolutions.
diffusers is an optional dependency (``pip install diffusers``), imported only here.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import TinydiffError


class DiffusersUNet(nn.Module):
    edge_layers = ("unet.conv_in", "unet.conv_out")  # read the image, write the prediction: AdamW's under Muon

    def __init__(
        self,
        image_shape=(1, 28, 28),
        block_out_channels=(32, 64, 128),
        layers_per_block: int = 2,
        num_classes: int | None = None,
    ):
        super().__init__()
        try:
            from diffusers import UNet2DModel
        except ImportError:
            raise TinydiffError("--net diffusers needs the diffusers package: pip install diffusers") from None
        channels, size = image_shape[0], image_shape[1]
        self.num_classes = num_classes
        self.unet = UNet2DModel(
            sample_size=size,
            in_channels=channels,
            out_channels=channels,
            block_out_channels=tuple(block_out_channels),
            layers_per_block=layers_per_block,
            down_block_types=("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
            up_block_types=("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
            num_class_embeds=num_classes + 1 if num_classes else None,  # the last one is the null class
        )

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if self.num_classes and y is None:
            y = torch.full_like(t, self.num_classes)
        return self.unet(x, t, class_labels=y if self.num_classes else None).sample
