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
"""

from __future__ import annotations

import errno
import io
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from ..data.fetch import atomic_write
from ..errors import TinydiffError

FORMAT_VERSION = 1
FILES = ("config.json", "model.safetensors", "ema.safetensors", "trainer_state.pt")
CKPT_PATTERN = re.compile(r"^ckpt-(\d+)$")


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
        match = CKPT_PATTERN.match(child.name)
        if match and all((child / f).is_file() for f in FILES):
            found.append((int(match.group(1)), child))
    return [path for _, path in sorted(found)]


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint directory itself, or the newest complete checkpoint of a run directory."""
    path = Path(path)
    if not path.exists():
        raise TinydiffError(f"checkpoint {path} does not exist")
    if (path / "config.json").exists() or CKPT_PATTERN.match(path.name):
        return path
    latest = path / "latest"
    if latest.is_file():
        candidate = path / latest.read_text().strip()
        if all((candidate / f).is_file() for f in FILES):
            return candidate
    complete = list_checkpoints(path)
    if not complete:
        raise TinydiffError(f"no checkpoint found in {path} (expected ckpt-*/ with {', '.join(FILES)})")
    return complete[-1]


# What a checkpoint written before a training field existed was trained with.
LEGACY_VALUES = {"clip_aware_loss": False, "self_condition": False, "snr_scale": 1.0, "snr_gamma": 5.0}


def read_config(ckpt: Path, needed=FILES) -> dict:
    """config.json of a checkpoint, after checking that the ``needed`` files are there; its "train"
    section holds LEGACY_VALUES for the fields it was written without."""
    missing = [f for f in needed if not (ckpt / f).is_file()]
    if missing:
        raise TinydiffError(f"checkpoint {ckpt} is incomplete: missing {', '.join(missing)}")
    try:
        config = json.loads((ckpt / "config.json").read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise TinydiffError(f"checkpoint {ckpt}: config.json is not valid JSON ({err})") from None
    if config.get("format_version") != FORMAT_VERSION:
        raise TinydiffError(
            f"checkpoint {ckpt}: format version {config.get('format_version')!r}, this tinydiff reads {FORMAT_VERSION}"
        )
    config["train"] = {**LEGACY_VALUES, **config.get("train", {})}
    return config


def load_weights(ckpt: Path, name: str, net: torch.nn.Module) -> None:
    """Load ``name`` (model.safetensors or ema.safetensors) into ``net``, checking that it fits."""
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
    net.load_state_dict(state)


def load_trainer_state(ckpt: Path) -> dict:
    try:
        return torch.load(ckpt / "trainer_state.pt", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means the same to the user
        raise TinydiffError(f"checkpoint {ckpt}: cannot read trainer_state.pt ({err})") from None


def export_model(ckpt: str | Path, out: str | Path, ema: bool = True) -> Path:
    """An inference-only copy of a checkpoint: config.json and the EMA weights (or, with
    ``ema=False``, the raw ones), written as ema.safetensors; what `tinydiff.load` needs, a
    third of a training checkpoint's size."""
    ckpt = resolve_checkpoint(ckpt)
    weights = weights_file(ema)
    read_config(ckpt, ("config.json", weights))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for source, target in (("config.json", "config.json"), (weights, weights_file(ema=True))):
        data = (ckpt / source).read_bytes()
        atomic_write(out / target, lambda handle, data=data: handle.write(data))
    return out
