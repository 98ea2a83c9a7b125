"""Every command line of the README runs, in order, as a new user would type it, scaled down so that
the whole README takes a minute: in a fresh folder, on a stand-in MNIST (80 + 40 digit-like images in
the cache) and stand-in emoji (random RGBA images), with pixel statistics in place of the Inception
network, and with the sizes rewritten (SCALED_DOWN below: 2 training steps, 4 images, at most 3
sampling steps). The verbs tested elsewhere at full length are left out: fetch (tests/test_data.py),
reproduce (tests/test_reproduce.py), serve (tests/test_serve.py) and multi-process training
(tests/test_distributed.py); distill runs one step per round."""

import shlex
from pathlib import Path

import numpy as np
from helpers import FakeInception, digit_like_images, stand_in_emoji
from test_docs_commands import ROOT, _command_lines

from tinydiff.cli import main

TESTED_ELSEWHERE = ("fetch", "reproduce", "serve")  # serve runs until stopped: tests/test_serve.py
# flag -> its value in the scaled-down run, from the verb and the README's value (None drops the flag)
SCALED_DOWN = {
    "--steps": lambda verb, v: {"train": "2", "distill": "4"}.get(verb, str(min(int(v), 3))),
    "--minutes": lambda verb, v: "0.01" if verb == "distill" else None,  # a distillation round: one step
    "--n": lambda verb, v: "4",
    "--per-class": lambda verb, v: "1",
    "--frames": lambda verb, v: "3",
    "--from-steps": lambda verb, v: "8",
    "--batch-size": lambda verb, v: "8",
}
# flags added where the README gives none (a README ddpm line samples all 1,000 steps)
ADDED = {"train": {"--steps": "2", "--batch-size": "8", "--sample-grid": "4"}, "sample": {"--steps": "3", "--n": "4"}}
ADDED.update({verb: {"--steps": "3"} for verb in ("invert", "interpolate", "merge")})
ADDED.update({verb: {"--n": "4"} for verb in ("eval", "fid")})


def scaled_down(argv: list[str]) -> list[str]:
    """The README's argv with the sizes of SCALED_DOWN, the ADDED flags it lacks, and --quiet."""
    verb, out, rest = argv[0], [argv[0]], iter(argv[1:])
    for arg in rest:
        if arg in SCALED_DOWN:
            value = SCALED_DOWN[arg](verb, next(rest))
            out += [] if value is None else [arg, value]
        else:
            out.append(arg)
    for flag, value in ADDED.get(verb, {}).items():
        if flag not in out and not (flag == "--steps" and "--resume" in out):  # resume: the README's own steps
            out += [flag, value]
    return out + ["--quiet"]


def test_every_readme_command_line_runs_in_order(tmp_path, monkeypatch, capsys):
    cache = tmp_path / "cache"  # conftest points TINYDIFF_CACHE here
    cache.mkdir(exist_ok=True)
    x = digit_like_images(120, size=28)
    np.savez(cache / "mnist.npz", x_train=x[:80], y_train=np.arange(80) % 10, x_test=x[80:], y_test=np.arange(40) % 10)
    stand_in_emoji(cache)
    from tinydiff.metrics import inception

    monkeypatch.setattr(inception, "InceptionFeatures", FakeInception)
    monkeypatch.chdir(tmp_path)
    ran = []
    for line in _command_lines(ROOT / "README.md"):
        argv = shlex.split(line)[1:]
        if argv[0] in TESTED_ELSEWHERE or "--nproc" in argv:
            continue
        redirect = argv.index(">") if ">" in argv else None
        target = argv[redirect + 1] if redirect is not None else None
        argv = scaled_down(argv[:redirect] if redirect is not None else argv)
        capsys.readouterr()
        code = main(argv)
        output = capsys.readouterr()
        assert code == 0, f"README: {line}\nran: tinydiff {' '.join(argv)}\n{output.err}"
        if target:
            Path(target).write_text(output.out)
        ran.append(argv[0])
    assert {"train", "plot", "sample", "eval", "fid", "invert", "interpolate", "merge"} <= set(ran)
    assert len(ran) >= 20
