"""The training loss: targets (eps / x0 / v), loss weighting, timestep sampling, label dropout.

With a = alpha_bar_t and x_t = sqrt(a) x0 + sqrt(1 - a) eps (DDPM eq. 4), a network may predict
  eps (DDPM's L_simple, eq. 14), x0, or v = sqrt(a) eps - sqrt(1 - a) x0 (Salimans & Ho 2022).
How a prediction becomes the ``(eps, x0)`` pair that samplers use is denoiser.py's part.

Self-conditioning (Chen et al. 2022, "Analog Bits", Sec. 3.2): the network also takes an estimate
of x0, ``net(x_t, t, y, x_self=...)``. In training, for half of the batches, a first pass without
gradients gives that estimate from zeros, and the loss is taken on a second pass fed with it; the
other half sees zeros (sampling: denoiser.SelfCondition).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .denoiser import SelfCondition, check_prediction, to_eps_x0
from .schedule import NoiseSchedule, broadcast

WEIGHTINGS = ("none", "min-snr", "min-snr-plus-one", "elbo")
TIMESTEP_SAMPLINGS = ("uniform", "stratified", "log-normal")
LOG_NORMAL = (-1.2, 1.2)  # EDM's P_mean and P_std (Karras et al. 2022, Table 1)


def target(kind: str, x0: torch.Tensor, eps: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
    """The regression target for prediction ``kind``; alpha_bar: [N] float64."""
    check_prediction(kind)
    if kind == "eps":
        return eps
    if kind == "x0":
        return x0
    a = broadcast(alpha_bar, x0)
    return a.sqrt() * eps - (1 - a).sqrt() * x0  # v (Salimans & Ho 2022, Sec. 4)


def elbo_weights(schedule: NoiseSchedule) -> torch.Tensor:
    """[T] weights on the eps-MSE that make the loss DDPM's variational bound (eq. 5, its L_{t-1}
    terms with sigma_t^2 = beta~_t): L_{t-1} = 1/2 (SNR(t-1) - SNR(t)) ||x0 - x0_pred||^2 (Kingma et
    al. 2021, eq. 13), i.e. 1/2 (SNR(t-1) / SNR(t) - 1) on the eps-MSE; normalised to mean 1 over t.
    t = 0 is the bound's decoder term L_0, not a Gaussian KL (its weight here would be infinite,
    SNR(-1) = inf): it takes t = 1's weight, a finite stand-in."""
    t = torch.arange(schedule.num_timesteps)
    snr = schedule.snr(t)
    weights = 0.5 * (schedule.snr((t - 1).clamp(min=0)) / snr - 1)
    weights[0] = weights[1]
    return weights / weights.mean()


def loss_weight(kind: str, snr: torch.Tensor, weighting: str = "none", gamma: float = 5.0, elbo=None):
    """Per-sample weight on the MSE of prediction ``kind``.

    min-snr (Hang et al. 2023): weight the x0-space loss by min(SNR, gamma). Expressed for
    each target: eps-MSE = SNR * x0-MSE and v-MSE = (SNR + 1) * x0-MSE, hence the divisions.

    min-snr-plus-one: weight it by min(SNR, gamma) + 1 = min(SNR + 1, gamma + 1) instead, the
    plain v-MSE's SNR + 1 truncated like min-SNR. Where SNR <= gamma it is the plain v-MSE; min-snr
    gives the x0 error at high noise a weight of SNR (0.02 at the cosine schedule's t = 900), this
    one at least 1.

    elbo: the variational bound's weighting (:func:`elbo_weights`; ``elbo``: their values at t).
    """
    if weighting == "none":
        return torch.ones_like(snr)
    if weighting not in WEIGHTINGS:
        raise ValueError(f"unknown weighting {weighting!r}; choose from {', '.join(WEIGHTINGS)}")
    if weighting == "elbo":
        clipped = elbo * snr  # the x0-space weight of the eps-space one
    else:
        clipped = snr.clamp(max=gamma) + float(weighting == "min-snr-plus-one")
    return {"eps": clipped / snr, "x0": clipped, "v": clipped / (snr + 1)}[kind]


