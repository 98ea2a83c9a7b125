"""Data-parallel training under torchrun (gloo, 2 processes on loopback) against one process."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import digit_like_images

from tinydiff import load
from tinydiff.checkpoint import list_checkpoints
from tinydiff.cli.train import without_nproc
from tinydiff.errors import TinydiffError
from tinydiff.training import TrainConfig, Trainer

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not built")

# a constant learning rate, so that a run stopped at step 3 and resumed to 6 is the 6-step run
ARGS = ["--batch-size", "8", "--log-every", "2", "--lr", "1e-3", "--warmup", "2", "--lr-schedule", "constant"]
ARGS += ["--sample-grid", "0", "--quiet"]


@pytest.fixture
def npz(tmp_path):
    path = tmp_path / "digits.npz"
    np.savez(path, x=digit_like_images(48), y=np.arange(48) % 10)
    return str(path)


def _env():
    return {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}


def _tinydiff(*args, nproc=2, **popen):
    """``tinydiff train --nproc N ...`` in a subprocess (torchrun's launcher)."""
    cmd = [sys.executable, "-m", "tinydiff", "train", "--nproc", str(nproc), *args]
    return subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **popen)


def _run(*args, nproc=2):
    proc = _tinydiff(*args, nproc=nproc)
    output = proc.communicate(timeout=300)[0].decode()
    assert proc.returncode == 0, output
    return output


def _single(npz, out, steps, **kw):
    kw.setdefault("lr_schedule", "constant")  # as ARGS
    config = TrainConfig(
        data=npz, out=str(out), steps=steps, batch_size=8, lr=1e-3, warmup=2, sample_grid=0, log_every=2, **kw
    )
    Trainer(config, resume=(Path(out) / "latest").exists()).run(progress=False)


def _log(run):
    return [json.loads(line) for line in (Path(run) / "log.jsonl").read_text().splitlines()]


def _assert_same_weights(run_a, run_b, atol=1e-5):
    for ema in (False, True):
        a, b = load(run_a, ema=ema).net.state_dict(), load(run_b, ema=ema).net.state_dict()
        assert a.keys() == b.keys()
        for key in a:
            torch.testing.assert_close(a[key], b[key], atol=atol, rtol=1e-4, msg=f"{key} (ema={ema})")


def test_two_processes_give_the_weights_of_one_process_on_the_global_batch(npz, tmp_path):
    # conditional, with accumulation: covers label dropout, DDP's no_sync and the sharding
    _run("--data", npz, "--out", str(tmp_path / "ddp"), "--steps", "5", "--accumulate", "2", "--conditional", *ARGS)
    _single(npz, tmp_path / "one", steps=5, conditional=True)
    _assert_same_weights(tmp_path / "ddp", tmp_path / "one")
    # rank 0 alone wrote the log, with the loss of the whole global batch (gathered from both ranks)
    ddp, one = (_log(tmp_path / name) for name in ("ddp", "one"))
    assert [r["processes"] for r in ddp] == [2, 2, 2] and [r["processes"] for r in one] == [1, 1, 1]
    assert [r["step"] for r in ddp] == [r["step"] for r in one]
    np.testing.assert_allclose([r["loss"] for r in ddp], [r["loss"] for r in one], rtol=1e-4)


def test_resume_at_another_world_size(npz, tmp_path):
    _run("--data", npz, "--out", str(tmp_path / "run"), "--steps", "3", *ARGS)  # 2 processes
    _single(npz, tmp_path / "run", steps=6)  # resumed by 1
    _single(npz, tmp_path / "one", steps=6)
    _assert_same_weights(tmp_path / "run", tmp_path / "one")


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc to find the workers")
@pytest.mark.parametrize("how", ["kill a rank", "sigterm the launcher"])
def test_stopping_one_process_stops_all_and_keeps_the_last_checkpoint(npz, tmp_path, how):
    out = tmp_path / "run"
    proc = _tinydiff("--data", npz, "--out", str(out), "--steps", "100000", "--ckpt-every", "2", *ARGS)
    deadline = time.time() + 120
    while len(list_checkpoints(out)) < 2 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)
    assert proc.poll() is None, proc.communicate()[0].decode()
    (launcher,) = _children(proc.pid)  # tinydiff --nproc -> torchrun -> two workers
    workers = _children(launcher)
    assert len(workers) == 2
    if how == "kill a rank":
        os.kill(workers[1], signal.SIGKILL)
    else:
        proc.send_signal(signal.SIGTERM)
    started = time.time()
    output = proc.communicate(timeout=90)[0].decode()
    assert proc.returncode != 0, output
    assert time.time() - started < 90
    survivors = [pid for pid in [launcher, *workers] if "zombie" not in _state(pid)]
    assert not survivors, output
    model = load(out)  # the newest checkpoint is complete
    assert model.config["train"]["steps"] == 100000


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:")[1].splitlines()[0].lower()
    except (OSError, IndexError):
        return "zombie"


def test_without_nproc_strips_both_spellings():
    assert without_nproc(["--nproc", "2", "--steps", "3"]) == ["--steps", "3"]
    assert without_nproc(["--steps", "3", "--nproc=4"]) == ["--steps", "3"]


def test_the_global_batch_must_split_over_processes_and_micro_batches(npz, tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "3")
    with pytest.raises(TinydiffError, match="multiple of --accumulate x processes"):
        Trainer(TrainConfig(data=npz, out=str(tmp_path / "x"), batch_size=8))
