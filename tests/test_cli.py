import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import FakeInception, digit_like_images
from PIL import Image

from tinydiff.cli import build_parser, main
from tinydiff.data import load_dataset


@pytest.fixture
def npz(tmp_path):
    path = tmp_path / "digits.npz"
    np.savez(path, x=digit_like_images(32), y=np.arange(32) % 10)
    return str(path)


def cli(command: str) -> int:
    """Run the CLI in-process on a command line (paths here contain no spaces)."""
    return main(command.split())


def train_tiny(npz, run, steps=4, grid=0) -> None:
    assert cli(f"train --data {npz} --out {run} --steps {steps} --batch-size 8 --sample-grid {grid}") == 0


def test_train_then_sample_end_to_end(npz, tmp_path):
    run, grid, arrays, pngs = tmp_path / "run", tmp_path / "grid.png", tmp_path / "out.npz", tmp_path / "pngs"
    train_tiny(npz, run, grid=4)
    assert (run / "samples.png").exists() and (run / "log.jsonl").exists()
    for sampler in (
        "ddim --steps 5 --eta 0.5",
        "ddpm --steps 8",
        "pndm --steps 4",
        "heun --steps 3",
        "dpm++2m --steps 4 --spacing trailing",
    ):
        outputs = f"--out {grid} --npz {arrays} --png-dir {pngs} --overwrite"
        assert cli(f"sample --ckpt {run} --sampler {sampler} --n 6 {outputs}") == 0
    assert grid.exists() and len(list(pngs.glob("*.png"))) == 6
    assert load_dataset(str(arrays)).images.shape == (6, 1, 8, 8)  # our own npz reads back as a dataset
    assert load_dataset(str(pngs)).images.shape == (6, 1, 8, 8)
    assert (
        cli(f"sample --ckpt {run} --steps 7 --n 3 --out {tmp_path / 't.png'} --trajectory {tmp_path / 'traj.gif'}") == 0
    )
    with Image.open(tmp_path / "traj.gif") as gif:
        assert gif.n_frames >= 7 and gif.size == (2 * (3 * 10 + 2), 2 * (2 * 10 + 2))  # 3 images: x_t over x0
    assert (tmp_path / "traj.png").exists()


@pytest.mark.parametrize(
    "command, message",
    [
        ("train --data /nonexistent/folder --steps 1", "dataset '/nonexistent/folder' not found"),
        ("sample --ckpt /nonexistent/run", "checkpoint /nonexistent/run does not exist"),
        ("train --data {npz} --batch-size 6 --accumulate 4", "multiple of --accumulate"),
    ],
)
def test_bad_input_gives_one_line_and_nonzero_exit(command, message, npz, tmp_path, capsys):
    command = command.replace("{npz}", npz) + (f" --out {tmp_path / 'r'}" if command.startswith("train") else "")
    assert cli(command) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and message in err and "Traceback" not in err


@pytest.mark.parametrize(
    "command, message",
    [
        ("sample --sampler ddpm --steps 0", "argument --steps: must be an integer >= 1, got 0"),
        ("sample --guidance nan --class 3", "argument --guidance: must be a finite number, got nan"),
        ("sample --eta inf", "argument --eta: must be a finite number, got inf"),
        ("sample --batch-size 0", "argument --batch-size: must be an integer >= 1, got 0"),
        ("sample --class all --per-class -2", "argument --per-class: must be an integer >= 1, got -2"),
        ("sample --seed -1", "argument --seed: must be an integer in [0, 4294967295], got -1"),
        ("sample --n 2.5", "argument --n: expected an integer, got '2.5'"),
        ("sample --guidance-interval 3,1 --class 3", "expected noise levels 0 <= LO < HI"),
        ("fid mnist mnist:test --n -5", "argument --n: must be an integer >= 1, got -5"),
        ("eval --ckpt pretrained:mnist --n 0", "argument --n: must be an integer >= 1, got 0"),
        ("invert --ckpt pretrained:mnist --images digits --steps 0", "argument --steps: must be an integer >= 1"),
    ],
)
def test_bad_options_are_refused_in_one_line_before_anything_runs(command, message, capsys):
    with pytest.raises(SystemExit) as stop:
        cli(command)
    err = capsys.readouterr().err.strip()
    assert stop.value.code == 2 and err.count("\n") == 0 and message in err and "--help" in err


