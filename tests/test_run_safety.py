"""Run safety: one writer per run directory, a log that survives a full disk, validated options,
finite weights, checkpoints on SIGTERM and SIGINT, a `latest` that stays inside its run, and a
config.json that is read field by field (with a hypothesis fuzz test: FUZZ_EXAMPLES cases).

The processes here are real: a training in a subprocess, signalled or SIGKILLed, and the test
process as the second writer.
"""

import errno
import json
import math
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
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

from tinydiff import load
from tinydiff.checkpoint import RunLock, list_checkpoints, resolve_checkpoint, save_checkpoint
from tinydiff.cli import main
from tinydiff.errors import TinydiffError
from tinydiff.nets import build_net, net_config
from tinydiff.training import TrainConfig, Trainer

FUZZ_EXAMPLES = 200  # config.json cases tried by the fuzz test (about 10 s on one core)

# the options of every training here (a constant learning rate: a run stopped and resumed is the straight run)
BASE = dict(batch_size=8, lr=1e-3, warmup=2, sample_grid=0, lr_schedule="constant")
ARGS = ["--batch-size", "8", "--lr", "1e-3", "--warmup", "2", "--lr-schedule", "constant"]
ARGS += ["--sample-grid", "0", "--quiet"]


@pytest.fixture
def npz(tmp_path):
    path = tmp_path / "digits.npz"
    np.savez(path, x=digit_like_images(48))
    return str(path)


def _config(npz, out, **kw) -> TrainConfig:
    return TrainConfig(data=npz, out=str(out), **{**BASE, "log_every": 2, "ckpt_every": 3, **kw})


def _args(npz, out, *extra) -> list[str]:
    return ["train", "--data", npz, "--out", str(out), *ARGS, *extra]


