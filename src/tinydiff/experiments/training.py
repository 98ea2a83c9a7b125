"""Experiments that train their own models, each on a stated budget of training minutes (the same
for every model compared): noise schedules, the MLP and no-time ablations, small data and
memorization, the loss weighting, and the per-timestep loss over training.

Each model is scored like the shipped ones: n samples (DPM-Solver++(2M), 20 steps) against the
training set, the real-vs-real floor beside. ``--quick`` trains for a few steps on the 8x8 digits.
"""

from __future__ import annotations

import json

import numpy as np
import torch

from . import experiment
from .lab import Lab, Model, Report
from .summary import BLOG, TRYOUT

SAMPLING = {"sampler": "dpm++2m", "steps": 20}


def train(lab: Lab, label: str, fraction: float = 1.0, **options) -> Model:
    """A model trained for ``fraction`` of the budget (quick: 20 steps on the digits), with AdamW as the
    papers these experiments replicate were (and the suite's cached models are)."""
    options.setdefault("optimizer", "adamw")
    if lab.quick:
        options.update(data="digits", steps=round(20 * fraction), minutes=None, batch_size=32)
        options["subset"] = min(options.get("subset") or 10**9, 300) if options.get("subset") else None
    else:
        options.setdefault("minutes", lab.budget_minutes * fraction)
    return lab.trained(label, **options)


def scored(lab: Lab, m: Model, **sampling) -> dict:
    n = lab.pick(lab.n, 16)
    path = lab.samples(m, n, **{**SAMPLING, **sampling})
    row = {"model": m.ident.split("-")[0], **lab.score(path, m.data), **m.train}
    row.pop("minutes_this_call", None)
    return row


def grid(lab: Lab, report: Report, m: Model, name: str, caption: str) -> None:
    from ..viz import save_grid

    if not lab.figure(name).exists():  # drawn once: kept, like the cells, when the cache is gone
        path = lab.samples(m, lab.pick(lab.n, 16), **SAMPLING)
        save_grid(torch.from_numpy(lab.load(path)["x"][:64]).permute(0, 3, 1, 2), lab.figure(name), 8)
    report.figures.append((f"{lab.name}-{name}", caption))


COLUMNS = ["model", "fid", "fid_floor", "kid", "steps", "images_per_s", "n"]
NOISE = 1.0  # FID differences below this, between two models trained alike and scored at n = 2,048, are noise


@experiment("schedules", claims=("R11",))
def schedules(lab: Lab) -> Report:
    """The cosine schedule against DDPM's linear one, the same training budget each, on MNIST and Fashion-MNIST."""
    report = Report("Cosine against linear noise schedule", TRYOUT)
    minutes = f"{lab.budget_minutes:g} training minutes each"
    report.summary = f"Four models, {minutes}, today's defaults otherwise (with AdamW)."
    gaps = {}
    for data in ("mnist", "fashion-mnist"):
        rows = []
        for schedule in ("cosine", "linear"):
            m = lab.attempt(train, lab, f"{data}-{schedule}", data=data, schedule=schedule)
            row = (m and lab.attempt(scored, lab, m)) or {}
            rows.append({**row, "model": schedule})
            if m and row:
                lab.attempt(grid, lab, report, m, f"{data}-{schedule}.png", f"{data}, {schedule} schedule")
        report.table(f"{data}: FID and KID of n samples (floor beside)", rows, COLUMNS)
        if all("fid" in r for r in rows):
            gaps[data] = rows[1]["fid"] - rows[0]["fid"]  # linear - cosine
    if len(gaps) == 2:
        mnist_better = gaps["mnist"] > NOISE
        fashion_same = abs(gaps["fashion-mnist"]) < max(NOISE, abs(gaps["mnist"]) / 2)
        report.verdict(
            "R11",
            "cosine beats linear on MNIST; about the same on Fashion-MNIST",
            f"linear minus cosine FID: MNIST {gaps['mnist']:+.2f}, Fashion-MNIST {gaps['fashion-mnist']:+.2f}",
            "reproduced"
            if mnist_better and fashion_same
            else "partly"
            if mnist_better or fashion_same
            else "not reproduced",
            f"{_gap_words('MNIST', gaps['mnist'])}; {_gap_words('Fashion-MNIST', gaps['fashion-mnist'])} "
            "(same budget, same network: only the schedule differs)",
        )
    return report


