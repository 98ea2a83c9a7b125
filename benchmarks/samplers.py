"""Samplers side by side: accuracy per network evaluation, and sampling throughput.

1. Analytic Gaussian data N(mu, s^2) with its exact denoiser: error |mean - mu| + |std - s| of
   40,000 samples for each sampler at a budget of network evaluations (NFE).
2. A trained model (--ckpt): for the deterministic samplers, the RMS distance of x_0 to the
   reference solution of the same probability-flow ODE from the same x_T (DDIM with 1000
   steps); with --fid-n, FID of n samples against n MNIST training images.
3. Throughput: images/s of DDIM-50 for --throughput-n images, tinydiff's sampler vs diffusers'
   DDIMPipeline (same DDIM schedule, same diffusers UNet2DModel, interleaved rounds).

    python benchmarks/samplers.py [--ckpt runs/demo --fid-n 512 --throughput-n 256 --json PATH]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from tinydiff.denoiser import as_denoiser
from tinydiff.nets.foreign import DiffusersUNet
from tinydiff.samplers import SAMPLERS, timesteps
from tinydiff.schedule import NoiseSchedule, broadcast

# (sampler, steps for a budget of nfe evaluations); each on its default trajectory (samplers.timesteps)
CONFIGS = list(SAMPLERS)
DETERMINISTIC = {"ddim", "pndm", "heun", "dpm++2m"}


def gaussian_denoiser(schedule, mu, s):
    def denoise(x_t, t):
        a = broadcast(schedule.alpha_bar_at(torch.as_tensor(t).expand(len(x_t))), x_t)
        eps = (1 - a).sqrt() * (x_t - a.sqrt() * mu) / (a * s**2 + 1 - a)
        return eps, (x_t - (1 - a).sqrt() * eps) / a.sqrt()

    return denoise


def gaussian_table(budgets) -> dict:
    schedule, mu, s = NoiseSchedule.create("linear"), 0.3, 0.5
    x_T = torch.randn(40_000, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    table = {}
    for name in CONFIGS:
        for nfe in budgets:
            out = SAMPLERS[name](
                gaussian_denoiser(schedule, mu, s),
                schedule,
                x_T,
                timesteps(name, schedule, SAMPLERS[name].steps_for(nfe)),
                clip_x0=False,
                generator=torch.Generator().manual_seed(1),
            )
            table[(name, nfe)] = abs(out.mean().item() - mu) + abs(out.std().item() - s)
    return table


def _run(name, nfe, model, x_T):
    tau = timesteps(name, model.schedule, SAMPLERS[name].steps_for(nfe))
    return SAMPLERS[name](model.denoiser(), model.schedule, x_T, tau, generator=torch.Generator().manual_seed(2))


@torch.inference_mode()
def ode_errors(model, budgets, n: int) -> dict:
    """RMS distance of each deterministic sampler's x_0 to the DDIM-1000 solution from the same x_T."""
    x_T = torch.randn(n, *model.image_shape, generator=torch.Generator().manual_seed(0))
    reference = SAMPLERS["ddim"](model.denoiser(), model.schedule, x_T, model.schedule.timesteps(1000))
    return {
        (c, nfe): float((_run(c, nfe, model, x_T) - reference).pow(2).mean().sqrt())
        for c in CONFIGS
        if c in DETERMINISTIC
        for nfe in budgets
    }


@torch.inference_mode()
def fid_table(model, budgets, n: int) -> dict:
    """FID of n samples per (sampler, NFE) against n MNIST training images (cached features)."""
    from tinydiff.metrics.fid import fid
    from tinydiff.metrics.inception import InceptionFeatures
    from tinydiff.metrics.reference import features
    from tinydiff.viz import to_uint8

    extractor = InceptionFeatures(log=lambda m: print(m, file=sys.stderr))
    real = features("mnist:train", n, extractor)
    x_T = torch.randn(n, *model.image_shape, generator=torch.Generator().manual_seed(1))
    table = {}
    for config in CONFIGS:
        for nfe in budgets:
            images = to_uint8(_run(config, nfe, model, x_T).clamp(-1, 1))
            table[(config, nfe)] = fid(extractor(images), real)
            print(f"{config} NFE {nfe}: FID {table[(config, nfe)]:.2f}", file=sys.stderr)
    return table