def _start(npz, out, *extra) -> subprocess.Popen:
    """`tinydiff train` in a subprocess, on one thread like the tests (so that weights compare bitwise)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "tinydiff", *_args(npz, out, *extra)]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _wait_for(condition, proc: subprocess.Popen, timeout_s: float = 180) -> None:
    deadline = time.time() + timeout_s
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"training ended early ({proc.returncode}): {proc.communicate()[1].decode()}")
        if time.time() > deadline:
            proc.kill()
            raise AssertionError("training did not get there in time")
        time.sleep(0.05)


def _stop_when(condition, proc: subprocess.Popen, signum: int = signal.SIGTERM) -> str:
    """Send ``signum`` once ``condition()`` holds and wait for the training to end; its stderr."""
    try:
        _wait_for(condition, proc)
        proc.send_signal(signum)
        return proc.communicate(timeout=120)[1].decode()
    finally:
        proc.kill()


def _logged_steps(out: Path) -> list[int]:
    """Steps of the complete records of log.jsonl."""
    log = Path(out) / "log.jsonl"
    text = log.read_bytes().decode() if log.exists() else ""
    return [json.loads(line)["step"] for line in text.split("\n")[:-1] if line]


def _step(ckpt: Path) -> int:
    return int(ckpt.name.split("-")[1])


def _assert_same_weights(run_a, run_b) -> None:
    for ema in (False, True):
        a, b = load(run_a, ema=ema).net.state_dict(), load(run_b, ema=ema).net.state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a), f"ema={ema}"


def _error_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


# 1. One training at a time per run directory


def test_a_second_training_of_a_running_directory_is_refused_and_a_dead_ones_lock_is_taken(npz, tmp_path, capsys):
    out = tmp_path / "run"
    first = _start(npz, out, "--steps", "100000", "--ckpt-every", "3", "--log-every", "1")
    try:
        _wait_for(lambda: _logged_steps(out), first)
        message = f"tinydiff: error: {out} is in use by another training (pid {first.pid})"
        assert main(_args(npz, out, "--steps", "4")) == 2  # a fresh run into it
        assert _error_line(capsys).startswith(message)
        _wait_for(lambda: list_checkpoints(out), first)
        assert main(_args(npz, out, "--steps", "4", "--resume")) == 2  # a resume of it
        assert _error_line(capsys).startswith(message)
    finally:
        first.kill()
        first.communicate()
    assert first.returncode == -signal.SIGKILL
    step = _step(list_checkpoints(out)[-1])
    # the kernel dropped the dead process's lock: the next training takes it over
    assert main(_args(npz, out, "--steps", str(step + 1), "--resume", "--ckpt-every", "3", "--log-every", "1")) == 0
    assert _step(list_checkpoints(out)[-1]) == step + 1


def test_two_trainers_in_one_process_do_not_share_a_directory(npz, tmp_path):
    first = Trainer(_config(npz, tmp_path / "run", steps=1))
    assert (tmp_path / "run" / ".lock").read_text() == f"{os.getpid()}\n"
    with pytest.raises(TinydiffError, match=f"run is in use by another training \\(pid {os.getpid()}\\)"):
        Trainer(_config(npz, tmp_path / "run", steps=1))
    first.run(progress=False)  # releases the directory at its end
    Trainer(_config(npz, tmp_path / "run", steps=2), resume=True).run(progress=False)
    lock = RunLock(tmp_path / "other")
    with lock:
        assert lock.held
    assert not lock.held
    with RunLock(tmp_path / "other"):  # free again
        pass


# 2. log.jsonl: appended only; resume never needs it to parse


def test_resume_drops_a_torn_last_log_line_with_one_warning_and_never_rewrites_the_log(npz, tmp_path, capsys):
    out = tmp_path / "run"
    Trainer(_config(npz, out, steps=3)).run(progress=False)
    log = out / "log.jsonl"
    kept = log.read_bytes()
    inode = log.stat().st_ino
    with open(log, "ab") as handle:  # a record past the checkpoint, a line that is no JSON, a torn write
        handle.write(b'{"step": 4, "loss": 1.0}\nnot json\n{"step": 5, "lo')
    capsys.readouterr()
    Trainer(_config(npz, out, steps=6), resume=True).run(progress=False)
    assert _error_line(capsys) == f"tinydiff: warning: {log}: dropped its torn last line (a write that was cut short)"
    assert log.stat().st_ino == inode and log.read_bytes().startswith(kept)  # appended to, never rewritten
    assert _logged_steps(out) == [2, 3, 4, 6]
    # a line that is not JSON before the checkpoint's step does not stop a resume either
    with open(log, "ab") as handle:
        handle.write(b"\x00\x00garbage\n")
    Trainer(_config(npz, out, steps=7), resume=True).run(progress=False)
    assert log.read_bytes().split(b"\n")[-3] == b"\x00\x00garbage"


def test_a_full_disk_while_logging_is_one_line_and_the_run_resumes(npz, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    real_open = Trainer._open_log

    class FullDisk:
        """The log file on a disk that fills up in the middle of the record of step 4."""

        def __init__(self, handle):
            self.handle = handle

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

        def write(self, data: bytes) -> int:
            if b'"step": 4' in data:
                self.handle.write(data[:20])
                raise OSError(errno.ENOSPC, "No space left on device")
            return self.handle.write(data)

    monkeypatch.setattr(Trainer, "_open_log", lambda self: FullDisk(real_open(self)))
    assert main(_args(npz, out, "--steps", "6", "--ckpt-every", "3", "--log-every", "2")) == 2
    assert _error_line(capsys) == (
        f"tinydiff: error: disk full while writing {out / 'log.jsonl'}; the last checkpoint is intact and "
        "--resume continues"
    )
    assert not (out / "log.jsonl").read_bytes().endswith(b"\n")  # the torn record
    monkeypatch.setattr(Trainer, "_open_log", real_open)
    assert main(_args(npz, out, "--steps", "6", "--ckpt-every", "3", "--log-every", "2", "--resume")) == 0
    assert "dropped its torn last line" in capsys.readouterr().err
    assert _logged_steps(out) == [2, 4, 6]


def test_a_fresh_run_moves_an_orphan_log_aside(npz, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    orphan = b'{"step": 2, "loss": 9.0}\n{"step": 4, "lo'  # a run stopped before its first checkpoint
    (out / "log.jsonl").write_bytes(orphan)
    Trainer(_config(npz, out, steps=2)).run(progress=False)
    assert _logged_steps(out) == [2]
    assert json.loads((out / "log.jsonl").read_text())["loss"] != 9.0
    assert (out / "log.jsonl.old").read_bytes() == orphan


# 3. Every option checked before anything is built


@pytest.mark.parametrize(
    "option, value, allowed",
    [
        ("--grad-clip", "-1", "> 0, the largest gradient norm (inf: no clipping), got -1.0"),
        ("--grad-clip", "0", "> 0, the largest gradient norm (inf: no clipping), got 0.0"),
        ("--grad-clip", "nan", "> 0"),
        ("--timesteps", "0", "an integer in [1, 100000], got 0"),
        ("--log-every", "0", "an integer >= 1, got 0"),
        ("--ckpt-every", "-5", "an integer >= 1, got -5"),
        ("--batch-size", "0", "an integer >= 1, got 0"),
        ("--steps", "0", "an integer >= 1, got 0"),
        ("--accumulate", "0", "an integer >= 1, got 0"),
        ("--warmup", "-1", "an integer >= 0, got -1"),
        ("--lr", "inf", "positive and finite, got inf"),
        ("--weight-decay", "-0.1", ">= 0 and finite, got -0.1"),
        ("--ema-decay", "1", "in [0, 1), got 1.0"),
        ("--dropout", "1.5", "in [0, 1), got 1.5"),
        ("--keep", "-1", "an integer >= 0 (0: keep every checkpoint), got -1"),
        ("--sample-grid", "-1", "an integer >= 0 (0: no grid), got -1"),
        ("--seed", "-1", "an integer in [0, 4294967295], got -1"),
        ("--subset", "0", "an integer >= 1 (None: every image), got 0"),
        ("--minutes", "0", "positive (None: no budget), got 0.0"),
        ("--preset", "huge", "one of nano, tiny, small, medium, base, got 'huge'"),
        ("--device", "warp-drive", "auto, cpu, cuda, cuda:N or another torch device, got 'warp-drive'"),
    ],
)
def test_each_invalid_option_is_one_line_naming_it_and_its_range(npz, tmp_path, capsys, option, value, allowed):
    assert main(_args(npz, tmp_path / "run", option, value)) == 2
    assert _error_line(capsys).startswith(f"tinydiff: error: {option} must be {allowed}")
    assert not (tmp_path / "run").exists()  # refused before anything is written


def test_options_checked_together_and_from_the_python_api(npz, tmp_path, capsys):
    assert main(_args(npz, tmp_path / "run", "--timesteps", "5", "--schedule", "linear")) == 2
    assert _error_line(capsys).startswith("tinydiff: error: --timesteps 5 gives no valid --schedule linear (")
    for field, value, message in (
        ("grad_clip", "1", "--grad-clip must be > 0"),
        ("steps", 2.5, "--steps must be an integer >= 1, got 2.5"),
        ("steps", True, "--steps must be an integer >= 1, got True"),
        ("amp", "yes", "--amp must be True or False, got 'yes'"),
        ("use_time", 0, "--no-time must be True or False, got 0"),
    ):
        with pytest.raises(TinydiffError, match=message.replace("(", "\\(").replace(")", "\\)")):
            Trainer(_config(npz, tmp_path / "api", **{field: value}))


def test_grad_clip_inf_turns_clipping_off(npz, tmp_path):
    Trainer(_config(npz, tmp_path / "off", steps=2, grad_clip=math.inf)).run(progress=False)
    Trainer(_config(npz, tmp_path / "huge", steps=2, grad_clip=1e30)).run(progress=False)  # never reached
    Trainer(_config(npz, tmp_path / "tight", steps=2, grad_clip=1e-3)).run(progress=False)
    _assert_same_weights(tmp_path / "off", tmp_path / "huge")
    a, b = load(tmp_path / "off").net.state_dict(), load(tmp_path / "tight").net.state_dict()
    assert not all(torch.equal(a[k], b[k]) for k in a)


# 4. Non-finite weights are refused


def _poison(path: Path) -> str:
    """Put a NaN into the first floating tensor of a safetensors file; its name."""
    state = load(path.parent, ema=path.name == "ema.safetensors").net.state_dict()
    name = next(k for k, v in state.items() if v.is_floating_point())
    state[name] = state[name].clone().fill_(float("nan"))
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return name


def test_non_finite_weights_are_refused_for_sampling_and_resume(npz, tmp_path, capsys):
    run = tmp_path / "run"
    Trainer(_config(npz, run, steps=3)).run(progress=False)
    ckpt = list_checkpoints(run)[-1]
    name = _poison(ckpt / "ema.safetensors")
    with pytest.raises(
        TinydiffError, match=f"ema.safetensors: NaN or infinite weights in 1 of [0-9]+ tensors \\(e.g. {name}\\)"
    ):
        load(run)
    load(run, ema=False)  # the raw weights are fine
    assert main(["sample", "--ckpt", str(run), "--steps", "2", "--n", "2", "--out", str(tmp_path / "s.png")]) == 2
    assert _error_line(capsys).startswith(f"tinydiff: error: {ckpt / 'ema.safetensors'}: NaN or infinite weights")
    with pytest.raises(TinydiffError, match="ema.safetensors: NaN or infinite weights"):
        Trainer(_config(npz, run, steps=6), resume=True)
    _poison(ckpt / "model.safetensors")
    with pytest.raises(TinydiffError, match="model.safetensors: NaN or infinite weights"):
        Trainer(_config(npz, run, steps=6), resume=True)


# 5. SIGTERM and SIGINT: finish the step, checkpoint, exit 128 + signal


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_stop_signal_checkpoints_the_step_reached_and_resume_is_bit_exact(npz, tmp_path, signum, code):
    out = tmp_path / "run"
    proc = _start(npz, out, "--steps", "100000", "--ckpt-every", "1000", "--log-every", "1")
    stderr = _stop_when(lambda: len(_logged_steps(out)) >= 3, proc, signum)
    assert proc.returncode == code, stderr
    (ckpt,) = list_checkpoints(out)  # none was due before step 1000: written because of the signal
    step = _step(ckpt)
    assert step >= 3 and _logged_steps(out)[-1] == step
    lines = [line for line in stderr.splitlines() if line.startswith("tinydiff")]
    name = signal.Signals(signum).name
    assert lines == [f"tinydiff: {name}: stopped after step {step}; saved {ckpt} (--resume continues)"]
    Trainer(_config(npz, out, steps=step + 2), resume=True).run(progress=False)
    Trainer(_config(npz, tmp_path / "straight", steps=step + 2)).run(progress=False)
    _assert_same_weights(out, tmp_path / "straight")


def test_a_stopped_run_logs_the_step_it_stopped_at_though_no_log_line_was_due(npz, tmp_path):
    out = tmp_path / "run"
    proc = _start(npz, out, "--steps", "100000", "--ckpt-every", "2", "--log-every", "100000")
    stderr = _stop_when(lambda: bool(list_checkpoints(out)), proc)
    assert proc.returncode == 143, stderr
    last = max(_step(ckpt) for ckpt in list_checkpoints(out))
    assert last >= 2 and _logged_steps(out) == [last]  # the one line: the step the signal stopped


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not built")
def test_sigterm_under_torchrun_stops_both_ranks_after_the_same_step_with_a_checkpoint(npz, tmp_path):
    out = tmp_path / "run"
    proc = _start(npz, out, "--nproc", "2", "--steps", "100000", "--ckpt-every", "1000", "--log-every", "1")
    # SIGTERM: the launcher passes it to torchrun, which passes it to both ranks
    stderr = _stop_when(lambda: len(_logged_steps(out)) >= 2, proc)
    assert proc.returncode != 0, stderr
    (ckpt,) = list_checkpoints(out)
    step = _step(ckpt)
    assert step >= 2 and _logged_steps(out)[-1] == step, stderr
    assert f"tinydiff: SIGTERM: stopped after step {step}; saved {ckpt} (--resume continues)" in stderr
    assert load(out).config["train"]["steps"] == 100000


# 6. `latest` names a checkpoint of its own run only


def _save(run: Path, step: int) -> Path:
    config = {"net": net_config("unet", "nano", (1, 8, 8)), "schedule": {"name": "linear", "timesteps": 1000}}
    net = build_net(config["net"])
    config["prediction"] = "eps"
    return save_checkpoint(run, step, config, net.state_dict(), net.state_dict(), {"step": step})


@pytest.mark.parametrize("target", ["../other/ckpt-0000001", "../other", "/tmp", "ckpt-0000001/..", "ckpt-x", "link"])
def test_latest_outside_the_run_directory_is_refused(tmp_path, target):
    run, other = tmp_path / "run", tmp_path / "other"
    _save(run, 1)
    _save(other, 1)
    if target == "link":  # a checkpoint name that leads out of the run
        (run / "ckpt-0000009").symlink_to(other / "ckpt-0000001")
        target = "ckpt-0000009"
    (run / "latest").write_text(target)
    message = f"{run / 'latest'} names {json.dumps(target)}, not a checkpoint directory (ckpt-N) of {run}"
    with pytest.raises(TinydiffError) as err:
        resolve_checkpoint(run)
    assert str(err.value) == message
    (run / "latest").write_text("ckpt-0000001\n")
    assert resolve_checkpoint(run) == run / "ckpt-0000001"


# 7. config.json is read field by field


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A complete checkpoint as training writes it (with "data" and "train"), of a small U-Net."""
    run = tmp_path_factory.mktemp("config") / "run"
    net = build_net(net_config("unet", "nano", (1, 8, 8)))
    config = {
        "tinydiff_version": "0.1.0",
        "net": net_config("unet", "nano", (1, 8, 8)),
        "schedule": {"name": "cosine", "timesteps": 1000, "snr_scale": 1.0},
        "prediction": "v",
        "data": {"spec": "digits", "size": 48, "image_shape": [1, 8, 8]},
        "train": {k: v for k, v in vars(TrainConfig()).items()},
    }
    return save_checkpoint(run, 1, config, net.state_dict(), net.state_dict(), {"step": 1})


