"""The public Python API; the CLI is a thin layer over these functions."""

from __future__ import annotations

import inspect
import math
import sys
from pathlib import Path

import torch
from tqdm import tqdm

from .config import ADVERSARIAL_SHARE, REFINE_FROM, REFINE_STEPS, TrainConfig
from .denoiser import check_labels
from .errors import TinydiffError
from .model import DiffusionModel, load
from .samplers import get_sampler
from .samplers import timesteps as default_timesteps
from .samplers.base import noise_like, pairs
from .samplers.inversion import invert as ddim_invert
from .viz import save_grid


def train(
    data: str = "mnist", out: str | None = None, *, resume: bool = False, progress: bool = True, **options
) -> Path:
    """Train a model (options: the fields of :class:`TrainConfig`); returns the final checkpoint
    (None on the ranks other than 0 of a torchrun launch).

    Writes into ``out`` (by default runs/ and the data's name) ``ckpt-*/``, ``log.jsonl`` and, unless
    ``sample_grid=0``, a grid of EMA samples (DPM-Solver++(2M), 20 steps) as ``samples.png``.
    """
    from .training import Trainer, distributed  # here: sampling and loading never import training

    config = TrainConfig(data=data, out=None if out is None else str(out), **options)
    with distributed.session(config.device) as ctx:  # a process group when started by torchrun
        ckpt = Trainer(config, resume=resume).run(progress=progress)
    if config.sample_grid and ctx.is_main:
        model = load(ckpt)
        conditions = model.every_class(config.sample_grid)  # a conditional model: the classes in turn
        if progress:
            print(f"sampling a grid of {config.sample_grid} images (dpm++2m, 20 steps)", file=sys.stderr)
        images = sample(model, n=config.sample_grid, sampler="dpm++2m", steps=20, seed=config.seed, **conditions)
        save_grid(images, Path(config.out) / "samples.png")
    return ckpt


