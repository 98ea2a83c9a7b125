"""Pictures: image grids."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """float [-1, 1] -> uint8 [0, 255] (rounded, clipped); uint8 passes through."""
    if images.dtype == torch.uint8:
        return images
    return ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def save_npz(images: torch.Tensor, path: str | Path, labels: torch.Tensor | None = None) -> Path:
    """Write images as uint8 NHWC under the key ``x`` (the layout other FID tools read too) and,
    for class-conditional samples, their requested classes as ``y``; returns the file written
    (``path`` with .npz appended if it lacks it, as numpy does)."""
    path = npz_path(path)
    arrays = {"x": to_uint8(images).cpu().permute(0, 2, 3, 1).numpy()}
    if labels is not None:
        arrays["y"] = labels.cpu().numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return path


def npz_path(path: str | Path) -> Path:
    """The file numpy.savez writes for ``path``: .npz is appended unless it is there."""
    path = Path(path)
    return path if path.suffix == ".npz" else path.with_name(path.name + ".npz")


def make_grid(images: torch.Tensor, nrow: int | None = None, padding: int = 2) -> np.ndarray:
    """images [N, C, H, W] (float in [-1, 1] or uint8) -> one uint8 array [H', W', C] of nrow columns."""
    images = to_uint8(images.detach().cpu())
    n, c, h, w = images.shape
    nrow = nrow or math.ceil(math.sqrt(n))
    rows = math.ceil(n / nrow)
    grid = np.zeros((rows * (h + padding) + padding, nrow * (w + padding) + padding, c), dtype=np.uint8)
    for i, image in enumerate(images.permute(0, 2, 3, 1).numpy()):
        top, left = padding + (i // nrow) * (h + padding), padding + (i % nrow) * (w + padding)
        grid[top : top + h, left : left + w] = image
    return grid


def save_grid(
    images: torch.Tensor, path: str | Path, nrow: int | None = None, scale: int = 2, padding: int = 2
) -> Path:
    """Write images as one PNG grid, each pixel enlarged ``scale`` times (nearest)."""
    from PIL import Image

    grid = make_grid(images, nrow, padding)
    picture = Image.fromarray(grid[..., 0] if grid.shape[2] == 1 else grid)
    if scale > 1:
        picture = picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    picture.save(path)
    return path


def save_trajectory(
    states: list[torch.Tensor],
    predictions: list[torch.Tensor],
    path: str | Path,
    strip_frames: int = 10,
    scale: int = 2,
) -> tuple[Path, Path]:
    """A denoising trajectory as an animated GIF and a PNG strip.

    states, predictions: per sampler step, the new x_t and the x0 predicted on the way, each
    [K, C, H, W] in [-1, 1]. Each frame shows the K images of x_t on top, predicted x0 below.
    The strip shows ``strip_frames`` evenly spaced steps left to right (and the final state).
    """
    from PIL import Image

    frames = [make_grid(torch.cat([x, x0]), nrow=len(x)) for x, x0 in zip(states, predictions)]

    def picture(array):
        image = Image.fromarray(array[..., 0] if array.shape[2] == 1 else array)
        return image.resize((image.width * scale, image.height * scale), Image.NEAREST)

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pictures = [picture(f) for f in frames]
    pictures[0].save(path, save_all=True, append_images=pictures[1:] + [pictures[-1]] * 10, duration=80, loop=0)
    picks = sorted({round(i * (len(frames) - 1) / max(1, strip_frames - 1)) for i in range(strip_frames)})
    strip = np.concatenate([frames[i] for i in picks], axis=1)
    strip_path = path.with_suffix(".png")
    picture(strip).save(strip_path)
    return path, strip_path


def plot_log(records: list[dict], path: str | Path, title: str = "") -> Path:
    """A run's log.jsonl as one PNG of four panels: the training loss, the loss in each band of
    timesteps over training (where the network still has to learn), the learning rate and the
    throughput in images/s."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not records:
        raise ValueError("the log has no records yet")
    steps = np.array([r["step"] for r in records])
    fig, axes = plt.subplots(2, 2, figsize=(11, 7), constrained_layout=True)
    fig.suptitle(title)
    axes[0, 0].plot(steps, [r["loss"] for r in records])
    axes[0, 0].set(title="loss (mean since the previous record)", yscale="log", xlabel="step")
    bands = np.array([r["loss_t"] for r in records if "loss_t" in r])
    if len(bands):
        colors = plt.get_cmap("viridis")(np.linspace(0, 1, bands.shape[1]))
        for k, color in enumerate(colors):
            label = {0: "lowest t (least noise)", len(colors) - 1: "highest t (most noise)"}.get(k)
            axes[0, 1].plot(steps[-len(bands) :], bands[:, k], color=color, label=label)
        axes[0, 1].legend(fontsize=8)
    axes[0, 1].set(
        title=f"loss in {bands.shape[1] if len(bands) else 10} bands of timesteps", yscale="log", xlabel="step"
    )
    axes[1, 0].plot(steps, [r["lr"] for r in records])
    axes[1, 0].set(title="learning rate", xlabel="step")
    axes[1, 1].plot(steps, [r["images_per_s"] for r in records])
    axes[1, 1].set(title="images/s", xlabel="step", ylim=(0, None))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