@pytest.fixture(scope="module")
def good_config(checkpoint) -> dict:
    return _config_json(checkpoint)


def _config_json(ckpt: Path) -> dict:
    return json.loads((ckpt / "config.json").read_text())


def _set(path: str, value):
    """A change to config.json: set the field at a dotted path."""

    def change(config):
        *parents, last = path.split(".")
        for key in parents:
            config = config[key]
        config[last] = value

    return change


def _delete(path: str):
    def change(config):
        *parents, last = path.split(".")
        for key in parents:
            config = config[key]
        del config[last]

    return change


@pytest.mark.parametrize(
    "change, expected",
    [
        (_set("net.num_classes", -3), "net.num_classes is -3; allowed: an integer in [1, 1048576], or null"),
        (_set("net.kind", "evil"), 'net.kind is "evil"; allowed: one of unet, mlp, diffusers'),
        (_set("net.use_time", "no"), 'net.use_time is "no"; allowed: true or false'),
        (_set("train.clip_aware_loss", "false"), 'train.clip_aware_loss is "false"; allowed: true or false'),
        (_set("net.channels", "16"), 'net.channels is "16"; allowed: an integer in [1, 65536]'),
        (_set("net.channel_mults", []), "net.channel_mults is []; allowed: a list of 1 to 16 integers in [1, 1024]"),
        (_set("net.dropout", float("nan")), "net.dropout is NaN; allowed: a number in [0, 1)"),
        (_set("net.image_shape", [1, 8]), "net.image_shape is [1, 8]; allowed: [channels, height, width]"),
        (_set("net.evil", 1), "net.evil is not a field of a unet network (kind, image_shape, channels"),
        (_delete("net.channels"), "net.channels is missing (an integer in [1, 65536])"),
        (_delete("schedule"), "schedule is missing (a JSON object)"),
        (_set("schedule.timesteps", 0), "schedule.timesteps is 0; allowed: an integer in [1, 100000]"),
        (_set("schedule.snr_scale", -1), "schedule.snr_scale is -1; allowed: a positive number"),
        (_set("prediction", 3), "prediction is 3; allowed: one of eps, x0, v"),
        (_set("data", "digits"), 'data is "digits"; allowed: a JSON object'),
        (_set("train.steps", "many"), 'train.steps is "many"; allowed: an integer'),
        (_set("train.minutes", "1"), 'train.minutes is "1"; allowed: a number or null'),
        (_set("format_version", True), "format_version is true; this tinydiff reads 1"),
    ],
)
def test_a_bad_config_field_is_one_line_naming_the_file_the_field_and_what_is_allowed(checkpoint, change, expected):
    good = (checkpoint / "config.json").read_text()
    try:
        config = _config_json(checkpoint)
        change(config)
        (checkpoint / "config.json").write_text(json.dumps(config))
        with pytest.raises(TinydiffError) as err:
            load(checkpoint)
    finally:
        (checkpoint / "config.json").write_text(good)
    assert "\n" not in str(err.value)
    assert str(err.value).startswith(f"{checkpoint / 'config.json'}: {expected}")


