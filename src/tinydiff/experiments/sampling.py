"""Sampling experiments on the shipped models: DDPM against DDIM (quality and time), DDIM's Table 1
(FID over S and eta), every sampler at equal network evaluations, naive step skipping, and the
diversity of DDIM's samples against DDPM's.
"""

from __future__ import annotations

import numpy as np
import torch

from . import experiment
from .lab import Lab, Model, Report
from .summary import BLOG, REPLICATION, SLIDES, TRYOUT

# DDIM's Table 1, CIFAR-10 column: FID at S = 10, 20, 50, 100, 1000 per eta (and sigma-hat).
DDIM_TABLE1 = {
    "0": (13.36, 6.84, 4.67, 4.16, 4.04),
    "0.2": (14.04, 7.11, 4.77, 4.25, 4.09),
    "0.5": (16.66, 8.35, 5.25, 4.46, 4.29),
    "1": (41.07, 18.36, 8.01, 5.78, 4.73),
    "sigma-hat": (367.43, 133.37, 32.72, 9.99, 3.17),
}
NOISE = 0.5  # FID differences below this, at n = 2,048, are within a draw's noise


def fid_row(lab: Lab, m: Model, n: int, **sampling) -> dict:
    """FID and KID of n samples of m (floor beside), the evaluations per image and the seconds."""
    path = lab.samples(m, n, **sampling)
    row = {**lab.score(path, m.data), **lab.sampling_record(path)}
    row.pop("key", None)
    return row


def eta_options(eta: str) -> dict:
    """DDIM's options for a row of Table 1 (eta 0 is DDIM's default: no option, so that its samples
    are the same cells as every other experiment's DDIM)."""
    return {"sigma_hat": True} if eta == "sigma-hat" else {"eta": float(eta)} if float(eta) else {}


@experiment("ddpm-vs-ddim", claims=("R1", "R2"))
def ddpm_vs_ddim(lab: Lab) -> Report:
    """DDPM with all 1,000 steps against DDIM on the same model: FID, KID and sampling time."""
    m = lab.shipped("mnist")
    n, full = lab.pick(lab.n, 16), lab.pick(None, 20)  # None: DDPM's T steps
    settings = [("ddpm", full), ("ddim", lab.pick(100, 10)), ("ddim", lab.pick(50, 5)), ("ddim", lab.pick(20, 4))]
    rows, times = [], {}

    def add(label: str, model: Model, **sampling) -> float | None:
        """A row: FID of n samples and the seconds for 64 images; returns the latter."""
        row = lab.attempt(fid_row, lab, model, n, **sampling) or {}
        t64 = lab.attempt(lab.timing, model, lab.pick(64, 4), **sampling)
        rows.append({"sampling": label, **row, "seconds_64": t64, "seconds_n": row.get("seconds")})
        return t64

    for sampler, steps in settings:
        label = f"{sampler} S = {steps or m.model.schedule.num_timesteps}"
        times[(sampler, steps)] = add(label, m, sampler=sampler, steps=steps)
    summary = f"{'The model of --ckpt' if lab.ckpt else 'The shipped MNIST model'}, labels in MNIST's proportions"
    if not lab.ckpt:  # where DDIM's trade of steps for quality continues: the student distilled from the model
        add("distilled student S = 4", lab.shipped("mnist-4step"))
        summary += (
            "; the last row its progressive-distillation student (`pretrained:mnist-4step`, DDIM over 4 trailing steps)"
        )
    report = Report("DDPM against DDIM on MNIST", REPLICATION, summary + ".")
    columns = ["sampling", "nfe", "fid", "fid_floor", "kid", "kid_std", "n", "seconds_64", "seconds_n"]
    report.table(
        "FID and time (seconds_64: 64 images in one batch, measured alone; seconds_n: the n scored images)",
        rows,
        columns,
    )
    ddpm, ddim50 = rows[0], rows[2]
    if ddpm.get("fid") is not None and ddim50.get("fid") is not None:
        gap = ddim50["fid"] - ddpm["fid"]
        verdict = "reproduced" if gap > NOISE else "not reproduced"
        why = f"DDIM-{settings[2][1]} is {gap:+.2f} FID from DDPM-1000 (noise about {NOISE})"
        report.verdict(
            "R1",
            "DDPM 9.32, DDIM 11.61 (n = 2,048)",
            f"DDPM {ddpm['fid']:.2f}, DDIM {ddim50['fid']:.2f} (n = {n})",
            verdict,
            why,
        )
    slow, fast = times[settings[0][:2]], times[settings[2][:2]]
    if slow and fast:
        ratio = slow / fast
        report.verdict(
            "R2",
            "1.5 s against 43 s for 64 images on a GPU (29x)",
            f"{fast:.1f} s against {slow:.1f} s for 64 images on a CPU ({ratio:.0f}x)",
            "reproduced" if ratio > 10 else "not reproduced",
            "sampling time follows the number of network evaluations (1,000 against 50)",
        )
    return report


