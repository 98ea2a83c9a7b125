"""Command line: ``tinydiff fetch | train | sample | fid | eval | invert | interpolate | merge | reproduce``,
a thin layer over the Python API.

Problems with the user's input end in one line on stderr and a non-zero exit; ``--debug``
shows the traceback instead.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path

import torch

from .errors import TinydiffError
from .objectives import PREDICTIONS, TIMESTEP_SAMPLINGS, WEIGHTINGS
from .schedule import SCHEDULES
from .training import distributed
from .training.trainer import LR_SCHEDULES, TrainConfig

DEFAULTS = TrainConfig()


def _integer(low: int, high: float = float("inf")):
    """An argparse type: an integer in [low, high]."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if not low <= value <= high:
            allowed = f">= {low}" if high == float("inf") else f"in [{low}, {high}]"
            raise argparse.ArgumentTypeError(f"must be an integer {allowed}, got {value}")
        return value

    return parse


def _finite(text: str) -> float:
    """An argparse type: a finite number (no nan, no inf)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


COUNT = _integer(1)  # a positive count: images, steps, batch size, frames
SEED = _integer(0, 2**32 - 1)


def _int_list(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers separated by commas, e.g. 1,2,2; got {text!r}") from None


def _train_parser(sub, common) -> None:
    p = sub.add_parser("train", parents=[common], help="train a diffusion model")
    p.add_argument(
        "--data",
        default=DEFAULTS.data,
        help="mnist, mnist:test, fashion-mnist, digits, cifar10:DIR, an .npz or an image folder",
    )
    p.add_argument("--out", default=DEFAULTS.out, help="run directory (checkpoints, log.jsonl, samples.png)")
    p.add_argument(
        "--net", default=DEFAULTS.net, choices=["unet", "mlp", "diffusers"], help="diffusers: UNet2DModel baseline"
    )
    p.add_argument("--preset", default=DEFAULTS.preset, help="U-Net size: nano, tiny, small, medium, base")
    p.add_argument("--channels", type=int, default=None, help="U-Net base width (default: the preset's)")
    p.add_argument(
        "--channel-mults",
        type=_int_list,
        default=None,
        help="U-Net width of each resolution level in multiples of --channels, e.g. 1,1,2 (default: the preset's)",
    )
    p.add_argument("--steps", type=int, default=DEFAULTS.steps, help="optimizer steps in total")
    p.add_argument("--batch-size", type=int, default=DEFAULTS.batch_size)
    p.add_argument("--lr", type=float, default=DEFAULTS.lr)
    p.add_argument("--warmup", type=int, default=DEFAULTS.warmup, help="linear learning-rate warm-up steps")
    p.add_argument("--lr-schedule", default=DEFAULTS.lr_schedule, choices=LR_SCHEDULES)
    p.add_argument("--weight-decay", type=float, default=DEFAULTS.weight_decay)
    p.add_argument("--schedule", default=DEFAULTS.schedule, choices=SCHEDULES, help="noise schedule")
    p.add_argument("--timesteps", type=int, default=DEFAULTS.timesteps, help="T")
    p.add_argument(
        "--snr-scale",
        type=float,
        default=DEFAULTS.snr_scale,
        help="multiply the schedule's SNR at every timestep by this (> 1: less noise at every t; 5.2: simple "
        "diffusion's shift for 28x28)",
    )
    p.add_argument("--prediction", default=DEFAULTS.prediction, choices=PREDICTIONS)
    p.add_argument("--weighting", default=DEFAULTS.weighting, choices=WEIGHTINGS)
    p.add_argument(
        "--snr-gamma", type=float, default=DEFAULTS.snr_gamma, help="min-SNR's cap: x0 loss weight min(SNR, gamma)"
    )
    p.add_argument(
        "--timestep-sampling",
        default=DEFAULTS.timestep_sampling,
        choices=TIMESTEP_SAMPLINGS,
        help="training timesteps: independent draws, or stratified over the batch (low-discrepancy)",
    )
    p.add_argument(
        "--clip-aware-loss",
        action=argparse.BooleanOptionalAction,
        default=DEFAULTS.clip_aware_loss,
        help="no loss where the predicted x0 passes the bound (-1 or 1) that its target pixel sits on",
    )
    p.add_argument(
        "--self-condition",
        action="store_true",
        help="the U-Net also sees its previous x0 estimate (Chen et al. 2022); no extra evaluations in sampling",
    )
    p.add_argument("--ema-decay", type=float, default=DEFAULTS.ema_decay)
    p.add_argument("--grad-clip", type=float, default=DEFAULTS.grad_clip)
    p.add_argument("--accumulate", type=int, default=DEFAULTS.accumulate, help="gradient accumulation micro-batches")
    p.add_argument("--amp", action="store_true", help="bfloat16 autocast")
    p.add_argument(
        "--compile", action="store_true", help="torch.compile the network (costs about a minute once; not with --amp)"
    )
    p.add_argument("--seed", type=int, default=DEFAULTS.seed)
    p.add_argument("--subset", type=int, default=None, help="train on a random subset of this many images")
    p.add_argument("--hflip", action="store_true", help="random horizontal flips (not for digits)")
    p.add_argument("--no-time", dest="use_time", action="store_false", help="hide t from the network (ablation)")
    p.add_argument("--dropout", type=float, default=DEFAULTS.dropout)
    p.add_argument(
        "--conditional", action="store_true", help="class-conditional (for classifier-free guidance); needs labels"
    )
    p.add_argument(
        "--p-uncond", type=float, default=DEFAULTS.p_uncond, help="label dropout: probability of the null class"
    )
    p.add_argument("--minutes", type=float, default=None, help="wall-clock budget; stops at --steps or here")
    p.add_argument("--ckpt-every", type=int, default=DEFAULTS.ckpt_every)
    p.add_argument("--log-every", type=int, default=DEFAULTS.log_every)
    p.add_argument("--keep", type=int, default=DEFAULTS.keep, help="checkpoints to keep")
    p.add_argument("--sample-grid", type=int, default=DEFAULTS.sample_grid, help="images in the final grid (0: none)")
    p.add_argument("--device", default=DEFAULTS.device, help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its newest checkpoint")
    p.add_argument(
        "--nproc",
        type=COUNT,
        default=1,
        help="data-parallel processes on this machine: runs this command under torchrun (see the README)",
    )
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.set_defaults(func=_cmd_train)


def _sample_parser(sub, common) -> None:
    p = sub.add_parser("sample", parents=[common], help="draw images from a checkpoint")
    p.add_argument(
        "--ckpt",
        default=None,
        help="a run directory (newest checkpoint) or a ckpt-* directory; default: the MNIST model shipped "
        "with tinydiff (pretrained:mnist)",
    )
    p.add_argument("--sampler", default="ddim", help="ddpm, ddim, pndm, heun or dpm++2m")
    p.add_argument(
        "--steps",
        type=COUNT,
        default=None,
        help="trajectory length S (default: ddpm T, others 50); network evaluations: S for ddpm, "
        "ddim and dpm++2m, S + 1 for pndm, 2 S - 1 for heun",
    )
    _sampler_options(p)
    p.add_argument("--n", type=COUNT, default=64, help="number of images")
    _guidance_options(p)
    p.add_argument("--per-class", type=COUNT, default=8, help="with --class all: images per class (grid row)")
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument("--batch-size", type=COUNT, default=64, help="images per network call (64 is fastest on CPU)")
    p.add_argument("--out", default="samples.png", help="PNG grid")
    p.add_argument("--nrow", type=COUNT, default=None, help="images per grid row")
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


SAMPLER_OPTIONS = ("eta", "sigma_hat", "variance", "spacing", "clip_x0")


def _sampler_options(p) -> None:
    """The samplers' own options (each sampler takes the ones that apply to it)."""
    p.add_argument(
        "--eta",
        type=_finite,
        default=None,
        help="noise: ddim eta in [0, 1], dpm++2m eta >= 0 (default 0: deterministic; dpm++2m at 1: SDE-DPM-Solver++)",
    )
    p.add_argument("--sigma-hat", action="store_true", default=None, help="DDIM with Table 1's sigma-hat noise")
    p.add_argument("--variance", default=None, choices=["posterior", "beta"], help="DDPM sigma_t^2")
    p.add_argument("--spacing", default=None, help="trajectory: uniform, leading, trailing, quadratic, logsnr")
    p.add_argument(
        "--no-clip",
        dest="clip_x0",
        action="store_false",
        default=None,
        help="do not clip x0 to [-1, 1] (a model trained with the clip-aware loss clips always)",
    )


