"""``tinydiff sample``, and the sampling flags that eval and reproduce share with it: the sampler's own
options, the classes (--class), classifier-free guidance (--guidance, --guidance-interval) and a refiner
(--refine)."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from ..config import REFINE_FROM, REFINE_STEPS
from ..schedule import SPACINGS
from . import COUNT, SEED, device_option, finite, model_name, output_options, output_path

SAMPLER_OPTIONS = ("eta", "sigma_hat", "variance", "spacing", "clip_x0")


def sampler_options(p: argparse.ArgumentParser) -> None:
    """The samplers' own options (each sampler takes the ones that apply to it)."""
    p.add_argument(
        "--eta",
        type=finite,
        default=None,
        help="noise: ddim eta in [0, 1], dpm++2m eta >= 0 (default 0: deterministic; dpm++2m at 1: SDE-DPM-Solver++)",
    )
    p.add_argument("--sigma-hat", action="store_true", default=None, help="DDIM with Table 1's sigma-hat noise")
    p.add_argument("--variance", default=None, choices=["posterior", "beta"], help="DDPM sigma_t^2")
    p.add_argument("--spacing", default=None, help=f"trajectory: {', '.join(SPACINGS)}")
    p.add_argument(
        "--no-clip",
        dest="clip_x0",
        action="store_false",
        default=None,
        help="do not clip x0 to [-1, 1] (a model trained with the clip-aware loss clips always)",
    )


def sampler_kwargs(args) -> dict:
    """The samplers' own options that were given on the command line."""
    return {k: getattr(args, k) for k in SAMPLER_OPTIONS if getattr(args, k) is not None}


def interval(text: str) -> tuple[float, float]:
    """An argparse type: LO,HI with 0 <= LO < HI (HI may be inf)."""
    from ..config import parse_interval

    try:
        return parse_interval(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def guidance_interval_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--guidance-interval",
        type=interval,
        default=None,
        metavar="LO,HI",
        help="guide only at noise levels sigma = sqrt((1 - alpha_bar_t) / alpha_bar_t) in (LO, HI] "
        "(Kynkaanniemi et al. 2024); elsewhere the conditional model alone, one network evaluation per step",
    )


def guidance_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--class",
        dest="label",
        default=None,
        help="conditional models: a class index, 'all' (every class in turn; what a conditional model gets "
        "without --class), 'data' (classes in the training data's proportions) or 'none' (the null class)",
    )
    p.add_argument(
        "--prompt",
        action="append",
        default=None,
        metavar="TEXT",
        help='text-conditioned models: what to draw, e.g. "nine"; the images take several --prompt in turn '
        '(a grid column each); "" is the unconditional model',
    )
    p.add_argument(
        "--guidance",
        type=finite,
        default=0.0,
        help="classifier-free guidance weight w: eps = (1 + w) eps(x, y) - w eps(x, null), or with --guide "
        "autoguidance's; w = 0 is the conditional model, w is 'guidance scale' - 1",
    )
    guidance_interval_option(p)
    p.add_argument(
        "--guide",
        default=None,
        metavar="CKPT",
        help="autoguidance (Karras et al. 2024): guide away from this weaker model of the same data (e.g. "
        "RUN/guide, which train --guide-at writes) instead of the unconditional model, with weight --guidance: "
        "D = (1 + w) D(x) - w D_guide(x); for unconditional models too. Twice the network evaluations where it guides",
    )
    p.add_argument(
        "--dynamic-threshold",
        type=finite,
        default=None,
        metavar="P",
        help="Imagen's dynamic thresholding in place of the clip of x0 to [-1, 1]: per image, scale x0 by its "
        "P-th percentile of |x0| when that exceeds 1 (e.g. 0.995; helps large guidance weights)",
    )


def refine_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--refine",
        default=None,
        metavar="CKPT",
        help="finish the images with this model of the same data (e.g. a few-step student's teacher): noise them "
        "to timestep --refine-from and denoise them with its dpm++2m over --refine-steps steps, evenly in log-SNR "
        "down to sigma 0.08 (SDEdit), --refine-steps more network evaluations",
    )
    p.add_argument("--refine-from", type=int, default=REFINE_FROM, metavar="T", help="the refiner's first timestep")
    p.add_argument("--refine-steps", type=COUNT, default=REFINE_STEPS, metavar="K", help="the refiner's steps")


def draw(args, model, n: int, labels, **more):
    """n images of ``model`` with the sampling flags that sample and eval share (sampler, steps, seed,
    the class labels, guidance and the sampler's own options); ``more`` goes to api.sample too."""
    from ..api import sample

    return sample(
        model,
        n,
        sampler=args.sampler,
        steps=args.steps,
        seed=args.seed,
        labels=labels,
        prompts=args.prompt,
        guidance=args.guidance,
        guidance_interval=args.guidance_interval,
        dynamic_threshold=args.dynamic_threshold,
        refine_from=args.refine_from,
        refine_steps=args.refine_steps,
        **{"guide": args.guide, "refine": args.refine, **sampler_kwargs(args), **more},
    )