def test_a_linear_schedule_too_short_and_files_that_are_no_config(checkpoint):
    good = (checkpoint / "config.json").read_text()
    file = checkpoint / "config.json"
    config = _config_json(checkpoint)
    config["schedule"] = {"name": "linear", "timesteps": 5}
    try:
        for text, expected in (
            (json.dumps(config), f"{file}: schedule is not a valid noise schedule (betas must be"),
            ("[1, 2]", f"{file}: holds [1, 2]; expected a JSON object with net, schedule, prediction"),
            ('{"net": ', f"{file} is not valid JSON (Expecting value"),
            ("\udcff", f"{file} is not valid JSON ("),
            ("[" * 100_000, f"{file} is not valid JSON ("),
        ):
            file.write_bytes(text.encode(errors="surrogateescape"))
            with pytest.raises(TinydiffError) as err:
                load(checkpoint)
            assert str(err.value).startswith(expected) and "\n" not in str(err.value)
    finally:
        file.write_text(good)


def test_a_config_of_a_much_larger_network_fails_before_building_it(checkpoint):
    good = (checkpoint / "config.json").read_text()
    config = _config_json(checkpoint)
    config["net"]["channels"] = 65536  # 10^11 weights: refused before they are allocated
    (checkpoint / "config.json").write_text(json.dumps(config))
    try:
        started = time.perf_counter()
        with pytest.raises(TinydiffError, match="ema.safetensors was written by another config than its config.json"):
            load(checkpoint)
        assert time.perf_counter() - started < 5
    finally:
        (checkpoint / "config.json").write_text(good)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)