def _sampler_kwargs(args) -> dict:
    return {k: getattr(args, k) for k in SAMPLER_OPTIONS if getattr(args, k) is not None}


def _sample(args, model, n: int, labels, **more):
    """n images of ``model`` with the sampling flags that sample and eval share (sampler, steps, seed,
    the class labels, guidance and the sampler's own options); ``more`` goes to api.sample too."""
    from .api import sample

    return sample(
        model,
        n,
        sampler=args.sampler,
        steps=args.steps,
        seed=args.seed,
        labels=labels,
        guidance=args.guidance,
        guidance_interval=args.guidance_interval,
        **_sampler_kwargs(args),
        **more,
    )


def _guidance_options(p) -> None:
    p.add_argument(
        "--class",
        dest="label",
        default=None,
        help="conditional models: a class index, 'all' (every class, balanced), 'data' (classes in the training "
        "data's proportions) or 'none' (the unconditional null class)",
    )
    p.add_argument(
        "--guidance",
        type=_finite,
        default=0.0,
        help="classifier-free guidance weight w: eps = (1 + w) eps(x, y) - w eps(x, null); "
        "w = 0 is the conditional model, w is 'guidance scale' - 1",
    )
    p.add_argument(
        "--guidance-interval",
        type=_interval,
        default=None,
        metavar="LO,HI",
        help="guide only at noise levels sigma = sqrt((1 - alpha_bar_t) / alpha_bar_t) in (LO, HI] "
        "(Kynkaanniemi et al. 2024); elsewhere the conditional model alone, one network evaluation per step",
    )