def test_output_paths_are_checked_before_sampling_and_printed_as_written(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # --npz names the file numpy writes (.npz appended) and creates missing folders
    assert cli("sample --n 2 --steps 2 --out grid.png --npz new/folder/out") == 0
    assert f"npz: {Path('new/folder/out.npz')}" in capsys.readouterr().out
    assert (tmp_path / "new" / "folder" / "out.npz").is_file()
    # a folder that cannot be made fails before any sampling: no grid is written
    (tmp_path / "afile").write_text("")
    assert cli("sample --n 2 --steps 2 --out grid2.png --npz afile/sub/out.npz") == 2
    assert "cannot create the folder afile/sub" in capsys.readouterr().err
    assert not (tmp_path / "grid2.png").exists()


def test_outputs_are_named_after_what_made_them_and_never_overwritten_by_surprise(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for _ in range(2):  # without --out: named after the model and the options, numbered when taken
        assert cli("sample --n 2 --steps 2 --seed 3") == 0
    assert (tmp_path / "pretrained-mnist-ddim2-w0-seed3.png").is_file()
    assert (tmp_path / "pretrained-mnist-ddim2-w0-seed3-2.png").is_file()
    capsys.readouterr()
    (tmp_path / "mine.png").write_bytes(b"precious")  # a path the user names is never replaced unasked
    assert cli("sample --n 2 --steps 2 --out mine.png") == 2
    assert "mine.png exists: pass --overwrite" in capsys.readouterr().err
    assert (tmp_path / "mine.png").read_bytes() == b"precious"
    assert cli("sample --n 2 --steps 2 --out mine.png --overwrite") == 0
    assert (tmp_path / "mine.png").read_bytes() != b"precious"
    assert cli("interpolate --steps 2 --frames 2") == 0 and (tmp_path / "interpolate-pretrained-mnist-S2.png").is_file()


def test_the_api_refuses_bad_sampling_arguments_in_one_line():
    import tinydiff
    from tinydiff.errors import TinydiffError
    from tinydiff.metrics.reference import score

    for options, message in [
        ({"n": 0}, "number of images must be a positive integer, got 0"),
        ({"batch_size": 0}, "batch size must be a positive integer, got 0"),
        ({"guidance": float("nan"), "labels": 3}, "guidance weight must be a finite number, got nan"),
        ({"steps": 3, "timesteps": [999, 0]}, "either timesteps or steps"),
    ]:
        with pytest.raises(TinydiffError, match=message):
            tinydiff.sample("pretrained:mnist", **{"n": 2, **options})
    with pytest.raises(ValueError, match="timesteps must be a non-empty decreasing sequence"):
        tinydiff.sample("pretrained:mnist", 2, timesteps=[0, 999])
    with pytest.raises(ValueError, match="number of steps must be in"):
        tinydiff.sample("pretrained:mnist", 2, sampler="ddpm", steps=0)
    with pytest.raises(TinydiffError, match="images per set must be an integer >= 2, got -5"):
        score("mnist", "mnist:test", -5, ["fid"], None)


def test_sampler_option_mismatch_and_debug(npz, tmp_path, capsys, monkeypatch):
    train_tiny(npz, tmp_path / "run", steps=1)
    assert cli(f"sample --ckpt {tmp_path / 'run'} --sampler ddpm --eta 0.5 --out {tmp_path / 'g.png'}") == 2
    err = capsys.readouterr().err
    assert "ddpm does not take eta" in err and "variance" in err  # names the options it does take
    # eval takes the same sampler options, and refuses a mismatch before sampling anything
    assert cli(f"eval --ckpt {tmp_path / 'run'} --sampler dpm++2m --sigma-hat --n 4 --no-floor") == 2
    assert "dpm++2m does not take sigma_hat" in capsys.readouterr().err
    assert not list((tmp_path / "run").glob("eval-*"))
    # a shipped model has no run directory: eval keeps its samples only when told where (--out)
    monkeypatch.chdir(tmp_path)
    assert cli("eval --ckpt pretrained:mnist --sampler ddim --steps 2 --n 10 --metrics acc --no-floor --json") == 0
    assert json.loads(capsys.readouterr().out)["nfe"] == 2  # network evaluations per sample, counted
    assert not list(tmp_path.glob("*eval*"))
    # a run keeps them in its folder; another draw (seed, trajectory, labels) is written beside, not over
    from tinydiff.metrics import inception

    monkeypatch.setattr(inception, "InceptionFeatures", FakeInception)
    base = f"eval --ckpt {tmp_path / 'run'} --sampler ddim --steps 2 --n 4 --no-floor --metrics fid"
    assert cli(base) == 0 and cli(f"{base} --seed 1 --spacing trailing") == 0 and cli(base) == 0
    names = sorted(p.name for p in (tmp_path / "run").glob("eval-*.npz"))
    assert names == ["eval-ddim2-n4-2.npz", "eval-ddim2-n4.npz", "eval-ddim2-spacingtrailing-seed1-n4.npz"]
    result = subprocess.run(
        [sys.executable, "-m", "tinydiff", "--debug", "sample", "--ckpt", "/nonexistent"],
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0 and "Traceback" in result.stderr


def test_balanced_labels_cycle_through_the_classes(npz, tmp_path):
    import tinydiff

    labels = tinydiff.load("pretrained:mnist").balanced_labels(23)
    assert labels[:10].tolist() == list(range(10))
    assert labels.bincount(minlength=10).tolist() == [3, 3, 3, 2, 2, 2, 2, 2, 2, 2]
    train_tiny(npz, tmp_path / "run", steps=1)  # unconditional
    assert tinydiff.load(tmp_path / "run").balanced_labels(5) is None


def test_train_flags_are_the_fields_of_trainconfig_with_its_defaults():
    from dataclasses import asdict, fields

    from tinydiff.cli import build_parser
    from tinydiff.config import TrainConfig

    args = build_parser().parse_args(["train"])
    parsed = TrainConfig(**{f.name: getattr(args, f.name) for f in fields(TrainConfig)})
    assert asdict(parsed) == asdict(TrainConfig())
    flags = "train --no-time --no-clip-aware-loss --amp --channel-mults 1,2 --minutes 2.5 --subset 7".split()
    args = build_parser().parse_args(flags)
    assert (args.use_time, args.clip_aware_loss, args.amp) == (False, False, True)
    assert (args.channel_mults, args.minutes, args.subset) == ([1, 2], 2.5, 7)


def test_help_shows_the_defaults_and_version_prints_it(capsys):
    from tinydiff import __version__

    for command, shown in [("sample", "(default: 64)"), ("train", "(default: 0.002)"), ("eval", "(default: 2048)")]:
        with pytest.raises(SystemExit):
            main([command, "--help"])
        assert shown in " ".join(capsys.readouterr().out.split()), command
    for command in build_parser()._subparsers._group_actions[0].choices:  # one default per option, never two
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert "(default: None)" not in text and not re.search(r"\(default: [^)]*\) \(default:", text), command
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.strip() == f"tinydiff {__version__}"


def test_the_class_label_policy_of_the_api():
    import tinydiff
    from tinydiff.api import class_labels
    from tinydiff.errors import TinydiffError

    model = tinydiff.load("pretrained:mnist")  # conditional, 10 classes
    assert class_labels(model, "none", 4) == (None, 4)  # the null class, asked for
    assert class_labels(model, None, 12)[0].tolist() == [*range(10), 0, 1]  # by default, every class in turn
    with pytest.raises(TinydiffError, match="--per-class goes with --class all"):
        class_labels(model, 3, 4, per_class=2)
    labels, n = class_labels(model, "all", 4, per_class=2)
    assert n == 20 and labels.tolist() == [c for c in range(10) for _ in range(2)]
    assert class_labels(model, "all", 12)[0].tolist() == [*range(10), 0, 1]
    assert class_labels(model, 3, 2)[0].tolist() == [3, 3] and class_labels(model, "7", 1)[0].tolist() == [7]
    for bad in ("three", 2.5, True):
        with pytest.raises(TinydiffError, match="--class must be a class index"):
            class_labels(model, bad, 2)


def test_train_without_out_writes_a_run_named_after_its_data(npz, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli(f"train --data {npz} --steps 1 --batch-size 8 --sample-grid 0 --quiet") == 0
    assert (tmp_path / "runs" / "digits" / "latest").exists() and not (tmp_path / "runs" / "mnist").exists()
    assert capsys.readouterr().err == ""  # --quiet: no progress bar


def test_resume_takes_the_recorded_config_and_refuses_a_conflicting_flag(npz, tmp_path, capsys):
    """A run trained with non-default flags resumes with only --out and --steps given."""
    run = tmp_path / "run"
    flags = f"--data {npz} --out {run} --batch-size 4 --preset nano --schedule linear --no-clip-aware-loss"
    assert cli(f"train {flags} --steps 2 --ckpt-every 2 --sample-grid 0") == 0
    assert cli(f"train --out {run} --steps 3 --resume --sample-grid 0") == 0
    from tinydiff.checkpoint import read_config, resolve_checkpoint

    recorded = read_config(resolve_checkpoint(run))["train"]
    assert (recorded["schedule"], recorded["batch_size"], recorded["clip_aware_loss"]) == ("linear", 4, False)
    assert recorded["data"] == str(npz) and recorded["steps"] == 3
    # a flag given on resume that a run cannot change mid-way is refused, naming both values
    assert cli(f"train --out {run} --steps 4 --resume --schedule cosine") == 2
    assert "schedule='linear' (now 'cosine')" in capsys.readouterr().err


def test_a_run_launches_from_a_config_file_and_prints_its_config(npz, tmp_path, capsys):
    recipe = tmp_path / "recipe.json"
    assert cli(f"train --data {npz} --batch-size 8 --schedule linear --lr 0.001 --print-config") == 0
    recipe.write_text(capsys.readouterr().out)
    assert json.loads(recipe.read_text())["schedule"] == "linear"
    # the file's options, with the flags given beside it on top
    assert cli(f"train --config {recipe} --out {tmp_path / 'a'} --lr 0.003 --steps 2 --sample-grid 0 --quiet") == 0
    from tinydiff.checkpoint import read_config, resolve_checkpoint

    recorded = read_config(resolve_checkpoint(tmp_path / "a"))["train"]
    assert (recorded["schedule"], recorded["batch_size"], recorded["lr"], recorded["data"]) == ("linear", 8, 0.003, npz)
    # a checkpoint's own config.json is a recipe too
    ckpt_config = resolve_checkpoint(tmp_path / "a") / "config.json"
    capsys.readouterr()
    assert cli(f"train --config {ckpt_config} --out {tmp_path / 'b'} --print-config") == 0
    again = json.loads(capsys.readouterr().out)
    assert again["lr"] == 0.003 and again["out"] == str(tmp_path / "b")
    # one written before an option existed gives it the value it trained with (checkpoint.LEGACY_VALUES)
    old = json.loads(ckpt_config.read_text())
    del old["train"]["optimizer"], old["train"]["clip_aware_loss"]
    recipe.write_text(json.dumps(old))
    assert cli(f"train --config {recipe} --print-config") == 0
    again = json.loads(capsys.readouterr().out)
    assert (again["optimizer"], again["clip_aware_loss"], again["lr"]) == ("adamw", False, 0.003)
    recipe.write_text(json.dumps({"lr": 0.001, "colour": "red"}))
    assert cli(f"train --config {recipe} --print-config") == 2
    assert "unknown options colour" in capsys.readouterr().err
    recipe.write_text(json.dumps({"lr": -1}))
    assert cli(f"train --config {recipe} --print-config") == 2
    assert "--lr must be" in capsys.readouterr().err


def test_training_shows_grids_tensorboard_and_a_plot_of_its_log(npz, tmp_path, capsys):
    pytest.importorskip("tensorboard")
    run = tmp_path / "run"
    flags = "--steps 4 --batch-size 8 --log-every 1 --grid-every 2 --logger tensorboard --sample-grid 0 --quiet"
    assert cli(f"train --data {npz} --out {run} {flags}") == 0
    assert sorted(p.name for p in (run / "grids").iterdir()) == ["step-000002.png", "step-000004.png"]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tensorboard")).Reload()
    assert [e.step for e in events.Scalars("loss")] == [1, 2, 3, 4]
    logged = [json.loads(line)["loss"] for line in (run / "log.jsonl").read_text().splitlines()]
    assert [e.value for e in events.Scalars("loss")] == pytest.approx(logged, rel=1e-6)  # the same records
    assert len(events.Scalars("loss_t/band9")) == 4 and len(events.Images("samples")) == 2
    capsys.readouterr()
    assert cli(f"plot {run}") == 0
    assert f"plot: {run / 'training.png'}" in capsys.readouterr().out
    with Image.open(run / "training.png") as png:
        assert png.size[0] > 500
    assert cli(f"plot {tmp_path}") == 2
    assert "log.jsonl does not exist" in capsys.readouterr().err
