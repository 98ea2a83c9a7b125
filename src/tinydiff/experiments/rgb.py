"""RGB on real images: the shipped class-conditional models of the emoji (data/emoji.py; Google's
and Twitter's sets, 9 categories), ``pretrained:emoji`` at 32x32 and ``pretrained:emoji64`` at
64x64, each trained for 60 minutes of this machine (docs/RESULTS.md), scored like the MNIST models
(FID and KID against the emoji's training split, the floor beside; category accuracy by the
project's emoji classifier, metrics/classifier.py). A tryout project's Flowers102 claim ("nice
hallucinations" of RGB images from few resources) cannot be checked offline; this is the nearest
test here: real RGB images, trained and sampled on a 2-core CPU.
"""

from __future__ import annotations

import torch

from . import experiment
from .lab import Lab, Model, Pending, Report
from .summary import TRYOUT

SAMPLING = {"sampler": "dpm++2m", "steps": 20}
METRICS = ("fid", "kid", "acc")
SHIPPED = {32: "emoji", 64: "emoji64"}  # the shipped model of each size


def scored(lab: Lab, m: Model, n: int, w: float) -> dict:
    path = lab.samples(m, n, classes="data", guidance=w, **SAMPLING)
    record = lab.sampling_record(path)
    row = {"w": w, **lab.score(path, m.data, METRICS), "sampling_s_per_image": record["seconds"] / n}
    return {**row, "steps": m.train.get("steps"), "train_images_per_s": m.train.get("images_per_s")}


def _grid(lab: Lab, m: Model, name: str, w: float) -> str:
    from ..api import sample
    from ..viz import save_grid

    path = lab.figure(name)
    if not path.exists():
        if lab.cached_only:
            raise Pending("figure")
        per_class = lab.pick(8, 2)
        labels = torch.arange(m.model.num_classes).repeat_interleave(per_class)
        sampling = {**SAMPLING, "steps": lab.pick(SAMPLING["steps"], 4)}
        images = sample(m.model, len(labels), labels=labels, guidance=w, seed=lab.seed, **sampling)
        save_grid(images, path, per_class, scale=2 if m.model.image_shape[-1] <= 32 else 1)
    return path.name


@experiment("emoji", claims=("R17",))
def emoji(lab: Lab) -> Report:
    """RGB: class-conditional emoji models at 32x32 and 64x64, an hour each: FID, floor, category accuracy."""
    from ..data.emoji import CATEGORIES

    report = Report("RGB images: the emoji at 32x32 and 64x64", TRYOUT)
    n = lab.pick(lab.n, 16)
    report.summary = (
        f"The shipped class-conditional U-Nets (the categories: {', '.join(CATEGORIES)}), trained for an hour each "
        "on both emoji sets composited onto white (6,822 training images); samples in the training split's category "
        "proportions. The floor compares two disjoint draws of real images, so n can be at most half the training "
        "split (3,411)."
    )
    rows, best, models = [], {}, {size: lab.shipped(name) for size, name in SHIPPED.items()}
    for size, m in models.items():
        for w in lab.pick((0.0, 2.0), (0.0,)):
            row = lab.attempt(scored, lab, m, n, w) or {}
            rows.append({"size": f"{size}x{size}", "w": w, **row})
        for w in (0.0, 2.0):
            grid = lab.attempt(_grid, lab, m, f"{size}-w{w:g}.png", w)
            if grid:
                report.figures.append((grid, f"{size}x{size}, w = {w:g}: a row per category, in the order above"))
        if rows and "fid" in rows[-1]:
            best[size] = min((r for r in rows if r["size"] == f"{size}x{size}" and "fid" in r), key=lambda r: r["fid"])
    report.table(
        f"n = {n} samples per row ({SAMPLING['sampler']}, {SAMPLING['steps']} steps); accuracy: the emoji classifier "
        "reads the requested category; sampling seconds per image and training images/s on this machine",
        rows,
        ["size", "w", "fid", "fid_floor", "kid", "accuracy", "steps", "train_images_per_s", "sampling_s_per_image"],
    )
    if 32 in best:
        r, trained = best[32], models[32].train
        spent = f"{trained.get('steps', 0):,} steps ({trained.get('minutes', 0):g} CPU-minutes)"
        report.verdict(
            "R17",
            "Flowers102 (RGB, 128x128) gives nice hallucinations",
            f"no Flowers102 offline; on the emoji at 32x32 after {spent}: FID {r['fid']:.1f} (floor "
            f"{r['fid_floor']:.1f}) at w = {r['w']:g}, category accuracy {r['accuracy']:.0%}",
            "partly",
            "another RGB set at a quarter of the resolution, the one that can be had here; judge the grids",
        )
    return report
