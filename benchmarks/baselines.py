"""The diffusers baseline every benchmark compares against: UNet2DModel configured as
diffusers' unconditional example, at MNIST size (block_out_channels (32, 64, 128),
layers_per_block 2, attention at the two lower resolutions)."""

from __future__ import annotations


def diffusers_unet(sample_size: int = 28, channels: int = 1):
    from diffusers import UNet2DModel

    return UNet2DModel(
        sample_size=sample_size, in_channels=channels, out_channels=channels, block_out_channels=(32, 64, 128),
        layers_per_block=2, down_block_types=("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
    )  # fmt: skip
