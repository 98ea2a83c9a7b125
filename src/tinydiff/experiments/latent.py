"""DDIM's latent space (DDIM Sec. 5.3-5.4): reconstruction error against S, sample consistency
across S, interpolation (slerp against a linear mix) and inversion-merge.

Each function takes a loaded model and returns tensors or rows of a table; the CLI
(`tinydiff reproduce reconstruction | consistency`, `tinydiff interpolate`, `tinydiff merge`)
writes them as PNG grids, JSON and markdown.
"""

from __future__ import annotations

import time

import torch

from ..api import decode, invert, sample
from ..model import DiffusionModel
from ..samplers.inversion import slerp
from . import experiment
from .lab import Lab, Report
from .summary import REPLICATION, SLIDES

RECONSTRUCTION_STEPS = (10, 20, 50, 100, 200, 500, 1000)  # DDIM Table 2's S
CONSISTENCY_STEPS = (10, 20, 50, 100, 1000)


def reconstruction(model: DiffusionModel, images: torch.Tensor, steps=RECONSTRUCTION_STEPS, log=print) -> list[dict]:
    """Per-dimension MSE of decode(invert(x)) in [-1, 1] units (DDIM Table 2's measure; theirs
    was on CIFAR-10), one row per trajectory length S; 2 S network evaluations per image."""
    x = images.float() / 127.5 - 1
    rows = []
    for s in steps:
        started = time.perf_counter()
        back = decode(model, invert(model, images, steps=s), steps=s)
        mse = (back.cpu() - x).pow(2).mean().item()
        rows.append({"steps": s, "mse": mse, "images": len(images), "seconds": round(time.perf_counter() - started, 1)})
        log(f"S = {s}: MSE {mse:.6f} ({rows[-1]['seconds']} s)")
    return rows


def consistency(model: DiffusionModel, n: int = 8, steps=CONSISTENCY_STEPS, seed: int = 0) -> torch.Tensor:
    """The same n latents x_T decoded with each S in ``steps`` (DDIM Fig. 5): one row per S. A
    conditional model is given the classes in turn (column i: class i mod num_classes)."""
    x_T = torch.randn((n, *model.image_shape), generator=torch.Generator().manual_seed(seed))
    labels = model.balanced_labels(n)
    return torch.cat([sample(model, n, sampler="ddim", steps=s, x_T=x_T, labels=labels) for s in steps])


def interpolate(model: DiffusionModel, z0, z1, frames: int = 9, steps: int = 50, clip_x0: bool = True):
    """Decoded interpolations between two latents [1, C, H, W]: (slerp row, linear-mix row)."""
    alphas = torch.linspace(0, 1, frames).tolist()
    spherical = torch.cat([slerp(z0, z1, a) for a in alphas])
    linear = torch.cat([(1 - a) * z0 + a * z1 for a in alphas])
    return tuple(decode(model, z, steps=steps, clip_x0=clip_x0) for z in (spherical, linear))


def merge(model: DiffusionModel, image_a: torch.Tensor, image_b: torch.Tensor, frames: int = 9, steps: int = 50):
    """Inversion-merge: invert two uint8 images [1, C, H, W], mix the latents with weight lambda
    (slerp), decode; beside it the naive pixel-space mix. Returns (merged row, pixel-mix row)."""
    z = invert(model, torch.cat([image_a, image_b]), steps=steps)
    merged, _ = interpolate(model, z[:1], z[1:], frames, steps, clip_x0=False)  # exact at lambda = 0, 1
    x = torch.cat([image_a, image_b]).float() / 127.5 - 1
    pixel = torch.cat([(1 - a) * x[:1] + a * x[1:] for a in torch.linspace(0, 1, frames).tolist()])
    return merged, pixel


def midpoints(model: DiffusionModel, image_a: torch.Tensor, image_b: torch.Tensor, steps: int = 50):
    """For N pairs of uint8 images: (the decoded slerp midpoint of their DDIM latents, the pixel
    mix (a + b) / 2), each [N, C, H, W] in [-1, 1]."""
    z = invert(model, torch.cat([image_a, image_b]), steps=steps)
    mid = slerp(z[: len(image_a)], z[len(image_a) :], 0.5)
    pixel = (image_a.float() + image_b.float()) / 255 - 1
    return decode(model, mid, steps=steps, clip_x0=True), pixel


