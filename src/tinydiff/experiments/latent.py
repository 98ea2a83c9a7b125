"""DDIM's latent space (DDIM Sec. 5.3-5.4): reconstruction error against S, sample consistency
across S, interpolation (slerp against a linear mix) and inversion-merge.

Each function takes a loaded model and returns tensors or rows of a table; the CLI
(`tinydiff reproduce reconstruction | consistency`, `tinydiff interpolate`, `tinydiff merge`)
writes them as PNG grids, JSON and markdown.
"""

from __future__ import annotations

import time

import torch

from ..api import decode, invert, sample
from ..model import DiffusionModel
from ..samplers.inversion import slerp

RECONSTRUCTION_STEPS = (10, 20, 50, 100, 200, 500, 1000)  # DDIM Table 2's S
CONSISTENCY_STEPS = (10, 20, 50, 100, 1000)


def reconstruction(model: DiffusionModel, images: torch.Tensor, steps=RECONSTRUCTION_STEPS, log=print) -> list[dict]:
    """Per-dimension MSE of decode(invert(x)) in [-1, 1] units (DDIM Table 2's measure; theirs
    was on CIFAR-10), one row per trajectory length S; 2 S network evaluations per image."""
    x = images.float() / 127.5 - 1
    rows = []
    for s in steps:
        started = time.perf_counter()
        back = decode(model, invert(model, images, steps=s), steps=s)
        mse = (back.cpu() - x).pow(2).mean().item()
        rows.append({"steps": s, "mse": mse, "images": len(images), "seconds": round(time.perf_counter() - started, 1)})
        log(f"S = {s}: MSE {mse:.6f} ({rows[-1]['seconds']} s)")
    return rows


def consistency(model: DiffusionModel, n: int = 8, steps=CONSISTENCY_STEPS, seed: int = 0) -> torch.Tensor:
    """The same n latents x_T decoded with each S in ``steps`` (DDIM Fig. 5): one row per S. A
    conditional model is given the classes in turn (column i: class i mod num_classes)."""
    x_T = torch.randn((n, *model.image_shape), generator=torch.Generator().manual_seed(seed))
    labels = model.balanced_labels(n)
    return torch.cat([sample(model, n, sampler="ddim", steps=s, x_T=x_T, labels=labels) for s in steps])


def interpolate(model: DiffusionModel, z0, z1, frames: int = 9, steps: int = 50, clip_x0: bool = True):
    """Decoded interpolations between two latents [1, C, H, W]: (slerp row, linear-mix row)."""
    alphas = torch.linspace(0, 1, frames).tolist()
    spherical = torch.cat([slerp(z0, z1, a) for a in alphas])
    linear = torch.cat([(1 - a) * z0 + a * z1 for a in alphas])
    return tuple(decode(model, z, steps=steps, clip_x0=clip_x0) for z in (spherical, linear))


def merge(model: DiffusionModel, image_a: torch.Tensor, image_b: torch.Tensor, frames: int = 9, steps: int = 50):
    """Inversion-merge: invert two uint8 images [1, C, H, W], mix the latents with weight lambda
    (slerp), decode; beside it the naive pixel-space mix. Returns (merged row, pixel-mix row)."""
    z = invert(model, torch.cat([image_a, image_b]), steps=steps)
    merged, _ = interpolate(model, z[:1], z[1:], frames, steps, clip_x0=False)  # exact at lambda = 0, 1
    x = torch.cat([image_a, image_b]).float() / 127.5 - 1
    pixel = torch.cat([(1 - a) * x[:1] + a * x[1:] for a in torch.linspace(0, 1, frames).tolist()])
    return merged, pixel
