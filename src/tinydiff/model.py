"""A trained diffusion model: network + noise schedule + prediction kind, ready to sample.

Loading a model needs checkpoint.py and denoiser.py only, never the training code."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .checkpoint import build_checked, load_weights, read_config, resolve_checkpoint, weights_file
from .config import resolve_device
from .denoiser import Denoiser, autoguided, bounded, build_denoiser
from .errors import TinydiffError
from .schedule import NoiseSchedule


@dataclass
class DiffusionModel:
    net: nn.Module
    schedule: NoiseSchedule
    prediction: str
    config: dict

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.config["net"]["image_shape"])

    @property
    def num_classes(self) -> int | None:
        return self.config["net"].get("num_classes")

    @property
    def text_encoder(self) -> str | None:
        """The sentence encoder (text.py) of a text-conditioned model, else None."""
        return self.config["train"].get("text") if self.config["net"].get("text_dim") else None

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def balanced_labels(self, n: int) -> torch.Tensor | None:
        """n labels cycling through the classes (0, 1, ..., K-1, 0, ...); None for an unconditional model."""
        return torch.arange(n) % self.num_classes if self.num_classes else None

    def every_class(self, n: int) -> dict:
        """The keyword arguments of ``sample`` that draw n images of the classes in turn: labels, or for a
        text-conditioned model the plain caption of each class ("zero", "one", ...; data/captions.py)."""
        if self.text_encoder:
            from .data.captions import phrasings

            return {"prompts": [captions[0] for captions in phrasings(self.config["data"]["spec"])]}
        return {"labels": self.balanced_labels(n)}

    @contextmanager
    def count_evaluations(self, *others: DiffusionModel | None) -> Iterator[dict]:
        """Count the network's work inside the block: ``with model.count_evaluations() as count:``
        then ``count["images"]`` images went through the network in ``count["calls"]`` calls. A
        guided step runs 2N images (conditional and unconditional), so ``count["images"] / n`` is
        the number of function evaluations (NFE) per sample, whatever the sampler. The networks of
        ``others`` (autoguidance's weaker model, a refiner; None: none) count too."""
        count = {"calls": 0, "images": 0}

        def hook(module, inputs, output):
            count["calls"] += 1
            count["images"] += inputs[0].shape[0]

        nets = list({id(m.net): m.net for m in (self, *others) if m is not None}.values())
        handles = [net.register_forward_hook(hook) for net in nets]
        try:
            yield count
        finally:
            for handle in handles:
                handle.remove()

    def denoiser(
        self,
        labels: torch.Tensor | None = None,
        guidance: float = 0.0,
        interval: tuple[float, float] | None = None,
        threshold: float | None = None,
        guide: DiffusionModel | None = None,
    ) -> Denoiser:
        """``denoise(x_t, t) -> (eps, x0)`` for the samplers (denoiser.build_denoiser): unconditional
        (the null class of a conditional model) when labels is None, else for class ``labels`` [N]
        with classifier-free guidance weight ``guidance``, only at noise levels sigma_t in
        ``interval`` = (sigma_lo, sigma_hi] if one is given. With a ``guide`` (a weaker model of the
        same data: :meth:`check_guide`) the weight and interval are autoguidance's instead
        (denoiser.autoguided). A model trained with the clip-aware loss
        clips its x0 to [-1, 1] always; ``threshold`` p thresholds it dynamically at the p-th
        percentile of |x0| instead (Imagen). A self-conditioned model's denoiser carries the previous
        step's x0: make one per trajectory."""
        denoise = build_denoiser(
            self.net,
            self.schedule,
            self.prediction,
            num_classes=self.num_classes,
            labels=None if labels is None else labels.to(self.device),
            guidance=0.0 if guide is not None else guidance,
            interval=None if guide is not None else interval,
            self_condition=bool(self.config["net"].get("self_condition")),
            clip_aware=self.clip_aware,
            threshold=threshold,
        )
        if guide is None:
            return denoise
        self.check_guide(guide, guidance)
        denoise = autoguided(denoise, guide.denoiser(labels, threshold=threshold), self.schedule, guidance, interval)
        return bounded(denoise, self.schedule, threshold) if self.clip_aware or threshold is not None else denoise

    def check_guide(self, guide: DiffusionModel, w: float) -> None:
        """Refuse a guide that cannot guide this model (another image shape, noise schedule or
        condition) or a weight w that does not guide."""
        if not w > 0:
            raise TinydiffError(f"autoguidance needs a guidance weight w > 0 (--guidance), got {w:g}")
        self.check_same_data(guide, "guide")
        if not torch.equal(self.schedule.alpha_bar, guide.schedule.alpha_bar):
            raise TinydiffError("the guide model has another noise schedule: its timesteps are other noise levels")

    def check_same_data(self, other: DiffusionModel, role: str) -> None:
        """Refuse ``other`` (the model playing ``role``: guide, refiner) if it draws other images than
        this model: another image shape, other classes or another text encoder."""
        mine = (self.image_shape, self.num_classes, self.text_encoder)
        theirs = (other.image_shape, other.num_classes, other.text_encoder)
        for what, a, b in zip(("image shape", "classes", "text encoder"), mine, theirs):
            if a != b:
                raise TinydiffError(f"the {role} model's {what} ({b}) differs from the model's ({a})")

    @property
    def clip_aware(self) -> bool:
        """Trained with the clip-aware loss (checkpoints from before it existed were not:
        checkpoint.LEGACY_VALUES)."""
        return bool(self.config["train"]["clip_aware_loss"])


# The models shipped with tinydiff (inference-only exports, one folder per dataset; docs/RESULTS.md
# says how each was trained): `pretrained:NAME`. The MNIST one is what `tinydiff sample` and
# `tinydiff.load()` use when no checkpoint is given.
PRETRAINED = {p.name: p for p in sorted((Path(__file__).parent / "pretrained").iterdir()) if p.is_dir()}


def load(path: str | Path | None = None, *, ema: bool = True, device: str | torch.device = "auto") -> DiffusionModel:
    """Load a checkpoint (or a run directory's newest one) in eval mode; EMA weights by default, on
    the GPU when there is one (device="auto"). Without a path, or with ``pretrained:mnist``, the
    model shipped with tinydiff."""
    if path is None or str(path).startswith("pretrained:"):
        name = "mnist" if path is None else str(path).partition(":")[2]
        if name not in PRETRAINED:
            raise TinydiffError(f"no shipped model {name!r}; tinydiff ships: {', '.join(PRETRAINED)}")
        path = PRETRAINED[name]
    ckpt = resolve_checkpoint(path)
    weights = weights_file(ema)
    config = read_config(ckpt, ("config.json", weights))
    try:
        net = build_checked(ckpt, weights, config["net"])  # bounded by the weights file: never a runaway size
        schedule = NoiseSchedule.create(
            config["schedule"]["name"], config["schedule"]["timesteps"], config["schedule"].get("snr_scale", 1.0)
        )
        prediction = config["prediction"]
    except (KeyError, TypeError, ValueError) as err:
        raise TinydiffError(f"checkpoint {ckpt}: config.json does not describe a model ({err})") from None
    load_weights(ckpt, weights, net)
    device = resolve_device(device)
    net = net.to(device).eval()
    if device.type == "cpu":  # faster CPU convolutions (benchmarks/train_throughput.py)
        net = net.to(memory_format=torch.channels_last)
    return DiffusionModel(net, schedule, prediction, config)
