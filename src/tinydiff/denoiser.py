"""Denoisers: a network + noise schedule + prediction kind -> ``denoise(x_t, t) -> (eps, x0)``.

Samplers and DDIM inversion only ever see such ``(eps, x0)`` pairs; this module is the one place
that makes them, for the API, the CLI, the experiments and the grid a training run ends with.

Prediction kinds. With a = alpha_bar_t and x_t = sqrt(a) x0 + sqrt(1 - a) eps (DDPM eq. 4), a
network may predict eps (DDPM), x0, or v = sqrt(a) eps - sqrt(1 - a) x0 (Salimans & Ho 2022);
:func:`to_eps_x0` converts any of them, :func:`as_denoiser` wraps a network of any kind. This is
also how a foreign network (e.g. a diffusers UNet2DModel) plugs into tinydiff's samplers.

Clipping. x0 is clipped to [-1, 1] by :func:`clip_prediction` only, which recomputes eps from the
clipped x0 so that the pair stays consistent with x_t. The samplers call it when their ``clip_x0``
option is on; a model trained with the clip-aware loss has it built into its denoiser
(:func:`bounded`), since beyond the bounds its x0 is untrained. Dynamic thresholding (Imagen,
Saharia et al. 2022, Sec. 2.3) replaces the fixed bound: per image, s = the p-th percentile of |x0|
(at least 1), and x0 is clipped to [-s, s] and divided by s, so that a saturated prediction at a
large guidance weight is scaled back into range instead of flattened at the bound.

Self-conditioning (Chen et al. 2022, "Analog Bits", Sec. 3.2): the network also takes an estimate
of x0, ``net(x_t, t, y, x_self=...)``. In sampling, each step feeds the x0 predicted at the step
before (:class:`SelfCondition`), so the refinement costs no extra network evaluation; in training
(objectives.diffusion_loss) a first pass without gradients gives it.

Classifier-free guidance (Ho & Salimans 2022): one network trained with label dropout predicts
both eps(x, y) and eps(x, null). Guidance extrapolates away from the unconditional prediction:
    eps_w = (1 + w) eps(x_t, y) - w eps(x_t, null)                     (Ho & Salimans, eq. 6)
w = 0 is the plain conditional model. Many codebases (Imagen, diffusers' guidance_scale) write
the same thing as eps_u + s (eps_c - eps_u) with s = 1 + w: our w = 2 is their scale 3.
For x0- and v-prediction the two predictions are combined before the conversion to (eps, x0).
That is the same as combining eps: at fixed x_t, eps is an affine function of the prediction
(:func:`to_eps_x0`), and the weights (1 + w) and -w sum to one. The conditional and
unconditional halves go through the network as one batch of 2N (one call per step, twice the
work); w = 0 skips the unconditional half entirely.

Guidance interval (Kynkaanniemi et al. 2024, "Applying Guidance in a Limited Interval Improves
Sample and Distribution Quality in Diffusion Models"): guidance only where the noise level
    sigma_t = sqrt((1 - alpha_bar_t) / alpha_bar_t)        (EDM's sigma of the VP x_t / sqrt(alpha_bar_t))
lies in (sigma_lo, sigma_hi]; elsewhere the conditional model alone, one network evaluation per
image. Guiding at high noise mostly removes diversity and at low noise does little, so limiting it
keeps the class fidelity and loses less of the distribution.

Autoguidance (Karras et al. 2024, "Guiding a Diffusion Model with a Bad Version of Itself"): the
same extrapolation, away from a weaker model of the same data and condition instead of the
unconditional prediction:
    D_w(x_t; y) = (1 + w) D(x_t; y) - w D_bad(x_t; y)                   (their eq. 2, w_theirs = 1 + w)
The two models' errors point the same way where the good one is still wrong, so stepping away from
the bad one removes part of the good one's error; unlike classifier-free guidance it does not trade
the distribution's spread for fidelity, and it works for unconditional models too. The weaker model
can be the same network earlier in its own training (``tinydiff train --guide-at``). Both (eps, x0)
pairs are consistent with x_t and the weights sum to one, so their combination is too.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from .errors import TinydiffError
from .schedule import NoiseSchedule, broadcast

PREDICTIONS = ("eps", "x0", "v")

Denoiser = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def check_prediction(kind: str) -> None:
    if kind not in PREDICTIONS:
        raise ValueError(f"unknown prediction {kind!r}; choose from {', '.join(PREDICTIONS)}")


def to_eps_x0(kind: str, pred: torch.Tensor, x_t: torch.Tensor, alpha_bar: torch.Tensor):
    """Convert a prediction of ``kind`` at x_t into (eps, x0); alpha_bar: [N]."""
    check_prediction(kind)
    a = broadcast(alpha_bar, x_t)
    if kind == "eps":  # x0 = (x_t - sqrt(1 - a) eps) / sqrt(a)   (DDPM eq. 4 solved for x0)
        return pred, (x_t - (1 - a).sqrt() * pred) / a.sqrt()
    if kind == "x0":  # eps = (x_t - sqrt(a) x0) / sqrt(1 - a)
        return (x_t - a.sqrt() * pred) / (1 - a).sqrt(), pred
    # v: x0 = sqrt(a) x_t - sqrt(1 - a) v,  eps = sqrt(1 - a) x_t + sqrt(a) v
    return (1 - a).sqrt() * x_t + a.sqrt() * pred, a.sqrt() * x_t - (1 - a).sqrt() * pred


def clip_prediction(
    x_t: torch.Tensor, x0: torch.Tensor, alpha_bar, threshold: float | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(eps, x0) with x0 clipped to [-1, 1] and eps recomputed from it, so that the pair stays
    consistent with x_t (DDPM eq. 4 solved for eps). alpha_bar: a float, or a tensor broadcast to x_t.
    ``threshold`` p in (0, 1): dynamic thresholding at the p-th percentile of |x0| instead."""
    if threshold is None:
        x0 = x0.clamp(-1, 1)
    else:  # Imagen's dynamic thresholding: s = max(1, percentile_p |x0|); x0 <- clip(x0, -s, s) / s
        s = x0.abs().flatten(1).quantile(threshold, dim=1).clamp(min=1).view(-1, *[1] * (x0.ndim - 1))
        x0 = torch.maximum(torch.minimum(x0, s), -s) / s
    if isinstance(alpha_bar, float):
        return (x_t - math.sqrt(alpha_bar) * x0) / math.sqrt(1 - alpha_bar), x0
    return (x_t - alpha_bar.sqrt() * x0) / (1 - alpha_bar).sqrt(), x0


