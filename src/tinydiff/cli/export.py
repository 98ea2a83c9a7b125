"""``tinydiff export``: an inference-only copy of a checkpoint (config.json and one set of weights), or
with ``--format diffusers`` a folder that diffusers' DDPMPipeline.from_pretrained loads."""

from __future__ import annotations


def add_parser(sub, common) -> None:
    p = sub.add_parser("export", parents=[common], help="an inference-only copy of a checkpoint, or a diffusers one")
    p.add_argument("--ckpt", required=True)
    p.add_argument("--out", required=True, help="the folder to write")
    p.add_argument(
        "--format",
        default="tinydiff",
        choices=("tinydiff", "diffusers"),
        help="tinydiff: config.json and ema.safetensors (load with --ckpt); diffusers: a DDPMPipeline folder "
        "(unet/, scheduler/), for models trained with --net diffusers",
    )
    p.add_argument(
        "--weights", default="ema", choices=("ema", "raw"), help="the EMA (default) or the raw trained weights"
    )
    p.add_argument(
        "--sigma-rel",
        type=float,
        help="the EMA made after training with this relative length (EDM2's sigma_rel, e.g. 0.05 to 0.2), "
        "from the EMA profiles of a run trained with --posthoc-ema",
    )
    p.set_defaults(func=run)


def run(args) -> None:
    from ..checkpoint import export_model
    from ..errors import TinydiffError

    if args.sigma_rel is not None and (args.weights == "raw" or args.format == "diffusers"):
        raise TinydiffError("--sigma-rel makes its own average of the weights: leave out --weights raw and --format")
    if args.format == "diffusers":
        from ..export import to_diffusers
        from ..model import load

        out = to_diffusers(load(args.ckpt, ema=args.weights == "ema", device="cpu"), args.out)
        print(f"diffusers pipeline: {out} (DDPMPipeline.from_pretrained({str(out)!r}))")
        return
    averaged = None
    if args.sigma_rel is not None:
        from ..training.posthoc import reconstruct

        weights, step = reconstruct(args.ckpt, args.sigma_rel)
        averaged = (weights, {"posthoc_ema": {"sigma_rel": args.sigma_rel, "step": step}})
    out = export_model(args.ckpt, args.out, ema=args.weights == "ema", averaged=averaged)
    size = sum(f.stat().st_size for f in out.iterdir()) / 2**20
    print(f"model: {out} ({size:.1f} MB; load it with --ckpt {out})")
