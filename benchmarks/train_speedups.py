"""Training speed-ups for the default U-Net, side by side: memory layout (channels_last), bf16
autocast and torch.compile, each alone and combined, against plain fp32 NCHW eager execution.

The step is the real one (tinydiff's loss: v-prediction with min-SNR weighting, class labels,
backward, AdamW), on MNIST-sized random batches. Variants are timed in interleaved rounds so
that machine noise hits all alike; the table reports medians and the ratio to plain eager.
Compilation happens in the warm-up and is reported separately (a training run pays it once).

    python benchmarks/train_speedups.py [--preset tiny --batch-size 64 --rounds 5 --steps 3]
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import statistics
import time
from pathlib import Path

import torch

from tinydiff.nets import build_net, net_config
from tinydiff.objectives import diffusion_loss
from tinydiff.schedule import NoiseSchedule

SHAPE = (1, 28, 28)


def make_step(preset: str, channels_last: bool, bf16: bool, compiled: bool, batch_size: int):
    """A closure running one training step of a fresh network, and the first call's seconds."""
    torch.manual_seed(0)
    net = build_net(net_config("unet", preset, SHAPE, num_classes=10))
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    model = torch.compile(net) if compiled else net
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-4)
    schedule = NoiseSchedule.create("linear", 1000)
    x0 = torch.rand(batch_size, *SHAPE) * 2 - 1
    if channels_last:
        x0 = x0.contiguous(memory_format=torch.channels_last)
    t = torch.randint(0, 1000, (batch_size,))
    noise = torch.randn_like(x0)
    labels = torch.randint(0, 11, (batch_size,))

    def step() -> None:
        autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        with autocast:
            loss = diffusion_loss(model, schedule, x0, t, noise, "v", "min-snr", labels).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    started = time.perf_counter()
    step()  # warm-up (and compilation)
    return step, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per variant per round")
    parser.add_argument("--json", default="benchmarks/results/train_speedups.json")
    args = parser.parse_args()

    variants = {}
    for channels_last, bf16, compiled in itertools.product((False, True), repeat=3):
        switches = (("channels_last", channels_last), ("bf16", bf16), ("compile", compiled))
        name = " + ".join(label for label, on in switches if on)
        variants[name or "plain fp32 eager"] = make_step(args.preset, channels_last, bf16, compiled, args.batch_size)
    timings = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, (step, _) in variants.items():
            started = time.perf_counter()
            for _ in range(args.steps):
                step()
            timings[name].append(args.steps * args.batch_size / (time.perf_counter() - started))

    base = statistics.median(timings["plain fp32 eager"])
    print(f"\n{args.preset}, batch {args.batch_size}, {torch.get_num_threads()} threads, torch {torch.__version__}, ")
    print(f"median of {args.rounds} interleaved rounds x {args.steps} steps\n")
    print("| variant | train images/s | vs plain | first step (s) |")
    print("|---|---:|---:|---:|")
    rows = []
    for name, (_, first_s) in variants.items():
        speed = statistics.median(timings[name])
        rows.append({"variant": name, "images_per_s": speed, "ratio": speed / base, "first_step_s": first_s,
                     "rounds": timings[name]})  # fmt: skip
        print(f"| {name} | {speed:.1f} | {speed / base:.2f}x | {first_s:.1f} |")
    result = {"preset": args.preset, "batch_size": args.batch_size, "threads": torch.get_num_threads(),
              "torch": torch.__version__, "rows": rows}  # fmt: skip
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