def sampling_tag(args, conditional: bool) -> str:
    """The sampling choices, for default file names: draws with other choices (a second --seed,
    --spacing, --class data, ...) are written beside the first instead of over it."""
    parts = [f"{args.sampler}{args.steps or ''}"]
    parts += [f"{k.replace('_', '')}{getattr(args, k)}" for k in SAMPLER_OPTIONS if getattr(args, k) is not None]
    if args.prompt:
        parts += ["prompt-" + "-".join(re.sub(r"[^a-z0-9]+", "", p.lower())[:16] or "empty" for p in args.prompt[:4])]
    if conditional or args.prompt:
        parts += [f"class{args.label}"] if args.label not in (None, "all") else []
    if conditional or args.prompt or args.guide:
        parts += [f"w{args.guidance:g}"]
        parts += [f"gi{args.guidance_interval[0]:g}-{args.guidance_interval[1]:g}"] if args.guidance_interval else []
    parts += [f"by-{model_name(args.guide)}"] if args.guide else []
    parts += [f"dt{args.dynamic_threshold:g}"] if args.dynamic_threshold is not None else []
    parts += [f"refined-{model_name(args.refine)}-t{args.refine_from}x{args.refine_steps}"] if args.refine else []
    parts += [f"seed{args.seed}"] if args.seed else []
    return "-".join(parts)


def add_parser(sub, common) -> None:
    p = sub.add_parser("sample", parents=[common], help="draw images from a checkpoint")
    p.add_argument(
        "--ckpt",
        default=None,
        help="a run directory (newest checkpoint) or a ckpt-* directory; default: the MNIST model shipped "
        "with tinydiff (pretrained:mnist)",
    )
    p.add_argument(
        "--sampler",
        default=None,
        help="ddpm, ddim, pndm, heun or dpm++2m; consistency for a consistency-distilled model "
        "(default: the checkpoint's own, else ddim)",
    )
    p.add_argument(
        "--steps",
        type=COUNT,
        default=None,
        help="trajectory length S (default: the checkpoint's own for a distilled model, else ddpm T, "
        "consistency 4, others 50); network evaluations: S for ddpm, ddim, dpm++2m and consistency, "
        "S + 1 for pndm, 2 S - 1 for heun",
    )
    sampler_options(p)
    p.add_argument("--n", type=COUNT, default=64, help="number of images")
    guidance_options(p)
    refine_options(p)
    p.add_argument(
        "--per-class", type=COUNT, default=None, help="K images of each class, a grid row per class (in place of --n)"
    )
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument("--batch-size", type=COUNT, default=64, help="images per network call (64 is fastest on CPU)")
    output_options(p, "the PNG grid")
    p.add_argument("--nrow", type=COUNT, default=None, help="images per grid row")
    p.add_argument("--npz", default=None, help="also write the images as uint8 NHWC 'x' in an .npz")
    p.add_argument("--png-dir", default=None, help="also write one PNG per image into this folder")
    p.add_argument(
        "--trajectory",
        default=None,
        help="write the denoising trajectory of the first 8 images (x_t and predicted x0) as this GIF "
        "and a PNG strip beside it",
    )
    device_option(p)
    p.set_defaults(func=run)


def run(args) -> None:
    from ..api import class_labels, grid_columns, sampling_recipe
    from ..model import load
    from ..viz import npz_path, save_grid, save_npz, save_trajectory

    if args.ckpt is None and not args.quiet:
        print("no --ckpt: sampling the MNIST model shipped with tinydiff (pretrained:mnist)", file=sys.stderr)
    # every output checked before sampling: one that exists or cannot be written fails now, not after
    for path in filter(None, [args.npz and npz_path(args.npz), args.trajectory, args.png_dir]):
        output_path(path, "", args.overwrite)
    model = load(args.ckpt, device=args.device)
    args.sampler = args.sampler or sampling_recipe(model)["sampler"]  # for the file name
    labels, n = class_labels(model, args.label, args.n, per_class=args.per_class, prompts=args.prompt)
    out = output_path(args.out, f"{model_name(args.ckpt)}-{sampling_tag(args, labels is not None)}.png", args.overwrite)
    cycling = labels is not None and args.label in (None, "all") and args.per_class is None
    nrow = args.nrow or args.per_class or grid_columns(model, cycling, args.prompt)
    states, predictions = [], []

    def record(i, t, x_t, x0):
        if len(states) <= i:  # the first batch only
            states.append(x_t[:8].clamp(-1, 1).cpu())
            predictions.append(x0[:8].clamp(-1, 1).cpu())

    callback = record if args.trajectory else None
    images = draw(args, model, n, labels, batch_size=args.batch_size, callback=callback, progress=not args.quiet)
    print(f"grid: {save_grid(images, out, nrow)}")
    if args.trajectory:
        gif, strip = save_trajectory(states, predictions, args.trajectory)
        print(f"trajectory: {gif} {strip}")
    if args.npz:
        print(f"npz: {save_npz(images, args.npz, labels)}")
    if args.png_dir:
        for i, image in enumerate(images):
            save_grid(image[None], Path(args.png_dir) / f"{i:05d}.png", padding=0, scale=1)
        print(f"pngs: {args.png_dir}")
