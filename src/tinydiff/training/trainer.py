"""The training loop: Muon and AdamW (or AdamW alone) with warm-up, EMA, clipping, accumulation, autocast, checkpoints,
exact resume, per-timestep loss tracking.

Reproducibility: the network is initialised from ``seed``; the order of the data is a fixed
function of (seed, epoch); timesteps and noise come from one generator whose state, with
the global RNG (dropout) and the optimizer, is saved in every checkpoint. Resuming from step
k therefore continues bit-for-bit as the uninterrupted run would (on the same device and
thread count).

Run safety: every field of the config is checked before anything is built (config.validate); one
training at a time writes a run directory (checkpoint.RunLock, held from the constructor to the
end of :meth:`Trainer.run`); SIGTERM or SIGINT ends the current step, writes a checkpoint and
exits 143 or 130; ``log.jsonl`` is only appended to, and resuming never needs it to parse.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import math
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import torch

from .. import __version__
from ..checkpoint import (
    RunLock,
    export_model,
    list_checkpoints,
    load_trainer_state,
    load_weights,
    read_config,
    save_checkpoint,
)
from ..config import RESUMABLE_CHANGES, TrainConfig, validate
from ..data import ImageData, load_dataset
from ..errors import TinydiffError
from ..nets import build_net, net_config
from ..objectives import diffusion_loss, drop_labels, sample_timesteps
from ..schedule import NoiseSchedule
from ..text import ENCODERS
from . import board, distributed
from .adversarial import AdversarialTerm
from .consistency import ConsistencyDistillation
from .distill import Distillation, TeacherStep
from .ema import EMA
from .muon import Muon
from .posthoc import Profiles

LOSS_BUCKETS = 10  # loss_t is reported as the mean loss in 10 equal bands of timesteps
LOG_FILE = "log.jsonl"
GUIDE = "guide"  # --guide-at's model, in the run's folder
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)  # finish the step, checkpoint, exit 128 + signal number


# torch 2.13's inductor, given a network compiled under bf16 autocast, computes a backward pass in
# which 120 of the 167 parameters of the conditional `tiny` U-Net get exactly zero gradient (all
# but the outermost layers; backend="aot_eager" and eager autocast are right). A 60-minute run
# trained that way reached FID 33.8 instead of 11 (docs/RESULTS.md), so the pair is refused on CPU
# until tests/test_training.py::test_compiled_bf16_backward_reaches_every_parameter passes (CUDA's
# inductor backend generates other code and is not checked here).
AMP_WITH_COMPILE = (
    "--amp with --compile is refused on CPU: torch.compile's CPU backend computes zero gradients for "
    "most of the network under bf16 autocast (torch 2.13); use one of them"
)


def run_progress(config: TrainConfig, step: int, elapsed_s: float = 0.0) -> float:
    """How much of the run is done, in [0, 1]: ``step`` of ``steps`` or, with a ``minutes`` budget,
    the share of it spent, whichever is further."""
    progress = step / config.steps
    if config.minutes:
        progress = max(progress, elapsed_s / (60 * config.minutes))
    return min(1.0, progress)


def learning_rate(config: TrainConfig, step: int, elapsed_s: float = 0.0) -> float:
    """Linear warm-up over ``warmup`` steps, then constant, or a cosine or linear decay to zero at
    the end of the run: ``steps`` steps or, with a ``minutes`` budget, whichever comes first."""
    warm = min(1.0, (step + 1) / max(1, config.warmup))
    if config.lr_schedule == "constant":
        return config.lr * warm
    progress = run_progress(config, step, elapsed_s)
    if config.lr_schedule == "cosine":
        return config.lr * warm * 0.5 * (1 + math.cos(math.pi * progress))
    return config.lr * warm * (1 - progress)  # linear decay to zero


def epoch_order(seed: int, epoch: int, n: int) -> torch.Tensor:
    """The shuffled data order of one epoch, a pure function of (seed, epoch)."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))