# -- the experiments (tinydiff reproduce ...) ---------------------------------------------------------------

# DDIM's Table 2 (CIFAR-10 test set): per-dimension MSE of decode(invert(x)) against S.
DDIM_TABLE2 = {10: 0.014, 20: 0.0065, 50: 0.0023, 100: 0.0009, 200: 0.0004, 500: 0.0001, 1000: 0.0001}


def _classify(images: torch.Tensor) -> torch.Tensor:
    """MNIST classifier probabilities [N, 10] of images in [-1, 1] (or uint8)."""
    from ..metrics.classifier import class_probabilities, load_classifier
    from ..viz import to_uint8

    return class_probabilities(load_classifier("mnist"), to_uint8(images.cpu()))


@experiment("reconstruction", claims=("R8",))
def reconstruction_experiment(lab: Lab) -> Report:
    """DDIM's Table 2 on MNIST: reconstruction error of decode(invert(x)) against S."""
    from ..metrics.reference import images_of

    m = lab.shipped("mnist")
    n = lab.pick(100, 4)
    images = images_of("mnist:test", n)
    rows = []
    for s in lab.pick(RECONSTRUCTION_STEPS, (10, 20)):
        key = {"model": m.ident, "images": f"mnist:test[:{n}]", "steps": s}
        row = lab.attempt(lab.cell, "reconstruction", key, lambda s=s: reconstruction(m.model, images, [s], lab.log)[0])
        rows.append({"S": s, "mse": row and row["mse"], "cifar10": DDIM_TABLE2[s], "seconds": row and row["seconds"]})
    report = Report("DDIM's Table 2 on MNIST: reconstruction error", SLIDES)
    report.summary = f"{n} MNIST test images inverted with DDIM and decoded back (the null class), S steps each way."
    report.table(
        "Per-dimension MSE in [-1, 1] units (theirs: CIFAR-10 test set)", rows, ["S", "mse", "cifar10", "seconds"]
    )
    errors = [r["mse"] for r in rows]
    if None not in errors:
        falls = all(b <= a * 1.05 for a, b in zip(errors, errors[1:])) and errors[-1] < errors[0] / 5
        report.verdict(
            "R8",
            "0.014 at S = 10 to 0.0001 at S = 1000 (CIFAR-10)",
            f"{errors[0]:.4f} at S = {rows[0]['S']} to {errors[-1]:.5f} at S = {rows[-1]['S']} (MNIST, n = {n})",
            "reproduced" if falls else "not reproduced",
            "the error falls with S at every step" if falls else "the error does not fall steadily with S",
        )
    return report


@experiment("consistency", claims=("R9",))
def consistency_experiment(lab: Lab) -> Report:
    """The same x_T decoded with DDIM at each S: distance to the S = 1000 sample, label agreement."""
    from ..viz import save_grid

    m = lab.shipped("mnist")
    n = lab.pick(128, 8)
    steps = lab.pick(CONSISTENCY_STEPS, (5, 10, 20))
    paths = {s: lab.attempt(lab.samples, m, n, classes=None, sampler="ddim", steps=s) for s in steps}
    rows = []

    def compare() -> dict:
        x = {s: torch.from_numpy(lab.load(p)["x"]).permute(0, 3, 1, 2) for s, p in paths.items()}
        final = x[steps[-1]].float() / 127.5 - 1
        label = _classify(x[steps[-1]]).argmax(1)
        for s in steps:
            images = x[s].float() / 127.5 - 1
            rms = (images - final).pow(2).flatten(1).mean(1).sqrt().mean().item()
            agree = (_classify(x[s]).argmax(1) == label).float().mean().item()
            rows.append({"S": s, "rms_to_final": rms, "label_agreement": agree, "n": n})
        save_grid(torch.cat([x[s][:10] for s in steps]), lab.figure("grid.png"), 10)
        return {"rows": rows}

    if None not in paths.values():
        key = {"samples": [p.stem for p in paths.values()]}
        rows = (lab.attempt(lab.cell, "consistency", key, compare) or {}).get("rows", [])
    report = Report("Sample consistency across S (DDIM Sec. 5.3)", SLIDES)
    report.summary = (
        f"{n} latents x_T decoded by DDIM (eta = 0, the null class) with each S; compared with S = {steps[-1]}."
    )
    report.table(
        f"Distance to the S = {steps[-1]} sample (RMS per pixel in [-1, 1]; two unrelated samples are about 0.9 apart) "
        "and how often the MNIST classifier gives the same digit",
        rows,
        ["S", "rms_to_final", "label_agreement", "n"],
    )
    if rows:
        report.figures.append(
            (f"{lab.name}-grid.png", f"One row per S = {', '.join(map(str, steps))}; one x_T per column")
        )
        first = rows[0]
        report.verdict(
            "R9",
            "the same x_T gives samples with the same high-level features at every S",
            f"S = {first['S']} gives the S = {steps[-1]} digit {first['label_agreement']:.0%} of the time "
            f"(RMS {first['rms_to_final']:.2f})",
            "reproduced" if first["label_agreement"] > 0.8 else "not reproduced",
            "x_T fixes the digit; more steps add detail",
        )
    return report


