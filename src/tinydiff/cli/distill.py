"""``tinydiff distill``: progressive (or consistency) distillation of a checkpoint into a student that
samples in N steps (api.distill; the losses in training/distill.py and training/consistency.py)."""

from __future__ import annotations

from ..config import ADVERSARIAL_SHARE
from . import COUNT, device_option, finite
from .sample import guidance_interval_option


def add_parser(sub, common) -> None:
    p = sub.add_parser("distill", parents=[common], help="distil a model into one that samples in N steps")
    p.add_argument("--ckpt", default="pretrained:mnist", help="the teacher: a run, a checkpoint or pretrained:NAME")
    p.add_argument(
        "--steps", type=COUNT, required=True, help="the student's steps N (a power of two; any with --consistency)"
    )
    p.add_argument(
        "--from-steps",
        type=COUNT,
        default=64,
        help="the teacher's DDIM steps in the first round (each round halves; with --consistency, its only ones)",
    )
    p.add_argument(
        "--minutes", type=finite, default=10.0, help="training minutes per round (with --consistency: of its one run)"
    )
    p.add_argument("--lr", type=finite, default=2e-4, help="learning rate (decays linearly to 0 in each round)")
    p.add_argument(
        "--guidance", type=finite, default=0.0, help="the teacher's guidance weight w (the student needs none)"
    )
    p.add_argument(
        "--guide",
        default=None,
        metavar="CKPT",
        help="autoguide the teacher away from this weaker model of the same data (weight --guidance), as sample "
        "--guide does, instead of classifier-free guidance",
    )
    guidance_interval_option(p)
    p.add_argument(
        "--consistency",
        action="store_true",
        help="consistency distillation instead: one run of --minutes across the teacher's DDIM steps of "
        "T / --from-steps timesteps; the student samples in --steps (any number)",
    )
    p.add_argument(
        "--adversarial",
        type=finite,
        default=0.0,
        metavar="W",
        help=f"with --consistency: spend the last {ADVERSARIAL_SHARE:.0%}% of --minutes continuing the student with "
        "W times a GAN loss on its one-step images (a discriminator on the data's classifier; in OUT/adversarial)",
    )
    p.add_argument(
        "--out",
        required=True,
        help="folder: a run per round (steps-N), the last one the student; with --consistency one run (consistency)",
    )
    device_option(p)
    p.set_defaults(func=run)


def run(args) -> None:
    from ..api import distill

    ckpt = distill(
        args.ckpt,
        args.steps,
        args.out,
        from_steps=args.from_steps,
        minutes=args.minutes,
        guidance=args.guidance,
        guide=args.guide,
        guidance_interval=args.guidance_interval,
        consistency=args.consistency,
        adversarial=args.adversarial,
        progress=not args.quiet,
        lr=args.lr,
        device=args.device,
    )
    steps = f"{args.steps} step{'s' if args.steps > 1 else ''}"
    print(f"student: {ckpt} (tinydiff sample --ckpt {ckpt.parent} samples it in {steps})")
