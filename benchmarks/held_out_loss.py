"""Held-out denoising loss of checkpoints, per noise level: a check of a training recipe that costs
a minute, beside FID's several. Each checkpoint's own objective (prediction target, weighting,
clip-aware or not; for a self-conditioned net, its second pass, fed its own first estimate) on the
first N images of the MNIST test set, at fixed timesteps, with the same noise for every checkpoint
(so differences are paired), in fp32 under torch.inference_mode.

    python benchmarks/held_out_loss.py pretrained:mnist runs/RUN [--n 2000] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from tinydiff.data.datasets import load_dataset
from tinydiff.model import load
from tinydiff.objectives import diffusion_loss

TIMESTEPS = (10, 50, 100, 200, 300, 400, 500, 600, 700, 800, 900, 990)


def held_out_loss(ckpt: str, x0: torch.Tensor, labels: torch.Tensor, noises: list, batch: int = 500) -> list:
    model = load(ckpt)
    # NCHW, the layout the trainer computes this loss in (load() gives channels_last, for sampling)
    net, train = model.net.to(memory_format=torch.contiguous_format), model.config["train"]
    # load() reads the config through checkpoint.read_config, which fills in LEGACY_VALUES for older checkpoints
    objective = dict(
        kind=model.prediction,
        weighting=train["weighting"],
        clip_aware=train["clip_aware_loss"],
        self_condition=train["self_condition"],
        gamma=train["snr_gamma"],
    )
    losses = []
    with torch.inference_mode():
        for t, noise in zip(TIMESTEPS, noises):
            parts = []
            for i in range(0, len(x0), batch):
                x, n, y = x0[i : i + batch], noise[i : i + batch], labels[i : i + batch] if model.num_classes else None
                t_batch = torch.full((len(x),), t)
                parts.append(diffusion_loss(net, model.schedule, x, t_batch, n, y=y, **objective))
            losses.append(float(torch.cat(parts).mean()))
    return losses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ckpts", nargs="+")
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    data = load_dataset("mnist", "test")
    x0, labels = data.batch(torch.arange(args.n)), data.labels[: args.n]  # the trainer's scaling to [-1, 1]
    generator = torch.Generator().manual_seed(0)
    noises = [torch.randn(x0.shape, generator=generator) for _ in TIMESTEPS]
    rows = [{"ckpt": c, "losses": held_out_loss(c, x0, labels, noises)} for c in args.ckpts]
    for row in rows:
        row["mean"] = sum(row["losses"]) / len(TIMESTEPS)

    print(f"\nheld-out loss, first {args.n} MNIST test images, each checkpoint's own objective; the mean over t")
    print("| checkpoint | mean | vs first | " + " | ".join(f"t = {t}" for t in TIMESTEPS) + " |")
    print("|---|---:|---:|" + "---:|" * len(TIMESTEPS))
    for row in rows:
        bands = " | ".join(f"{v:.5f}" for v in row["losses"])
        print(f"| {row['ckpt']} | {row['mean']:.6f} | {row['mean'] / rows[0]['mean']:.4f} | {bands} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"n": args.n, "timesteps": TIMESTEPS, "rows": rows}, indent=1) + "\n")
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