def batch_indices(seed: int, step: int, batch_size: int, n: int) -> torch.Tensor:
    """Indices of the global batch at ``step``: consecutive slices of the epoch orders."""
    start = step * batch_size
    positions = torch.arange(start, start + batch_size)
    epochs = positions // n
    out = torch.empty(batch_size, dtype=torch.long)
    for epoch in epochs.unique().tolist():
        mask = epochs == epoch
        out[mask] = epoch_order(seed, epoch, n)[positions[mask] % n]
    return out


def _ends_torn(handle) -> bool:
    """Whether a file (opened in binary) does not end with a newline; leaves it at its start."""
    size = handle.seek(0, os.SEEK_END)
    torn = False
    if size:
        handle.seek(size - 1)
        torn = handle.read(1) != b"\n"
    handle.seek(0)
    return torn


def _record_step(line: bytes) -> int | None:
    """The step of a log.jsonl line; None for a line that is not a record."""
    try:
        record = json.loads(line)
    except (ValueError, RecursionError):
        return None
    step = record.get("step") if isinstance(record, dict) else None
    return step if isinstance(step, int) else None


class Trainer:
    """One training run. Under torchrun (training/distributed.py) every rank builds a Trainer;
    each computes its shard of every global batch, and rank 0 alone keeps the EMA and writes."""

    def __init__(self, config: TrainConfig, data: ImageData | None = None, resume: bool = False):
        validate(config)
        self.config = config
        self.out = Path(config.out)
        self.dist = distributed.context()
        if config.batch_size % (config.accumulate * self.dist.world_size):
            raise TinydiffError(
                f"--batch-size {config.batch_size} must be a multiple of --accumulate x processes "
                f"({config.accumulate} x {self.dist.world_size})"
            )
        self.device = self.dist.device(config.device)
        if config.amp and config.compile and self.device.type == "cpu":
            raise TinydiffError(AMP_WITH_COMPILE)
        data = data if data is not None else load_dataset(config.data)
        if config.subset:
            data = data.subset(config.subset, config.seed)
        if config.conditional and (data.labels is None or not data.num_classes):
            raise TinydiffError(f"--conditional needs class labels, and {data.name} has none")
        self.data = data
        self.prompts = self._prompt_vectors() if config.text else None
        self.schedule = NoiseSchedule.create(config.schedule, config.timesteps, config.snr_scale)
        self.model_config = {
            "tinydiff_version": __version__,
            "net": net_config(
                config.net,
                config.preset if config.net == "unet" else None,
                data.shape,
                use_time=config.use_time if config.net != "diffusers" else None,
                dropout=config.dropout if config.net == "unet" else None,
                channels=config.channels if config.net == "unet" else None,
                channel_mults=config.channel_mults if config.net == "unet" else None,
                blocks_per_level=config.blocks_per_level if config.net == "unet" else None,
                num_classes=data.num_classes if config.conditional else None,
                text_dim=ENCODERS[config.text] if config.text else None,
                self_condition=True if config.self_condition else None,
            ),
            "schedule": {"name": config.schedule, "timesteps": config.timesteps, "snr_scale": config.snr_scale},
            "prediction": config.prediction,
            "data": {"spec": config.data, "size": len(data), "image_shape": list(data.shape)},
            "train": dataclasses.asdict(config),
        }
        self.distillation = None
        if config.teacher:  # distillation: the loss is the teacher's, not diffusion's
            teacher = TeacherStep(
                config.teacher, config.teacher_guidance, self.schedule, self.device,
                config.teacher_guide, config.teacher_guidance_interval,
            )  # fmt: skip
            if config.consistency_steps:  # consistency distillation
                self.distillation = ConsistencyDistillation(
                    teacher, config.student_steps, config.consistency_steps, self.schedule
                )
            else:  # progressive distillation
                self.distillation = Distillation(teacher, config.student_steps, self.schedule)
        if self.distillation:  # the student records how it samples: sample(student) needs no options
            self.model_config["sampling"] = self.distillation.sampling()
        torch.manual_seed(config.seed)
        self.net = build_net(self.model_config["net"]).to(self.device)
        if config.init:
            self._initialise(config.init)
        self.model = self.net  # what the loss calls: the network, or its DDP wrapper
        if self.dist.enabled:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = torch.nn.parallel.DistributedDataParallel(self.net, device_ids=device_ids)
        if config.compile:  # the loss calls the compiled module; weights, EMA and checkpoints use self.net
            self.model = torch.compile(self.model)
        self.ema = EMA(self.net, config.ema_decay) if self.dist.is_main else None
        self.profiles = Profiles(self.net) if config.posthoc_ema and self.dist.is_main else None
        if config.optimizer == "muon":
            self.optimizer = Muon(self.net, lr=config.lr, weight_decay=config.weight_decay)
        else:  # foreach: the multi-tensor AdamW, bitwise the same updates as torch's per-tensor loop (the
            # default on CPU) with less overhead per tensor; so is clip_grad_norm_'s below
            self.optimizer = torch.optim.AdamW(
                self.net.parameters(), lr=config.lr, weight_decay=config.weight_decay, foreach=True
            )
        self.adversarial = self._adversarial_term() if config.adversarial else None
        self.generator = torch.Generator().manual_seed(config.seed + 1)
        self.step = 0
        self.elapsed_s = 0.0  # training wall time so far, carried across resumes
        self._stop_signal = 0  # the signal that asked the run to stop (0: none)
        if resume and not list_checkpoints(self.out):  # checked before locking: nothing to create
            raise TinydiffError(f"--resume: no checkpoint in {self.out}")
        self.lock = RunLock(self.out) if self.dist.is_main else None
        self._lock()
        try:  # under the lock: no other training changes what is found here
            existing = list_checkpoints(self.out)
            if resume:
                if not existing:
                    raise TinydiffError(f"--resume: no checkpoint in {self.out}")
                self._restore(existing[-1])
            elif existing:
                raise TinydiffError(
                    f"{self.out} already holds checkpoints; pass --resume to continue or choose another --out"
                )
            if self.profiles is not None:  # snapshots past the checkpoint are written again
                Profiles.forget_after(self.out, self.step)
        except BaseException:
            self.close()
            raise

    def _prompt_vectors(self) -> torch.Tensor:
        """Every training phrasing of every class (data/captions.py), embedded once: [K, P, D]."""
        from ..data.captions import phrasings
        from ..text import embed

        if self.data.labels is None:
            raise TinydiffError(f"--text makes captions from class labels, and {self.data.name} has none")
        captions = phrasings(self.config.data)
        if len(captions) != self.data.num_classes:
            raise TinydiffError(
                f"{self.data.name} has {self.data.num_classes} classes, its captions are for {len(captions)}"
            )
        return embed([c for per_class in captions for c in per_class], self.config.text).reshape(
            len(captions), len(captions[0]), -1
        )

    def _adversarial_term(self) -> AdversarialTerm:
        """--adversarial: the discriminator on the frozen features of the dataset's classifier."""
        from ..metrics.classifier import load_classifier

        if self.dist.enabled:
            raise TinydiffError("--adversarial trains on one process: run it without torchrun")
        try:
            features = load_classifier(self.config.data)
        except TinydiffError as err:
            raise TinydiffError(f"--adversarial needs the data's classifier: {err}") from None
        if features.shape != tuple(self.data.shape) or (
            self.config.conditional and features.head.out_features != self.data.num_classes
        ):
            raise TinydiffError(
                f"--adversarial: the classifier of {self.config.data} takes {features.head.out_features} classes of "
                f"{'x'.join(map(str, features.shape))} images, the data are {self.data.num_classes} of "
                f"{'x'.join(map(str, self.data.shape))}"
            )
        classes = self.data.num_classes if self.config.conditional else None
        return AdversarialTerm(features, classes, self.config.adversarial, self.schedule, self.device)

    def _initialise(self, checkpoint: str) -> None:
        """--init: the network starts from a checkpoint's EMA weights (same network options)."""
        from ..model import load

        source = load(checkpoint, device="cpu")
        if source.config["net"] != self.model_config["net"]:
            raise TinydiffError(f"--init {checkpoint}: its network differs from this run's ({source.config['net']})")
        self.net.load_state_dict(source.net.state_dict())

    def _lock(self) -> None:
        """Rank 0 takes the run directory's lock (if it does not hold it); every rank fails if it could not."""
        refused = None
        if self.lock is not None:
            try:
                self.lock.acquire()
            except TinydiffError as err:
                refused = err
        if self.dist.largest(int(refused is not None), self.device):
            raise refused or TinydiffError(f"{self.out} is in use by another training (rank 0 could not lock it)")

    def close(self) -> None:
        """Release the run directory (run() does at its end) for another Trainer, here or elsewhere."""
        if self.lock is not None:
            self.lock.release()

    def _restore(self, ckpt: Path) -> None:
        saved = read_config(ckpt)
        ours = self.model_config["train"]
        # a field newer than the checkpoint trained as its default does (or, where the default has changed
        # since, as checkpoint.LEGACY_VALUES says: read_config fills those in)
        theirs = {f.name: f.default for f in dataclasses.fields(TrainConfig)} | saved["train"]
        diffs = [k for k, v in theirs.items() if k not in RESUMABLE_CHANGES and ours.get(k) != v]
        if diffs or saved.get("net") != self.model_config["net"]:
            what = ", ".join(f"{k}={theirs[k]!r} (now {ours.get(k)!r})" for k in diffs) or "network"
            raise TinydiffError(f"cannot resume {ckpt}: it was trained with another config: {what}")
        load_weights(ckpt, "model.safetensors", self.net)
        if self.ema is not None:
            load_weights(ckpt, "ema.safetensors", self.ema.shadow)
        state = load_trainer_state(ckpt)
        if self.profiles is not None:
            self.profiles.load(self.out, int(state["step"]))
        for moments in state["optimizer"].get("state", {}).values():
            if any(torch.is_tensor(v) and v.is_floating_point() and not v.isfinite().all() for v in moments.values()):
                raise TinydiffError(
                    f"{ckpt / 'trainer_state.pt'}: the optimizer state holds NaN or infinite values; "
                    "resume from an earlier checkpoint"
                )
        self.optimizer.load_state_dict(state["optimizer"])
        if self.adversarial is not None:
            self.adversarial.load(state["adversarial"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["global_rng"])
        self.step = int(state["step"])
        self.elapsed_s = float(state.get("elapsed_s", 0.0))
        if self.dist.is_main:
            self._cut_log(self.step)

    def _cut_log(self, step: int) -> None:
        """Cut log.jsonl before its first record of a step after ``step`` (the resumed run writes
        those again) and drop a torn last line (a write cut short by a full disk or a kill), with a
        warning. The log is never rewritten, only cut at a byte offset (os.truncate needs no disk
        space), so no record before the cut can be lost. Resuming needs no line to parse: lines
        that are not JSON records are left where they are."""
        log = self.out / LOG_FILE
        if not log.is_file():
            return
        with open(log, "rb") as handle:
            torn = _ends_torn(handle)
            offset, cut = 0, None
            for line in handle:
                if not line.endswith(b"\n"):  # the torn last line
                    cut = offset
                    break
                step_of_line = _record_step(line)
                if step_of_line is not None and step_of_line > step:
                    cut = offset
                    break
                offset += len(line)
        if cut is not None:
            os.truncate(log, cut)
        if torn:
            print(f"tinydiff: warning: {log}: dropped its torn last line (a write that was cut short)", file=sys.stderr)

    def _open_log(self):
        """log.jsonl, opened to append records (unbuffered: one write each). A fresh run does not
        append to a log that an earlier run left without any checkpoint (stopped before its first):
        that log is moved aside to log.jsonl.old, replacing an older one there."""
        log = self.out / LOG_FILE
        if self.step == 0 and log.exists():
            os.replace(log, log.with_name(LOG_FILE + ".old"))
        return open(log, "ab", buffering=0)

    def _append_log(self, handle, record: dict) -> None:
        data = (json.dumps(record) + "\n").encode()
        try:
            while data:
                data = data[handle.write(data) :]
        except OSError as err:
            reason = "disk full" if err.errno in (errno.ENOSPC, errno.EDQUOT) else err.strerror or str(err)
            raise TinydiffError(
                f"{reason} while writing {self.out / LOG_FILE}; the last checkpoint is intact and --resume continues"
            ) from None

    def save(self) -> Path:
        state = {
            "step": self.step,
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "global_rng": torch.get_rng_state(),
            "elapsed_s": self.elapsed_s,
        }
        if self.adversarial is not None:
            state["adversarial"] = self.adversarial.state()
        if self.profiles is not None:  # first: a checkpoint always has its snapshot
            self.profiles.save(self.out, self.step)
        return save_checkpoint(
            self.out,
            self.step,
            self.model_config,
            self.net.state_dict(),
            self.ema.shadow.state_dict(),
            state,
            self.config.keep,
        )

    def guide_due(self) -> bool:
        """--guide-at: the run has reached that fraction and OUT/guide is not written yet."""
        at = self.config.guide_at
        reached = bool(at) and run_progress(self.config, self.step, self.elapsed_s) >= at
        return reached and not (self.out / GUIDE).exists()

    def save_guide(self, ckpt: Path) -> None:
        """The EMA weights of checkpoint ``ckpt`` as OUT/guide, an inference-only model as ``tinydiff
        export`` writes it (written beside and renamed: a cut run leaves all of it or none)."""
        partial = self.out / (GUIDE + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        export_model(ckpt, partial)
        os.replace(partial, self.out / GUIDE)

    def _images(self, index: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
        """The training images ``index`` on the device, mirrored where ``flip`` (with --hflip)."""
        x0 = self.data.batch(index, self.device)
        if self.config.hflip:
            x0 = torch.where(flip.to(self.device)[:, None, None, None], x0.flip(-1), x0)
        return x0

    def _discriminator_step(self, index, flip, parts, z: torch.Tensor, classes: torch.Tensor | None) -> None:
        """One optimizer step of --adversarial's discriminator: the batch's images against the student's
        one-step images from the noise z, in the same micro-batches as the student's step."""
        term, config = self.adversarial, self.config
        term.optimizer.zero_grad(set_to_none=True)
        for part in parts:
            part_classes = None if classes is None else classes[part].to(self.device)
            with torch.no_grad(), torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=config.amp):
                fake = term.generate(self.model, z[part].to(self.device), part_classes, config.prediction)
            real = self._images(index[part], flip[part])
            (term.discriminator_loss(real, fake, part_classes) / config.accumulate).backward()
        term.optimizer.step()

    def train_step(self) -> tuple[float, torch.Tensor, torch.Tensor]:
        """One optimizer step on one global batch; returns (loss, per-sample losses, timesteps)."""
        config = self.config
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate(config, self.step, self.elapsed_s)
        index = batch_indices(config.seed, self.step, config.batch_size, len(self.data))
        # Draw the randomness of the whole global batch first, so that --accumulate only
        # changes how the computation is split, not what is computed.
        t = sample_timesteps(len(index), self.schedule, config.timestep_sampling, self.generator)
        noise = torch.randn((len(index), *self.data.shape), generator=self.generator)
        flip = torch.rand(len(index), generator=self.generator) < 0.5
        labels = None
        if config.conditional:  # the null class is index num_classes
            labels = drop_labels(self.data.labels[index], config.p_uncond, self.data.num_classes, self.generator)
        elif self.prompts is not None:  # a random training phrasing of each image's class, or the empty prompt
            which = torch.randint(self.prompts.shape[1], (len(index),), generator=self.generator)
            labels = drop_labels(self.prompts[self.data.labels[index], which], config.p_uncond, 0, self.generator)
        # self-conditioning on half of the batches (Chen et al. 2022, Alg. 1); no draw without it
        self_condition = config.self_condition and bool(torch.rand((), generator=self.generator) < 0.5)
        # This process's shard of the global batch (all of it on one process), in micro-batches.
        parts = torch.arange(len(index))[self.dist.shard(len(index))].chunk(config.accumulate)
        adversarial = self.adversarial is not None
        if adversarial:  # the student's one-step images from fresh noise (no draw without it)
            z = torch.randn((len(index), *self.data.shape), generator=self.generator)
            classes = self.data.labels[index] if config.conditional else None  # never the null class
            self._discriminator_step(index, flip, parts, z, classes)
        self.optimizer.zero_grad(set_to_none=True)
        all_losses = []
        for i, part in enumerate(parts):
            # DDP averages gradients over ranks when the last micro-batch's backward runs
            last = i == len(parts) - 1
            sync = contextlib.nullcontext() if last or not self.dist.enabled else self.model.no_sync()
            x0 = self._images(index[part], flip[part])
            with sync, torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=config.amp):
                part_labels = None if labels is None else labels[part].to(self.device)
                part_t, part_noise = t[part].to(self.device), noise[part].to(self.device)
                if self.distillation is not None:
                    losses = self.distillation(self.model, x0, part_t, part_noise, part_labels, config.prediction)
                else:
                    losses = diffusion_loss(
                        self.model,
                        self.schedule,
                        x0,
                        part_t,
                        part_noise,
                        config.prediction,
                        config.weighting,
                        part_labels,
                        clip_aware=config.clip_aware_loss,
                        self_condition=self_condition,
                        gamma=config.snr_gamma,
                    )
                total = losses.mean()
                if adversarial:  # + W * L_G through the updated discriminator
                    part_classes = None if classes is None else classes[part].to(self.device)
                    fake = self.adversarial.generate(
                        self.model, z[part].to(self.device), part_classes, config.prediction
                    )
                    total = total + self.adversarial.generator_loss(fake, part_classes)
                # the mean over the global batch, once DDP has averaged over the world_size ranks
                (total / (config.accumulate)).backward()
            all_losses.append(losses.detach().float())
        losses = self.dist.gather(torch.cat(all_losses)).cpu()
        loss = float(losses.mean())
        if not math.isfinite(loss):
            saved = list_checkpoints(self.out)
            last = f"the last good checkpoint is {saved[-1]}" if saved else "no checkpoint was written"
            raise TinydiffError(f"loss became {loss} at step {self.step} (try a lower --lr); {last}")
        torch.nn.utils.clip_grad_norm_(self.net.parameters(), config.grad_clip, foreach=True)
        self.optimizer.step()
        if self.ema is not None:
            self.ema.update(self.net, self.step)
        if self.profiles is not None:
            self.profiles.update(self.net, self.step + 1)
        self.step += 1
        return loss, losses, t

    def ema_model(self):
        """The EMA weights as they are now, as a model to sample (they live on; do not train them)."""
        from ..model import DiffusionModel

        return DiffusionModel(self.ema.shadow, self.schedule, self.config.prediction, self.model_config)

    def budget_spent(self) -> bool:
        return self.config.minutes is not None and self.elapsed_s >= 60 * self.config.minutes

    def _sync_clock(self) -> None:
        """Use rank 0's training time on every rank: it sets the cosine learning rate and the end
        of a budgeted run, which must be the same everywhere."""
        if self.dist.enabled and self.config.minutes is not None:
            clock = torch.tensor([self.elapsed_s], dtype=torch.float64, device=self.device)
            torch.distributed.broadcast(clock, src=0)
            self.elapsed_s = float(clock)

    def run(self, progress: bool = True) -> Path | None:
        """Train until ``config.steps`` (or the ``minutes`` budget); checkpoint every ``ckpt_every``
        steps and at the end. Returns the last checkpoint (None on ranks other than 0).

        SIGTERM (what SLURM and Kubernetes send) or SIGINT (Ctrl-C) stops the run after the step in
        progress: a checkpoint of that step is written, one line says so, and SystemExit(128 +
        signal number) is raised: exit status 143 or 130. Under torchrun every rank stops after the
        same step. The run directory stays locked until this returns."""
        try:
            self._lock()
            with self._stop_on_signals():
                return self._train(progress)
        finally:
            self.close()

    @contextlib.contextmanager
    def _stop_on_signals(self) -> Iterator[None]:
        """While training, SIGTERM and SIGINT only record that the run should stop (the loop then
        stops at the end of its step); repeats are ignored. A signal that came after the loop's last
        check is passed on to the previous handlers when training ends."""
        self._stop_signal = 0
        if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
            yield
            return

        def request(signum, frame):
            self._stop_signal = self._stop_signal or signum

        previous = {s: signal.signal(s, request) for s in STOP_SIGNALS}
        try:
            yield
        finally:
            for s, handler in previous.items():
                signal.signal(s, signal.SIG_DFL if handler is None else handler)
        if self._stop_signal:
            signal.raise_signal(self._stop_signal)

    def _stopped(self, signum: int, ckpt: Path | None) -> None:
        """End a run that a signal stopped: one line on rank 0, then SystemExit(128 + signum)."""
        if self.dist.is_main:
            name = signal.Signals(signum).name
            print(
                f"tinydiff: {name}: stopped after step {self.step}; saved {ckpt} (--resume continues)", file=sys.stderr
            )
        self.dist.barrier()  # rank 0 has written the checkpoint
        raise SystemExit(128 + signum)

    def _train(self, progress: bool) -> Path | None:
        from tqdm import tqdm

        config, main = self.config, self.dist.is_main
        if main:
            self.out.mkdir(parents=True, exist_ok=True)
        bucket_sum, bucket_count = torch.zeros(LOSS_BUCKETS), torch.zeros(LOSS_BUCKETS)
        window_loss, window_images, window_start = 0.0, 0, time.perf_counter()
        # a run with a time budget counts training seconds (the steps in the postfix), else steps
        timed = config.minutes is not None
        bar = tqdm(
            total=round(config.minutes * 60) if timed else config.steps,
            initial=round(self.elapsed_s) if timed else self.step,
            unit="s" if timed else "step",
            disable=not (progress and main),
            dynamic_ncols=True,
        )
        ckpt, stop = None, 0
        writer = board.open_tensorboard(self.out) if main and config.logger == "tensorboard" else None
        with self._open_log() if main else contextlib.nullcontext() as log:
            self._sync_clock()
            while self.step < config.steps and not self.budget_spent():
                started, clock = time.perf_counter(), self.elapsed_s  # clock: what set this step's learning rate
                loss, losses, t = self.train_step()
                bucket = (t * LOSS_BUCKETS // self.schedule.num_timesteps).long()
                bucket_sum.index_add_(0, bucket, losses)
                bucket_count.index_add_(0, bucket, torch.ones_like(losses))
                window_loss += loss
                window_images += config.batch_size
                self.elapsed_s += time.perf_counter() - started
                self._sync_clock()
                stop = self.dist.largest(self._stop_signal, self.device)  # any rank's signal stops every rank
                # the run's last step (its step count, its budget or a signal): logged and saved, whatever its number
                last = self.step == config.steps or self.budget_spent() or bool(stop)
                if main and (self.step % config.log_every == 0 or last):
                    elapsed = time.perf_counter() - window_start
                    steps_in_window = window_images // config.batch_size
                    record = {
                        "step": self.step,
                        "loss": window_loss / steps_in_window,
                        "lr": learning_rate(config, self.step - 1, clock),
                        "images_per_s": window_images / elapsed,
                        "elapsed_s": round(self.elapsed_s, 1),
                        "processes": self.dist.world_size,
                        "loss_t": (bucket_sum / bucket_count.clamp(min=1)).tolist(),
                    }
                    if self.adversarial is not None:  # the discriminator's and the student's hinge losses
                        record.update(self.adversarial.log())
                    self._append_log(log, record)
                    if writer is not None:
                        board.write_record(writer, record)
                    bar.set_postfix(step=self.step, loss=f"{record['loss']:.4f}", img_s=f"{record['images_per_s']:.0f}")
                    bucket_sum.zero_()
                    bucket_count.zero_()
                    window_loss, window_images, window_start = 0.0, 0, time.perf_counter()
                bar.update(min(round(self.elapsed_s), bar.total) - bar.n if timed else 1)
                guide = main and self.guide_due()
                if main and (self.step % config.ckpt_every == 0 or last or guide):
                    ckpt = self.save()
                if guide:
                    self.save_guide(ckpt)
                if main and config.grid_every and self.step % config.grid_every == 0:  # not in the clock
                    board.grid(self.ema_model(), self.step, self.out, config.seed, writer)
                if stop:
                    break
        bar.close()
        if writer is not None:
            writer.close()
        if stop:
            self._stopped(stop, ckpt)
        if not main:
            return None
        return ckpt if ckpt is not None else list_checkpoints(self.out)[-1]