def diffusion_loss(
    net: Callable,
    schedule: NoiseSchedule,
    x0: torch.Tensor,
    t: torch.Tensor,
    noise: torch.Tensor,
    kind: str = "eps",
    weighting: str = "none",
    y: torch.Tensor | None = None,
    clip_aware: bool = False,
    self_condition: bool = False,
    gamma: float = 5.0,
) -> torch.Tensor:
    """Per-sample loss [N]: weighted || target - net(x_t, t) ||^2, averaged over pixels.

    With kind="eps" and weighting="none" this is DDPM's L_simple (eq. 14).

    clip_aware: the data lie in [-1, 1] and the samplers clip x0 to it, so a pixel whose target
    sits on a bound (MNIST's background is exactly -1) costs nothing where the predicted x0 passes
    that bound: the clip maps it onto the target. Elsewhere the loss is unchanged, so the clipped
    minimiser is still E[x0 | x_t]; what changes is that the network may overshoot a pixel it is
    sure of instead of scattering around the bound, which the clip turns into faint grey.

    self_condition: feed the network its own x0 estimate from a first pass without gradients
    (Chen et al. 2022, Alg. 1; the caller draws the 50 % of batches where this happens). False with
    a self-conditioned network: it is fed zeros, as at the first step of sampling.
    """
    alpha_bar = schedule.alpha_bar_at(t)
    x_t = schedule.q_sample(x0, t, noise)
    args = (x_t, t) if y is None else (x_t, t, y)
    if self_condition:
        first = SelfCondition()
        with torch.no_grad():
            first.remember(to_eps_x0(kind, net(*args, **first.inputs(x_t)).float(), x_t, alpha_bar)[1])
        pred = net(*args, **first.inputs(x_t))
    else:
        pred = net(*args)
    error = pred.float() - target(kind, x0, noise, alpha_bar)
    if clip_aware:
        _, x0_pred = to_eps_x0(kind, pred.detach().float(), x_t, alpha_bar)
        beyond = ((x0 <= -1) & (x0_pred < -1)) | ((x0 >= 1) & (x0_pred > 1))
        error = error.masked_fill(beyond, 0.0)
    mse = error.pow(2).flatten(1).mean(1)
    elbo = elbo_weights(schedule)[t.cpu()] if weighting == "elbo" else None
    weight = loss_weight(kind, schedule.snr(t), weighting, gamma, elbo).to(mse)
    return weight * mse


def sample_timesteps(n: int, schedule: NoiseSchedule, how: str, generator: torch.Generator) -> torch.Tensor:
    """n training timesteps in [0, T).

    "uniform" draws them independently (DDPM Alg. 1). "stratified" is the low-discrepancy sampler
    of Kingma et al. 2021 (VDM, Sec. 3.2 / App. I): one u ~ U[0, 1) shifts the grid i / n, so
    the batch covers every 1/n-th of the timesteps exactly once and the batch's loss estimate
    has lower variance. A random permutation then spreads the bands over micro-batches and ranks.
    Both are marginally uniform over t. "log-normal" draws noise levels as EDM does instead
    (:func:`log_normal_probabilities`).
    """
    num_timesteps = schedule.num_timesteps
    if how == "uniform":
        return torch.randint(0, num_timesteps, (n,), generator=generator)
    if how == "log-normal":
        return torch.multinomial(log_normal_probabilities(schedule), n, replacement=True, generator=generator)
    if how != "stratified":
        raise ValueError(f"unknown timestep sampling {how!r}; choose from {', '.join(TIMESTEP_SAMPLINGS)}")
    u = (torch.rand((), generator=generator, dtype=torch.float64) + torch.arange(n, dtype=torch.float64) / n) % 1.0
    t = (u * num_timesteps).long().clamp_(max=num_timesteps - 1)
    return t[torch.randperm(n, generator=generator)]


def log_normal_probabilities(schedule: NoiseSchedule, mean: float = LOG_NORMAL[0], std: float = LOG_NORMAL[1]):
    """[T] probabilities of the timesteps under EDM's noise-level distribution ln(sigma) ~ N(mean,
    std^2) (Karras et al. 2022, Sec. 5, Table 1), sigma_t = sqrt((1 - alpha_bar_t) / alpha_bar_t):
    t gets the normal's mass between the midpoints of ln(sigma) on either side of ln(sigma_t).

    Uniform t on the cosine schedule puts ln(sigma) at 0 +- 1.57 (a hyperbolic-secant law), this
    at -1.2 +- 1.2: more of the training on the noise levels below sigma = 1, where the strokes'
    detail is decided."""
    log_sigma = schedule.sigma(torch.arange(schedule.num_timesteps)).log()  # rises with t
    edges = (log_sigma[1:] + log_sigma[:-1]) / 2
    cdf = torch.special.ndtr((edges - mean) / std)
    return torch.diff(cdf, prepend=cdf.new_zeros(1), append=cdf.new_ones(1))


def drop_labels(labels: torch.Tensor, p_uncond: float, null_class: int, generator: torch.Generator) -> torch.Tensor:
    """Label dropout for classifier-free guidance (Ho & Salimans 2022, Alg. 1): each label is
    replaced by the null class with probability p_uncond, so that one network learns both
    eps(x, y) and eps(x, null). Prompt vectors [N, D] are dropped to the zero vector."""
    drop = torch.rand(len(labels), generator=generator) < p_uncond
    if labels.is_floating_point():
        return torch.where(drop[:, None], torch.zeros_like(labels), labels)
    return torch.where(drop, null_class, labels)
