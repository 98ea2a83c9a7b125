"""Noise schedules of the forward process and timestep trajectories for fast samplers.

Timestep convention, used everywhere in tinydiff: timesteps are integer *indices*
``t = 0 .. T-1``. Index ``t`` is the papers' step ``t + 1``: ``alpha_bar[0] = 1 - beta_1`` is the
first noising step, ``alpha_bar[T-1]`` the last. The index ``-1`` stands for clean data
(``alpha_bar = 1``); samplers step to it last.

All schedule arithmetic is done in float64 (cumulative products of 1000 factors lose digits
in float32); values are cast to the data's dtype only when they touch images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

SCHEDULES = ("linear", "cosine")
SPACINGS = ("uniform", "leading", "trailing", "quadratic", "logsnr", "karras")
SIGMA_LOWEST = 0.08  # the lowest noise level the karras spacing and log_snr_steps step to (see timesteps)
KARRAS_SIGMAS = (10.0, SIGMA_LOWEST)  # the "karras" spacing's noise levels after its first step
MAX_TIMESTEPS = 100_000  # the largest T a config may give (keeps the schedule's tables small)


def linear_betas(num_timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02):
    """DDPM's schedule (Ho et al. 2020, Sec. 4): betas linear in [1e-4, 0.02] for T = 1000.

    For other T the endpoints are rescaled by 1000 / T so that alpha_bar_T stays comparable
    (improved-diffusion's convention); T = 1000 gives the paper's values exactly.
    """
    scale = 1000 / num_timesteps
    return torch.linspace(scale * beta_start, scale * beta_end, num_timesteps, dtype=torch.float64)


def cosine_betas(num_timesteps: int = 1000, s: float = 0.008, max_beta: float = 0.999):
    """Nichol & Dhariwal 2021, eq. 17: alpha_bar(t) = f(t) / f(0), f(t) = cos^2((t/T + s)/(1 + s) * pi/2),
    beta_t = 1 - alpha_bar(t) / alpha_bar(t - 1), clipped at ``max_beta`` to avoid a singularity at t = T."""
    steps = torch.arange(num_timesteps + 1, dtype=torch.float64) / num_timesteps
    f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    alpha_bar = f / f[0]
    return (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=max_beta)


def scale_snr(betas: torch.Tensor, k: float, max_beta: float = 0.999) -> torch.Tensor:
    """Betas whose SNR is k times that of ``betas`` at every timestep (log SNR shifted by log k).
    Hoogeboom et al. 2023 ("simple diffusion", Sec. 3.1) shift the cosine schedule, made for
    64x64 images, by 2 log(64 / d) for d x d images: less noise at every t for smaller ones (k = 5.2
    for 28x28). SNR' = k SNR gives alpha_bar' = k alpha_bar / (1 + (k - 1) alpha_bar); the betas are
    read back from its ratios and clipped at ``max_beta`` as in ``cosine_betas``."""
    alpha_bar = torch.cumprod(1 - betas, dim=0)
    scaled = torch.cat([torch.ones(1, dtype=torch.float64), k * alpha_bar / (1 + (k - 1) * alpha_bar)])
    return (1 - scaled[1:] / scaled[:-1]).clamp(max=max_beta)


@dataclass(frozen=True, eq=False)
class NoiseSchedule:
    """Discrete forward process q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t I).

    betas: float64 [T]. Derived: alphas = 1 - betas, alpha_bar = prod_{s<=t} alphas (DDPM eq. 4).
    """

    betas: torch.Tensor
    name: str = "custom"
    alphas: torch.Tensor = field(init=False)
    alpha_bar: torch.Tensor = field(init=False)

    def __post_init__(self):
        betas = torch.as_tensor(self.betas, dtype=torch.float64)
        if betas.ndim != 1 or not ((betas > 0) & (betas < 1)).all():
            raise ValueError("betas must be a 1-D sequence of values in (0, 1)")
        object.__setattr__(self, "betas", betas)
        object.__setattr__(self, "alphas", 1 - betas)
        object.__setattr__(self, "alpha_bar", torch.cumprod(1 - betas, dim=0))

    @classmethod
    def create(cls, name: str = "linear", num_timesteps: int = 1000, snr_scale: float = 1.0) -> NoiseSchedule:
        """A named schedule; snr_scale != 1 multiplies its SNR at every timestep (``scale_snr``)."""
        if name not in SCHEDULES:
            raise ValueError(f"unknown schedule {name!r}; choose from {', '.join(SCHEDULES)}")
        if not snr_scale > 0:
            raise ValueError(f"snr_scale must be positive, got {snr_scale}")
        betas = linear_betas(num_timesteps) if name == "linear" else cosine_betas(num_timesteps)
        return cls(betas if snr_scale == 1 else scale_snr(betas, snr_scale), name)

    @property
    def num_timesteps(self) -> int:
        return len(self.betas)

    def alpha_bar_at(self, t: torch.Tensor | int) -> torch.Tensor:
        """alpha_bar for integer timesteps t (any shape, float64); t = -1 gives 1 (clean data)."""
        t = torch.as_tensor(t, dtype=torch.long).cpu()  # the table lives on the CPU
        padded = torch.cat([torch.ones(1, dtype=torch.float64), self.alpha_bar])
        return padded[t + 1]

    def snr(self, t: torch.Tensor | int) -> torch.Tensor:
        """Signal-to-noise ratio alpha_bar / (1 - alpha_bar) (Kingma et al. 2021)."""
        alpha_bar = self.alpha_bar_at(t)
        return alpha_bar / (1 - alpha_bar)

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Sample q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I) (DDPM eq. 4).

        x0, noise: [N, ...]; t: [N] integer timesteps.
        """
        alpha_bar = broadcast(self.alpha_bar_at(t), x0)
        return alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * noise

    def log_snr(self, t: torch.Tensor | int) -> torch.Tensor:
        """lambda_t = log(alpha_t / sigma_t) in DPM-Solver's notation (Lu et al. 2022, Sec. 3.1: alpha_t^2 =
        alpha_bar_t, sigma_t^2 = 1 - alpha_bar_t), half the log of the SNR; equal to -log of ``sigma``."""
        return self.snr(t).log() / 2

    def sigma(self, t: torch.Tensor | int) -> torch.Tensor:
        """The noise level sigma_t = sqrt((1 - alpha_bar_t) / alpha_bar_t) of x_t / sqrt(alpha_bar_t)
        (Karras et al. 2022, "EDM": x_t / sqrt(alpha_bar_t) = x_0 + sigma_t eps)."""
        return self.snr(t).rsqrt()

    def start_below(self, sigma_max: float) -> int:
        """The largest timestep whose noise level sigma_t is at most ``sigma_max`` (T - 1 if every
        one is; 0 if none is). The cosine schedule's last timesteps reach sigma = 20,000 (its
        betas are clipped at 0.999), where ODE solvers that extrapolate in sigma are ill-posed."""
        below = (self.sigma(torch.arange(self.num_timesteps)) <= sigma_max).nonzero()
        return int(below.max()) if len(below) else 0

    def check_trajectory(self, num_steps: int, start: int | None) -> int:
        """T' = start + 1 (start = T - 1 if not given), the timesteps a trajectory of ``num_steps`` from
        ``start`` may use; raises ValueError where there is no such trajectory."""
        start = self.num_timesteps - 1 if start is None else start
        if not 0 <= start < self.num_timesteps:
            raise ValueError(f"the first timestep must be in [0, {self.num_timesteps - 1}], got {start}")
        if not 1 <= num_steps <= start + 1:
            raise ValueError(f"number of steps must be in [1, {start + 1}], got {num_steps}")
        return start + 1

    def timesteps(self, num_steps: int, spacing: str = "uniform", start: int | None = None) -> torch.Tensor:
        """A decreasing trajectory tau of ``num_steps`` timesteps (DDIM Sec. 4.2; S = num_steps).

        The trajectory lies in [0, start] (``start`` = T - 1 if not given): every spacing is that of a
        schedule of T' = start + 1 timesteps (below, T stands for T').

        uniform:   round(linspace(T-1, 0, S)): starts at the last step, ends at the first.
        leading:   0, c, 2c, ... with c = T // S (DDIM's code and diffusers' default).
        trailing:  round(T - k T / S) - 1 (diffusers' "trailing"): starts at T-1.
        quadratic: floor(linspace(0, sqrt(0.8 T), S)^2) (DDIM's code, used for CIFAR-10), with
                   repeated small values moved up to keep S distinct steps.
        logsnr:    uniform in lambda = log(alpha / sigma) (DPM-Solver Sec. 3.3, its advice for small
                   images): S + 1 points from lambda(T-1) to lambda(0), the last dropped as in
                   trailing, each mapped to the nearest timestep.
        karras:    T-1, then S - 1 noise levels spaced as EDM's (Karras et al. 2022, eq. 5, rho = 7)
                   sigma_i = (s_hi^(1/rho) + i / (S - 2) (s_lo^(1/rho) - s_hi^(1/rho)))^rho from
                   s_hi = 10 (or sigma_{T-1} if lower) to s_lo = 0.08, each mapped to the nearest
                   timestep. The first step, from pure noise, lands at sigma = 10, where x_t's
                   signal-to-noise ratio is 1 %; the rest crowd towards low noise, ending at
                   t = 43 of the cosine schedule (trailing's 15 steps end at 66). Both levels were
                   chosen on short MNIST runs (docs/RESULTS.md, "Autoguidance").
        Samplers step from each element to the next, and from the last to -1 (clean data).
        """
        T = self.check_trajectory(num_steps, start)
        if spacing == "uniform":
            # from the top: with S = 1 the single step is T-1 (pure noise), not 0
            steps = torch.linspace(T - 1, 0, num_steps, dtype=torch.float64).round().long()
        elif spacing == "leading":
            steps = torch.arange(num_steps, dtype=torch.long) * (T // num_steps)
        elif spacing == "trailing":
            steps = (torch.arange(T, 0, -T / num_steps, dtype=torch.float64).round() - 1).long()
        elif spacing == "quadratic":
            grid = torch.linspace(0, math.sqrt(0.8 * T), num_steps, dtype=torch.float64)
            steps = (grid**2).long()
        elif spacing == "logsnr":
            lam = self.log_snr(torch.arange(T))  # decreasing in t
            grid = torch.linspace(float(lam[-1]), float(lam[0]), num_steps + 1, dtype=torch.float64)[:-1]
            steps = nearest(lam, grid)
        elif spacing == "karras":
            sigma = self.sigma(torch.arange(T))
            hi, lo = min(KARRAS_SIGMAS[0], float(sigma[-1])), KARRAS_SIGMAS[1]
            i = torch.linspace(0, 1, num_steps - 1, dtype=torch.float64)
            levels = (hi ** (1 / 7) + i * (lo ** (1 / 7) - hi ** (1 / 7))) ** 7  # EDM eq. 5, rho = 7
            steps = torch.cat([torch.tensor([T - 1]), nearest(sigma, levels)])
        else:
            raise ValueError(f"unknown spacing {spacing!r}; choose from {', '.join(SPACINGS)}")
        return distinct(steps, T)

    def log_snr_steps(self, num_steps: int, start: int, lowest: float = SIGMA_LOWEST) -> torch.Tensor:
        """``num_steps`` timesteps from ``start`` down to the noise level sigma_t = ``lowest``, both ends
        included, evenly spaced in log-SNR (DPM-Solver Sec. 3.3), each mapped to the nearest timestep: 500,
        169, 43 from t = 500 in three on the cosine schedule of 1,000 steps. The logsnr spacing runs on to
        t = 0 instead (500, 110, 15); this one stops where karras does. Where ``start`` is already at or
        below ``lowest``, or there are fewer timesteps between the two than ``num_steps``, the trajectory
        is made distinct as every spacing is (from t = 20 in three: 20, 19, 18)."""
        T = self.check_trajectory(num_steps, start)
        lam = self.log_snr(torch.arange(T))
        end = max(-math.log(lowest), float(lam[-1]))  # lambda = -log sigma_t (see log_snr)
        return distinct(nearest(lam, torch.linspace(float(lam[-1]), end, num_steps, dtype=torch.float64)), T)


def nearest(table: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """For each of ``levels`` [S], the index of the nearest entry of ``table`` [T] (a monotone table of
    the timesteps' noise levels): the timesteps that trajectories given as noise levels take."""
    return (table[None, :] - levels[:, None]).abs().argmin(1)


def distinct(steps: torch.Tensor, T: int) -> torch.Tensor:
    """S timesteps in [0, T - 1] -> S distinct ones, decreasing. Rounding can repeat a timestep
    (DDIM's quadratic grid gives 0, 0, 1, 3, ... for S = 50); each repeat moves one step up. Repeats at
    the top (logsnr on the cosine schedule: lambda falls from -5.1 to -9.9 over its last five
    timesteps) would then pass T - 1, so the top is pushed back down; S <= T leaves room."""
    num_steps = len(steps)
    steps = steps.sort().values
    for i in range(1, num_steps):
        steps[i] = max(steps[i], steps[i - 1] + 1)
    for i in range(num_steps - 1, -1, -1):
        steps[i] = min(steps[i], T - num_steps + i)
    return steps.flip(0)


def broadcast(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Per-sample values [N] -> [N, 1, 1, ...] in ``like``'s dtype and device."""
    values = values.to(device=like.device, dtype=like.dtype)
    return values.reshape(-1, *([1] * (like.ndim - 1)))
