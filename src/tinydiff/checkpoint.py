"""Checkpoints: one directory per save, written atomically, found again after any crash.

A run directory ``runs/NAME/`` holds ``ckpt-0000500/``, ``ckpt-0001000/``, ... and a ``latest``
file naming the newest. Each checkpoint directory has
  config.json        everything needed to rebuild net, schedule, objective and data shape
  model.safetensors  the trained weights
  ema.safetensors    their exponential moving average (what samplers use by default)
  trainer_state.pt   optimizer, step and RNG states, for exact resume
It is written into a temporary directory, flushed to disk, then renamed into place, and only
then does ``latest`` move (os.replace). A process killed at any moment therefore leaves the
previous checkpoint complete and loadable; stray ``.tmp-*`` directories are ignored and
cleaned up by the next save.

One training at a time writes a run directory: :class:`RunLock` holds ``.lock`` for the whole run.
Reading is checked as strictly as writing: ``latest`` must name a checkpoint directory of the run,
config.json must describe a model field by field (:func:`read_config`), and weights must be finite.
"""

from __future__ import annotations

import errno
import functools
import io
import json
import math
import os
import re
import shutil
import sys
import tempfile
import typing
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from .config import TrainConfig
from .denoiser import PREDICTIONS
from .errors import TinydiffError
from .files import atomic_write
from .nets import NET_KINDS, build_net
from .schedule import MAX_TIMESTEPS, SCHEDULES, NoiseSchedule
from .text import ENCODERS

try:
    import fcntl
except ImportError:  # Windows: no flock; runs are not locked there
    fcntl = None

FORMAT_VERSION = 1
FILES = ("config.json", "model.safetensors", "ema.safetensors", "trainer_state.pt")
CKPT_PATTERN = re.compile(r"ckpt-([0-9]+)")  # used with fullmatch


def weights_file(ema: bool) -> str:
    """The file of a checkpoint that holds its EMA (``ema=True``) or its raw trained weights."""
    return "ema.safetensors" if ema else "model.safetensors"