@torch.inference_mode()
def sample(
    model: DiffusionModel | str | Path,
    n: int = 64,
    *,
    sampler: str | None = None,
    steps: int | None = None,
    spacing: str | None = None,
    timesteps=None,
    seed: int = 0,
    batch_size: int = 64,
    labels=None,
    prompts=None,
    guidance: float = 0.0,
    guidance_interval: tuple[float, float] | None = None,
    dynamic_threshold: float | None = None,
    guide: DiffusionModel | str | Path | None = None,
    x_T: torch.Tensor | None = None,
    refine: DiffusionModel | str | Path | None = None,
    refine_from: int = REFINE_FROM,
    refine_steps: int = REFINE_STEPS,
    callback=None,
    progress: bool = False,
    **options,
) -> torch.Tensor:
    """Draw n images [n, C, H, W] in [-1, 1].

    ``sampler`` None: the one the checkpoint records (a distilled student samples with DDIM over the
    steps it was trained for, a consistency student with its own sampler), else ddim; its steps and
    spacing too, unless given.

    The sampler steps along ``timesteps`` (a decreasing sequence of integer timesteps) if given,
    else along the sampler's default trajectory of ``steps`` timesteps spaced by ``spacing``
    (:func:`tinydiff.samplers.timesteps`; None: the sampler's defaults).
    x_T for all n images is drawn first from a generator seeded with ``seed``, so deterministic
    samplers (DDIM, eta = 0) give the same images whatever ``batch_size``. ``options`` go to
    the sampler (e.g. eta, clip_x0, variance). ``progress`` shows a bar of sampler steps.
    ``labels`` (an int, a sequence or a tensor of n class labels; :func:`class_labels` makes them
    for every class in turn or in the training data's proportions) samples a conditional model
    with classifier-free guidance weight ``guidance`` (eps = (1 + w) eps_c - w eps_null), applied
    only at noise levels sigma_t = sqrt((1 - alpha_bar_t) / alpha_bar_t) in ``guidance_interval`` =
    (sigma_lo, sigma_hi] if one is given (Kynkaanniemi et al. 2024). ``dynamic_threshold`` p
    replaces the clip of x0 to [-1, 1] by Imagen's dynamic thresholding at the p-th percentile of
    |x0| (e.g. 0.995; for large guidance weights). ``guide`` (a weaker model of the same data, e.g.
    the run's ``guide`` folder that ``train --guide-at`` writes) turns the guidance into autoguidance
    (Karras et al. 2024): D_w = (1 + w) D - w D_guide, with the same weight and interval, for
    conditional and unconditional models alike. ``prompts`` (text, or a list: see
    :func:`prompt_vectors`) do the same for a text-conditioned model. Without labels or prompts a
    conditional model samples unconditionally (its null class, or the empty prompt). ``x_T`` [n, C, H, W] gives
    the starting noise (e.g. latents from :func:`invert`) instead of drawing it. ``refine`` (a model of
    the same images, e.g. a few-step student's teacher) finishes the images: see :func:`refine_images`
    (``refine_from``, ``refine_steps``; the same labels, no guidance).
    """
    if not isinstance(model, DiffusionModel):
        model = load(model)
    if type(n) is not int or n < 1:
        raise TinydiffError(f"the number of images must be a positive integer, got {n!r}")
    if type(batch_size) is not int or batch_size < 1:
        raise TinydiffError(f"the batch size must be a positive integer, got {batch_size!r}")
    if not math.isfinite(guidance):
        raise TinydiffError(f"the guidance weight must be a finite number, got {guidance}")
    if guide is not None:
        guide = guide if isinstance(guide, DiffusionModel) else load(guide, device=model.device)
        model.check_guide(guide, guidance)  # before any work
    if refine is not None:
        refine = refine if isinstance(refine, DiffusionModel) else load(refine, device=model.device)
        model.check_same_data(refine, "refiner")  # before any work
        if prompts is not None or refine.text_encoder:
            raise TinydiffError("refining takes class-conditional or unconditional models, not text prompts")
        refine_trajectory(refine, refine_from, refine_steps)
    recipe = sampling_recipe(model)
    if sampler is None or sampler == recipe["sampler"]:
        sampler = recipe["sampler"]
        if timesteps is None:  # a student's own trajectory, at the steps asked if any
            steps, spacing = steps or recipe.get("steps"), spacing or recipe.get("spacing")
        options = {**recipe.get("options", {}), **options}  # e.g. a student's clip_x0=False
    sample_fn = get_sampler(sampler).sample
    takes = inspect.signature(sample_fn).parameters
    if unknown := sorted(set(options) - set(takes)):
        own = [name for name, p in takes.items() if p.kind == p.KEYWORD_ONLY and name not in ("generator", "callback")]
        raise TinydiffError(f"sampler {sampler} does not take {', '.join(unknown)}; its options: {', '.join(own)}")
    if timesteps is None:
        timesteps = default_timesteps(sampler, model.schedule, steps, spacing)
    elif steps is not None or spacing is not None:
        raise TinydiffError("give either timesteps or steps and spacing, not both")
    pairs(model.schedule, timesteps)  # refuses a trajectory that is not one, before any work
    generator = torch.Generator(model.device).manual_seed(seed)
    if x_T is None:
        x_T = torch.randn((n, *model.image_shape), generator=generator, device=model.device)
    else:
        x_T = check_images(x_T, model, "x_T").to(model.device, torch.float32)
        if len(x_T) != n:
            raise ValueError(f"x_T holds {len(x_T)} latents for n = {n}")
    if prompts is not None:
        if labels is not None:
            raise TinydiffError("give class labels or prompts, not both")
        labels = prompt_vectors(model, prompts, n)
    elif labels is not None:
        if model.text_encoder:
            raise TinydiffError("this model is conditioned on text, not on class labels: give a prompt (--prompt)")
        labels = check_labels(labels, model.num_classes, n)
    batches = x_T.split(batch_size)
    label_batches = [None] * len(batches) if labels is None else labels.split(batch_size)
    bar = tqdm(
        total=len(batches) * len(timesteps),
        disable=not progress,
        desc=f"sampling {n} images ({sampler})",
        unit="step",
    )

    def step_callback(i, t, x_t, x0):
        bar.update(1)
        if callback is not None:
            callback(i, t, x_t, x0)

    chunks = [
        sample_fn(
            model.denoiser(y, guidance, guidance_interval, dynamic_threshold, guide),
            model.schedule,
            chunk,
            timesteps,
            generator=generator,
            callback=step_callback,
            **options,
        )
        for chunk, y in zip(batches, label_batches)
    ]
    bar.close()
    images = torch.cat(chunks).clamp(-1, 1)
    if refine is not None:
        images = refine_images(refine, images, refine_from, refine_steps, labels, generator, batch_size, progress)
    return images


