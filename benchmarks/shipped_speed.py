"""Training and sampling speed of the shipped models' networks, side by side: what 28x28 grayscale
(MNIST), 32x32 RGB and 64x64 RGB (the emoji, with a fourth resolution level at 64) cost on this
machine.

Training: images/s of the real step of each model's recipe (its network built from its config,
v-prediction with min-SNR weighting, class labels, bf16 autocast as the shipped models were trained,
backward, AdamW) on random batches. Sampling: images/s of DPM-Solver++(2M) with 20 steps and the
class labels (``tinydiff.sample``, one batch). The models are timed in interleaved rounds so that
machine noise hits all alike; the table reports medians and each model's ratio to MNIST's.

    python benchmarks/shipped_speed.py [--models mnist,emoji,emoji64 --rounds 3 --steps 3 --n 64]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from tables import print_table, write_json

import tinydiff
from tinydiff.nets import build_net, count_params
from tinydiff.objectives import diffusion_loss


def training_step(model, batch_size: int):
    """One training step of a fresh copy of ``model``'s network, as its recipe trains it."""
    torch.manual_seed(0)
    net = build_net(model.config["net"])
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-4)
    x0 = torch.rand(batch_size, *model.image_shape) * 2 - 1
    t = torch.randint(0, model.schedule.num_timesteps, (batch_size,))
    labels = torch.randint(0, model.num_classes + 1, (batch_size,)) if model.num_classes else None
    noise = torch.randn_like(x0)
    train = model.config["train"]

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bool(train.get("amp"))):
            loss = diffusion_loss(
                net, model.schedule, x0, t, noise, model.prediction, train["weighting"], labels,
                clip_aware=train["clip_aware_loss"], gamma=train["snr_gamma"],
            )  # fmt: skip
        optimizer.zero_grad(set_to_none=True)
        loss.mean().backward()
        optimizer.step()

    step()  # warm-up
    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mnist,emoji,emoji64", help="shipped models, comma-separated")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3, help="training steps per round")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--n", type=int, default=64, help="images sampled per round")
    parser.add_argument("--quick", action="store_true", help="one round of one step and 4 images")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.steps, args.n = 1, 1, 4
    models = {name: tinydiff.load(f"pretrained:{name}", device="cpu") for name in args.models.split(",")}
    steps = {name: training_step(m, args.batch_size) for name, m in models.items()}
    train_s = {name: [] for name in models}
    sample_s = {name: [] for name in models}
    for _ in range(args.rounds):
        for name, m in models.items():
            began = time.perf_counter()
            for _ in range(args.steps):
                steps[name]()
            train_s[name].append((time.perf_counter() - began) / (args.steps * args.batch_size))
            labels = torch.arange(args.n) % m.num_classes if m.num_classes else None
            began = time.perf_counter()
            tinydiff.sample(m, args.n, sampler="dpm++2m", steps=20, labels=labels, batch_size=args.n, progress=False)
            sample_s[name].append((time.perf_counter() - began) / args.n)
    rows = []
    for name, m in models.items():
        c, h, w = m.image_shape
        rows.append(
            {
                "model": f"pretrained:{name}",
                "image": f"{c}x{h}x{w}",
                "params_m": count_params(m.net) / 1e6,
                "train_images_per_s": 1 / statistics.median(train_s[name]),
                "sample_images_per_s": 1 / statistics.median(sample_s[name]),
            }
        )
    for row in rows:
        row["train_ratio"] = row["train_images_per_s"] / rows[0]["train_images_per_s"]
        row["sample_ratio"] = row["sample_images_per_s"] / rows[0]["sample_images_per_s"]
    print_table(
        rows,
        [
            ("model", "model", "<26s"),
            ("image", "image", "<10s"),
            ("params_m", "params M", ">9.2f"),
            ("train_images_per_s", "train img/s", ">12.0f"),
            ("train_ratio", "x first", ">8.2f"),
            ("sample_images_per_s", "sample img/s", ">13.1f"),
            ("sample_ratio", "x first", ">8.2f"),
        ],
    )
    settings = {"rounds": args.rounds, "steps": args.steps, "batch_size": args.batch_size, "n": args.n}
    print(write_json("shipped_speed", args.quick, settings=settings, rows=rows))


if __name__ == "__main__":
    main()
