"""The forward process q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I) (DDPM eq. 4) for
DDPM's linear schedule and the cosine schedule: a strip of noised digits and the curves of
alpha_bar_t and SNR(t)."""

from __future__ import annotations

import torch

from ..schedule import NoiseSchedule
from . import experiment
from .lab import Lab, Report
from .summary import REPORT

TIMES = (0, 50, 100, 250, 500, 750, 999)


def correlations(noised: list[torch.Tensor], x0: torch.Tensor) -> list[float]:
    """The correlation of each x_t's pixels with x_0's."""
    return [torch.corrcoef(torch.stack([x_t.flatten(), x0.flatten()]))[0, 1].item() for x_t in noised]


@experiment("forward", claims=("R4",))
def forward(lab: Lab) -> Report:
    """The forward process eats an image: q(x_t | x_0) at several t for both schedules, and their curves."""
    from ..metrics.reference import images_of
    from ..viz import save_grid

    x0 = images_of("mnist:test", lab.pick(256, 16)).float() / 127.5 - 1
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(lab.seed))
    report = Report("The forward process on MNIST", REPORT)
    report.summary = "MNIST test digits noised by q(x_t | x_0) with the same noise for both schedules (T = 1000)."
    rows = []
    curves = lab.plot(report, "curves.png", "alpha_bar_t and SNR(t) of both schedules", ncols=2, figsize=(9, 3.2))
    with curves as axes:
        for name in ("linear", "cosine"):
            schedule = NoiseSchedule.create(name)
            noised = [schedule.q_sample(x0, torch.full((len(x0),), t), noise) for t in TIMES]
            strip = [x_t[:6].clamp(-1, 1) for x_t in noised]

            # a cell, so that every machine shows the same figures (float32 sums differ in the last digits)
            key = {"schedule": name, "times": TIMES, "images": len(x0), "seed": lab.seed}
            found = lab.cell("forward-correlation", key, lambda noised=noised: {"corr": correlations(noised, x0)})
            for t, corr in zip(TIMES, found["corr"]):
                a = float(schedule.alpha_bar_at(t))
                rows.append({"schedule": name, "t": t, "alpha_bar": a, "snr": a / (1 - a), "corr_with_x0": corr})
            grid = torch.stack(strip, 1).flatten(0, 1)  # a row per digit, a column per t
            save_grid(grid, lab.figure(f"{name}.png"), len(TIMES))
            caption = f"{name} schedule: t = {', '.join(map(str, TIMES))} (columns)"
            report.figures.append((f"{lab.name}-{name}.png", caption))
            t = torch.arange(schedule.num_timesteps)
            axes[0].plot(t, schedule.alpha_bar_at(t), label=name)
            axes[1].semilogy(t, schedule.snr(t), label=name)
        axes[0].set(xlabel="t", ylabel="alpha_bar_t", title="signal kept")
        axes[1].set(xlabel="t", ylabel="SNR(t)", title="signal-to-noise ratio")
        for ax in axes:
            ax.legend()
    report.table(
        "alpha_bar_t, SNR(t) and the measured correlation of x_t with x_0 (pixels of the digits above)",
        rows,
        ["schedule", "t", "alpha_bar", "snr", "corr_with_x0"],
    )
    last = [r for r in rows if r["t"] == TIMES[-1]]
    report.verdict(
        "R4",
        "the forward process turns an image into noise",
        ", ".join(f"{r['schedule']}: correlation {r['corr_with_x0']:.4f} at t = {r['t']}" for r in last),
        "reproduced" if all(abs(r["corr_with_x0"]) < 0.02 for r in last) else "not reproduced",
        "at t = T - 1 nothing of the image is left in x_t (SNR 4e-5 linear, 2e-9 cosine)",
    )
    return report