def refine_trajectory(refiner: DiffusionModel, start: int, steps: int) -> list[int]:
    """The timesteps along which ``refiner`` finishes images: ``steps`` of them from ``start`` down to
    sigma = 0.08, evenly in log-SNR (``NoiseSchedule.log_snr_steps``; from t = 600 on the cosine schedule:
    600, 198, 43); refuses a trajectory that is not one, naming the flags that set it."""
    try:
        if type(start) is not int or type(steps) is not int:
            raise ValueError
        return refiner.schedule.log_snr_steps(steps, start).tolist()
    except ValueError:
        raise TinydiffError(
            f"refine from a timestep in [0, {refiner.schedule.num_timesteps - 1}] (--refine-from) in 1 to that "
            f"timestep + 1 steps (--refine-steps), got {steps} steps from {start}"
        ) from None


def refine_images(
    refiner: DiffusionModel,
    images: torch.Tensor,
    start: int = REFINE_FROM,
    steps: int = REFINE_STEPS,
    labels: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    batch_size: int = 64,
    progress: bool = False,
) -> torch.Tensor:
    """SDEdit (Meng et al. 2022): ``images`` [N, C, H, W] noised to timestep ``start`` with fresh noise,
    x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps (DDPM eq. 4), and denoised again by ``refiner``
    with deterministic dpm++2m over ``steps`` timesteps: ``steps`` network evaluations per image. Noised
    to t = 600 (sigma_t = 1.4 on the cosine schedule: noise 1.4 times the signal) the images keep their
    shapes and the refiner redraws their strokes, which finishes a one-step student's images with its teacher."""
    tau = refine_trajectory(refiner, start, steps)
    t = torch.full((len(images),), start)
    x_t = refiner.schedule.q_sample(images, t, noise_like(images, generator))  # DDPM eq. 4
    return sample(
        refiner,
        len(images),
        sampler="dpm++2m",
        timesteps=tau,
        x_T=x_t,
        labels=labels,
        batch_size=batch_size,
        progress=progress,
    )


def prompt_vectors(model: DiffusionModel, prompts, n: int) -> torch.Tensor:
    """The condition vectors [n, D] of a text-conditioned model for ``prompts`` (a text, or a list
    the n images take in turn: image i gets prompt i mod L, as classes do). A prompt unlike the
    training captions still gives images (the network's response to its vector); the empty prompt
    is the unconditional model."""
    from .text import check_prompts, embed

    if not model.text_encoder:
        raise TinydiffError("this model is not text-conditioned (trained without --text): drop the prompt")
    vectors = embed(check_prompts(prompts), model.text_encoder)
    return vectors[torch.arange(n) % len(vectors)]


def sampling_recipe(model: DiffusionModel) -> dict:
    """How ``model`` samples when not told: the sampler, steps and spacing its checkpoint records (a
    distilled student's), else DDIM with its defaults."""
    return {"sampler": "ddim", **(model.config.get("sampling") or {})}


def _budget(config: TrainConfig, share: float) -> dict:
    """``share`` of a run's budget: of its minutes if it has them, else of its steps."""
    if config.minutes is not None:
        return {"minutes": config.minutes * share}
    return {"steps": max(1, round(config.steps * share))}