def _paths(value, prefix=()):
    """Every path (a tuple of keys and indices) inside a JSON value, the value itself first."""
    yield prefix
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, inner in items:
        yield from _paths(inner, (*prefix, key))


@st.composite
def config_texts(draw, good: dict) -> bytes:
    """config.json after one random change to a good one: a value replaced by any JSON value, a
    field deleted, a field added, the text truncated, or random bytes."""
    kind = draw(st.sampled_from(["replace", "delete", "add", "truncate", "bytes"]))
    if kind == "truncate":
        text = json.dumps(good).encode()
        return text[: draw(st.integers(0, len(text)))]
    if kind == "bytes":
        return draw(st.binary(max_size=64))
    config = json.loads(json.dumps(good))
    paths = list(_paths(config))
    path = draw(st.sampled_from(paths if kind != "delete" else paths[1:]))
    if not path:
        return json.dumps(draw(JSON)).encode()
    parent = config
    for key in path[:-1]:
        parent = parent[key]
    if kind == "delete":
        del parent[path[-1]]
    elif kind == "add" and isinstance(parent, dict):
        parent[draw(st.text(max_size=6))] = draw(JSON)
    else:
        parent[path[-1]] = draw(JSON)
    return json.dumps(config).encode()


@settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_fuzzed_config_json_loads_or_is_one_tinydiff_error_line(checkpoint, good_config, data):
    file = checkpoint / "config.json"
    file.write_bytes(data.draw(config_texts(good_config)))
    try:
        model = load(checkpoint)
    except TinydiffError as err:
        assert str(err) and "\n" not in str(err)
    else:
        assert len(model.image_shape) == 3
    finally:
        file.write_text(json.dumps(good_config))