def _gap_words(data: str, gap: float) -> str:
    """A linear-minus-cosine FID gap in words, against the spread of one draw of n = 2,048."""
    if abs(gap) <= NOISE:
        return f"on {data} the two are within noise ({gap:+.1f} FID)"
    return f"on {data} {'cosine' if gap > 0 else 'linear'} is better by {abs(gap):.1f} FID"


@experiment("ablations", claims=("R18", "R19"))
def ablations(lab: Lab) -> Report:
    """An MLP denoiser against a smaller U-Net (equal time), and a U-Net without the time input."""
    report = Report("Ablations: an MLP denoiser, and no time input", BLOG)
    mlp = lab.attempt(train, lab, "mlp", data="mnist", net="mlp")
    unet = lab.attempt(train, lab, "mnist-cosine", data="mnist", schedule="cosine")  # the schedules experiment's
    rows = []
    for name, m in (("MLP", mlp), ("U-Net (nano)", unet)):
        row = (m and lab.attempt(scored, lab, m)) or {}
        params = m.train.get("parameters") if m else None
        rows.append({**row, "model": name, "parameters": params})
        if m and row:
            lab.attempt(
                grid, lab, report, m, f"{name.split()[0].lower()}.png", f"{name}, {lab.budget_minutes:g} minutes"
            )
    report.table("MNIST, equal training time", rows, ["model", "parameters", *COLUMNS[1:]])
    if all("fid" in r for r in rows) and rows[0]["parameters"]:
        fails = rows[0]["fid"] > 3 * rows[1]["fid"]
        report.verdict(
            "R18",
            "an MLP fails where a U-Net with fewer parameters succeeds",
            f"MLP ({rows[0]['parameters'] / 1e6:.2f}M parameters) FID {rows[0]['fid']:.1f}; "
            f"U-Net ({rows[1]['parameters'] / 1e6:.2f}M) {rows[1]['fid']:.1f}",
            "reproduced" if fails and rows[0]["parameters"] > rows[1]["parameters"] else "not reproduced",
            "the U-Net's convolutions share weights across the image; the MLP must learn every pixel's context",
        )
    subset = 1500
    rows = []
    for name, fraction, use_time in (
        ("no time, short", 0.25, False),
        ("no time, long", 1.0, False),
        ("with time, short", 0.25, True),
    ):
        m = lab.attempt(
            train, lab, f"time-{use_time}-{fraction:g}", fraction, data="mnist", subset=subset, use_time=use_time
        )
        row = (m and lab.attempt(scored, lab, m)) or {}
        rows.append({**row, "model": name})
        if m and row:
            lab.attempt(grid, lab, report, m, f"{name.replace(', ', '-').replace(' ', '')}.png", f"U-Net, {name}")
    report.table(
        f"{subset} MNIST training images; short: a quarter of the budget, long: all of it (FID against all of MNIST)",
        rows,
        COLUMNS,
    )
    if all("fid" in r for r in rows):
        short, long, timed = (r["fid"] for r in rows)
        helps_early, recovers = short > timed + NOISE, long < short * 0.7
        early = (
            "under-trained, the U-Net without t is worse than with it"
            if helps_early
            else f"under-trained, the U-Net without t does as well as with it (FID {short:.1f} against {timed:.1f}): "
            "what looks blurry is under-training, not the missing input"
        )
        later = (
            "trained longer it reads the noise level from x_t itself"
            if recovers
            else "trained longer it does not catch up"
        )
        report.verdict(
            "R19",
            "without the time input an under-trained U-Net gives blurry averages; trained longer, almost real digits",
            f"no time: FID {short:.1f} (short) -> {long:.1f} (long); with time (short): {timed:.1f}",
            "reproduced" if helps_early and recovers else "partly" if helps_early or recovers else "not reproduced",
            f"{early}; {later}",
        )
    return report