def _interval(text: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LO,HI (two numbers), got {text!r}") from None
    if not 0 <= lo < hi:  # also refuses nan
        raise argparse.ArgumentTypeError(f"expected noise levels 0 <= LO < HI (HI may be inf), got {text!r}")
    return lo, hi


def _labels(label: str | None, model, n: int, per_class: int | None = None):
    """(labels or None, number of images) for --class; 'all' gives per_class images of each class
    in order (sample) or n labels cycling through the classes (eval); 'data' gives n labels in the
    proportions of the training data's classes."""
    if label is None or label == "none":
        if label is None and model.num_classes and per_class is None:
            label = "all"  # eval of a conditional model: balanced classes by default
        else:
            return None, n
    if not model.num_classes:
        raise TinydiffError("this model is not class-conditional (trained without --conditional): drop --class")
    if label == "data":  # the training data's class frequencies, p(y)
        from .data import load_dataset

        return load_dataset(model.config["data"]["spec"]).labels_like(n), n
    if label == "all":
        if per_class is not None:
            return torch.arange(model.num_classes).repeat_interleave(per_class), model.num_classes * per_class
        return model.balanced_labels(n), n
    try:
        return torch.full((n,), int(label)), n
    except ValueError:
        raise TinydiffError(f"--class must be a class index, 'all', 'data' or 'none', got {label!r}") from None


def _metrics_options(p) -> None:
    p.add_argument("--n", type=COUNT, default=2048, help="images per set (quote FID with its n)")
    p.add_argument(
        "--metrics",
        default="fid,kid",
        help="comma-separated: fid, kid, pr, is (is_mnist, is_fashion-mnist: the Inception-Score analogue "
        "with tinydiff's own classifier for the reference dataset, not the ImageNet IS), acc (conditional "
        "accuracy: how often that classifier agrees with the requested class)",
    )
    p.add_argument("--no-floor", dest="floor", action="store_false", help="skip the real-vs-real floor")
    p.add_argument("--inception-batch", type=COUNT, default=None, help="default: 4 on CPU, 200 on GPU")
    p.add_argument("--device", default="cpu")


def _cmd_fetch(args) -> None:
    from .data.fetch import fetch
    from .metrics.inception import fetch_inception

    for name in args.datasets:
        print(fetch_inception(force=args.force) if name == "inception" else fetch(name, force=args.force))


def _score(args, spec_a: str, spec_b: str, sampling: dict | None = None) -> dict:
    import json

    from .metrics.inception import InceptionFeatures
    from .metrics.reference import score

    extractor = InceptionFeatures(args.device, args.inception_batch, log=lambda m: print(m, file=sys.stderr))
    report = score(
        spec_a, spec_b, args.n, args.metrics.split(","), extractor, args.floor, log=lambda m: print(m, file=sys.stderr)
    )
    report.update(sampling or {})
    print(json.dumps(report, indent=2))
    return report


def _cmd_fid(args) -> None:
    _score(args, args.a, args.b)


def _eval_tag(args, conditional: bool) -> str:
    """The sampling choices in eval's default file name, so that draws with other choices (a second
    --seed, --spacing, --class data, ...) are written beside the first instead of over it."""
    parts = [args.sampler, str(args.steps)]
    parts += [f"{k.replace('_', '')}{getattr(args, k)}" for k in SAMPLER_OPTIONS if getattr(args, k) is not None]
    if conditional:
        parts += [f"class{args.label}"] if args.label not in (None, "all") else []
        parts += [f"w{args.guidance:g}"]
        parts += [f"gi{args.guidance_interval[0]:g}-{args.guidance_interval[1]:g}"] if args.guidance_interval else []
    parts += [f"seed{args.seed}"] if args.seed else []
    return "-".join(parts)


def _cmd_eval(args) -> None:
    from .model import load
    from .viz import save_npz

    model = load(args.ckpt, device=args.device)
    reference = args.ref or model.config["data"]["spec"]
    labels, n = _labels(args.label, model, args.n)
    with model.count_evaluations() as count:
        images = _sample(args, model, n, labels, progress=True)
    name = f"eval-{_eval_tag(args, labels is not None)}-n{n}.npz"
    if args.ckpt.startswith("pretrained:"):  # a shipped model has no run directory: use the current one
        default = Path(f"{args.ckpt.replace(':', '-')}-{name}")
    else:
        default = Path(args.ckpt) / name
    out = save_npz(images, Path(args.out) if args.out else default, labels)
    print(f"samples: {out}", file=sys.stderr)
    _score(args, str(out), reference, {"nfe": count["images"] / n})  # network evaluations per sample


def _without_nproc(argv: list[str]) -> list[str]:
    """The command line minus ``--nproc N`` / ``--nproc=N`` (what each torchrun worker runs)."""
    out, skip = [], False
    for arg in argv:
        if not skip and arg != "--nproc" and not arg.startswith("--nproc="):
            out.append(arg)
        skip = arg == "--nproc"
    return out


def _cmd_train(args) -> None:
    from .api import train

    if args.nproc > 1 and "WORLD_SIZE" not in os.environ:
        code = distributed.launch(args.nproc, _without_nproc(args.argv))
        if code:
            raise SystemExit(code)
        return
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    options = {k: v for k, v in vars(args).items() if k in fields}
    ckpt = train(resume=args.resume, progress=args.progress, **options)
    if ckpt is not None:  # rank 0 (or the only process)
        print(f"checkpoint: {ckpt}")
        if args.sample_grid:
            print(f"samples: {Path(args.out) / 'samples.png'}")


def _cmd_sample(args) -> None:
    from .model import load
    from .viz import npz_path, save_grid, save_npz, save_trajectory

    if args.ckpt is None:
        print("no --ckpt: sampling the MNIST model shipped with tinydiff (pretrained:mnist)", file=sys.stderr)
    outputs = [args.out, args.npz and npz_path(args.npz), args.trajectory, args.png_dir and Path(args.png_dir) / "x"]
    for path in filter(None, outputs):  # before sampling: a path that cannot be written fails now, not after
        _writable_folder(Path(path).parent)
    model = load(args.ckpt, device=args.device)
    labels, n = _labels(args.label, model, args.n, args.per_class)
    nrow = args.per_class if args.label == "all" and args.nrow is None else args.nrow
    states, predictions = [], []

    def record(i, t, x_t, x0):
        if len(states) <= i:  # the first batch only
            states.append(x_t[:8].clamp(-1, 1).cpu())
            predictions.append(x0[:8].clamp(-1, 1).cpu())

    callback = record if args.trajectory else None
    images = _sample(args, model, n, labels, batch_size=args.batch_size, callback=callback, progress=n >= 256)
    print(f"grid: {save_grid(images, args.out, nrow)}")
    if args.trajectory:
        gif, strip = save_trajectory(states, predictions, args.trajectory)
        print(f"trajectory: {gif} {strip}")
    if args.npz:
        print(f"npz: {save_npz(images, args.npz, labels)}")
    if args.png_dir:
        for i, image in enumerate(images):
            save_grid(image[None], Path(args.png_dir) / f"{i:05d}.png", padding=0, scale=1)
        print(f"pngs: {args.png_dir}")


def _writable_folder(folder: Path) -> None:
    """Create ``folder`` if needed; a TinydiffError if it cannot be made or written into."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise TinydiffError(f"cannot create the folder {folder} for the output ({err.strerror or err})") from None
    if not os.access(folder, os.W_OK):
        raise TinydiffError(f"cannot write into {folder}")


def _images(spec: str, n: int | None = None, pick: list[int] | None = None):
    """uint8 images (and labels) of an npz, folder or dataset spec: the first n, or those at pick."""
    from .data import load_dataset

    data = load_dataset(spec)
    if pick is not None:
        bad = [i for i in pick if not 0 <= i < len(data)]
        if bad:
            raise TinydiffError(f"--pick {bad[0]}: {spec} has images 0..{len(data) - 1}")
        return data.select(torch.tensor(pick), spec)
    return data.select(torch.arange(min(n or len(data), len(data))), spec)


def _write_table(rows: list[dict], out: Path, name: str, columns: list[str]) -> None:
    import json

    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(rows, indent=2) + "\n")
    lines = ["| " + " | ".join(columns) + " |", "|" + "---:|" * len(columns)]
    for row in rows:
        cells = [f"{v:.6g}" if isinstance(v, float) else str(v) for v in (row.get(c, "-") for c in columns)]
        lines.append("| " + " | ".join(cells) + " |")
    (out / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"table: {out / f'{name}.md'} {out / f'{name}.json'}")


def _cmd_export(args) -> None:
    from .training.checkpoint import export_model

    out = export_model(args.ckpt, args.out, ema=args.weights == "ema")
    size = sum(f.stat().st_size for f in out.iterdir()) / 2**20
    print(f"model: {out} ({size:.1f} MB; load it with --ckpt {out})")


def _cmd_invert(args) -> None:
    import numpy as np

    from .api import check_images, decode, invert
    from .model import load
    from .viz import npz_path

    out = npz_path(args.out)
    _writable_folder(out.parent)
    model = load(args.ckpt, device=args.device)
    data = _images(args.images, args.n)
    check_images(data.images, model, f"images of {args.images}")
    latents = invert(model, data.images, steps=args.steps, spacing=args.spacing, progress=True)
    back = decode(model, latents, steps=args.steps, spacing=args.spacing)
    mse = (back.cpu() - (data.images.float() / 127.5 - 1)).pow(2).mean().item()
    np.savez(out, z=latents.cpu().numpy(), steps=args.steps, spacing=args.spacing)
    print(f"latents: {out} ({len(latents)} x {tuple(latents.shape[1:])}, S = {args.steps})")
    print(f"reconstruction MSE per dimension (decoded with DDIM, S = {args.steps}): {mse:.6f}")


def _cmd_interpolate(args) -> None:
    from .api import check_images, invert
    from .experiments.latent import interpolate
    from .model import load
    from .viz import save_grid

    model = load(args.ckpt, device=args.device)
    if args.images:
        data = _images(args.images, pick=args.pick)
        z = invert(model, check_images(data.images, model, f"images of {args.images}"), steps=args.steps)
    else:
        z = torch.randn((2, *model.image_shape), generator=torch.Generator().manual_seed(args.seed))
    spherical, linear = interpolate(model, z[:1], z[1:], args.frames, args.steps)
    print(f"grid: {save_grid(torch.cat([spherical, linear]), args.out, args.frames)} (row 1: slerp, row 2: linear)")


def _cmd_merge(args) -> None:
    from .api import check_images
    from .experiments.latent import merge
    from .model import load
    from .viz import save_grid

    model = load(args.ckpt, device=args.device)
    images = check_images(_images(args.images, pick=args.pick).images, model, f"images of {args.images}")
    merged, pixel = merge(model, images[:1], images[1:], args.frames, args.steps)
    grid = save_grid(torch.cat([merged, pixel]), args.out, args.frames)
    print(f"grid: {grid} (row 1: inversion-merge, row 2: pixel mix; lambda from 0 to 1)")


def _cmd_reproduce(args) -> None:
    from .model import load
    from .viz import save_grid

    model = load(args.ckpt, device=args.device)
    out = Path(args.out)
    steps = [int(s) for s in args.steps.split(",")] if args.steps else None
    if args.experiment == "reconstruction":
        from .api import check_images
        from .experiments.latent import RECONSTRUCTION_STEPS, reconstruction
        from .metrics.reference import canonical_spec, images_of, is_dataset_spec

        spec = args.images or model.config["data"]["spec"].partition(":")[0] + ":test"
        images = check_images(images_of(spec, args.n), model, f"images of {spec}")
        rows = reconstruction(model, images, steps or RECONSTRUCTION_STEPS)
        for row in rows:
            row["data"] = canonical_spec(spec) if is_dataset_spec(spec) else spec
        _write_table(rows, out, "reconstruction", ["steps", "mse", "images", "seconds"])
    elif args.experiment == "consistency":
        from .experiments.latent import CONSISTENCY_STEPS, consistency

        steps = steps or CONSISTENCY_STEPS
        grid = save_grid(consistency(model, args.per_row, steps, args.seed), out / "consistency.png", args.per_row)
        print(f"grid: {grid} (one row per S = {', '.join(map(str, steps))}; the same x_T in every column)")
    else:  # guidance
        from .experiments.guidance import WEIGHTS, class_grid, sweep
        from .metrics.inception import InceptionFeatures

        weights = [float(w) for w in args.weights.split(",")] if args.weights else WEIGHTS
        (step,) = steps or [50]
        reference = args.ref or model.config["data"]["spec"]
        interval = args.guidance_interval
        grids = [class_grid(model, w, args.per_row, step, args.sampler, args.seed, interval) for w in weights]
        for w, grid in zip(weights, grids):
            save_grid(grid, out / f"guidance-w{w:g}.png", args.per_row)
        extractor = InceptionFeatures(args.device, log=lambda m: print(m, file=sys.stderr))
        rows = sweep(model, reference, extractor, weights, args.n, step, args.sampler, args.seed, interval, log=print)
        columns = ["w", "sampler", "nfe", "guidance_interval", "fid", "fid_floor", "kid", "accuracy", "n"]
        _write_table(rows, out, "guidance", [c for c in columns if any(c in row for row in rows)])


def _latent_parsers(sub, common) -> None:
    p = sub.add_parser("invert", parents=[common], help="DDIM inversion: images -> latents x_T (.npz)")
    p.add_argument("--ckpt", required=True)
    p.add_argument("--images", required=True, help="an .npz, an image folder or a dataset spec (mnist:test)")
    p.add_argument("--n", type=COUNT, default=None, help="the first n images (default: all)")
    p.add_argument("--steps", type=COUNT, default=50, help="trajectory length S (S network calls each way)")
    p.add_argument("--spacing", default="uniform")
    p.add_argument("--out", default="latents.npz", help="writes z (float32 [N, C, H, W]), steps, spacing")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=_cmd_invert)
    for name, helptext, func in (
        ("interpolate", "decode slerp and linear paths between two latents (a grid)", _cmd_interpolate),
        ("merge", "inversion-merge of two images beside their pixel mix (a grid)", _cmd_merge),
    ):
        p = sub.add_parser(name, parents=[common], help=helptext)
        p.add_argument("--ckpt", required=True)
        p.add_argument("--images", required=name == "merge", help="images to invert: .npz, folder or dataset spec")
        p.add_argument("--pick", type=_integer(0), nargs=2, default=[0, 1], metavar=("I", "J"), help="which two images")
        p.add_argument("--frames", type=COUNT, default=9, help="mixing weights from 0 to 1")
        p.add_argument("--steps", type=COUNT, default=50)
        p.add_argument("--seed", type=SEED, default=0, help="interpolate without --images: seed of the two x_T")
        p.add_argument("--out", default=f"{name}.png")
        p.add_argument("--device", default="cpu")
        p.set_defaults(func=func)
    p = sub.add_parser("reproduce", parents=[common], help="the seed papers' experiments: tables and figures")
    p.add_argument("experiment", choices=["reconstruction", "consistency", "guidance"])
    p.add_argument("--ckpt", required=True)
    p.add_argument("--out", default="results", help="directory for the tables (.md, .json) and figures")
    p.add_argument(
        "--n", type=COUNT, default=1000, help="images: reconstruction (test images), guidance (samples per w)"
    )
    p.add_argument("--steps", default=None, help="comma-separated S (reconstruction, consistency); guidance: one S")
    p.add_argument("--weights", default=None, help="guidance weights, comma-separated (default 0,0.5,1,2,4)")
    p.add_argument("--sampler", default="ddim", help="guidance: the sampler (its network evaluations are counted: nfe)")
    p.add_argument("--images", default=None, help="reconstruction: images (default: the training data's test split)")
    p.add_argument("--ref", default=None, help="guidance: the reference set (default: the training data)")
    p.add_argument(
        "--guidance-interval",
        type=_interval,
        default=None,
        metavar="LO,HI",
        help="guidance: guide only at noise levels sigma in (LO, HI] (as in sample and eval)",
    )
    p.add_argument("--per-row", type=COUNT, default=8, help="images per grid row")
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=_cmd_reproduce)


class _Parser(argparse.ArgumentParser):
    """argparse, with a bad option reported in one line (and where to read about it) instead of the usage."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
    parser = _Parser(prog="tinydiff", parents=[common], description=__doc__.splitlines()[0])
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
    p.add_argument("--ckpt", required=True, help="a run or checkpoint directory, or pretrained:mnist")
    p.add_argument("--ref", default=None, help="reference set (default: the checkpoint's training data)")
    p.add_argument("--sampler", default="ddim")
    p.add_argument("--steps", type=COUNT, default=50)
    _sampler_options(p)
    p.add_argument("--seed", type=SEED, default=0)
    _guidance_options(p)
    p.add_argument("--out", default=None, help="where to write the samples (.npz)")
    _metrics_options(p)
    p.set_defaults(func=_cmd_eval)
    _latent_parsers(sub, common)
    p = sub.add_parser("export", parents=[common], help="an inference-only copy of a checkpoint (config + EMA)")
    p.add_argument("--ckpt", required=True)
    p.add_argument("--out", required=True, help="directory to write config.json and ema.safetensors into")
    p.add_argument(
        "--weights", default="ema", choices=("ema", "raw"), help="the EMA (default) or the raw trained weights"
    )
    p.set_defaults(func=_cmd_export)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
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
