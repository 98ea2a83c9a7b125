"""What conditioning costs in training: images/s of the same recipe unconditional, class-conditional
and text-conditioned (MiniLM prompt vectors), side by side on this machine.

Each recipe trains for --seconds in every one of --rounds interleaved rounds (so that machine noise
hits all of them alike) with today's defaults but AdamW, and bf16 autocast, as the shipped models were trained;
the table reports the median images/s over rounds (the steps after the first log record, so that
start-up is not counted). Writes benchmarks/results/conditioning_cost.json.

    .venv/bin/python benchmarks/conditioning_cost.py [--seconds 60] [--rounds 3] [--quick]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from tables import print_table, write_json

import tinydiff

RECIPES = {"unconditional": {}, "class labels": {"conditional": True}, "text prompts": {"text": "minilm"}}
BATCH = 64  # today's default


def images_per_s(run: Path) -> float:
    """Images/s of a run's log after its first record: (steps x batch) over the seconds between records."""
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if line.strip()]
    steps = [r for r in records if "step" in r and "elapsed_s" in r]
    if len(steps) < 2 or steps[-1]["elapsed_s"] <= steps[0]["elapsed_s"]:
        raise SystemExit(f"{run}: fewer than two log records; give it more --seconds")
    first, last = steps[0], steps[-1]
    return (last["step"] - first["step"]) * BATCH / (last["elapsed_s"] - first["elapsed_s"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="digits, 5 s, one round, the words encoder")
    args = parser.parse_args()
    data = "digits" if args.quick else "mnist"
    recipes = RECIPES
    if args.quick:
        args.seconds, args.rounds = 5, 1
        recipes = {**RECIPES, "text prompts": {"text": "words"}}
    measured = {name: [] for name in recipes}
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(args.rounds):
            for name, options in recipes.items():
                out = Path(tmp) / f"{name.replace(' ', '-')}-{k}"
                tinydiff.train(data, out, progress=False, amp=True, batch_size=BATCH, minutes=args.seconds / 60,
                               optimizer="adamw", sample_grid=0, log_every=5, ckpt_every=10**6, **options)  # fmt: skip
                measured[name].append(images_per_s(out))
    base = statistics.median(measured["class labels"])
    rows = [
        {"recipe": name, "images_per_s": statistics.median(v), "vs_class": statistics.median(v) / base}
        for name, v in measured.items()
    ]
    print_table(
        rows, [("recipe", "recipe", "<15"), ("images_per_s", "img/s", ">8.0f"), ("vs_class", "x class", ">8.2f")]
    )
    write_json("conditioning_cost", args.quick, seconds=args.seconds, rounds=args.rounds, rows=rows, per_round=measured)


if __name__ == "__main__":
    main()
