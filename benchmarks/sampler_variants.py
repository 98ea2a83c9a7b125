"""Variants of the stochastic DPM-Solver++(2M) step, scored on one model and one draw of samples.

Each row samples n images with the same x_T, noise and labels (``--seed``, labels in the training
data's class proportions, as ``tinydiff eval --class data``) and reports their ink (mean pixel, of
255; pixels above 128, at 0, and strictly between 0 and 128) and, with ``--fid``, FID against n
images of the model's training data (no floor). A row is ``ETA`` followed by any of these modifiers:

    ETA             eta at every step: ``tinydiff eval --sampler dpm++2m --eta ETA`` (to float rounding)
    @LO,HI          eta only at steps whose sigma_t = sqrt((1 - a) / a) lies in (LO, HI], 0 elsewhere
    /S              the fresh noise multiplied by S (Karras et al. 2022's S_noise)
    :exact          the second-order term integrated exactly for x0 linear in lambda over the SDE step
                    (k-diffusion's and diffusers' solver_type "heun") instead of the midpoint rule
    ~L              epsilon scaling (Ning et al. 2024): the network's eps divided by L before x0 is formed
    *K              a diagnostic, not a sampler: the finished images' pixel values multiplied by K

    python benchmarks/sampler_variants.py 3 0 3@1,1e9 3@0,1 3/1.03 3/1.01 3:exact 5:exact 3~1.005 3~0.995  # ink only
    python benchmarks/sampler_variants.py --fid 3 3:exact 3@0,1 5:exact 3/1.03 3~1.005 3~0.995     # and FID

The solver is swapped by patching ``tinydiff.samplers.SAMPLERS["dpm++2m"]`` inside this process: a probe,
not a sampler option (no variant measured here beat the plain step; docs/RESULTS.md).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import tinydiff.samplers as samplers
from tinydiff.api import sample
from tinydiff.data import load_dataset
from tinydiff.model import load
from tinydiff.objectives import clip_prediction
from tinydiff.samplers.base import noise_like, trajectory
from tinydiff.viz import save_npz

ROW = re.compile(r"^(?P<eta>[\d.]+)(@(?P<lo>[\d.e]+),(?P<hi>[\d.e]+))?(/(?P<s>[\d.]+))?(?P<exact>:exact)?"
                 r"(~(?P<l>[\d.]+))?(\*(?P<k>[\d.]+))?$")  # fmt: skip


def variant(eta: float, interval=None, s_noise: float = 1.0, exact: bool = False, eps_scale: float = 1.0):
    """A dpm++2m sampler function; with the defaults it is ``dpm_solver.sample`` at this eta."""

    def predict(denoise, x_t, t, schedule):
        eps, x0 = denoise(x_t, t)
        a = float(schedule.alpha_bar_at(t))
        if eps_scale != 1.0:
            x0 = (x_t - math.sqrt(1 - a) * eps / eps_scale) / math.sqrt(a)
        return clip_prediction(x_t, x0, a)

    def solver(denoise, schedule, x_T, *, steps=20, spacing="trailing", generator=None, **_):
        x, x0_before, h_before = x_T, None, None
        for t, t_prev in trajectory(schedule, steps, spacing):
            _, x0 = predict(denoise, x, t, schedule)
            if t_prev < 0:
                x = x0
                noise_like(x, generator)  # as dpm_solver.sample: drawn, multiplied by sigma = 0
                continue
            a, a_prev = float(schedule.alpha_bar_at(t)), float(schedule.alpha_bar_at(t_prev))
            h = 0.5 * math.log(a_prev / (1 - a_prev)) - 0.5 * math.log(a / (1 - a))
            sigma = math.sqrt((1 - a) / a)
            g = eta * h if interval is None or interval[0] < sigma <= interval[1] else 0.0
            if x0_before is None:
                D = x0
            elif exact:  # x0 linear in lambda, integrated against e^{-(h + g)(1 - s)} over the step
                H = h + g
                D = x0 + (1 - -math.expm1(-H) / H) / -math.expm1(-H) * (x0 - x0_before) / (h_before / h)
            else:  # the midpoint rule of dpm_solver.sample
                D = x0 + (x0 - x0_before) / (2 * (h_before / h))
            x = math.sqrt((1 - a_prev) / (1 - a)) * math.exp(-g) * x - math.sqrt(a_prev) * math.expm1(-h - g) * D
            x = x + s_noise * math.sqrt(1 - a_prev) * math.sqrt(-math.expm1(-2 * g)) * noise_like(x, generator)
            x0_before, h_before = x0, h
        return x

    return solver


def ink(images: np.ndarray) -> dict:
    a = images.reshape(len(images), -1).astype(np.float64)
    return {
        "mean_pixel": float(a.mean()),
        "pct_above_128": float((a > 128).mean() * 100),
        "pct_zero": float((a == 0).mean() * 100),
        "pct_1_to_127": float(((a > 0) & (a < 128)).mean() * 100),
    }


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("rows", nargs="+", help="ETA[@LO,HI][/S][:exact][~L][*K]")
    p.add_argument("--ckpt", default="pretrained:mnist")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--seed", type=int, default=0, help="seed of x_T and the noise (eval's --seed)")
    p.add_argument("--n", type=int, default=2048)
    p.add_argument("--fid", action="store_true", help="also score FID (about 3 minutes a row on 2 cores)")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)

    parsed = []
    for row in args.rows:
        m = ROW.match(row)
        if m is None:
            p.error(f"cannot read row {row!r}; expected ETA[@LO,HI][/S][:exact][~L][*K]")
        parsed.append((row, m))
    model = load(args.ckpt)
    reference = model.config["data"]["spec"]
    labels = load_dataset(reference).labels_like(args.n)
    if args.fid:
        from tinydiff.metrics.inception import InceptionFeatures
        from tinydiff.metrics.reference import score

        extractor = InceptionFeatures("cpu", None, log=lambda m: print(m, file=sys.stderr))
    results = []
    for row, m in parsed:
        interval = (float(m["lo"]), float(m["hi"])) if m["lo"] else None
        samplers.SAMPLERS["dpm++2m"] = variant(
            float(m["eta"]), interval, float(m["s"] or 1), bool(m["exact"]), float(m["l"] or 1)
        )
        start = time.perf_counter()
        images = sample(model, args.n, sampler="dpm++2m", steps=args.steps, labels=labels, seed=args.seed)
        seconds = time.perf_counter() - start
        result = {"row": row, "steps": args.steps, "seed": args.seed, "n": args.n, "sample_s": round(seconds, 1)}
        with tempfile.TemporaryDirectory() as tmp:
            path = save_npz(images, Path(tmp) / "samples.npz", labels)
            saved = dict(np.load(path))
            if m["k"]:  # the diagnostic: scale the saved 8-bit pixel values
                saved["x"] = np.clip(np.round(saved["x"] * float(m["k"])), 0, 255).astype(np.uint8)
                np.savez(path, **saved)
            result.update(ink(saved["x"]))
            if args.fid:
                result["fid"] = score(str(path), reference, args.n, ["fid"], extractor, False)["fid"]
        results.append(result)
        print(json.dumps(result), file=sys.stderr, flush=True)
    print(f"\n{'row':>14} {'mean pixel':>10} {'% > 128':>8} {'% at 0':>7} {'% 1-127':>8} {'FID':>7}")
    for r in results:
        fid = f"{r['fid']:7.2f}" if "fid" in r else f"{'-':>7}"
        print(
            f"{r['row']:>14} {r['mean_pixel']:10.2f} {r['pct_above_128']:8.2f} {r['pct_zero']:7.2f}"
            f" {r['pct_1_to_127']:8.2f} {fid}"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"command": " ".join(sys.argv), "ckpt": args.ckpt, "rows": results}, f, indent=1)


if __name__ == "__main__":
    main()