class SelfCondition:
    """The x0 estimate a self-conditioned network is fed: zeros at a trajectory's first step, then
    the (clipped) x0 of the step before. It is state: one per trajectory (:func:`build_denoiser`
    makes one with each denoiser)."""

    def __init__(self):
        self.x0: torch.Tensor | None = None

    def inputs(self, x_t: torch.Tensor, copies: int = 1) -> dict:
        """The keyword argument for the network's call on ``copies`` stacked copies of x_t's batch."""
        x0 = torch.zeros_like(x_t) if self.x0 is None else self.x0
        return {"x_self": x0.repeat(copies, *[1] * (x0.ndim - 1))}

    def remember(self, x0: torch.Tensor) -> None:
        self.x0 = x0.clamp(-1, 1)


def as_denoiser(
    net: Callable, schedule: NoiseSchedule, kind: str, y=None, self_condition: SelfCondition | None = None
) -> Denoiser:
    """Wrap ``net(x_t, t[, y]) -> prediction of kind`` as ``denoise(x_t, t) -> (eps, x0)``.

    t may be a python int or a [N] tensor of timesteps. A self-conditioned network gets its
    previous x0 through ``self_condition``, which each call updates.
    """
    check_prediction(kind)

    def denoise(x_t: torch.Tensor, t) -> tuple[torch.Tensor, torch.Tensor]:
        t = torch.as_tensor(t, dtype=torch.long, device=x_t.device).expand(x_t.shape[0])
        args = (x_t, t) if y is None else (x_t, t, y)
        pred = net(*args) if self_condition is None else net(*args, **self_condition.inputs(x_t))
        eps, x0 = to_eps_x0(kind, pred.to(x_t.dtype), x_t, schedule.alpha_bar_at(t))
        if self_condition is not None:
            self_condition.remember(x0)
        return eps, x0

    return denoise