@experiment("interpolation", claims=("R10",))
def interpolation_experiment(lab: Lab) -> Report:
    """Slerp between two x_T against the linear mix: classifier confidence and step sizes along the path."""
    from ..viz import save_grid

    m = lab.shipped("mnist")
    pairs, frames = lab.pick(32, 2), 11

    def measure():
        g = torch.Generator().manual_seed(lab.seed)
        z0, z1 = (torch.randn((pairs, *m.model.image_shape), generator=g) for _ in range(2))
        result, grids = {}, []
        for name, mix in (("slerp", slerp), ("linear", lambda a, b, t: (1 - t) * a + t * b)):
            path = torch.stack(
                [mix(z0, z1, t) for t in torch.linspace(0, 1, frames).tolist()], 1
            )  # [pairs, frames, ...]
            images = decode(m.model, path.flatten(0, 1), steps=50, clip_x0=True).view(
                pairs, frames, *m.model.image_shape
            )
            confidence = _classify(images.flatten(0, 1)).max(1).values.view(pairs, frames)
            step = (images[:, 1:] - images[:, :-1]).flatten(2).pow(2).mean(2).sqrt()  # RMS per step [pairs, frames - 1]
            result[name] = {
                "mid_confidence": confidence[:, frames // 2].mean().item(),
                "min_confidence": confidence.min(1).values.mean().item(),
                "mean_step": step.mean().item(),
                "max_step_over_mean": (step.max(1).values / step.mean(1)).mean().item(),
                "mid_std": images[:, frames // 2].std().item(),
            }
            grids.append(images[:4].flatten(0, 1))
        save_grid(torch.cat(grids), lab.cached_figure("paths.png", key), frames)
        return result

    key = {"model": m.ident, "pairs": pairs, "frames": frames, "seed": lab.seed}
    result = lab.attempt(lab.cell, "interpolation", key, measure)
    report = Report("Interpolation in DDIM's latent space (DDIM Sec. 5.4)", SLIDES)
    report.summary = f"{pairs} pairs of random x_T, {frames} frames each, decoded by DDIM (S = 50, the null class)."
    if result:
        rows = [{"path": k, **v} for k, v in result.items()]
        report.table(
            "Along the path: the MNIST classifier's confidence (at the midpoint, and the lowest), the RMS pixel change "
            "per frame (mean, and the largest over the mean: 1 is perfectly even) and the midpoint's pixel spread",
            rows,
            ["path", "mid_confidence", "min_confidence", "mean_step", "max_step_over_mean", "mid_std"],
        )
        if name := lab.keep(lab.cached_figure("paths.png", key), "paths.png"):
            report.figures.append((name, "Four pairs: slerp (first four rows), linear mix (last four)"))
        s, lin = result["slerp"], result["linear"]
        even, digits = s["max_step_over_mean"] < 4, s["min_confidence"] > 0.5
        versus = (
            "the linear mix of two random latents decodes about as well here"
            if lin["min_confidence"] > s["min_confidence"] - 0.05
            else "the linear mix loses confidence on the way"
        )
        report.verdict(
            "R10",
            "slerp between two x_T gives smooth transitions",
            f"slerp: midpoint confidence {s['mid_confidence']:.2f}, "
            f"largest step {s['max_step_over_mean']:.1f}x the mean; "
            f"linear mix: {lin['mid_confidence']:.2f}, {lin['max_step_over_mean']:.1f}x",
            "reproduced" if even and digits else "partly" if even or digits else "not reproduced",
            ("the decoded path moves evenly, with no jump over 4x the mean step, through images the classifier "
             "reads as digits" if even and digits else
             f"largest step under 4x the mean: {even}; the lowest confidence on the path above 0.5: {digits}")
            + f"; {versus}",
        )  # fmt: skip
    return report


@experiment("merge", claims=("R3",))
def merge_experiment(lab: Lab) -> Report:
    """Inversion-merge against the pixel mix over many pairs of a 2 and a 5 (and of any two digits)."""
    from ..metrics.reference import labelled_draw
    from ..viz import save_grid

    m = lab.shipped("mnist")
    k = lab.pick(100, 3)
    test = labelled_draw("mnist:test", 10_000 if not lab.quick else 400)

    def measure(a_class, b_class, key):
        g = torch.Generator().manual_seed(lab.seed)
        pick = lambda c: test.images[(test.labels == c).nonzero()[:, 0]]  # noqa: E731
        if a_class is None:
            order = torch.randperm(len(test.images), generator=g)[: 2 * k]
            a, b = test.images[order[:k]], test.images[order[k:]]
        else:
            a, b = pick(a_class)[:k], pick(b_class)[:k]
        latent, pixel = midpoints(m.model, a, b)
        result = {}
        for name, images in (("latent", latent), ("pixel", pixel)):
            p = _classify(images)
            top = p.max(1)
            result[name] = {
                "confident": (top.values > 0.9).float().mean().item(),
                "mean_confidence": top.values.mean().item(),
                "eights": (top.indices == 8).float().mean().item(),
                "histogram": torch.bincount(top.indices, minlength=10).tolist(),
            }
        if a_class is not None:
            save_grid(
                torch.cat([a[:10].float() / 127.5 - 1, b[:10].float() / 127.5 - 1, latent[:10], pixel[:10]]),
                lab.cached_figure("2+5.png", key),
                10,
            )
        return result

    rows, figure = [], None
    for label, pair in (("a 2 and a 5", (2, 5)), ("any two digits", (None, None))):
        key = {"model": m.ident, "pairs": k, "classes": pair, "seed": lab.seed}
        result = lab.attempt(lab.cell, "merge", key, lambda pair=pair, key=key: measure(*pair, key))
        if pair[0] is not None:
            figure = lab.keep(lab.cached_figure("2+5.png", key), "2+5.png")
        for name, value in (result or {}).items():
            rows.append({"pairs": label, "mix": name, **value, "n": k})
    report = Report("Inversion-merge: does 2 + 5 make an 8?", REPLICATION)
    report.summary = (
        f"{k} pairs: both images inverted with DDIM (S = 50, the null class), the latents' slerp midpoint decoded; "
        "beside it the pixel mix (a + b) / 2. Scored by the MNIST classifier."
    )
    report.table(
        "The classifier on the merged images: share with confidence > 0.9, mean confidence, share read as an 8, "
        "and the histogram of digits 0-9",
        rows,
        ["pairs", "mix", "confident", "mean_confidence", "eights", "histogram", "n"],
    )
    if rows and figure:
        report.figures.append((figure, "Rows: the 2s, the 5s, the latent merge, the pixel mix"))
        by = {(r["pairs"], r["mix"]): r for r in rows}
        latent, pixel = by[("a 2 and a 5", "latent")], by[("a 2 and a 5", "pixel")]
        digit = latent["confident"] > pixel["confident"] + 0.2
        report.verdict(
            "R3",
            "the latent merge of a 2 and a 5 is a digit (an 8); the pixel mix is chaos",
            f"latent merges confident {latent['confident']:.0%} (8s: {latent['eights']:.0%}); "
            f"pixel mixes {pixel['confident']:.0%} (8s: {pixel['eights']:.0%})",
            ("reproduced" if latent["eights"] >= 0.3 else "partly") if digit else "not reproduced",
            (
                "latent merges are clear digits, often 8s"
                if latent["eights"] >= 0.3
                else "latent merges are far more often a clear digit than pixel mixes, but rarely an 8"
            )
            + (
                f"; the classifier reads {pixel['eights']:.0%} of the pixel mixes as 8s (an overlaid 2 and 5 "
                "looks like an 8 to it), though with less confidence"
                if pixel["eights"] >= 0.3
                else ""
            )
            if digit
            else "latent merges are no more digit-like than pixel mixes",
        )
    return report
