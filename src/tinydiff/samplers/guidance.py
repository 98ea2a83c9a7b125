"""Classifier-free guidance (Ho & Salimans 2022) as a denoiser wrapper, usable by every sampler.

One network trained with label dropout predicts both eps(x, y) and eps(x, null). Guidance
extrapolates away from the unconditional prediction:
    eps_w = (1 + w) eps(x_t, y) - w eps(x_t, null)                     (Ho & Salimans, eq. 6)
w = 0 is the plain conditional model. Many codebases (Imagen, diffusers' guidance_scale) write
the same thing as eps_u + s (eps_c - eps_u) with s = 1 + w: our w = 2 is their scale 3.

For x0- and v-prediction the two predictions are combined before the conversion to (eps, x0).
That is the same as combining eps: at fixed x_t, eps is an affine function of the prediction
(objectives.to_eps_x0), and the weights (1 + w) and -w sum to one.

The conditional and unconditional halves go through the network as one batch of 2N (one call
per step, twice the work); w = 0 skips the unconditional half entirely.

Guidance interval (Kynkaanniemi et al. 2024, "Applying Guidance in a Limited Interval Improves
Sample and Distribution Quality in Diffusion Models"): guidance only where the noise level
    sigma_t = sqrt((1 - alpha_bar_t) / alpha_bar_t)        (EDM's sigma of the VP x_t / sqrt(alpha_bar_t))
lies in (sigma_lo, sigma_hi]; elsewhere the conditional model alone, one network evaluation per
image. Guiding at high noise mostly removes diversity and at low noise does little, so limiting it
keeps the class fidelity and loses less of the distribution.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..errors import TinydiffError
from ..objectives import Denoiser, SelfCondition, as_denoiser, to_eps_x0
from ..schedule import NoiseSchedule, broadcast


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
    """``denoise(x_t, t) -> (eps, x0)`` with guidance weight w for class ``labels`` [N], applied
    only at noise levels sigma_t in ``interval`` = (sigma_lo, sigma_hi] when one is given. A
    self-conditioned network's two halves are both fed the previous step's guided x0."""
    conditional = as_denoiser(net, schedule, kind, labels, self_condition)
    interval = check_interval(interval)
    if w == 0:
        if interval is not None:
            raise TinydiffError("a guidance interval needs a guidance weight w > 0")
        return conditional
    null = torch.full_like(labels, null_class)

    def denoise(x_t: torch.Tensor, t) -> tuple[torch.Tensor, torch.Tensor]:
        t = torch.as_tensor(t, dtype=torch.long, device=x_t.device).expand(x_t.shape[0])
        weight = torch.full((len(t),), float(w), dtype=x_t.dtype)
        if interval is not None:
            sigma = schedule.snr(t).rsqrt()
            weight = weight * ((sigma > interval[0]) & (sigma <= interval[1]))
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