def _write(path: Path, data: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _state_bytes(module_state: dict) -> bytes:
    return save_safetensors({k: v.detach().contiguous().cpu() for k, v in module_state.items()})


def save_checkpoint(
    run_dir: Path, step: int, config: dict, model_state: dict, ema_state: dict, trainer_state: dict, keep: int = 2
) -> Path:
    """Write ``run_dir/ckpt-STEP`` atomically, point ``latest`` at it, keep the newest ``keep``."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    final = run_dir / f"ckpt-{step:07d}"
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-ckpt-", dir=run_dir))
    try:
        buffer = io.BytesIO()
        torch.save(trainer_state, buffer)
        _write(tmp / "model.safetensors", _state_bytes(model_state))
        _write(tmp / "ema.safetensors", _state_bytes(ema_state))
        _write(tmp / "trainer_state.pt", buffer.getvalue())
        _write(tmp / "config.json", json.dumps({**config, "format_version": FORMAT_VERSION}, indent=2).encode())
        _fsync_dir(tmp)
        if final.exists():  # re-saving a step: move the old copy aside first
            os.rename(final, tmp.with_name(tmp.name + "-old"))
        os.rename(tmp, final)
        _write(run_dir / ".latest.tmp", final.name.encode())
        os.replace(run_dir / ".latest.tmp", run_dir / "latest")
        _fsync_dir(run_dir)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            raise TinydiffError(
                f"disk full while writing checkpoint {final}; the previous checkpoint is intact"
            ) from None
        raise TinydiffError(f"could not write checkpoint {final}: {err}") from None
    for stale in run_dir.glob(".tmp-ckpt-*"):
        shutil.rmtree(stale, ignore_errors=True)
    for old in list_checkpoints(run_dir)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoint directories of a run, oldest first."""
    found = []
    for child in Path(run_dir).iterdir() if Path(run_dir).is_dir() else []:
        match = CKPT_PATTERN.fullmatch(child.name)
        if match and all((child / f).is_file() for f in FILES):
            found.append((int(match.group(1)), child))
    return [path for _, path in sorted(found)]


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint directory itself, or the newest complete checkpoint of a run directory: the one
    ``latest`` names if it is complete, else the newest complete one."""
    path = Path(path)
    if not path.exists():
        raise TinydiffError(f"checkpoint {path} does not exist")
    if (path / "config.json").exists() or CKPT_PATTERN.fullmatch(path.name):
        return path
    latest = path / "latest"
    if latest.is_file():
        candidate = _latest_target(latest)
        if all((candidate / f).is_file() for f in FILES):
            return candidate
    complete = list_checkpoints(path)
    if not complete:
        raise TinydiffError(f"no checkpoint found in {path} (expected ckpt-*/ with {', '.join(FILES)})")
    return complete[-1]


def _latest_target(latest: Path) -> Path:
    """The checkpoint directory a run's ``latest`` file names: only a ``ckpt-N`` directly inside the
    run, not a path (``../other-run``) nor a link that leads out of it."""
    run = latest.parent
    try:
        name = latest.read_text().strip()
    except (OSError, UnicodeDecodeError) as err:
        raise TinydiffError(f"{latest}: cannot read it ({err})") from None
    candidate = run / name
    if not CKPT_PATTERN.fullmatch(name) or (candidate.exists() and candidate.resolve().parent != run.resolve()):
        raise TinydiffError(f"{latest} names {_show(name)}, not a checkpoint directory (ckpt-N) of {run}")
    return candidate


class RunLock:
    """The exclusive right to write a run directory: ``fcntl.flock`` on ``run_dir/.lock``.

    A second writer is refused with the pid of the holder, which the file keeps. The kernel drops
    the lock when its process ends in any way (even SIGKILL), so the lock of a dead run is free at
    once. The file itself is never deleted: a process could hold a lock on a deleted file while
    another locks a new one of the same name.
    """

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / ".lock"
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        if self.held or fcntl is None:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = (os.pread(fd, 32, 0).decode(errors="replace").split() or ["unknown"])[0]
            os.close(fd)
            message = f"{self.run_dir} is in use by another training (pid {holder})"
            raise TinydiffError(f"{message}; wait for it to end or choose another --out") from None
        except OSError as err:  # a file system without flock: train unlocked rather than not at all
            os.close(fd)
            print(f"tinydiff: warning: cannot lock {self.run_dir} ({err}); it is not protected", file=sys.stderr)
            return
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the only descriptor of the open file drops the flock
            self._fd = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def __del__(self) -> None:
        if getattr(self, "_fd", None) is not None:
            self.release()


# What a checkpoint written before a training field existed was trained with, for the fields whose default
# has changed since (a field missing here trained as its default does).
LEGACY_VALUES = {
    "clip_aware_loss": False,
    "self_condition": False,
    "snr_scale": 1.0,
    "snr_gamma": 5.0,
    "optimizer": "adamw",
}


def with_legacy_values(train: dict) -> dict:
    """A recorded "train" section (config.json's) with LEGACY_VALUES for the fields it was written without."""
    return {**LEGACY_VALUES, **train}


# Bounds on the sizes config.json may give (far beyond any trained model; they keep every size a
# valid int64; schedule.MAX_TIMESTEPS bounds T). A network's total size is bounded by its
# weights file instead: build_checked.
MAX_SIDE = 2**16  # image channels, height, width; network widths
MAX_COUNT = 2**10  # resolution levels, blocks per level, heads, MLP depth
MAX_CLASSES = 2**20

# A rule for a config.json value: (accepts(value), what is allowed, in words).
Rule = tuple[Callable[[object], bool], str]


def _integer(low: int, high: int) -> Rule:
    return (lambda v: type(v) is int and low <= v <= high), f"an integer in [{low}, {high}]"


def _integers(low: int, high: int, min_len: int, max_len: int) -> Rule:
    def accepts(v) -> bool:
        in_range = isinstance(v, list) and all(type(x) is int and low <= x <= high for x in v)
        return in_range and min_len <= len(v) <= max_len

    count = f"{min_len}" if min_len == max_len else f"{min_len} to {max_len}"
    return accepts, f"a list of {count} integers in [{low}, {high}]"


def _either(first: Rule, second: Rule) -> Rule:
    return (lambda v: first[0](v) or second[0](v)), f"{first[1]}, or {second[1]}"


def _optional(rule: Rule) -> Rule:
    return (lambda v: v is None or rule[0](v)), f"{rule[1]}, or null"


def _choice(options: Sequence[str]) -> Rule:
    return (lambda v: isinstance(v, str) and v in options), f"one of {', '.join(options)}"


BOOL: Rule = (lambda v: type(v) is bool), "true or false"
TEXT: Rule = (lambda v: isinstance(v, str)), "a string"
FRACTION: Rule = (lambda v: type(v) in (int, float) and 0 <= v < 1), "a number in [0, 1)"
POSITIVE: Rule = (lambda v: type(v) in (int, float) and 0 < v < math.inf), "a positive number"
CLASSES = _optional(_integer(1, MAX_CLASSES))
IMAGE_SHAPE: Rule = _integers(1, MAX_SIDE, 3, 3)[0], f"[channels, height, width], integers in [1, {MAX_SIDE}]"

# The fields of config.json's "net" for each kind: (rule, required). They are build_net's arguments.
NET_FIELDS: dict[str, dict[str, tuple[Rule, bool]]] = {
    "unet": {
        "channels": (_integer(1, MAX_SIDE), True),
        "channel_mults": (_integers(1, MAX_COUNT, 1, 16), True),
        "blocks_per_level": (_either(_integer(1, MAX_COUNT), _integers(1, MAX_COUNT, 1, 16)), True),
        "attention_levels": (_optional(_integers(0, 15, 0, 16)), False),
        "heads": (_integer(1, MAX_COUNT), False),
        "dropout": (FRACTION, False),
        "num_classes": (CLASSES, False),
        "text_dim": (_optional(_integer(1, MAX_SIDE)), False),
        "use_time": (BOOL, False),
        "self_condition": (BOOL, False),
    },
    "mlp": {
        "hidden": (_integer(1, MAX_SIDE), False),
        "depth": (_integer(0, MAX_COUNT), False),
        "time_dim": (_integer(2, MAX_SIDE), False),
        "use_time": (BOOL, False),
        "num_classes": (CLASSES, False),
    },
    "diffusers": {
        "block_out_channels": (_integers(1, MAX_SIDE, 3, 3), False),
        "layers_per_block": (_integer(1, MAX_COUNT), False),
        "num_classes": (CLASSES, False),
    },
}
SCHEDULE_FIELDS = {
    "name": (_choice(SCHEDULES), True),
    "timesteps": (_integer(1, MAX_TIMESTEPS), True),
    "snr_scale": (POSITIVE, False),
}
DATA_FIELDS = {"spec": (TEXT, True), "size": (_integer(0, 2**62), False), "image_shape": (IMAGE_SHAPE, False)}
# The training fields a loaded model reads (model.py); the others need only their TrainConfig type.
TRAIN_RANGES = {
    "snr_scale": POSITIVE,
    "snr_gamma": ((lambda v: type(v) in (int, float) and v > 0), "a positive number or Infinity"),
    "text": _optional(_choice(ENCODERS)),
}


def _show(value: object) -> str:
    """A value of config.json as JSON, cut to 40 characters (one line)."""
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _hint_rule(hint) -> Rule:
    """The rule for a JSON value of a TrainConfig field annotated ``hint``."""
    if typing.get_origin(hint) in (typing.Union, type(int | None)):
        rules = [_hint_rule(h) for h in typing.get_args(hint)]
        return (lambda v: any(accepts(v) for accepts, _ in rules)), " or ".join(what for _, what in rules)
    if typing.get_origin(hint) is list:
        item, what = _hint_rule(typing.get_args(hint)[0])
        return (lambda v: isinstance(v, list) and all(item(x) for x in v)), f"a list, each {what}"
    return {
        type(None): ((lambda v: v is None), "null"),
        bool: BOOL,
        int: ((lambda v: type(v) is int), "an integer"),
        float: ((lambda v: type(v) in (int, float) and v == v), "a number"),  # v == v: not NaN
        str: TEXT,
    }[hint]


@functools.cache
def _train_rules() -> dict[str, Rule]:
    """The rules of config.json's "train" section: each TrainConfig field's JSON type (config.py),
    with ranges for the fields a loaded model reads. Checkpoints of runs with other options (older
    or newer) load as long as the values they share have the right types."""
    hints = typing.get_type_hints(TrainConfig)
    return {name: TRAIN_RANGES.get(name) or _hint_rule(hint) for name, hint in hints.items()}


def _check_fields(file: Path, section: dict, prefix: str, fields: dict[str, tuple[Rule, bool]]) -> None:
    for name, ((accepts, allowed), required) in fields.items():
        if name not in section:
            if required:
                raise TinydiffError(f"{file}: {prefix}{name} is missing ({allowed})")
        elif not accepts(section[name]):
            raise TinydiffError(f"{file}: {prefix}{name} is {_show(section[name])}; allowed: {allowed}")


def _section(file: Path, config: dict, name: str) -> dict:
    if name not in config:
        raise TinydiffError(f"{file}: {name} is missing (a JSON object)")
    if not isinstance(config.get(name), dict):
        raise TinydiffError(f"{file}: {name} is {_show(config.get(name))}; allowed: a JSON object")
    return config[name]


def check_config(file: Path, config: object) -> dict:
    """``config`` (the parsed ``file``) if it describes a model, else a TinydiffError naming the
    field, its value and what it allows. Fields of other programs or later versions outside "net"
    are ignored; those in "net" are refused, since they would reach the network's constructor."""
    if not isinstance(config, dict):
        raise TinydiffError(f"{file}: holds {_show(config)}; expected a JSON object with net, schedule, prediction")
    version = config.get("format_version")
    if type(version) is not int or version != FORMAT_VERSION:
        raise TinydiffError(f"{file}: format_version is {_show(version)}; this tinydiff reads {FORMAT_VERSION}")
    net = _section(file, config, "net")
    _check_fields(file, net, "net.", {"kind": (_choice(NET_KINDS), True), "image_shape": (IMAGE_SHAPE, True)})
    fields = NET_FIELDS[net["kind"]]
    unknown = sorted(set(net) - set(fields) - {"kind", "image_shape"})
    if unknown:
        allowed = ", ".join(["kind", "image_shape", *fields])
        raise TinydiffError(f"{file}: net.{unknown[0][:40]} is not a field of a {net['kind']} network ({allowed})")
    _check_fields(file, net, "net.", fields)
    schedule = _section(file, config, "schedule")
    _check_fields(file, schedule, "schedule.", SCHEDULE_FIELDS)
    try:
        NoiseSchedule.create(schedule["name"], schedule["timesteps"], schedule.get("snr_scale", 1.0))
    except ValueError as err:
        raise TinydiffError(f"{file}: schedule is not a valid noise schedule ({err})") from None
    _check_fields(file, config, "", {"prediction": (_choice(PREDICTIONS), True)})
    if "data" in config:
        _check_fields(file, _section(file, config, "data"), "data.", DATA_FIELDS)
    if "train" in config:
        train_fields = {name: (rule, False) for name, rule in _train_rules().items()}
        _check_fields(file, _section(file, config, "train"), "train.", train_fields)
    return config


def read_config(ckpt: Path, needed=FILES) -> dict:
    """config.json of a checkpoint, after checking that the ``needed`` files are there and that it
    describes a model (:func:`check_config`); its "train" section holds LEGACY_VALUES for the fields
    it was written without."""
    missing = [f for f in needed if not (ckpt / f).is_file()]
    if missing:
        raise TinydiffError(f"checkpoint {ckpt} is incomplete: missing {', '.join(missing)}")
    file = ckpt / "config.json"
    try:
        config = json.loads(file.read_bytes().decode("utf-8"))
    except (ValueError, RecursionError) as err:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        reason = (str(err) or type(err).__name__).splitlines()[0][:80]
        raise TinydiffError(f"{file} is not valid JSON ({reason})") from None
    except OSError as err:
        raise TinydiffError(f"cannot read {file} ({err})") from None
    config = check_config(file, config)
    config["train"] = with_legacy_values(config.get("train", {}))
    return config


class _AllocationLimit(torch.overrides.TorchFunctionMode):
    """Counts the elements of the tensors created by torch's factory functions inside it, and stops
    with a TinydiffError before their sum passes ``limit``."""

    FACTORIES = frozenset({torch.empty, torch.zeros, torch.ones, torch.rand, torch.randn, torch.full})

    def __init__(self, limit: int, what: str):
        super().__init__()
        self.left, self.what = limit, what

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in self.FACTORIES and args:
            size = args[0] if isinstance(args[0], Sequence) else args
            dims = [int(d) for d in size]
            self.left -= math.prod(dims)
            if self.left < 0 or min(dims, default=0) < 0:
                raise TinydiffError(self.what)
        return func(*args, **(kwargs or {}))


def _stored_elements(ckpt: Path, name: str) -> int:
    try:
        with safe_open(ckpt / name, "pt") as stored:
            return sum(math.prod(stored.get_slice(key).get_shape()) for key in stored.keys())
    except (SafetensorError, OSError, ValueError) as err:
        raise TinydiffError(f"checkpoint {ckpt}: cannot read {name} ({err})") from None


def build_checked(ckpt: Path, name: str, net_config: dict) -> torch.nn.Module:
    """``build_net(net_config)``, stopped before it allocates more than twice the elements stored in
    ``name``: a config.json that does not match its weights fails in a moment, whatever sizes it gives."""
    stored = _stored_elements(ckpt, name)
    what = (
        f"checkpoint {ckpt}: {name} was written by another config than its config.json "
        f"(whose net is larger than the {stored} weights stored)"
    )
    with _AllocationLimit(2 * stored + 2**20, what):
        return build_net(net_config)


def load_weights(ckpt: Path, name: str, net: torch.nn.Module) -> None:
    """Load ``name`` (model.safetensors or ema.safetensors) into ``net``, checking that it fits and
    that every weight is finite (a NaN would spread to every sample and every later step)."""
    try:
        state = load_safetensors((ckpt / name).read_bytes())
    except (SafetensorError, OSError, ValueError) as err:
        raise TinydiffError(f"checkpoint {ckpt}: cannot read {name} ({err})") from None
    expected = net.state_dict()
    wrong = sorted(set(state) ^ set(expected))
    wrong += [k for k in state.keys() & expected.keys() if state[k].shape != expected[k].shape]
    if wrong:
        raise TinydiffError(
            f"checkpoint {ckpt}: {name} was written by another config than its config.json "
            f"({len(wrong)} mismatched tensors, e.g. {wrong[0]})"
        )
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise TinydiffError(
            f"{ckpt / name}: NaN or infinite weights in {len(bad)} of {len(state)} tensors (e.g. {bad[0]}); "
            "use an earlier checkpoint"
        )
    net.load_state_dict(state)


def load_trainer_state(ckpt: Path) -> dict:
    try:
        return torch.load(ckpt / "trainer_state.pt", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means the same to the user
        raise TinydiffError(f"checkpoint {ckpt}: cannot read trainer_state.pt ({err})") from None


def export_model(
    ckpt: str | Path, out: str | Path, ema: bool = True, averaged: tuple[dict, dict] | None = None
) -> Path:
    """An inference-only copy of a checkpoint: config.json and the EMA weights (or, with
    ``ema=False``, the raw ones), written as ema.safetensors; what `tinydiff.load` needs, a
    third of a training checkpoint's size. ``averaged``: (weights, how they were averaged) to
    write instead, recorded in config.json as "averaged" (a post-hoc EMA)."""
    ckpt = resolve_checkpoint(ckpt)
    weights = weights_file(ema)
    config = read_config(ckpt, ("config.json", weights))
    if (ckpt / "trainer_state.pt").is_file():  # what training took, for the model's readers
        state = load_trainer_state(ckpt)
        train = config.get("train", {})
        images = state["step"] * train.get("batch_size", 0)  # the whole batch, however many micro-batches make it
        seconds = float(state.get("elapsed_s", 0.0))
        config["trained"] = {"steps": state["step"], "minutes": round(seconds / 60, 2)}
        if seconds > 0 and images:
            config["trained"]["images_per_s"] = round(images / seconds, 1)
    if averaged is not None:
        config["averaged"] = averaged[1]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    text = json.dumps(config, indent=2).encode()
    atomic_write(out / "config.json", lambda handle: handle.write(text))
    data = (ckpt / weights).read_bytes() if averaged is None else _state_bytes(averaged[0])
    atomic_write(out / weights_file(ema=True), lambda handle: handle.write(data))
    return out
