"""``tinydiff export``: an inference-only copy of a checkpoint (config.json and one set of weights)."""

from __future__ import annotations


def add_parser(sub, common) -> None:
    p = sub.add_parser("export", parents=[common], help="an inference-only copy of a checkpoint (config + EMA)")
    p.add_argument("--ckpt", required=True)
    p.add_argument("--out", required=True, help="directory to write config.json and ema.safetensors into")
    p.add_argument(
        "--weights", default="ema", choices=("ema", "raw"), help="the EMA (default) or the raw trained weights"
    )
    p.set_defaults(func=run)


def run(args) -> None:
    from ..checkpoint import export_model

    out = export_model(args.ckpt, args.out, ema=args.weights == "ema")
    size = sum(f.stat().st_size for f in out.iterdir()) / 2**20
    print(f"model: {out} ({size:.1f} MB; load it with --ckpt {out})")
