"""Command line: ``tinydiff fetch | train | sample | fid | eval``, a thin layer over the Python API.

Problems with the user's input end in one line on stderr and a non-zero exit; ``--debug``
shows the traceback instead.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from .errors import TinydiffError
from .training.trainer import TrainConfig

DEFAULTS = TrainConfig()


def _train_parser(sub, common) -> None:
    p = sub.add_parser("train", parents=[common], help="train a diffusion model")
    p.add_argument(
        "--data",
        default=DEFAULTS.data,
        help="mnist, mnist:test, fashion-mnist, digits, cifar10:DIR, an .npz or an image folder",
    )
    p.add_argument("--out", default=DEFAULTS.out, help="run directory (checkpoints, log.jsonl, samples.png)")
    p.add_argument("--net", default=DEFAULTS.net, choices=["unet", "mlp"])
    p.add_argument("--preset", default=DEFAULTS.preset, help="U-Net size: tiny, small, medium, base")
    p.add_argument("--steps", type=int, default=DEFAULTS.steps, help="optimizer steps in total")
    p.add_argument("--batch-size", type=int, default=DEFAULTS.batch_size)
    p.add_argument("--lr", type=float, default=DEFAULTS.lr)
    p.add_argument("--warmup", type=int, default=DEFAULTS.warmup, help="linear learning-rate warm-up steps")
    p.add_argument("--lr-schedule", default=DEFAULTS.lr_schedule, choices=["constant", "cosine"])
    p.add_argument("--weight-decay", type=float, default=DEFAULTS.weight_decay)
    p.add_argument("--schedule", default=DEFAULTS.schedule, choices=["linear", "cosine"], help="noise schedule")
    p.add_argument("--timesteps", type=int, default=DEFAULTS.timesteps, help="T")
    p.add_argument("--prediction", default=DEFAULTS.prediction, choices=["eps", "x0", "v"])
    p.add_argument("--weighting", default=DEFAULTS.weighting, choices=["none", "min-snr"])
    p.add_argument("--ema-decay", type=float, default=DEFAULTS.ema_decay)
    p.add_argument("--grad-clip", type=float, default=DEFAULTS.grad_clip)
    p.add_argument("--accumulate", type=int, default=DEFAULTS.accumulate, help="gradient accumulation micro-batches")
    p.add_argument("--amp", action="store_true", help="bfloat16 autocast")
    p.add_argument("--seed", type=int, default=DEFAULTS.seed)
    p.add_argument("--subset", type=int, default=None, help="train on a random subset of this many images")
    p.add_argument("--hflip", action="store_true", help="random horizontal flips (not for digits)")
    p.add_argument("--no-time", dest="use_time", action="store_false", help="hide t from the network (ablation)")
    p.add_argument("--dropout", type=float, default=DEFAULTS.dropout)
    p.add_argument("--ckpt-every", type=int, default=DEFAULTS.ckpt_every)
    p.add_argument("--log-every", type=int, default=DEFAULTS.log_every)
    p.add_argument("--keep", type=int, default=DEFAULTS.keep, help="checkpoints to keep")
    p.add_argument("--sample-grid", type=int, default=DEFAULTS.sample_grid, help="images in the final grid (0: none)")
    p.add_argument("--device", default=DEFAULTS.device, help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its newest checkpoint")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.set_defaults(func=_cmd_train)


def _sample_parser(sub, common) -> None:
    p = sub.add_parser("sample", parents=[common], help="draw images from a checkpoint")
    p.add_argument("--ckpt", required=True, help="a run directory (newest checkpoint) or a ckpt-* directory")
    p.add_argument("--sampler", default="ddim", help="ddpm, ddim, pndm, heun or dpm++2m")
    p.add_argument(
        "--steps",
        type=int,
        default=None,
        help="trajectory length S (default: ddpm T, others 50); network evaluations: S for ddpm, "
        "ddim and dpm++2m, S + 1 for pndm, 2 S - 1 for heun",
    )
    p.add_argument("--eta", type=float, default=None, help="DDIM eta in [0, 1] (default 0)")
    p.add_argument("--sigma-hat", action="store_true", default=None, help="DDIM with Table 1's sigma-hat noise")
    p.add_argument("--variance", default=None, choices=["posterior", "beta"], help="DDPM sigma_t^2")
    p.add_argument("--spacing", default=None, help="trajectory: uniform, leading, trailing, quadratic")
    p.add_argument("--no-clip", dest="clip_x0", action="store_false", default=None, help="do not clip x0 to [-1, 1]")
    p.add_argument("--n", type=int, default=64, help="number of images")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=64, help="images per network call (64 is fastest on CPU)")
    p.add_argument("--out", default="samples.png", help="PNG grid")
    p.add_argument("--nrow", type=int, default=None, help="images per grid row")
    p.add_argument("--npz", default=None, help="also write the images as uint8 NHWC 'x' in an .npz")
    p.add_argument("--png-dir", default=None, help="also write one PNG per image into this folder")
    p.add_argument(
        "--trajectory",
        default=None,
        help="write the denoising trajectory of the first 8 images (x_t and predicted x0) as this GIF "
        "and a PNG strip beside it",
    )
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=_cmd_sample)


def _metrics_options(p) -> None:
    p.add_argument("--n", type=int, default=2048, help="images per set (quote FID with its n)")
    p.add_argument(
        "--metrics",
        default="fid,kid",
        help="comma-separated: fid, kid, pr, is (is_mnist: the "
        "Inception-Score analogue with tinydiff's own digit classifier, not the ImageNet IS)",
    )
    p.add_argument("--no-floor", dest="floor", action="store_false", help="skip the real-vs-real floor")
    p.add_argument("--inception-batch", type=int, default=None, help="default: 4 on CPU, 200 on GPU")
    p.add_argument("--device", default="cpu")


def _cmd_fetch(args) -> None:
    from .data.fetch import fetch
    from .metrics.inception import fetch_inception

    for name in args.datasets:
        print(fetch_inception() if name == "inception" else fetch(name, force=args.force))


def _score(args, spec_a: str, spec_b: str) -> dict:
    import json

    from .metrics.inception import InceptionFeatures
    from .metrics.reference import score

    extractor = InceptionFeatures(args.device, args.inception_batch, log=lambda m: print(m, file=sys.stderr))
    report = score(
        spec_a, spec_b, args.n, args.metrics.split(","), extractor, args.floor, log=lambda m: print(m, file=sys.stderr)
    )
    print(json.dumps(report, indent=2))
    return report


def _cmd_fid(args) -> None:
    _score(args, args.a, args.b)


def _cmd_eval(args) -> None:
    from .api import sample
    from .model import load
    from .viz import save_npz

    model = load(args.ckpt, device=args.device)
    reference = args.ref or model.config["data"]["spec"]
    options = {"eta": args.eta} if args.eta is not None else {}
    images = sample(model, args.n, sampler=args.sampler, steps=args.steps, seed=args.seed, progress=True, **options)
    out = Path(args.out or Path(args.ckpt) / f"eval-{args.sampler}-{args.steps}-n{args.n}.npz")
    save_npz(images, out)
    print(f"samples: {out}", file=sys.stderr)
    _score(args, str(out), reference)


def _cmd_train(args) -> None:
    from .api import train

    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    options = {k: v for k, v in vars(args).items() if k in fields}
    ckpt = train(resume=args.resume, progress=args.progress, **options)
    print(f"checkpoint: {ckpt}")
    if args.sample_grid:
        print(f"samples: {Path(args.out) / 'samples.png'}")


def _cmd_sample(args) -> None:

    from .api import sample
    from .model import load
    from .viz import save_grid, save_npz, save_trajectory

    model = load(args.ckpt, device=args.device)
    names = ("eta", "sigma_hat", "variance", "spacing", "clip_x0")
    options = {k: getattr(args, k) for k in names if getattr(args, k) is not None}
    states, predictions = [], []

    def record(i, t, x_t, x0):
        if len(states) <= i:  # the first batch only
            states.append(x_t[:8].clamp(-1, 1).cpu())
            predictions.append(x0[:8].clamp(-1, 1).cpu())

    try:
        callback = record if args.trajectory else None
        images = sample(
            model,
            args.n,
            sampler=args.sampler,
            steps=args.steps,
            seed=args.seed,
            batch_size=args.batch_size,
            callback=callback,
            progress=args.n >= 256,
            **options,
        )
    except TypeError as err:  # an option the chosen sampler does not take
        raise TinydiffError(f"sampler {args.sampler}: {err}") from None
    print(f"grid: {save_grid(images, args.out, args.nrow)}")
    if args.trajectory:
        gif, strip = save_trajectory(states, predictions, args.trajectory)
        print(f"trajectory: {gif} {strip}")
    if args.npz:
        save_npz(images, args.npz)
        print(f"npz: {args.npz}")
    if args.png_dir:
        for i, image in enumerate(images):
            save_grid(image[None], Path(args.png_dir) / f"{i:05d}.png", padding=0, scale=1)
        print(f"pngs: {args.png_dir}")


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
    parser = argparse.ArgumentParser(prog="tinydiff", parents=[common], description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("fetch", parents=[common], help="download, verify and cache datasets")
    p.add_argument("datasets", nargs="+", choices=["mnist", "fashion-mnist", "digits", "inception"])
    p.add_argument("--force", action="store_true", help="fetch again even if cached")
    p.set_defaults(func=_cmd_fetch)
    _train_parser(sub, common)
    _sample_parser(sub, common)
    p = sub.add_parser("fid", parents=[common], help="FID (and KID, precision/recall) between two image sets")
    p.add_argument("a", help="an .npz, an image folder, or a dataset spec such as mnist:train")
    p.add_argument("b", help="the reference set; the floor is computed from two disjoint draws of it")
    _metrics_options(p)
    p.set_defaults(func=_cmd_fid)
    p = sub.add_parser("eval", parents=[common], help="sample a checkpoint and score the samples")
    p.add_argument("--ckpt", required=True)
    p.add_argument("--ref", default=None, help="reference set (default: the checkpoint's training data)")
    p.add_argument("--sampler", default="ddim")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--eta", type=float, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="where to write the samples (.npz)")
    _metrics_options(p)
    p.set_defaults(func=_cmd_eval)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.debug = getattr(args, "debug", False)
    try:
        args.func(args)
    except (TinydiffError, ValueError) as err:
        if args.debug:
            raise
        print(f"tinydiff: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tinydiff: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - one line for the user, the traceback with --debug
        if args.debug:
            raise
        print(f"tinydiff: unexpected {type(err).__name__}: {err} (rerun with --debug for details)", file=sys.stderr)
        return 1
    return 0
