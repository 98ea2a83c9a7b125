"""Inception feature extraction speed on this machine: batch size, channels_last, and
torch.jit.optimize_for_inference, side by side (interleaved rounds, median), with a check that
every variant gives the same features as the plain network.

    python benchmarks/inception_speed.py [--images 100 --rounds 3 --json PATH]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from tinydiff.metrics.inception import fetch_inception, preprocess


def variants(path: Path) -> dict:
    plain = torch.jit.load(str(path)).eval()
    optimized = torch.jit.optimize_for_inference(torch.jit.load(str(path)).eval())
    return {
        ("plain", False): plain,
        ("plain", True): plain,
        ("optimize_for_inference", False): optimized,
        ("optimize_for_inference", True): optimized,
    }


@torch.inference_mode()
def run(model, images: torch.Tensor, batch_size: int, channels_last: bool) -> tuple[float, np.ndarray]:
    start, out = time.perf_counter(), []
    for i in range(0, len(images), batch_size):
        x = preprocess(images[i : i + batch_size])
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        out.append(model(x))
    return len(images) / (time.perf_counter() - start), torch.cat(out).double().numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-sizes", default="4,8,50")
    parser.add_argument("--json", default="benchmarks/results/inception_speed.json")
    args = parser.parse_args()

    images = torch.randint(
        0, 256, (args.images, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    models = variants(fetch_inception())
    configs = [(kind, cl, bs) for (kind, cl) in models for bs in map(int, args.batch_sizes.split(","))]
    _, reference = run(models[("plain", False)], images[:10], 10, False)
    speeds = {c: [] for c in configs}
    max_diff = {}
    for _ in range(args.rounds):
        for kind, cl, bs in configs:
            speed, features = run(models[(kind, cl)], images, bs, cl)
            speeds[(kind, cl, bs)].append(speed)
            max_diff[(kind, cl, bs)] = float(np.abs(features[:10] - reference).max() / np.abs(reference).max())

    print(f"\n{args.images} MNIST-sized images, {torch.get_num_threads()} threads, median of {args.rounds} rounds\n")
    print("| network | channels_last | batch | images/s | max rel. feature difference |")
    print("|---|---|---:|---:|---:|")
    rows = []
    for kind, cl, bs in configs:
        median = statistics.median(speeds[(kind, cl, bs)])
        rows.append(
            {
                "network": kind,
                "channels_last": cl,
                "batch_size": bs,
                "images_per_s": median,
                "max_rel_diff": max_diff[(kind, cl, bs)],
            }
        )
        print(f"| {kind} | {cl} | {bs} | {median:.2f} | {max_diff[(kind, cl, bs)]:.1e} |")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"threads": torch.get_num_threads(), "rows": rows}, indent=2))
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
