"""Classifier-free guidance sweep (seeds 001, 003, 004): FID, KID and conditional accuracy per
guidance weight w, and one grid (a row per class) per w.

Samples are class-balanced (label i % num_classes); conditional accuracy is the fraction the
project's own classifier for the dataset (metrics/classifier.py) assigns to the requested class.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from ..api import sample
from ..metrics.classifier import weights_path
from ..metrics.reference import score
from ..model import DiffusionModel
from ..viz import save_npz

WEIGHTS = (0.0, 0.5, 1.0, 2.0, 4.0)


def _guidance(w: float, interval: tuple[float, float] | None) -> dict:
    """sample()'s guidance options for weight w: w = 0 is the conditional model, so without the interval."""
    return {"guidance": w, "guidance_interval": interval if w else None}


def class_grid(
    model: DiffusionModel,
    w: float,
    per_class: int = 8,
    steps: int = 50,
    sampler: str = "ddim",
    seed: int = 0,
    interval: tuple[float, float] | None = None,
) -> torch.Tensor:
    """per_class samples of every class in order (a row per class when nrow = per_class), guided
    with weight w (only at the noise levels in ``interval`` if one is given)."""
    labels = torch.arange(model.num_classes).repeat_interleave(per_class)
    return sample(model, len(labels), sampler=sampler, steps=steps, seed=seed, labels=labels, **_guidance(w, interval))


def sweep(
    model: DiffusionModel,
    reference: str,
    extractor,
    weights=WEIGHTS,
    n: int = 2048,
    steps: int = 50,
    sampler: str = "ddim",
    seed: int = 0,
    interval: tuple[float, float] | None = None,
    log=print,
) -> list[dict]:
    """One row per w: fid, kid, accuracy (and the floors) of n balanced samples against reference,
    and nfe, the network evaluations per sample (counted). ``interval`` (sigma_lo, sigma_hi) limits
    guidance to those noise levels (denoiser.py); w = 0 is then sampled without it."""
    if not model.num_classes:
        raise ValueError("the guidance sweep needs a class-conditional model (train with --conditional)")
    labels = model.balanced_labels(n)
    metrics = ["fid", "kid"]
    if weights_path(str(reference).partition(":")[0]).exists():
        metrics.append("acc")
    else:
        log(f"no classifier for {reference}: conditional accuracy is not computed")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for w in weights:
            started = time.perf_counter()
            options = {"labels": labels, "progress": True, **_guidance(w, interval)}
            with model.count_evaluations() as count:
                images = sample(model, n, sampler=sampler, steps=steps, seed=seed, **options)
            path = save_npz(images, Path(tmp) / f"w{w:g}.npz", labels)
            report = score(str(path), reference, n, metrics, extractor, floor=True, log=log)
            row = {"w": w, "sampler": sampler, "steps": steps, "nfe": count["images"] / n}
            row.update({"guidance_interval": list(interval)} if interval and w else {})
            row.update({k: v for k, v in report.items() if k not in ("a", "b")})
            row["seconds"] = round(time.perf_counter() - started, 1)
            rows.append(row)
            accuracy = f", accuracy {row['accuracy']:.4f}" if "accuracy" in row else ""
            log(f"w = {w:g}: FID {row['fid']:.2f} (floor {row['fid_floor']:.2f}){accuracy}")
    return rows
