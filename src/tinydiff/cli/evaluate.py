"""``tinydiff fid`` (FID, KID and more between two image sets) and ``tinydiff eval`` (sample a checkpoint
and score the samples)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from . import COUNT, SEED, device_option, output_options, output_path
from .sample import draw, guidance_options, refine_options, sampler_options, sampling_tag


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
    p.add_argument(
        "--draws",
        type=COUNT,
        default=1,
        help="score K disjoint draws of n images and report each metric's mean and spread over them "
        "(one draw of 2,048 moves FID by about 0.1)",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON instead of a table")
    p.add_argument("--inception-batch", type=COUNT, default=None, help="default: 4 on CPU, 200 on GPU")
    device_option(p)


def add_parser(sub, common) -> None:
    p = sub.add_parser("fid", parents=[common], help="FID (and KID, precision/recall) between two image sets")
    p.add_argument("a", help="an .npz, an image folder, or a dataset spec such as mnist:train")
    p.add_argument("b", help="the reference set; the floor is computed from two disjoint draws of it")
    metrics_options(p)
    p.set_defaults(func=run_fid)
    p = sub.add_parser("eval", parents=[common], help="sample a checkpoint and score the samples")
    p.add_argument("--ckpt", required=True, help="a run or checkpoint directory, or pretrained:mnist")
    p.add_argument("--ref", default=None, help="reference set (default: the checkpoint's training data)")
    p.add_argument("--sampler", default=None, help="default: the checkpoint's own (a distilled student's), else ddim")
    p.add_argument("--steps", type=COUNT, default=None, help="default: the checkpoint's own, else the sampler's")
    sampler_options(p)
    p.add_argument("--seed", type=SEED, default=0)
    guidance_options(p)
    refine_options(p)
    output_options(p, "the samples (.npz)", "in the run's folder; a shipped model's are kept only with --out")
    metrics_options(p)
    p.set_defaults(func=run_eval)


def score(args, spec_a: str, spec_b: str, sampling: dict | None = None) -> dict:
    from ..files import note
    from ..metrics.inception import InceptionFeatures
    from ..metrics.reference import score

    log = (lambda m: None) if args.quiet else note
    extractor = InceptionFeatures(args.device, args.inception_batch, log=log)
    report = score(
        spec_a, spec_b, args.n, args.metrics.split(","), extractor, args.floor, log, args.draws, not args.quiet
    )
    report.update(sampling or {})
    print(json.dumps(report, indent=2) if args.json else table(report))
    return report


NAMES = {"fid": "FID", "kid": "KID", "accuracy": "class accuracy"}


def table(report: dict) -> str:
    """The report for a person: one row per metric with its spread and the real-vs-real floor."""
    draws = report.get("draws", 1)
    lines = [
        f"{report['a']} against {report['b']}: n = {report['n']:,} per set" + (f", {draws} draws" if draws > 1 else "")
    ]
    lines += [f"{'metric':<16}{'score':>12}  {'spread':<24}{'floor (real vs real)':>22}"]
    for key, value in report.items():
        if not isinstance(value, float) or key.endswith(("_std", "_spread", "_floor", "_real")) or key == "nfe":
            continue
        if f"{key}_spread" in report:
            spread = f"+- {report[f'{key}_spread']:.3g} over draws"
        elif f"{key}_std" in report:
            spread = f"+- {report[f'{key}_std']:.3g} over subsets"
        else:
            spread = ""
        floor = report.get(f"{key}_floor", report.get(f"{key}_real"))
        shown = "-" if floor is None else f"{floor:.4g}"
        lines.append(f"{NAMES.get(key, key):<16}{value:>12.4g}  {spread:<24}{shown:>22}")
    if "floor" in report:
        lines.append(f"floor: {report['floor']}")
    if "nfe" in report:
        lines.append(f"network evaluations per sample: {report['nfe']:g}")
    return "\n".join(lines)


def run_fid(args) -> None:
    score(args, args.a, args.b)


def run_eval(args) -> None:
    import tempfile

    from ..api import class_labels, sampling_recipe
    from ..model import load
    from ..viz import save_npz

    model = load(args.ckpt, device=args.device)
    args.sampler = args.sampler or sampling_recipe(model)["sampler"]  # for the file name
    reference = args.ref or model.config["data"]["spec"]
    labels, n = class_labels(model, args.label, args.n * args.draws, prompts=args.prompt)
    name = f"eval-{sampling_tag(args, labels is not None)}-n{n}.npz"
    with tempfile.TemporaryDirectory(prefix="tinydiff-eval-") as scratch:
        # a run keeps its samples in its folder; a shipped model's go away after scoring unless --out
        folder = Path(scratch) if args.ckpt.startswith("pretrained:") else Path(args.ckpt)
        out = output_path(args.out, str(folder / name), args.overwrite)
        guide = load(args.guide, device=model.device) if args.guide else None
        refine = load(args.refine, device=model.device) if args.refine else None
        with model.count_evaluations(guide, refine) as count:
            images = draw(args, model, n, labels, guide=guide, refine=refine, progress=not args.quiet)
        save_npz(images, out, labels)
        if args.out or folder != Path(scratch):
            print(f"samples: {out}", file=sys.stderr)
        score(args, str(out), reference, {"nfe": count["images"] / n})  # evaluations per sample, the guide's too
