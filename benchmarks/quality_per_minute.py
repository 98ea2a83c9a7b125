"""Quality per CPU-minute: tinydiff's default network against diffusers' UNet2DModel, each trained
by the same loop (schedule, objective, EMA, optimizer) for the same wall-clock budget, then FID at
several sampling budgets (network evaluations per image, NFE).

For each network: `tinydiff train --minutes M` (the cosine learning rate ends at the budget),
then for each NFE budget and sampler, n class-balanced samples (conditional models; guidance
w = 0, so NFE = steps) scored against n MNIST training images (FID and KID with the standard
Inception network, the real-vs-real floor beside them). Prints the table, writes JSON.

    python benchmarks/quality_per_minute.py --minutes 60                      # the headline
    python benchmarks/quality_per_minute.py --minutes 1 --n 256 --nfe 10      # a smoke run
    python benchmarks/quality_per_minute.py --nets tiny --skip-train ...      # score existing runs

Runs are trained one after the other (never two jobs at once on a shared machine). With
--skip-train an existing run directory is scored as it is.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import tinydiff
from tinydiff.checkpoint import load_trainer_state, resolve_checkpoint
from tinydiff.metrics.inception import InceptionFeatures
from tinydiff.metrics.reference import score
from tinydiff.viz import save_npz

# name -> train options beyond the shared ones; "nano" is tinydiff's default U-Net (the winner of
# the 60-minute runs, docs/RESULTS.md), "tiny" the same at 32 base channels, "tiny24" at 24;
# "tiny16" is nano spelled as tiny narrowed to 16 channels, as those runs were
NETS = {
    "nano": {"net": "unet", "preset": "nano"},
    "tiny": {"net": "unet", "preset": "tiny"},
    "tiny24": {"net": "unet", "preset": "tiny", "channels": 24},
    "tiny16": {"net": "unet", "preset": "tiny", "channels": 16},
    "diffusers": {"net": "diffusers"},
}
SAMPLERS = "ddim,dpm++2m,dpm++2m:eta=1"  # NAME or NAME:OPTION=NUMBER (dpm++2m:eta=1 is SDE-DPM-Solver++(2M))


def parse_sampler(spec: str) -> tuple[str, dict]:
    """'dpm++2m:eta=2' -> ('dpm++2m', {'eta': 2.0})."""
    name, *options = spec.split(":")
    return name, {k: float(v) for k, v in (option.split("=") for option in options)}


def train(name: str, args) -> Path:
    out = Path(args.runs) / f"qpm-{name}-{args.minutes:g}min"
    if args.skip_train:
        return out
    options = dict(
        NETS[name],
        steps=10**9,  # the budget decides
        minutes=args.minutes,
        batch_size=args.batch_size,
        lr=args.lr,
        lr_schedule="cosine",
        optimizer="adamw",  # the optimizer of its published rows
        conditional=args.conditional,
        amp=args.amp,
        ckpt_every=1000,
        sample_grid=0,
        seed=args.seed,
    )
    if name == "diffusers" and args.baseline_lr:
        options["lr"] = args.baseline_lr
    tinydiff.train(args.data, out, progress=False, **options)
    return out


def evaluate(run: Path, args, extractor):
    """Yields one row per (NFE, sampler)."""
    model = tinydiff.load(run)
    state = load_trainer_state(resolve_checkpoint(run))
    labels = model.balanced_labels(args.n)
    with tempfile.TemporaryDirectory() as tmp:
        for nfe in args.nfe:
            for sampler in args.samplers.split(","):
                name, options = parse_sampler(sampler)
                started = time.perf_counter()
                images = tinydiff.sample(
                    model, args.n, sampler=name, steps=nfe, labels=labels, seed=args.seed, **options
                )
                sampling_s = time.perf_counter() - started
                path = save_npz(images, Path(tmp) / "samples.npz", labels)
                report = score(str(path), args.ref, args.n, ["fid", "kid"], extractor, floor=True, log=lambda m: None)
                row = {
                    "run": str(run),
                    "net": model.config["net"]["kind"],
                    "params": sum(p.numel() for p in model.net.parameters()),
                    "train_minutes": round(state.get("elapsed_s", 0.0) / 60, 1),
                    "train_steps": int(state["step"]),
                    "sampler": sampler,
                    "nfe": nfe,
                    "sampling_s": round(sampling_s, 1),
                    **{k: report[k] for k in ("fid", "fid_floor", "kid", "n")},
                }
                print(json.dumps(row), flush=True)
                yield row


def write_json(args, rows: list[dict]) -> None:
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=60.0, help="training wall-clock budget per network")
    parser.add_argument("--nets", default="nano,diffusers", help=f"comma-separated: {', '.join(NETS)}")
    parser.add_argument("--data", default="mnist")
    parser.add_argument("--ref", default="mnist:train", help="FID reference set")
    parser.add_argument("--n", type=int, default=2048, help="samples and reference images")
    parser.add_argument("--nfe", type=lambda s: [int(x) for x in s.split(",")], default=[10, 20, 50])
    parser.add_argument("--samplers", default=SAMPLERS, help="comma-separated NAME or NAME:OPTION=NUMBER")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--baseline-lr", type=float, default=None, help="another learning rate for diffusers")
    parser.add_argument("--unconditional", dest="conditional", action="store_false")
    parser.add_argument("--amp", action="store_true", help="bf16 autocast for every network")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runs", default="runs", help="where the run directories go")
    parser.add_argument("--skip-train", action="store_true", help="score the existing runs")
    parser.add_argument("--json", default="benchmarks/results/quality_per_minute.json")
    args = parser.parse_args()

    runs = {name: train(name, args) for name in args.nets.split(",")}
    extractor = InceptionFeatures("cpu")
    rows = []
    for run in runs.values():
        for row in evaluate(run, args, extractor):  # written after every row: a long run keeps what it scored
            rows.append(row)
            write_json(args, rows)

    print(f"\n{'net':10} {'params':>9} {'train min':>9} {'steps':>6} {'sampler':15} {'NFE':>4} {'FID':>7} {'floor':>6}")
    for r in rows:
        print(
            f"{r['net']:10} {r['params']:9d} {r['train_minutes']:9.1f} {r['train_steps']:6d} {r['sampler']:15} "
            f"{r['nfe']:4d} {r['fid']:7.2f} {r['fid_floor']:6.2f}"
        )
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