def bounded(denoise: Denoiser, schedule: NoiseSchedule, threshold: float | None = None) -> Denoiser:
    """``denoise`` with its x0 clipped to [-1, 1] at every call (or dynamically thresholded at
    percentile ``threshold``). A network trained with the clip-aware loss (``diffusion_loss(...,
    clip_aware=True)``) predicts x0 only up to that clip: beyond a bound its output is untrained, so
    its denoiser includes the clip, also where a sampler's own clipping is off (DDIM inversion and
    decoding)."""

    def denoise_bounded(x_t: torch.Tensor, t) -> tuple[torch.Tensor, torch.Tensor]:
        _, x0 = denoise(x_t, t)
        if isinstance(t, int):
            return clip_prediction(x_t, x0, float(schedule.alpha_bar_at(t)), threshold)
        t = torch.as_tensor(t, dtype=torch.long, device=x_t.device).expand(x_t.shape[0])
        return clip_prediction(x_t, x0, broadcast(schedule.alpha_bar_at(t), x_t), threshold)

    return denoise_bounded


def check_labels(labels, num_classes: int | None, n: int) -> torch.Tensor:
    """Class labels for n images as int64 [n]: an int (all the same), a sequence or a tensor."""
    if not num_classes:
        raise TinydiffError("this model is not class-conditional: train with --conditional to use labels")
    labels = torch.as_tensor(labels)
    if labels.is_floating_point() or labels.is_complex():
        raise TinydiffError(f"class labels must be integers, got {labels.dtype}")
    labels = labels.long().reshape(-1)
    if labels.numel() == 1:
        labels = labels.expand(n)
    if labels.numel() != n:
        raise TinydiffError(f"{labels.numel()} class labels for {n} images")
    bad = labels[(labels < 0) | (labels >= num_classes)]
    if bad.numel():
        raise TinydiffError(f"class label {int(bad[0])} is out of range: this model knows 0..{num_classes - 1}")
    return labels


def check_interval(interval) -> tuple[float, float] | None:
    """(sigma_lo, sigma_hi) with 0 <= sigma_lo < sigma_hi, or None (guide at every noise level)."""
    if interval is None:
        return None
    lo, hi = (float(v) for v in interval)
    if not 0 <= lo < hi:
        raise TinydiffError(f"a guidance interval needs 0 <= sigma_lo < sigma_hi, got ({lo:g}, {hi:g})")
    return lo, hi


def interval_weight(schedule: NoiseSchedule, t: torch.Tensor, w: float, interval, dtype) -> torch.Tensor:
    """The guidance weight of each row [N]: w where sigma_t lies in ``interval`` (or everywhere
    without one), else 0."""
    weight = torch.full((len(t),), float(w), dtype=dtype)
    if interval is not None:
        sigma = schedule.snr(t).rsqrt()  # on the CPU, where the schedule's table lives
        weight = weight * ((sigma > interval[0]) & (sigma <= interval[1]))
    return weight