@experiment("small-data", claims=("R20",))
def small_data(lab: Lab) -> Report:
    """1,500 training images and a 32-channel U-Net: sample quality and how many samples copy a training image."""
    from ..data import load_dataset
    from ..metrics.reference import features

    subset = lab.pick(1500, 300)
    report = Report("Small data: 1,500 MNIST images and a 32-channel U-Net", BLOG)
    m = lab.attempt(train, lab, "small-data", data="mnist", preset="tiny", subset=subset)
    row = (m and lab.attempt(scored, lab, m)) or {}
    if row:
        lab.attempt(grid, lab, report, m, "samples.png", f"{subset} training images, the tiny U-Net")
    report.table(f"FID against all of MNIST (n samples), {subset} training images", [row] if row else [], COLUMNS)

    def memorization():
        data = load_dataset(lab.pick("mnist", "digits"))
        train_set = data.subset(subset, 0)  # the trainer's subset (TrainConfig.seed = 0)
        test = load_dataset(lab.pick("mnist:test", "digits")).images[: lab.pick(2048, 64)]
        fake = torch.from_numpy(lab.load(lab.samples(m, lab.pick(lab.n, 16), **SAMPLING))["x"]).permute(0, 3, 1, 2)
        flat = lambda x: x.flatten(1).float() / 255  # noqa: E731
        pixel_fake = torch.cdist(flat(fake), flat(train_set.images)).min(1).values
        pixel_test = torch.cdist(flat(test), flat(train_set.images)).min(1).values
        threshold = pixel_test.quantile(0.05).item()  # closer than 95 % of unseen test images are
        result = {
            "nn_pixel_samples": pixel_fake.median().item(),
            "nn_pixel_test": pixel_test.median().item(),
            "near_copies_pixel": (pixel_fake < threshold).float().mean().item(),
        }
        if not lab.quick:
            train_features = torch.from_numpy(lab.extractor(train_set.images, progress=True))
            test_features = torch.from_numpy(features("mnist:test", len(test), lab.extractor, log=lab.log))
            fake_features = torch.from_numpy(lab.features(lab.samples(m, lab.n, **SAMPLING)))
            inc_fake = torch.cdist(fake_features, train_features).min(1).values
            inc_test = torch.cdist(test_features, train_features).min(1).values
            result["near_copies_inception"] = (inc_fake < inc_test.quantile(0.05)).float().mean().item()
        return result

    copies = m and lab.attempt(
        lab.cell, "memorization", {"model": m.ident, "n": lab.n, "quick": lab.quick}, memorization
    )
    if copies:
        report.table(
            "Nearest training image: median pixel distance of samples and of unseen test images; near copies: "
            "samples closer to a training image than 95 % of test images are (5 % would be no memorization)",
            [copies],
            ["nn_pixel_samples", "nn_pixel_test", "near_copies_pixel", "near_copies_inception"],
        )
    if row and copies:
        epochs = (row.get("steps") or 0) * m.train["batch_size"] / subset
        good, new = row["fid"] < 30, copies["near_copies_pixel"] < 0.2
        report.verdict(
            "R20",
            "1,500 images, a 32-channel U-Net and 500 epochs give satisfying samples",
            f"FID {row['fid']:.1f} (floor {row['fid_floor']:.1f}) after {epochs:.0f} epochs; "
            f"near copies {copies['near_copies_pixel']:.1%} (pixels)",
            "reproduced" if good and new else "partly" if good or new else "not reproduced",
            "satisfying taken as FID below 30 with under 20 % near copies (unseen test images: 5 % by construction)",
        )
    return report


