"""Training speed-ups for the default U-Net, side by side: memory layout (channels_last), bf16
autocast and torch.compile, each alone and combined, against plain fp32 NCHW eager execution.

The step is the real one (tinydiff's loss: v-prediction with min-SNR weighting, class labels,
backward, AdamW), on MNIST-sized random batches. Variants are timed in interleaved rounds so
that machine noise hits all alike; the table reports medians and the ratio to plain eager.
Compilation happens in the warm-up and is reported separately (a training run pays it once).
Before any timing, each variant's gradient on the same batch from the same initial weights is
compared with plain eager's: a variant that is fast because it skips part of the backward pass
(torch 2.13's inductor with bf16 autocast does) is marked, not credited.

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


def make_step(preset: str, channels_last: bool, bf16: bool, compiled: bool, batch_size: int, prepare=None):
    """A closure running one training step of a fresh network, the first call's seconds, and the
    first call's gradient (every parameter's, flattened in the standard layout). ``prepare``, if
    given, modifies the fresh network in place (benchmarks/attention_speed.py swaps its attention)."""
    torch.manual_seed(0)
    net = build_net(net_config("unet", preset, SHAPE, num_classes=10))
    if prepare is not None:
        prepare(net)
    for p in net.parameters():  # zero-initialised output layers would give everything upstream no gradient
        if not p.any():
            torch.nn.init.normal_(p, std=0.02)
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

    def backward() -> None:
        autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        with autocast:
            loss = diffusion_loss(model, schedule, x0, t, noise, "v", "min-snr", labels).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()

    def step() -> None:
        backward()
        optimizer.step()

    started = time.perf_counter()
    backward()  # warm-up (and compilation), before any update: the gradient at the shared start
    first_s = time.perf_counter() - started
    grads = [p.grad.contiguous().flatten() for p in net.parameters()]
    step()
    return step, first_s, grads


def compare(grads: list[torch.Tensor], reference: list[torch.Tensor]) -> tuple[float, int]:
    """Cosine similarity of the whole gradient to the reference, and parameters with none."""
    cosine = torch.nn.functional.cosine_similarity(torch.cat(grads), torch.cat(reference), dim=0)
    return float(cosine), sum(int(g.abs().sum() == 0) for g in grads)


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
        for name, (step, _, _) in variants.items():
            started = time.perf_counter()
            for _ in range(args.steps):
                step()
            timings[name].append(args.steps * args.batch_size / (time.perf_counter() - started))

    base = statistics.median(timings["plain fp32 eager"])
    print(f"\n{args.preset}, batch {args.batch_size}, {torch.get_num_threads()} threads, torch {torch.__version__}, ")
    print(f"median of {args.rounds} interleaved rounds x {args.steps} steps\n")
    reference = variants["plain fp32 eager"][2]
    print("| variant | train images/s | vs plain | first step (s) | grad cosine to plain | params without grad |")
    print("|---|---:|---:|---:|---:|---:|")
    rows = []
    for name, (_, first_s, grads) in variants.items():
        speed = statistics.median(timings[name])
        cosine, dead = compare(grads, reference)
        rows.append({"variant": name, "images_per_s": speed, "ratio": speed / base, "first_step_s": first_s,
                     "grad_cosine": cosine, "params_without_grad": dead, "params": len(grads),
                     "valid": dead == 0, "rounds": timings[name]})  # fmt: skip
        mark = "" if dead == 0 else " (INVALID: skips part of the backward pass)"
        cells = f"{speed:.1f} | {speed / base:.2f}x | {first_s:.1f} | {cosine:.4f} | {dead} of {len(grads)}"
        print(f"| {name}{mark} | {cells} |")
    result = {"preset": args.preset, "batch_size": args.batch_size, "threads": torch.get_num_threads(),
              "torch": torch.__version__, "rows": rows}  # fmt: skip
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