def guided_denoiser(
    net: Callable,
    schedule: NoiseSchedule,
    kind: str,
    labels: torch.Tensor,
    null_class: int,
    w: float,
    interval: tuple[float, float] | None = None,
    self_condition: SelfCondition | None = None,
) -> Denoiser:
    """``denoise(x_t, t) -> (eps, x0)`` with guidance weight w for class ``labels`` [N] (or prompt
    vectors [N, D], whose null condition is the zero vector), applied
    only at noise levels sigma_t in ``interval`` = (sigma_lo, sigma_hi] when one is given. A
    self-conditioned network's two halves are both fed the previous step's guided x0."""
    conditional = as_denoiser(net, schedule, kind, labels, self_condition)
    interval = check_interval(interval)
    if w == 0:
        if interval is not None:
            raise TinydiffError("a guidance interval needs a guidance weight w > 0")
        return conditional
    null = torch.zeros_like(labels) if labels.is_floating_point() else torch.full_like(labels, null_class)

    def denoise(x_t: torch.Tensor, t) -> tuple[torch.Tensor, torch.Tensor]:
        t = torch.as_tensor(t, dtype=torch.long, device=x_t.device).expand(x_t.shape[0])
        weight = interval_weight(schedule, t, w, interval, x_t.dtype)
        if not weight.any():  # outside the interval: the conditional model, half the work
            return conditional(x_t, t)
        extra = {} if self_condition is None else self_condition.inputs(x_t, copies=2)
        both = net(torch.cat([x_t, x_t]), torch.cat([t, t]), torch.cat([labels, null]).to(x_t.device), **extra)
        cond, uncond = both.to(x_t.dtype).chunk(2)
        weight = broadcast(weight, cond)  # to cond's device and dtype
        eps, x0 = to_eps_x0(kind, cond + weight * (cond - uncond), x_t, schedule.alpha_bar_at(t))  # = (1 + w) c - w u
        if self_condition is not None:
            self_condition.remember(x0)
        return eps, x0

    return denoise


def autoguided(
    denoise: Denoiser, guide: Denoiser, schedule: NoiseSchedule, w: float, interval: tuple[float, float] | None = None
) -> Denoiser:
    """``denoise`` guided away from ``guide`` (a weaker model's denoiser for the same condition) with
    weight w, only at noise levels sigma_t in ``interval`` = (sigma_lo, sigma_hi] when one is given;
    elsewhere ``denoise`` alone, one network evaluation."""
    interval = check_interval(interval)

    def denoise_guided(x_t: torch.Tensor, t) -> tuple[torch.Tensor, torch.Tensor]:
        t = torch.as_tensor(t, dtype=torch.long, device=x_t.device).expand(x_t.shape[0])
        eps, x0 = denoise(x_t, t)
        weight = interval_weight(schedule, t, w, interval, x_t.dtype)
        if not weight.any():
            return eps, x0
        eps_bad, x0_bad = guide(x_t, t)
        weight = broadcast(weight, x0)
        return eps + weight * (eps - eps_bad), x0 + weight * (x0 - x0_bad)  # = (1 + w) D - w D_bad

    return denoise_guided


def build_denoiser(
    net: Callable,
    schedule: NoiseSchedule,
    kind: str,
    *,
    num_classes: int | None = None,
    labels: torch.Tensor | None = None,
    guidance: float = 0.0,
    interval: tuple[float, float] | None = None,
    self_condition: bool = False,
    clip_aware: bool = False,
    threshold: float | None = None,
) -> Denoiser:
    """The denoiser of a trained network: unconditional (the null class ``num_classes`` of a
    conditional network) when labels is None, else for class ``labels`` [N] with classifier-free
    guidance weight ``guidance``, only at noise levels sigma_t in ``interval`` = (sigma_lo,
    sigma_hi] if one is given. A network trained with the clip-aware loss (``clip_aware``) clips its
    x0 always (:func:`bounded`). A self-conditioned network's denoiser carries the previous step's
    x0 (:class:`SelfCondition`): build one per trajectory. ``threshold`` p: dynamic thresholding at
    the p-th percentile of |x0| in place of the fixed clip."""
    if threshold is not None and not 0 < threshold < 1:
        raise TinydiffError(f"the dynamic threshold is a percentile p in (0, 1), e.g. 0.995; got {threshold}")
    memory = SelfCondition() if self_condition else None
    if labels is None:
        if guidance or interval is not None:
            raise TinydiffError("guidance needs class labels (e.g. --class 3 or --class all) or a prompt")
        denoise = as_denoiser(net, schedule, kind, None, memory)
    else:
        denoise = guided_denoiser(net, schedule, kind, labels, num_classes, guidance, interval, memory)
    return bounded(denoise, schedule, threshold) if clip_aware or threshold is not None else denoise
