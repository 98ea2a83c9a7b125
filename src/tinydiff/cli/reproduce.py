"""``tinydiff reproduce EXPERIMENT``: the seed papers' experiments (experiments/), as tables (.md and
.json) and figures: DDIM's reconstruction error and sample consistency over S, and the
classifier-free guidance sweep."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from . import COUNT, SEED
from .sample import guidance_interval_option


def add_parser(sub, common) -> None:
    p = sub.add_parser("reproduce", parents=[common], help="the seed papers' experiments: tables and figures")
    p.add_argument("experiment", choices=["reconstruction", "consistency", "guidance"])
    p.add_argument("--ckpt", required=True)
    p.add_argument("--out", default="results", help="directory for the tables (.md, .json) and figures")
    p.add_argument(
        "--n", type=COUNT, default=1000, help="images: reconstruction (test images), guidance (samples per w)"
    )
    p.add_argument("--steps", default=None, help="comma-separated S (reconstruction, consistency); guidance: one S")
    p.add_argument(
        "--guidance-weights", default=None, help="guidance: the weights w, comma-separated (default 0,0.5,1,2,4)"
    )
    p.add_argument("--sampler", default="ddim", help="guidance: the sampler (its network evaluations are counted: nfe)")
    p.add_argument("--images", default=None, help="reconstruction: images (default: the training data's test split)")
    p.add_argument("--ref", default=None, help="guidance: the reference set (default: the training data)")
    guidance_interval_option(p)
    p.add_argument("--per-row", type=COUNT, default=8, help="images per grid row")
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=run)


def write_table(rows: list[dict], out: Path, name: str, columns: list[str]) -> None:
    """rows as out/NAME.json and as a markdown table out/NAME.md (printed too)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(rows, indent=2) + "\n")
    lines = ["| " + " | ".join(columns) + " |", "|" + "---:|" * len(columns)]
    for row in rows:
        cells = [f"{v:.6g}" if isinstance(v, float) else str(v) for v in (row.get(c, "-") for c in columns)]
        lines.append("| " + " | ".join(cells) + " |")
    (out / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"table: {out / f'{name}.md'} {out / f'{name}.json'}")


def run(args) -> None:
    from ..model import load

    model = load(args.ckpt, device=args.device)
    steps = [int(s) for s in args.steps.split(",")] if args.steps else None
    {"reconstruction": reconstruction, "consistency": consistency, "guidance": guidance}[args.experiment](
        args, model, Path(args.out), steps
    )


def reconstruction(args, model, out: Path, steps: list[int] | None) -> None:
    from ..api import check_images
    from ..experiments.latent import RECONSTRUCTION_STEPS, reconstruction
    from ..metrics.reference import canonical_spec, images_of, is_dataset_spec

    spec = args.images or model.config["data"]["spec"].partition(":")[0] + ":test"
    images = check_images(images_of(spec, args.n), model, f"images of {spec}")
    rows = reconstruction(model, images, steps or RECONSTRUCTION_STEPS)
    for row in rows:
        row["data"] = canonical_spec(spec) if is_dataset_spec(spec) else spec
    write_table(rows, out, "reconstruction", ["steps", "mse", "images", "seconds"])


def consistency(args, model, out: Path, steps: list[int] | None) -> None:
    from ..experiments.latent import CONSISTENCY_STEPS, consistency
    from ..viz import save_grid

    steps = steps or CONSISTENCY_STEPS
    grid = save_grid(consistency(model, args.per_row, steps, args.seed), out / "consistency.png", args.per_row)
    print(f"grid: {grid} (one row per S = {', '.join(map(str, steps))}; the same x_T in every column)")


def guidance(args, model, out: Path, steps: list[int] | None) -> None:
    from ..experiments.guidance import WEIGHTS, class_grid, sweep
    from ..metrics.inception import InceptionFeatures
    from ..viz import save_grid

    weights = [float(w) for w in args.guidance_weights.split(",")] if args.guidance_weights else WEIGHTS
    (step,) = steps or [50]
    reference = args.ref or model.config["data"]["spec"]
    interval = args.guidance_interval
    grids = [class_grid(model, w, args.per_row, step, args.sampler, args.seed, interval) for w in weights]
    for w, grid in zip(weights, grids):
        save_grid(grid, out / f"guidance-w{w:g}.png", args.per_row)
    extractor = InceptionFeatures(args.device, log=lambda m: print(m, file=sys.stderr))
    rows = sweep(model, reference, extractor, weights, args.n, step, args.sampler, args.seed, interval, log=print)
    columns = ["w", "sampler", "nfe", "guidance_interval", "fid", "fid_floor", "kid", "accuracy", "n"]
    write_table(rows, out, "guidance", [c for c in columns if any(c in row for row in rows)])