@torch.inference_mode()
def throughput(n: int, rounds: int) -> dict:
    from diffusers import DDIMPipeline, DDIMScheduler

    torch.manual_seed(0)
    unet = DiffusersUNet().unet.eval()
    scheduler = DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear", clip_sample=True)
    pipeline = DDIMPipeline(unet=unet, scheduler=scheduler)
    pipeline.set_progress_bar_config(disable=True)
    schedule = NoiseSchedule.create("linear")
    denoise = as_denoiser(lambda x, t: unet(x, t).sample, schedule, "eps")

    def ours(k: int):
        x_T = torch.randn(k, 1, 28, 28, generator=torch.Generator().manual_seed(0))
        return SAMPLERS["ddim"](denoise, schedule, x_T, schedule.timesteps(50, "leading"))

    def theirs(k: int):
        return pipeline(
            batch_size=k, num_inference_steps=50, eta=0.0, output_type="pt", generator=torch.Generator().manual_seed(0)
        ).images

    runners = {"tinydiff ddim": ours, "diffusers DDIMPipeline": theirs}
    speeds = {label: [] for label in runners}
    for fn in runners.values():  # warm-up: allocator, kernels
        fn(8)
    for r in range(rounds):
        for label in list(runners)[:: 1 if r % 2 == 0 else -1]:  # alternate who goes first
            start = time.perf_counter()
            runners[label](n)
            speeds[label].append(n / (time.perf_counter() - start))
    result = {label: statistics.median(v) for label, v in speeds.items()}
    # the sampler loop alone: the same DDIM-50 over a network that costs nothing
    null = as_denoiser(lambda x, t: 0.1 * x, schedule, "eps")
    start = time.perf_counter()
    SAMPLERS["ddim"](null, schedule, torch.randn(n, 1, 28, 28), schedule.timesteps(50))
    result["tinydiff loop overhead (s, whole run)"] = time.perf_counter() - start
    return result


def print_nfe_table(title: str, table: dict, budgets, digits: int = 4) -> None:
    print(f"\n{title}\n")
    print("| sampler | " + " | ".join(f"NFE {b}" for b in budgets) + " |")
    print("|---|" + "---:|" * len(budgets))
    for label in dict.fromkeys(label for label, _ in table):
        print(f"| {label} | " + " | ".join(f"{table[(label, b)]:.{digits}f}" for b in budgets) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budgets", default="5,10,20,50,100")
    parser.add_argument("--ckpt", default=None, help="a trained MNIST checkpoint for part 2")
    parser.add_argument("--n", type=int, default=256, help="images for the ODE-error comparison")
    parser.add_argument("--fid-n", type=int, default=0, help="images per FID (0: no FID)")
    parser.add_argument("--fid-budgets", default="10,20,50")
    parser.add_argument("--throughput-n", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", default="benchmarks/results/samplers.json")
    args = parser.parse_args()
    budgets = [int(b) for b in args.budgets.split(",")]
    result = {}

    table = gaussian_table(budgets)
    print_nfe_table("Analytic Gaussian N(0.3, 0.5^2): |mean - mu| + |std - s| by network evaluations", table, budgets)
    result["gaussian"] = {f"{k[0]}@{k[1]}": v for k, v in table.items()}

    if args.ckpt:
        from tinydiff import load

        model = load(args.ckpt)
        fid_budgets = [int(b) for b in args.fid_budgets.split(",")]
        ode = ode_errors(model, budgets, args.n)
        title = f"{args.ckpt}: RMS distance of x_0 to the DDIM-1000 solution from the same x_T (n = {args.n})"
        print_nfe_table(title, ode, budgets)
        result["ode_error"] = {f"{k[0]}@{k[1]}": v for k, v in ode.items()}
        if args.fid_n:
            fids = fid_table(model, fid_budgets, args.fid_n)
            print_nfe_table(
                f"{args.ckpt}: FID against MNIST train, n = {args.fid_n} vs {args.fid_n}", fids, fid_budgets, digits=2
            )
            result["fid"] = {f"{k[0]}@{k[1]}": v for k, v in fids.items()}

    if args.throughput_n:
        speeds = throughput(args.throughput_n, args.rounds)
        print(
            f"\nDDIM, 50 steps, {args.throughput_n} images, diffusers UNet2DModel (core config), "
            f"{torch.get_num_threads()} threads, median of {args.rounds} rounds\n"
        )
        print("| sampler loop | images/s |")
        print("|---|---:|")
        for label, speed in speeds.items():
            print(f"| {label} | {speed:.3f} |")
        result["throughput"] = speeds

    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2))
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
