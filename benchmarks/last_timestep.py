"""Where DPM-Solver++(2M) predicts its output: FID against the last timestep of the trajectory.

Every sampler's last step returns the network's data prediction x0 at the last timestep of its
trajectory tau (t = 49 for 20 trailing steps of T = 1000, t = 19 for 50). This probe replaces
the trajectory by S timesteps spaced linearly from T - 1 down to a chosen last timestep, so
that the number of evaluations and the last timestep can be varied apart, and scores each
choice with FID (n samples against n training images of the model's dataset, no floor).

    python benchmarks/last_timestep.py --ckpt pretrained:mnist-plain --rows 20:49,20:99,50:19,50:49 --eta 1 \
        --json benchmarks/results/last_timestep.json
    python benchmarks/last_timestep.py --ckpt pretrained:mnist --rows 20:49,20:39,20:29,50:49,30:49,20:69 --eta 3 \
        --class data --json benchmarks/results/last_timestep_clip_aware.json

The trajectory is passed to ``tinydiff.sample(..., timesteps=...)`` (no choice measured here beat
the trailing default).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

from tinydiff.api import sample
from tinydiff.data import load_dataset
from tinydiff.metrics.inception import InceptionFeatures
from tinydiff.metrics.reference import score
from tinydiff.model import load
from tinydiff.viz import save_npz


def ending_at(schedule, steps: int, t_last: int) -> list[int]:
    """S timesteps from T - 1 linearly down to t_last (the sampler then steps to clean data)."""
    return torch.linspace(schedule.num_timesteps - 1, t_last, steps, dtype=torch.float64).round().long().tolist()


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", default="pretrained:mnist")
    p.add_argument("--rows", default="20:49,20:99,50:19,50:49", help="comma-separated STEPS:LAST_TIMESTEP")
    p.add_argument("--eta", type=float, default=1.0)
    p.add_argument(
        "--class",
        dest="label",
        choices=["balanced", "data"],
        default="balanced",
        help="labels: balanced classes, or the training data's class proportions (eval's --class data)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of x_T and the noise (eval's --seed)")
    p.add_argument("--n", type=int, default=2048)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)

    model = load(args.ckpt)
    reference = model.config["data"]["spec"]
    if args.label == "data":
        labels = load_dataset(reference).labels_like(args.n)
    else:
        labels = model.balanced_labels(args.n)
    extractor = InceptionFeatures("cpu", None, log=lambda m: print(m, file=sys.stderr))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for row in args.rows.split(","):
            steps, t_last = (int(v) for v in row.split(":"))
            tau = ending_at(model.schedule, steps, t_last)
            images = sample(
                model, args.n, sampler="dpm++2m", timesteps=tau, eta=args.eta, labels=labels, seed=args.seed
            )
            path = save_npz(images, Path(tmp) / "samples.npz", labels)
            report = score(str(path), reference, args.n, ["fid", "kid"], extractor, False)
            rows.append(
                {
                    "steps": steps,
                    "last_timestep": t_last,
                    "eta": args.eta,
                    "class": args.label,
                    "seed": args.seed,
                    "n": args.n,
                    **report,
                }
            )
            print(f"{steps:>5} {t_last:>13} {report['fid']:8.2f} {report['kid']:8.4f}", file=sys.stderr, flush=True)
    print(f"\n{'NFE':>5} {'last timestep':>13} {'FID':>8} {'KID':>8}")
    for r in rows:
        print(f"{r['steps']:>5} {r['last_timestep']:>13} {r['fid']:8.2f} {r['kid']:8.4f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"command": " ".join(sys.argv), "ckpt": args.ckpt, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