def distill(
    teacher: str | Path = "pretrained:mnist",
    steps: int = 4,
    out: str | Path = "runs/distilled",
    *,
    from_steps: int = 64,
    minutes: float | None = 10.0,
    train_steps: int | None = None,
    guidance: float = 0.0,
    guide: str | Path | None = None,
    guidance_interval: tuple[float, float] | None = None,
    consistency: bool = False,
    adversarial: float = 0.0,
    progress: bool = True,
    **options,
) -> Path:
    """Progressive distillation (Salimans & Ho 2022; training/distill.py): rounds that halve the DDIM
    steps from ``from_steps`` down to ``steps``, each a training run of ``minutes`` (or ``train_steps``) in OUT/steps-N
    whose student starts from, and learns from, the round before (the first: ``teacher``, guided
    with weight ``guidance``: classifier-free, or autoguided away from the weaker model ``guide``; at
    noise levels sigma_t in ``guidance_interval`` = (lo, hi] only, when given). With ``consistency``,
    consistency distillation instead (training/consistency.py): one run in OUT/consistency across
    the teacher's DDIM steps of T / ``from_steps`` timesteps, its student sampling in ``steps``; with
    ``adversarial`` W > 0 as well, the last ADVERSARIAL_SHARE of the budget is a second run in
    OUT/adversarial that continues the student with W times a GAN loss on its one-step images
    (training/adversarial.py) at a constant learning rate. The teacher's recorded training options
    carry over, except the students' own recipe (learning rate and its schedule, AdamW, no guide);
    ``options`` override both (e.g. lr, batch_size). A cut run continues where it stopped. Returns
    the last student's checkpoint, which records how it samples (``sample(student)`` needs no options)."""
    import dataclasses

    from .checkpoint import list_checkpoints
    from .training import Trainer

    powers = [s for s in (steps, from_steps) if type(s) is not int or s < 1 or s & (s - 1)]
    if not consistency and (powers or steps >= from_steps):  # a consistency student takes any steps
        raise TinydiffError(
            f"distillation halves the steps: powers of two with steps < from_steps, got {steps} and {from_steps}"
        )
    if adversarial and not consistency:
        raise TinydiffError("--adversarial trains a consistency student: add --consistency")
    if (guide is not None or guidance_interval is not None) and not guidance > 0:
        raise TinydiffError("--guide and --guidance-interval need a guidance weight --guidance w > 0")
    recorded = load(teacher, device="cpu").config["train"]
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    base = {k: v for k, v in recorded.items() if k in fields}
    base.update(lr=2e-4, warmup=50, lr_schedule="linear", steps=train_steps or 10**8, minutes=minutes)
    base.update(optimizer="adamw")  # the students' recipe as measured, whatever the teacher trained with
    base.update(sample_grid=0, ckpt_every=250, clip_aware_loss=False, guide_at=None)  # a student needs no guide
    unguided = dict(teacher_guidance=0.0, teacher_guide=None, teacher_guidance_interval=None)
    base.update(init=None, teacher=None, student_steps=None, consistency_steps=None, adversarial=0.0, **unguided)
    base.update(options)
    guided = dict(
        teacher_guidance=guidance,
        teacher_guide=None if guide is None else str(guide),
        teacher_guidance_interval=None if guidance_interval is None else ",".join(str(v) for v in guidance_interval),
    )
    if consistency:
        run = Path(out) / "consistency"
        roles = dict(init=str(teacher), teacher=str(teacher), student_steps=steps, consistency_steps=from_steps)
        config = full = TrainConfig(**{**base, **roles, "out": str(run), **guided})
        if adversarial:  # the first run's share of the budget
            config = dataclasses.replace(full, **_budget(full, 1 - ADVERSARIAL_SHARE))
        if progress:
            print(f"consistency distillation of {teacher} across {from_steps} DDIM steps: {run}", file=sys.stderr)
        ckpt = Trainer(config, resume=bool(list_checkpoints(run))).run(progress=progress)
        if not adversarial:
            return ckpt
        second = dict(
            out=str(Path(out) / "adversarial"), init=str(run), adversarial=adversarial, lr_schedule="constant"
        )
        config = dataclasses.replace(full, **second, **_budget(full, ADVERSARIAL_SHARE))
        if progress:
            print(f"the student against a discriminator (weight {adversarial}): {config.out}", file=sys.stderr)
        return Trainer(config, resume=bool(list_checkpoints(config.out))).run(progress=progress)
    previous, ckpt, student = str(teacher), None, from_steps // 2
    while student >= steps:
        run = Path(out) / f"steps-{student}"
        guiding = guided if previous == str(teacher) else unguided  # later teachers are guided students already
        round_options = dict(out=str(run), init=previous, teacher=previous, student_steps=student)
        config = TrainConfig(**{**base, **round_options, **guiding})
        if progress:
            print(f"distilling {previous} into {student} DDIM step{'s' if student > 1 else ''}: {run}", file=sys.stderr)
        ckpt = Trainer(config, resume=bool(list_checkpoints(run))).run(progress=progress)
        previous, student = str(run), student // 2
    return ckpt


def grid_columns(model: DiffusionModel, every_class: bool, prompts: list[str] | None = None) -> int | None:
    """A grid's width: a column per prompt when there are several, a column per class when the
    images take every class in turn, else None (a square)."""
    if prompts and len(prompts) > 1:
        return len(prompts)
    return model.num_classes if every_class else None


