"""Training images/s of `tinydiff train` on one process against several (``--nproc``), per batch size.

Each configuration is the real command (DistributedDataParallel under torchrun when N > 1, one
intra-op thread per process), run for a few hundred steps in alternated rounds so that the
machine's drift hits every configuration alike; a run's figure is the median of its log windows
after the first (the first holds start-up), and the table reports the median over rounds.

    python benchmarks/train_processes.py [--nproc 1,2 --batch-sizes 64,128 --steps 200 --rounds 2
        --json PATH] [-- extra tinydiff train flags]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from machine import cpu

# The shipped MNIST model's recipe (docs/RESULTS.md); extra flags after `--` replace or add to it.
RECIPE = ["--conditional", "--preset", "nano", "--schedule", "cosine", "--amp"]


def images_per_s(nproc: int, batch: int, steps: int, extra: list[str], out: Path) -> float:
    command = [sys.executable, "-m", "tinydiff", "train", "--nproc", str(nproc), "--batch-size", str(batch)]
    command += ["--steps", str(steps), "--out", str(out), "--log-every", "25", "--sample-grid", "0", "--no-progress"]
    subprocess.run(command + RECIPE + extra, check=True, capture_output=True)
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    rates = [r["images_per_s"] for r in rows if "images_per_s" in r][1:]
    return statistics.median(rates)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nproc", default="1,2")
    p.add_argument("--batch-sizes", default="64,128")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--json", default=None)
    args, extra = p.parse_known_args(argv)
    extra = [a for a in extra if a != "--"]
    configs = [(int(n), int(b)) for b in args.batch_sizes.split(",") for n in args.nproc.split(",")]
    measured = {c: [] for c in configs}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            for n, b in configs:
                rate = images_per_s(n, b, args.steps, extra, Path(tmp) / f"run-{n}-{b}-{round_}")
                measured[(n, b)].append(rate)
                print(f"round {round_ + 1}: {n} process(es), batch {b}: {rate:.1f} images/s", file=sys.stderr)
    rows = []
    for n, b in configs:
        rate = statistics.median(measured[(n, b)])
        base = statistics.median(measured[(1, b)]) if (1, b) in measured else None  # --nproc without 1: no ratio
        ratio = None if base is None else rate / base
        rows.append(dict(nproc=n, batch_size=b, images_per_s=rate, rounds=measured[(n, b)], vs_one=ratio))
    print("| processes | batch | images/s (median) | vs 1 process | steps/s |\n|---:|---:|---:|---:|---:|")
    for r in rows:
        ratio = "-" if r["vs_one"] is None else f"{r['vs_one']:.2f}x"
        steps_per_s = r["images_per_s"] / r["batch_size"]
        print(f"| {r['nproc']} | {r['batch_size']} | {r['images_per_s']:.1f} | {ratio} | {steps_per_s:.2f} |")
    if args.json:
        meta = dict(command=" ".join(sys.argv), recipe=RECIPE + extra, steps=args.steps, machine=cpu())
        Path(args.json).write_text(json.dumps(dict(meta=meta, rows=rows), indent=1) + "\n")


if __name__ == "__main__":
    main()
