"""The public Python API; the CLI is a thin layer over these functions."""

from __future__ import annotations

import inspect
from pathlib import Path

import torch
from tqdm import tqdm

from .model import DiffusionModel, load
from .samplers import get_sampler
from .training import TrainConfig, Trainer
from .viz import save_grid


def train(
    data: str = "mnist", out: str = "runs/mnist", *, resume: bool = False, progress: bool = True, **options
) -> Path:
    """Train a model (options: the fields of :class:`TrainConfig`); returns the final checkpoint.

    Writes ``out/ckpt-*/``, ``out/log.jsonl`` and, unless ``sample_grid=0``, a grid of EMA
    samples (DDIM, 50 steps) as ``out/samples.png``.
    """
    config = TrainConfig(data=data, out=str(out), **options)
    ckpt = Trainer(config, resume=resume).run(progress=progress)
    if config.sample_grid:
        images = sample(load(ckpt), n=config.sample_grid, sampler="ddim", steps=50, seed=config.seed)
        save_grid(images, Path(out) / "samples.png")
    return ckpt


@torch.inference_mode()
def sample(
    model: DiffusionModel | str | Path,
    n: int = 64,
    *,
    sampler: str = "ddim",
    steps: int | None = None,
    seed: int = 0,
    batch_size: int = 64,
    callback=None,
    progress: bool = False,
    **options,
) -> torch.Tensor:
    """Draw n images [n, C, H, W] in [-1, 1].

    x_T for all n images is drawn first from a generator seeded with ``seed``, so deterministic
    samplers (DDIM, eta = 0) give the same images whatever ``batch_size``. ``options`` go to
    the sampler (e.g. eta, spacing, clip_x0, variance). ``progress`` shows a bar of sampler steps.
    """
    if not isinstance(model, DiffusionModel):
        model = load(model)
    if n < 1:
        raise ValueError(f"number of images must be positive, got {n}")
    sample_fn = get_sampler(sampler)
    if steps is not None:
        options["steps"] = steps
    generator = torch.Generator(model.device).manual_seed(seed)
    x_T = torch.randn((n, *model.image_shape), generator=generator, device=model.device)
    denoise = model.denoiser()
    batches = x_T.split(batch_size)
    steps_per_batch = options.get("steps") or inspect.signature(sample_fn).parameters["steps"].default
    bar = tqdm(
        total=len(batches) * (steps_per_batch or model.schedule.num_timesteps),
        disable=not progress,
        desc=f"sampling {n} images ({sampler})",
        unit="step",
    )

    def step_callback(i, t, x_t, x0):
        bar.update(1)
        if callback is not None:
            callback(i, t, x_t, x0)

    chunks = [
        sample_fn(denoise, model.schedule, chunk, generator=generator, callback=step_callback, **options)
        for chunk in batches
    ]
    bar.close()
    return torch.cat(chunks).clamp(-1, 1)