@experiment("ddim-table", claims=("R6", "R7"))
def ddim_table(lab: Lab) -> Report:
    """DDIM's Table 1 on MNIST and Fashion-MNIST: FID over the trajectory length S and eta."""
    report = Report("DDIM's Table 1 on MNIST and Fashion-MNIST", SLIDES)
    steps = lab.pick((10, 20, 50, 100, 1000), (4, 8))
    report.summary = (
        "FID over S and eta with the shipped models (labels in the data's proportions); S = 1000 with n / 4 samples."
    )
    grid = {"mnist": lab.pick(list(DDIM_TABLE1), ["0", "sigma-hat"]), "fashion-mnist": lab.pick(["0", "1"], ["0"])}
    models = {data: lab.shipped(data) for data in grid}
    # the timings first: a few seconds each, taken before anything else may share the machine
    timing = [
        {"S": s, "seconds_64": lab.attempt(lab.timing, models["mnist"], lab.pick(64, 4), sampler="ddim", steps=s)}
        for s in steps
    ]
    tables = {}
    for data, etas in grid.items():
        m = models[data]
        rows = []
        for eta in etas:
            row = {"eta": eta}
            for s in steps:
                n = lab.pick(lab.n if s < 1000 else lab.n // 4, 16)
                cell = lab.attempt(fid_row, lab, m, n, sampler="ddim", steps=s, **eta_options(eta))
                row[f"S={s}"] = cell and cell["fid"]
                row[f"floor S={s}"] = cell and cell["fid_floor"]
                row[f"n S={s}"] = cell and cell["n"]
            rows.append(row)
        tables[data] = rows
        report.table(
            f"{data}: FID (n = {lab.pick(lab.n, 16)}; S = 1000: n = {lab.pick(lab.n // 4, 16)})",
            rows,
            ["eta", *[f"S={s}" for s in steps]],
        )
        floors = {f"S={s}": next((r[f"floor S={s}"] for r in rows if r[f"floor S={s}"]), None) for s in steps}
        report.table(
            f"{data}: the real-vs-real floor at each column's n", [{"eta": "floor", **floors}], ["eta", *floors]
        )
    seed_rows = [
        {"eta": eta, **{f"S={s}": v for s, v in zip((10, 20, 50, 100, 1000), values)}}
        for eta, values in DDIM_TABLE1.items()
    ]
    report.table(
        "The paper's Table 1, CIFAR-10 (for comparison)",
        seed_rows,
        ["eta", *[f"S={s}" for s in (10, 20, 50, 100, 1000)]],
    )
    _table1_verdicts(report, tables, steps)
    report.table("Time to sample 64 images with DDIM (one batch, measured alone)", timing, ["S", "seconds_64"])
    if all(r["seconds_64"] for r in timing):
        s, t = np.array([r["S"] for r in timing], float), np.array([r["seconds_64"] for r in timing])
        slope, intercept = np.polyfit(s, t, 1)
        r2 = 1 - ((t - (slope * s + intercept)) ** 2).sum() / ((t - t.mean()) ** 2).sum()
        report.verdict(
            "R7",
            "time linear in S (hours for 50k images on a GPU)",
            f"{slope * 1000:.0f} ms per step for 64 images (intercept {intercept:.2f} s); R^2 = {r2:.4f}",
            "reproduced" if r2 > 0.99 else "not reproduced",
            "each step is one network evaluation of the same cost",
        )
    return report


def _eta0_and_falling(rows: list[dict], steps) -> tuple[bool, dict[str, bool], list[str]]:
    """Whether eta = 0 is best at the smallest S (within a draw's noise), whether each row's FID falls
    with S, and the columns that judgement compares (those of the smallest S's n)."""
    by_eta = {r["eta"]: r for r in rows}
    small = f"S={steps[0]}"
    # FID falls with S: the S = 10 score above the best of the larger S, among the columns of S = 10's n
    # (S = 1000 has n / 4, whose FID sits higher by the smaller n alone: its floor is 18.4, not 5.85)
    same_n = [f"S={s}" for s in steps if all(r[f"n S={s}"] == r[f"n S={steps[0]}"] for r in rows)][1:]
    improves = {eta: r[small] > min(r[c] for c in same_n) + NOISE for eta, r in by_eta.items()}
    eta0_best = by_eta["0"][small] <= min(r[small] for r in rows) + NOISE  # a tie within the noise holds
    return eta0_best, improves, same_n


def _table1_verdicts(report: Report, tables: dict[str, list[dict]], steps) -> None:
    """R6 over MNIST's full table; Fashion-MNIST's rows (eta 0 and 1) check the two orderings they can."""
    rows = tables["mnist"]
    by_eta = {r["eta"]: r for r in rows}
    small, large = f"S={steps[0]}", f"S={steps[-1]}"
    if any(r[f"S={s}"] is None for table in tables.values() for r in table for s in steps):
        return
    best_small = min(by_eta, key=lambda e: by_eta[e][small])
    worst_small = max(by_eta, key=lambda e: by_eta[e][small])
    best_large = min(by_eta, key=lambda e: by_eta[e][large])
    eta0_best, improves, same_n = _eta0_and_falling(rows, steps)
    hat_best = by_eta["sigma-hat"][large] <= min(r[large] for r in rows) + 2 * NOISE  # n / 4: twice the noise
    orderings = {
        f"eta = 0 best at {small}": eta0_best,
        f"FID falls with S (to {same_n[-1]}) in every row": all(improves.values()),
        f"sigma-hat worst at {small}": worst_small == "sigma-hat",
        f"sigma-hat best at {large}": hat_best,
    }
    ours = (
        f"best at {small}: eta = {best_small}; FID falls with S (to {same_n[-1]}, at equal n) in "
        f"{sum(improves.values())} of {len(improves)} rows; "
        f"worst at {small}: eta = {worst_small}; best at {large}: eta = {best_large}"
        + ("" if best_large == "sigma-hat" or not hat_best else f" (sigma-hat within {2 * NOISE:g} FID of it)")
    )
    f_eta0, f_improves, _ = _eta0_and_falling(tables["fashion-mnist"], steps)
    orderings[f"Fashion-MNIST: eta = 0 best at {small}"] = f_eta0
    orderings["Fashion-MNIST: FID falls with S in every row"] = all(f_improves.values())
    ours += f"; Fashion-MNIST: eta = 0 {'best' if f_eta0 else 'not best'} at {small}, FID falls with S in "
    ours += f"{sum(f_improves.values())} of {len(f_improves)} rows"
    failed = [name for name, ok in orderings.items() if not ok]
    verdict = "reproduced" if not failed else "partly" if len(failed) <= len(orderings) // 2 else "not reproduced"
    why = f"{len(orderings) - len(failed)} of {len(orderings)} orderings hold; not: {', '.join(failed)}"
    report.verdict(
        "R6",
        "eta = 0 best at small S; FID falls with S; sigma-hat worst at small S, best at S = 1000 (CIFAR-10)",
        ours,
        verdict,
        why if failed else f"all {len(orderings)} orderings hold (MNIST's four, Fashion-MNIST's two)",
    )


@experiment("samplers", claims=("R12",))
def samplers(lab: Lab) -> Report:
    """Every sampler at equal network evaluations (10, 20, 50): FID and time."""
    from ..samplers import SAMPLERS

    m = lab.shipped("mnist")
    n = lab.pick(lab.n, 16)
    rows = []
    for name, entry in SAMPLERS.items():
        for nfe in lab.pick((10, 20, 50), (4,)):
            s = entry.steps_for(nfe)
            row = lab.attempt(fid_row, lab, m, n, sampler=name, steps=s) or {}
            t64 = lab.attempt(lab.timing, m, lab.pick(64, 4), sampler=name, steps=s)
            rows.append({"sampler": name, "budget": nfe, "S": s, **row, "seconds_64": t64})
    report = Report("Every sampler at equal network evaluations", TRYOUT, "The shipped MNIST model; n samples each.")
    columns = ["sampler", "budget", "S", "nfe", "fid", "fid_floor", "kid", "n", "seconds_64"]
    report.table("FID by sampler and network evaluations (budget; nfe: counted)", rows, columns)
    scored = [r for r in rows if r.get("fid") is not None and r.get("seconds_64") is not None]
    if len(scored) == len(rows):
        by = {(r["sampler"], r["budget"]): r for r in rows}
        top = max(r["budget"] for r in rows)
        named = ("ddpm", "ddim", "pndm")  # the samplers the claim names
        spread = max(by[(k, top)]["fid"] for k in named) - min(by[(k, top)]["fid"] for k in named)
        per_eval = {k: by[(k, top)]["seconds_64"] / by[(k, top)]["nfe"] for k in named}
        low = min(r["budget"] for r in rows)
        ours = "; ".join(
            f"at {e:g} evaluations " + ", ".join(f"{k} {by[(k, e)]['fid']:.2f}" for k in named) for e in (low, top)
        )
        cost = max(per_eval.values()) / min(per_eval.values())
        verdict = "partly" if spread < 3 and cost < 1.3 else "not reproduced"
        why = (
            f"quality within {spread:.1f} FID at {top:g} evaluations; the dearest sampler's evaluation costs "
            f"{cost:.2f}x the cheapest's, so speed follows the steps: DDPM is slow over its 1,000 "
            f"steps, but respaced to {top:g} it scores {by[('ddpm', top)]['fid']:.2f} against DDIM's "
            f"{by[('ddim', top)]['fid']:.2f}"
        )
        report.verdict(
            "R12", "DDPM, DDIM and PNDM of about the same quality; DDIM fastest, DDPM slowest", ours, verdict, why
        )
    return report


@experiment("skipping", claims=("R21",))
def skipping(lab: Lab) -> Report:
    """Naive DDPM step skipping (the original betas with a stride) against DDIM with few steps."""
    from ..metrics.classifier import class_probabilities, load_classifier
    from ..viz import save_grid

    m = lab.shipped("mnist")
    n = lab.pick(lab.n, 16)
    settings = [("ddpm naive", "ddpm", {"respace": False}), ("ddpm respaced", "ddpm", {}), ("ddim", "ddim", {})]
    classifier = load_classifier("mnist")
    rows, grids = [], []
    for s in lab.pick((5, 10), (5,)):
        for label, sampler, options in settings:
            row = lab.attempt(fid_row, lab, m, n, sampler=sampler, steps=s, **options) or {}
            if row:
                path = lab.samples(m, n, sampler=sampler, steps=s, **options)

                def first(path=path) -> torch.Tensor:  # the first 64 images, uint8 NCHW
                    return torch.from_numpy(lab.load(path)["x"][:64]).permute(0, 3, 1, 2)

                def confidence(first=first) -> dict:
                    return {"confidence": class_probabilities(classifier, first()).max(1).values.mean().item()}

                row.update(lab.attempt(lab.cell, "confidence", {"samples": path.stem}, confidence) or {})
                if s == 5:
                    grids.append(first)
            rows.append({"sampling": label, "S": s, **row})
    report = Report("Naive DDPM step skipping against DDIM", BLOG)
    report.table(
        "FID and the MNIST classifier's mean confidence (first 64 images)",
        rows,
        ["sampling", "S", "fid", "fid_floor", "kid", "confidence", "n"],
    )
    if len(grids) == 3:
        if not lab.figure("S5.png").exists():
            lab.attempt(lambda: save_grid(torch.cat([first()[:16] for first in grids]), lab.figure("S5.png"), 16))
    if lab.figure("S5.png").exists():
        report.figures.append(
            (f"{lab.name}-S5.png", "S = 5: naive skipping (top), respaced DDPM (middle), DDIM (bottom)")
        )
    by = {(r["sampling"], r["S"]): r for r in rows}
    if all(r.get("fid") is not None for r in rows) and (("ddim", 5) in by):
        naive, ddim = by[("ddpm naive", 5)]["fid"], by[("ddim", 5)]["fid"]
        report.verdict(
            "R21",
            "naive skipping disappointing; DDIM with S = 5 works",
            f"S = 5: naive skipping FID {naive:.1f}, DDIM {ddim:.1f}",
            "reproduced" if naive > 2 * ddim else "not reproduced",
            "skipping with the original betas removes a fraction of the noise of each skipped step and leaves the rest",
        )
    return report


@experiment("diversity", claims=("R22",))
def diversity(lab: Lab) -> Report:
    """Diversity of DDIM's samples against DDPM's: recall, pairwise distance, class entropy."""
    from ..metrics.classifier import class_probabilities, load_classifier
    from ..metrics.precision_recall import precision_recall
    from ..metrics.reference import features

    m = lab.shipped("mnist")
    n = lab.pick(lab.n, 16)
    classifier = load_classifier("mnist")
    rows = []
    for sampler, steps, options in [
        ("ddpm", lab.pick(None, 20), {}),
        ("ddim", lab.pick(50, 5), {}),
        ("ddim", lab.pick(50, 5), {"eta": 1.0}),
    ]:

        def measure(sampler=sampler, steps=steps, options=options):
            path = lab.samples(m, n, sampler=sampler, steps=steps, **options)
            x = torch.from_numpy(lab.load(path)["x"]).permute(0, 3, 1, 2)
            flat = x.reshape(len(x), -1).float() / 255
            pairwise = torch.pdist(flat[:1000]).mean().item()
            p = class_probabilities(classifier, x).argmax(1).bincount(minlength=10).double() / len(x)
            entropy = -(p[p > 0] * p[p > 0].log()).sum().item()
            real = features(m.data, n, lab.extractor, log=lab.log)  # cached by the scores
            precision, recall = precision_recall(real, lab.features(path))
            return {"pairwise_l2": pairwise, "class_entropy": entropy, "precision": precision, "recall": recall}

        name = f"{sampler} S = {steps or 1000}" + (" eta 1" if options else "")
        key = {"model": m.ident, "n": n, "sampler": name, "seed": lab.seed}
        rows.append({"sampling": name, **(lab.attempt(lab.cell, "diversity", key, measure) or {})})
    report = Report("Diversity of DDIM samples against DDPM samples", BLOG)
    report.table(
        f"Diversity of n = {n} samples (pairwise_l2: mean pixel distance over the first 1,000; "
        "class_entropy in nats, ln 10 = 2.303 is uniform)",
        rows,
        ["sampling", "precision", "recall", "pairwise_l2", "class_entropy"],
    )
    if all(r.get("recall") is not None for r in rows):
        ddpm, ddim = rows[0], rows[1]
        less = ddim["recall"] < ddpm["recall"] - 0.01 and ddim["pairwise_l2"] < ddpm["pairwise_l2"]
        report.verdict(
            "R22",
            "DDIM samples less varied than DDPM's",
            f"recall DDIM {ddim['recall']:.3f} against DDPM {ddpm['recall']:.3f}; "
            f"pairwise distance {ddim['pairwise_l2']:.2f} against {ddpm['pairwise_l2']:.2f}",
            "reproduced" if less else "not reproduced",
            "both measures lower for DDIM" if less else "DDIM's samples are as varied as DDPM's by these measures",
        )
    return report
