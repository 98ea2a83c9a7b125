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
    p.set_defaults(func=run)


def run(args) -> None:
    from ..checkpoint import export_model

    if args.format == "diffusers":
        from ..export import to_diffusers
        from ..model import load

        out = to_diffusers(load(args.ckpt, ema=args.weights == "ema", device="cpu"), args.out)
        print(f"diffusers pipeline: {out} (DDPMPipeline.from_pretrained({str(out)!r}))")
        return
    out = export_model(args.ckpt, args.out, ema=args.weights == "ema")
    size = sum(f.stat().st_size for f in out.iterdir()) / 2**20
    print(f"model: {out} ({size:.1f} MB; load it with --ckpt {out})")