def class_labels(
    model: DiffusionModel, which: str | int | None, n: int, *, per_class: int | None = None, prompts=None
) -> tuple[torch.Tensor | None, int]:
    """The class labels to sample ``model`` with, and how many images that makes; the one policy of
    ``sample`` and ``eval``.

    which: None: "all" for a class-conditional model, no labels for an unconditional one; "all": n
    labels cycling through the classes (0, 1, ..., K-1, 0, ...), or with ``per_class`` that many
    images of each class in order (K * per_class images, a grid row per class); "none": no labels
    (a conditional model samples its null class); "data": n labels in the proportions of the
    classes of the training data (config.json's data.spec); a class index (an int or its string):
    that class for every image. With ``prompts`` (a text-conditioned model), no labels.
    """
    if prompts is not None:
        if which is not None or per_class is not None:
            raise TinydiffError("--prompt replaces --class and --per-class: give one or the other")
        return None, n  # a model without text conditioning is refused by prompt_vectors, before any sampling
    if model.text_encoder and which not in (None, "none"):
        raise TinydiffError("this model is conditioned on text, not on class labels: use --prompt instead of --class")
    if which is None:
        which = "all" if model.num_classes else "none"
    if per_class is not None and which != "all":
        raise TinydiffError(f"--per-class goes with --class all (a row per class), not with --class {which}")
    if which == "none":
        return None, n
    if not model.num_classes:
        raise TinydiffError("this model is not class-conditional (trained without --conditional): drop --class")
    if which == "data":  # the training data's class frequencies, p(y)
        from .data import load_dataset

        return load_dataset(model.config["data"]["spec"]).labels_like(n), n
    if which == "all":
        if per_class is not None:
            return torch.arange(model.num_classes).repeat_interleave(per_class), model.num_classes * per_class
        return model.balanced_labels(n), n
    try:
        return torch.full((n,), which if type(which) is int else int(str(which))), n
    except ValueError:
        raise TinydiffError(f"--class must be a class index, 'all', 'data' or 'none', got {which!r}") from None


def check_images(images: torch.Tensor, model: DiffusionModel, what: str = "images") -> torch.Tensor:
    """Refuse images whose [C, H, W] is not the checkpoint's, with a message saying both."""
    if images.ndim != 4 or tuple(images.shape[1:]) != tuple(model.image_shape):
        raise TinydiffError(
            f"{what} have shape {tuple(images.shape[1:])} per image, but the checkpoint was trained on "
            f"{tuple(model.image_shape)} (channels, height, width)"
        )
    return images


@torch.inference_mode()
def invert(
    model: DiffusionModel | str | Path,
    images: torch.Tensor,
    *,
    steps: int = 50,
    spacing: str = "uniform",
    labels=None,
    batch_size: int = 64,
    progress: bool = False,
) -> torch.Tensor:
    """DDIM inversion (samplers/inversion.py): images [N, C, H, W] (uint8, or float in [-1, 1]) ->
    latents x_T [N, C, H, W] that ``decode(model, latents, steps=steps, spacing=spacing)``
    (DDIM, eta = 0, no clipping) maps back to the images."""
    if not isinstance(model, DiffusionModel):
        model = load(model)
    images = check_images(images, model)
    x_0 = images.float() / 127.5 - 1 if images.dtype == torch.uint8 else images.float()
    if labels is not None:
        labels = check_labels(labels, model.num_classes, len(x_0))
    tau = default_timesteps("ddim", model.schedule, steps, spacing)
    chunks = []
    for i in tqdm(range(0, len(x_0), batch_size), disable=not progress, desc="inverting", unit="batch"):
        y = None if labels is None else labels[i : i + batch_size]
        x = x_0[i : i + batch_size].to(model.device)
        chunks.append(ddim_invert(model.denoiser(y), model.schedule, x, tau))
    return torch.cat(chunks)


def decode(model: DiffusionModel, latents: torch.Tensor, *, steps: int = 50, spacing: str = "uniform", **options):
    """The deterministic DDIM (eta = 0) image of latents x_T, without clipping (the exact inverse
    map of :func:`invert`); [N, C, H, W] in [-1, 1]."""
    options.setdefault("clip_x0", False)
    return sample(model, len(latents), sampler="ddim", steps=steps, spacing=spacing, x_T=latents, **options)
