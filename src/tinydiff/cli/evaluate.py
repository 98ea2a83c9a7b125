"""``tinydiff fid`` (FID, KID and more between two image sets) and ``tinydiff eval`` (sample a checkpoint
and score the samples)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from . import COUNT, SEED
from .sample import SAMPLER_OPTIONS, draw, guidance_options, sampler_options


def metrics_options(p) -> None:
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


def add_parser(sub, common) -> None:
    p = sub.add_parser("fid", parents=[common], help="FID (and KID, precision/recall) between two image sets")
    p.add_argument("a", help="an .npz, an image folder, or a dataset spec such as mnist:train")
    p.add_argument("b", help="the reference set; the floor is computed from two disjoint draws of it")
    metrics_options(p)
    p.set_defaults(func=run_fid)
    p = sub.add_parser("eval", parents=[common], help="sample a checkpoint and score the samples")
    p.add_argument("--ckpt", required=True, help="a run or checkpoint directory, or pretrained:mnist")
    p.add_argument("--ref", default=None, help="reference set (default: the checkpoint's training data)")
    p.add_argument("--sampler", default="ddim")
    p.add_argument("--steps", type=COUNT, default=50)
    sampler_options(p)
    p.add_argument("--seed", type=SEED, default=0)
    guidance_options(p)
    p.add_argument("--out", default=None, help="where to write the samples (.npz)")
    metrics_options(p)
    p.set_defaults(func=run_eval)


def score(args, spec_a: str, spec_b: str, sampling: dict | None = None) -> dict:
    from ..metrics.inception import InceptionFeatures
    from ..metrics.reference import score

    extractor = InceptionFeatures(args.device, args.inception_batch, log=lambda m: print(m, file=sys.stderr))
    report = score(
        spec_a, spec_b, args.n, args.metrics.split(","), extractor, args.floor, log=lambda m: print(m, file=sys.stderr)
    )
    report.update(sampling or {})
    print(json.dumps(report, indent=2))
    return report


def run_fid(args) -> None:
    score(args, args.a, args.b)


def eval_tag(args, conditional: bool) -> str:
    """The sampling choices in eval's default file name, so that draws with other choices (a second
    --seed, --spacing, --class data, ...) are written beside the first instead of over it."""
    parts = [args.sampler, str(args.steps)]
    parts += [f"{k.replace('_', '')}{getattr(args, k)}" for k in SAMPLER_OPTIONS if getattr(args, k) is not None]
    if conditional:
        parts += [f"class{args.label}"] if args.label not in (None, "all") else []
        parts += [f"w{args.guidance:g}"]
        parts += [f"gi{args.guidance_interval[0]:g}-{args.guidance_interval[1]:g}"] if args.guidance_interval else []
    parts += [f"dt{args.dynamic_threshold:g}"] if args.dynamic_threshold is not None else []
    parts += [f"seed{args.seed}"] if args.seed else []
    return "-".join(parts)


def run_eval(args) -> None:
    from ..api import class_labels
    from ..model import load
    from ..viz import save_npz

    model = load(args.ckpt, device=args.device)
    reference = args.ref or model.config["data"]["spec"]
    which = args.label or ("all" if model.num_classes else None)  # a conditional model: balanced classes
    labels, n = class_labels(model, which, args.n)
    with model.count_evaluations() as count:
        images = draw(args, model, n, labels, progress=True)
    name = f"eval-{eval_tag(args, labels is not None)}-n{n}.npz"
    if args.ckpt.startswith("pretrained:"):  # a shipped model has no run directory: use the current one
        default = Path(f"{args.ckpt.replace(':', '-')}-{name}")
    else:
        default = Path(args.ckpt) / name
    out = save_npz(images, Path(args.out) if args.out else default, labels)
    print(f"samples: {out}", file=sys.stderr)
    score(args, str(out), reference, {"nfe": count["images"] / n})  # network evaluations per sample
