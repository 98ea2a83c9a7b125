import subprocess
import sys

import numpy as np
import pytest
from helpers import digit_like_images
from PIL import Image

from tinydiff.cli import main
from tinydiff.data import load_dataset


@pytest.fixture
def npz(tmp_path):
    path = tmp_path / "digits.npz"
    np.savez(path, x=digit_like_images(32), y=np.arange(32) % 10)
    return str(path)


def test_train_then_sample_end_to_end(npz, tmp_path, capsys):
    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--data",
                npz,
                "--out",
                str(run),
                "--steps",
                "4",
                "--batch-size",
                "8",
                "--sample-grid",
                "4",
                "--no-progress",
            ]
        )
        == 0
    )
    assert (run / "samples.png").exists() and (run / "log.jsonl").exists()
    grid, arrays = tmp_path / "grid.png", tmp_path / "out.npz"
    samplers = [
        ["--sampler", "ddim", "--steps", "5", "--eta", "0.5"],
        ["--sampler", "ddpm", "--steps", "8"],
        ["--sampler", "pndm", "--steps", "4"],
        ["--sampler", "heun", "--steps", "3"],
        ["--sampler", "dpm++2m", "--steps", "4", "--spacing", "trailing"],
    ]
    for sampler in samplers:
        assert (
            main(
                [
                    "sample",
                    "--ckpt",
                    str(run),
                    *sampler,
                    "--n",
                    "6",
                    "--out",
                    str(grid),
                    "--npz",
                    str(arrays),
                    "--png-dir",
                    str(tmp_path / "pngs"),
                ]
            )
            == 0
        )
    assert (
        main(
            [
                "sample",
                "--ckpt",
                str(run),
                "--steps",
                "7",
                "--n",
                "3",
                "--out",
                str(grid),
                "--trajectory",
                str(tmp_path / "traj.gif"),
            ]
        )
        == 0
    )
    with Image.open(tmp_path / "traj.gif") as gif:
        assert gif.n_frames >= 7 and gif.size == (2 * (3 * 10 + 2), 2 * (2 * 10 + 2))  # 3 images: x_t over x0
    assert (tmp_path / "traj.png").exists()
    assert grid.exists() and len(list((tmp_path / "pngs").glob("*.png"))) == 6
    images = load_dataset(str(arrays)).images  # our own npz reads back as a dataset
    assert images.shape == (6, 1, 8, 8)
    assert load_dataset(str(tmp_path / "pngs")).images.shape == (6, 1, 8, 8)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--data", "/nonexistent/folder", "--steps", "1"], "dataset '/nonexistent/folder' not found"),
        (["sample", "--ckpt", "/nonexistent/run"], "checkpoint /nonexistent/run does not exist"),
        (["train", "--data", "{npz}", "--batch-size", "6", "--accumulate", "4"], "multiple of --accumulate"),
    ],
)
def test_bad_input_gives_one_line_and_nonzero_exit(argv, message, npz, tmp_path, capsys):
    argv = [a.replace("{npz}", npz) for a in argv] + (["--out", str(tmp_path / "r")] if argv[0] == "train" else [])
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and message in err and "Traceback" not in err


def test_sampler_option_mismatch_and_debug(npz, tmp_path, capsys):
    run = tmp_path / "run"
    main(
        [
            "train",
            "--data",
            npz,
            "--out",
            str(run),
            "--steps",
            "1",
            "--batch-size",
            "4",
            "--sample-grid",
            "0",
            "--no-progress",
        ]
    )
    assert (
        main(["sample", "--ckpt", str(run), "--sampler", "ddpm", "--eta", "0.5", "--out", str(tmp_path / "g.png")]) == 2
    )
    assert "eta" in capsys.readouterr().err
    result = subprocess.run(
        [sys.executable, "-m", "tinydiff", "--debug", "sample", "--ckpt", "/nonexistent"],
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0 and "Traceback" in result.stderr