@experiment("weighting", claims=("R23",))
def weighting(lab: Lab) -> Report:
    """L_simple against the ELBO's weighting over t: the two weightings, and a model trained with each."""
    from ..objectives import elbo_weights
    from ..schedule import NoiseSchedule

    report = Report("L_simple against the ELBO weighting", BLOG)
    schedule = NoiseSchedule.create("linear")
    weights = elbo_weights(schedule)
    with lab.plot(report, "weights.png", "The weight each loss puts on each timestep's eps error") as (ax,):
        ax.semilogy(weights, label="ELBO (DDPM eq. 5), mean 1")
        ax.semilogy(torch.ones_like(weights), label="L_simple (DDPM eq. 14)")
        ax.set(xlabel="t", ylabel="weight on the eps-MSE", title="linear schedule, T = 1000")
        ax.legend()
    ratio = (weights[1] / weights[500]).item()  # t = 1 here is DDPM's t = 2 (0-based timesteps)
    low_share = (weights[:100].sum() / weights.sum()).item()
    rows = []
    for name in ("none", "elbo"):
        options = {"schedule": "linear", "prediction": "eps", "weighting": name, "clip_aware_loss": False}
        m = lab.attempt(train, lab, f"weighting-{name}", data="mnist", **options)
        row = (m and lab.attempt(scored, lab, m)) or {}
        rows.append({**row, "model": "L_simple" if name == "none" else "ELBO"})
        if m and row:
            caption = f"{rows[-1]['model']}, {lab.budget_minutes:g} minutes"
            lab.attempt(grid, lab, report, m, f"{name}.png", caption)
    report.table("DDPM's setting (linear schedule, eps prediction), the same budget each", rows, COLUMNS)
    fids = [r.get("fid") for r in rows]
    report.verdict(
        "R23",
        "the ELBO puts far more weight on small noise levels",
        f"weight at t = 1 is {ratio:.0f}x that at t = 500; the first 10 % of timesteps carry {low_share:.0%} of it"
        + (f"; FID L_simple {fids[0]:.1f}, ELBO {fids[1]:.1f}" if None not in fids else ""),
        "reproduced" if ratio > 10 else "not reproduced",
        "the bound's terms at small t dominate; L_simple flattens them, which samples better (DDPM Sec. 3.4)"
        + ("" if None in fids else " here too" if fids[0] < fids[1] - NOISE else "; not here (equal budgets)"),
    )
    return report


@experiment("loss-t", claims=("R24",))
def loss_t(lab: Lab) -> Report:
    """The per-timestep loss over training, from a run's log (the schedules experiment's MNIST model)."""
    from matplotlib import colormaps

    report = Report("The loss at each noise level over training", BLOG)
    m = lab.attempt(train, lab, "mnist-cosine", data="mnist", schedule="cosine")  # the schedules experiment's
    if m is None:
        return report

    def logged() -> dict:
        _ = m.model  # the network, trained first if this machine lacks the run
        log = (lab.cache / "models" / m.ident / "log.jsonl").read_text().splitlines()
        records = [json.loads(line) for line in log if '"loss_t"' in line]
        return {"steps": [r["step"] for r in records], "bands": [r["loss_t"] for r in records]}

    log = lab.attempt(lab.cell, "loss-bands", {"run": m.ident}, logged)
    if log is None:
        return report
    steps, bands = log["steps"], np.array(log["bands"])  # bands: [records, 10]
    caption = "The training loss in ten bands of timesteps over training"
    with lab.plot(report, "bands.png", caption, figsize=(6, 3.5)) as (ax,):
        colours = colormaps["viridis"](np.linspace(0, 1, bands.shape[1]))
        for k in range(bands.shape[1]):
            ax.semilogy(steps, bands[:, k], color=colours[k], label=f"t in [{k * 100}, {k * 100 + 99}]")
        ax.set(xlabel="optimizer step", ylabel="loss (weighted)", title="loss per timestep band")
        ax.legend(fontsize=6, ncol=2)
    first, last = bands[: max(1, len(bands) // 10)].mean(0), bands[-max(1, len(bands) // 10) :].mean(0)
    rows = [
        {"band": f"{k * 100}-{k * 100 + 99}", "first_10%": first[k], "last_10%": last[k]} for k in range(len(first))
    ]
    report.table("Mean loss per band in the first and last tenth of training", rows, ["band", "first_10%", "last_10%"])
    report.verdict(
        "R24",
        "loss_t: the per-timestep loss over training",
        f"plotted for {len(steps)} records; the loss falls in {int((last < first).sum())} of 10 bands",
        "reproduced" if (last < first).sum() >= 5 else "partly",
        "tinydiff logs the loss in ten timestep bands at every log step (log.jsonl's loss_t)",
    )
    return report
