"""FID against training minutes: how good a model is after 5, 10, 20, 40 or 60 minutes of this
machine, for tinydiff's recipes and for diffusers' UNet2DModel trained in the same loop. By default:
muon, `make demo`'s recipe (class-conditional, autoguided by its own model at a fifth of the run, Muon:
today's defaults); conditional, the same with AdamW and unguided; diffusers. Every recipe but muon
and wide-muon trains with AdamW, the optimizer of `tinydiff train` when their cells were computed.

Each (data, recipe, budget) is its own run of that many minutes (the learning-rate schedule follows
the run's own budget), sampled like the shipped models (DPM-Solver++(2M), 20 steps, eta 3) and
scored against the training set at n = 2,048 over three draws of samples, the real-vs-real floor
beside. Every result is a cell in benchmarks/results/cells (as `tinydiff reproduce` keeps them), the
runs and samples behind them under runs/reproduce: a cut run continues, a finished cell is never
computed twice, on this machine or another. Prints a table, writes
benchmarks/results/time_to_quality.json (its machine: the one that wrote it; each row's cpu: the
one that trained the row's run, null in cells older than that record) and draws docs/time-to-quality.png.

    .venv/bin/python benchmarks/time_to_quality.py [--data mnist fashion-mnist] [--minutes 5 10 20 40 60]
        [--recipes muon conditional diffusers] [--sigma-rel S ...] [--n 2048] [--draws 3] [--device cpu]
        [--quick] [--cached-only]

The conditional recipes are sampled with labels in the data's proportions; the autoguided ones with 15
steps, the last 5 guided with w = 1 (20 network evaluations in all), as `make demo` samples. Not run by
default: --recipes tinydiff, the defaults with AdamW and no labels; constant-lr, the same with a
constant learning rate (a lever); hflip, the conditional recipe with random horizontal flips (a lever
for Fashion-MNIST, not for digits); wide, the conditional recipe with a U-Net of twice the width (32
channels, 4x the parameters: a lever where the data has more detail than digits); wider, the same at
three times the width (48 channels); posthoc-ema, the conditional recipe keeping EMA profiles
(--posthoc-ema: the same training), scored with its EMA and, for each --sigma-rel S, with the average
made after training over S of its steps (a lever); lucidrains, lucidrains' denoising-diffusion-pytorch
as a replication of DDPM set it up (lucidrains.py; installed beside the project, not a dependency);
autoguided, muon with AdamW; wide-muon, muon with the U-Net twice as wide (32 channels).

--device cuda: train, sample and score on the GPU; its runs are kept apart from the CPU's (a minute
buys other steps there) and its rows name it.

--cached-only: the table, JSON and curve of the cells computed so far, computing nothing.

--quick: 8x8 digits, budgets of a few seconds, n = 64, one draw: a check that it runs, not a result.
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

from tables import lab_folder, over_draws, print_table, scoring_options, write_json

from tinydiff.experiments.lab import Lab, Pending, accelerator

RECIPES = {
    "tinydiff": {"amp": True},  # the defaults (with AdamW: see ours()) and bf16 autocast
    "conditional": {"amp": True, "conditional": True},  # the same with class labels
    "constant-lr": {"amp": True, "lr_schedule": "constant"},  # the same without the learning rate's decay
    "hflip": {"amp": True, "conditional": True, "hflip": True},  # conditional, with random horizontal flips
    "wide": {"amp": True, "conditional": True, "channels": 32},  # conditional, the U-Net twice as wide (tiny)
    "wider": {"amp": True, "conditional": True, "channels": 48},  # conditional, the U-Net three times as wide
    # conditional, also keeping EMA profiles (the same training; tinydiff export --sigma-rel then picks the length)
    "posthoc-ema": {"amp": True, "conditional": True, "posthoc_ema": True},
    "diffusers": {
        "amp": True,
        "net": "diffusers",
        "lr": 1e-4,
        "prediction": "eps",
        "weighting": "none",
        "clip_aware_loss": False,
    },
    # conditional, keeping its EMA weights at a fifth of the run as the guide for autoguided samples
    "autoguided": {"amp": True, "conditional": True, "guide_at": 0.2},
    "muon": {"amp": True, "conditional": True, "guide_at": 0.2, "optimizer": "muon"},  # autoguided, trained with Muon
    "wide-muon": {"amp": True, "conditional": True, "guide_at": 0.2, "optimizer": "muon", "channels": 32},  # and wide
    "lucidrains": {},  # not tinydiff's trainer: see peer()
}
# the curve's legend: what each recipe is, for a reader who has not read RECIPES
LABELS = {
    "tinydiff": "unconditional, AdamW",
    "conditional": "class-conditional, AdamW",
    "constant-lr": "constant learning rate, AdamW",
    "hflip": "class-conditional, flips, AdamW",
    "wide": "class-conditional, 2x width, AdamW",
    "wider": "class-conditional, 3x width, AdamW",
    "posthoc-ema": "post-hoc EMA, AdamW",
    "diffusers": "diffusers' UNet2DModel",
    "autoguided": "autoguided, AdamW",
    "muon": "autoguided, Muon: the default",
    "wide-muon": "autoguided, Muon, 2x width",
    "lucidrains": "lucidrains' DDPM",
}
DEFAULT = "muon"  # the recipe `tinydiff train` and make demo use
SAMPLING = {"sampler": "dpm++2m", "steps": 20, "eta": 3.0}
# a recipe with a guide: 15 steps, the last 5 (sigma_t <= 0.6) guided with w = 1: 20 evaluations, as make demo samples
AUTOGUIDED = {**SAMPLING, "steps": 15, "guidance": 1.0, "guidance_interval": (0.0, 0.6)}


def ours(labs: list[Lab], data: str, recipe: str, minutes: float, n: int, sigma_rel=None) -> tuple[dict, list[Path]]:
    """A tinydiff recipe trained for ``minutes`` and its samples, one file per draw; with ``sigma_rel``
    (a recipe that keeps EMA profiles), those of its post-hoc EMA of that length."""
    options = {"optimizer": "adamw", **RECIPES[recipe]}  # AdamW unless the recipe says (their cells' optimizer)
    m = labs[0].trained(f"ttq-{data}-{recipe}", data=data, minutes=minutes, **options)
    if sigma_rel is not None:
        m = labs[0].averaged(m, sigma_rel)
    classes = "data" if RECIPES[recipe].get("conditional") else None  # labels in the data's proportions
    sampling, guide = (AUTOGUIDED, labs[0].guide(m)) if RECIPES[recipe].get("guide_at") else (SAMPLING, None)
    return m.train, [lab.samples(m, n, classes=classes, guide=guide, **sampling) for lab in labs]


def peer(labs: list[Lab], data: str, recipe: str, minutes: float, n: int) -> tuple[dict, list[Path]]:
    """lucidrains' denoising-diffusion-pytorch trained for ``minutes`` (lucidrains.py) and its samples."""
    import lucidrains

    cache = labs[0].cache
    run = cache / "models" / f"ttq-{data}-{recipe}-{minutes:g}min"
    trained = labs[0].cell("peer-runs", {"run": run.name}, lambda: lucidrains.train(data, minutes, run))

    def draw(seed: int, path: Path) -> Path:  # trained again first on a machine without the run
        lucidrains.train(data, minutes, run)
        return lucidrains.samples(run, n, seed, path)

    paths = [cache / "samples" / f"{run.name}-n{n}-draw{lab.seed}.npz" for lab in labs]
    return trained, [lab.external(path, n, lambda s=lab.seed, p=path: draw(s, p)) for lab, path in zip(labs, paths)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", default=["mnist", "fashion-mnist"])
    # floats, as --minutes parses them: a budget of 5 and one of 5.0 would key different runs
    parser.add_argument("--minutes", nargs="+", type=float, default=[5.0, 10.0, 20.0, 40.0, 60.0])
    parser.add_argument("--recipes", nargs="+", default=["muon", "conditional", "diffusers"], choices=list(RECIPES))
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... (default: cpu)")
    parser.add_argument("--cached-only", action="store_true", help="table and curve of the cells computed so far")
    parser.add_argument(
        "--sigma-rel",
        nargs="*",
        type=float,
        default=[],
        help="with --recipes posthoc-ema: also score the post-hoc EMA of each of these relative lengths",
    )
    scoring_options(parser)
    args = parser.parse_args()
    if args.quick:
        args.data, args.minutes, args.n, args.draws = ["digits"], [0.05, 0.1], 64, 1
    root, out, cache = Path(__file__).parent, lab_folder(args), Path(args.cache)
    device = accelerator(args.device).get("accelerator", "cpu")  # the rows' and plot's
    rows = []
    for data in args.data:
        for recipe in args.recipes:
            sigmas = [None, *args.sigma_rel] if RECIPES[recipe].get("posthoc_ema") else [None]
            for minutes, sigma_rel in itertools.product(args.minutes, sigmas):
                name = recipe if sigma_rel is None else f"{recipe} {sigma_rel:g}"
                options = {"n": args.n, "device": args.device, "cached_only": args.cached_only}
                labs = [Lab("time-to-quality", out, cache, seed=d, **options) for d in range(args.draws)]
                try:
                    if recipe == "lucidrains":
                        trained, paths = peer(labs, data, recipe, minutes, args.n)
                    else:
                        trained, paths = ours(labs, data, recipe, minutes, args.n, sigma_rel)
                    scores = [lab.score(path, f"{data}:train") for lab, path in zip(labs, paths)]
                except Pending:  # --cached-only: not computed yet
                    print(f"{data} {name} {minutes:g} min: not computed yet", flush=True)
                    continue
                rows.append(
                    {
                        "data": data,
                        "recipe": name,
                        "device": device,
                        "minutes": minutes,
                        "steps": trained.get("steps"),
                        "images_per_s": trained.get("images_per_s"),  # the run's mean
                        "cpu": trained.get("cpu"),  # the CPU it trained on (None: a cell older than the field)
                        **over_draws(scores),
                        "n": args.n,
                        "draws": args.draws,
                    }
                )
                print(json.dumps(rows[-1]), flush=True)
    if not rows:
        raise SystemExit("no cell computed yet for these data, recipes and budgets: nothing written")
    print_table(
        rows,
        [("data", "data", "<15"), ("recipe", "recipe", "<18"), ("device", "device", "<12"),
         ("minutes", "minutes", ">8g"), ("steps", "steps", ">8"), ("images_per_s", "img/s", ">7.0f"),
         ("fid", "FID", ">8.2f"), ("fid_spread", "+-", ">6.2f"), ("fid_floor", "floor", ">7.2f")],
    )  # fmt: skip
    write_json("time_to_quality", args.quick, sampling=SAMPLING, autoguided_sampling=AUTOGUIDED, rows=rows)
    plot(rows, root.parent / "docs" / ("time-to-quality-quick.png" if args.quick else "time-to-quality.png"))


def plot(rows: list[dict], path: Path) -> None:
    """FID against minutes, one line per (data, recipe, device), each data's floor dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, ax = plt.subplots(figsize=(8, 5), constrained_layout=True)
    recipes = dict.fromkeys(r["recipe"] for r in rows)  # a colour per recipe, a marker per data
    others = [r for r in recipes if r != DEFAULT]
    palette = [c for i, c in enumerate(plt.get_cmap("tab10").colors) if i != 7] + ["navy"]  # not tab10 grey: the floors
    colours = {**dict(zip(others, itertools.cycle(palette))), DEFAULT: "black"}
    for data, marker in zip(dict.fromkeys(r["data"] for r in rows), itertools.cycle("osD^v")):
        for recipe, device in dict.fromkeys((r["recipe"], r.get("device", "cpu")) for r in rows):
            line = [r for r in rows if (r["data"], r["recipe"], r.get("device", "cpu")) == (data, recipe, device)]
            if line:
                default = recipe == DEFAULT  # drawn bold
                base, _, sigma_rel = recipe.partition(" ")  # "posthoc-ema 0.05": a post-hoc EMA's length
                label = LABELS.get(base, base) + (f", sigma_rel {sigma_rel}" if sigma_rel else "")
                ax.errorbar(
                    [r["minutes"] for r in line],
                    [r["fid"] for r in line],
                    yerr=[r["fid_spread"] or 0 for r in line],
                    marker=marker,
                    capsize=3,
                    color=colours[recipe],
                    linewidth=2.5 if default else 1.2,
                    linestyle="-" if device == "cpu" else ":",
                    zorder=3 if default else 2,
                    label=f"{data}, {label}" + ("" if device == "cpu" else f", {device}"),
                )
        floor = next(r["fid_floor"] for r in rows if r["data"] == data)
        ax.axhline(floor, linestyle="--", linewidth=0.8, color="gray")
    ylabel = f"FID (n = {rows[0]['n']}, dashed: floor)"
    ax.set(xlabel="training minutes (2-core CPU unless named)", ylabel=ylabel, yscale="log")
    ax.yaxis.set_minor_locator(matplotlib.ticker.LogLocator(subs=(2, 3, 5)))  # 5, 10, 20, 30, 50: legible
    for axis in (ax.yaxis.set_major_formatter, ax.yaxis.set_minor_formatter):
        axis(matplotlib.ticker.FormatStrFormatter("%g"))  # 6, 10, 20: not 6 x 10^0
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
