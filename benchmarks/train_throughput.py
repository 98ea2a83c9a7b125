"""Training throughput of tinydiff's U-Net presets vs diffusers' UNet2DModel, side by side.

For each network: parameters, forward GFLOPs per 28x28 grayscale image (torch's FlopCounterMode),
and training images/s (forward + backward + AdamW step on MNIST-sized random batches). The
networks are timed in interleaved rounds so that machine noise hits all of them alike; the
table reports the median over rounds. diffusers is configured as its unconditional example
(block_out_channels (32, 64, 128), layers_per_block 2, attention at the two lower resolutions).

    python benchmarks/train_throughput.py [--batch-size 64 --rounds 5 --steps 3 --json PATH]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from tinydiff.nets import PRESETS, build_net, count_params, gflops_per_image, net_config
from tinydiff.nets.foreign import DiffusersUNet

SHAPE = (1, 28, 28)


def networks() -> dict[str, torch.nn.Module]:
    nets = {f"tinydiff {name}": build_net(net_config("unet", name, SHAPE)) for name in PRESETS}
    nets["diffusers UNet2DModel"] = DiffusersUNet(SHAPE)
    return nets


def time_steps(net, optimizer, batch, steps: int) -> float:
    x, t = batch
    start = time.perf_counter()
    for _ in range(steps):
        loss = (net(x, t) - x).pow(2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return steps * len(x) / (time.perf_counter() - start)


@torch.inference_mode()
def forward_speed(net, batch_size: int, channels_last: bool, seconds: float = 2.0) -> float:
    """Forward passes per second (sampling), for a batch size and memory layout."""
    net = net.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    x, t = torch.randn(batch_size, *SHAPE), torch.randint(0, 1000, (batch_size,))
    net(x, t)
    start, done = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        net(x, t)
        done += batch_size
    return done / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=2, help="timed steps per network per round")
    parser.add_argument("--json", default="benchmarks/results/train_throughput.json")
    args = parser.parse_args()

    torch.manual_seed(0)
    nets = networks()
    optimizers = {name: torch.optim.AdamW(net.parameters(), lr=1e-4) for name, net in nets.items()}
    batch = (torch.randn(args.batch_size, *SHAPE), torch.randint(0, 1000, (args.batch_size,)))
    rows = {
        name: {"params": count_params(net), "gflops_per_image": gflops_per_image(net, SHAPE), "rounds": []}
        for name, net in nets.items()
    }
    for name, net in nets.items():  # warm-up: allocator, kernels
        time_steps(net, optimizers[name], batch, 1)
    for _ in range(args.rounds):
        for name, net in nets.items():
            rows[name]["rounds"].append(time_steps(net, optimizers[name], batch, args.steps))
    for row in rows.values():
        row["train_images_per_s"] = statistics.median(row["rounds"])
    inference = {
        "tinydiff tiny": nets["tinydiff tiny"].eval(),
        "diffusers UNet2DModel": nets["diffusers UNet2DModel"].eval(),
    }
    layouts = [(256, False), (64, False), (64, True)]
    forward = {(name, *layout): [] for name in inference for layout in layouts}
    for _ in range(args.rounds):
        for name, net in inference.items():
            for layout in layouts:
                forward[(name, *layout)].append(forward_speed(net, *layout))

    reference = rows["diffusers UNet2DModel"]["train_images_per_s"]
    print(
        f"\nbatch {args.batch_size}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
        f"median of {args.rounds} rounds x {args.steps} steps\n"
    )
    print("| network | params (M) | GFLOPs / image | train images/s | vs diffusers |")
    print("|---|---:|---:|---:|---:|")
    for name, row in rows.items():
        print(
            f"| {name} | {row['params'] / 1e6:.2f} | {row['gflops_per_image']:.3f} | "
            f"{row['train_images_per_s']:.1f} | {row['train_images_per_s'] / reference:.2f}x |"
        )
    print("\nSampling: forward passes per second (inference mode)\n")
    print("| network | batch 256, NCHW | batch 64, NCHW | batch 64, channels_last |")
    print("|---|---:|---:|---:|")
    for name in inference:
        speeds = [statistics.median(forward[(name, *layout)]) for layout in layouts]
        rows[name]["forward_images_per_s"] = dict(zip(["256_nchw", "64_nchw", "64_channels_last"], speeds))
        print(f"| {name} | " + " | ".join(f"{v:.0f}" for v in speeds) + " |")
    result = {
        "batch_size": args.batch_size,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
        "networks": rows,
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2))
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
