"""Autoguidance (denoiser.autoguided, DiffusionModel.denoiser's guide, train --guide-at, --guide)."""

import json

import numpy as np
import pytest
import torch
from helpers import digit_like_images, gaussian_denoiser, random_unet

from tinydiff import load, sample
from tinydiff.cli import main
from tinydiff.denoiser import as_denoiser, autoguided
from tinydiff.errors import TinydiffError
from tinydiff.samplers import timesteps
from tinydiff.schedule import NoiseSchedule, broadcast
from tinydiff.training import TrainConfig, Trainer


def test_autoguidance_extrapolates_away_from_the_guide_and_stays_consistent_with_x_t():
    schedule = NoiseSchedule.create("cosine", 1000)
    good, bad = random_unet(), random_unet()
    with torch.no_grad():  # another network
        for p in bad.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x, w = torch.randn(4, 1, 8, 8), 0.7
    d_good, d_bad = as_denoiser(good, schedule, "v"), as_denoiser(bad, schedule, "v")
    with torch.inference_mode():
        eps, x0 = autoguided(d_good, d_bad, schedule, w)(x, 400)
        (eps_g, x0_g), (eps_b, x0_b) = d_good(x, 400), d_bad(x, 400)
        same = autoguided(d_good, d_good, schedule, w)(x, 400)
    torch.testing.assert_close(x0, (1 + w) * x0_g - w * x0_b)  # Karras et al. 2024, eq. 2
    torch.testing.assert_close(eps, (1 + w) * eps_g - w * eps_b)
    a = broadcast(schedule.alpha_bar_at(torch.full((4,), 400)), x).float()
    torch.testing.assert_close(a.sqrt() * x0 + (1 - a).sqrt() * eps, x, atol=1e-5, rtol=1e-5)  # DDPM eq. 4
    assert not torch.allclose(x0, x0_g, atol=1e-3)
    assert all(torch.allclose(p, q, atol=1e-6) for p, q in zip(same, (eps_g, x0_g)))  # guided by itself: no change


def test_autoguidance_of_exact_gaussian_denoisers_moves_x0_away_from_the_guides():
    """The exact denoisers of data N(0, s^2) and N(-1, s^2) (the guide) at x_t = 0 predict
    E[x0 | x_t] = mu (1 - a) / (a s^2 + 1 - a): 0 and -(1 - a) / v. Guided with weight w, x0 moves
    by w (1 - a) / v away from the guide's, where sigma_t is in the interval, and only there."""
    schedule = NoiseSchedule.create("cosine", 1000)
    good, bad = gaussian_denoiser(schedule, 0.0, 0.5), gaussian_denoiser(schedule, -1.0, 0.5)
    sigma = schedule.snr(torch.arange(1000)).rsqrt()
    calls = []

    def counting(x_t, t):
        calls.append(t)
        return bad(x_t, t)

    guided = autoguided(good, counting, schedule, 0.5, (float(sigma[299]), float(sigma[699])))
    x = torch.zeros(3, 1, 2, 2, dtype=torch.float64)
    for t, inside in [(100, False), (300, True), (699, True), (700, False)]:
        calls.clear()
        _, x0 = guided(x, t)
        _, plain = good(x, t)
        a = float(schedule.alpha_bar_at(t))
        shift = 0.5 * (1 - a) / (a * 0.25 + 1 - a)
        assert len(calls) == int(inside)
        if inside:
            torch.testing.assert_close(x0 - plain, torch.full_like(x0, shift))
        else:
            assert torch.equal(x0, plain)


@pytest.fixture(scope="module")
def guided_run(tmp_path_factory):
    """A conditional run of 12 steps that keeps its model of step 6 as its guide."""
    tmp = tmp_path_factory.mktemp("autoguidance")
    np.savez(tmp / "digits.npz", x=digit_like_images(40), y=np.arange(40) % 10)
    config = TrainConfig(
        data=str(tmp / "digits.npz"), out=str(tmp / "run"), steps=12, batch_size=8, sample_grid=0,
        conditional=True, guide_at=0.5, ckpt_every=100,
    )  # fmt: skip
    Trainer(config).run(progress=False)
    return tmp / "run"


def test_guide_at_keeps_the_model_of_that_fraction_of_the_run(guided_run):
    guide = guided_run / "guide"
    assert sorted(p.name for p in guide.iterdir()) == ["config.json", "ema.safetensors"]
    assert json.loads((guide / "config.json").read_text())["trained"]["steps"] == 6
    assert (guided_run / "ckpt-0000006").is_dir()  # the weights it came from are a checkpoint too
    final, early = load(guided_run), load(guide)
    assert any(not torch.equal(p, q) for p, q in zip(final.net.state_dict().values(), early.net.state_dict().values()))
    written = (guide / "ema.safetensors").stat().st_mtime_ns
    config = TrainConfig(
        data=final.config["train"]["data"], out=str(guided_run), steps=14, batch_size=8, sample_grid=0,
        conditional=True, guide_at=0.5, ckpt_every=100,
    )  # fmt: skip
    Trainer(config, resume=True).run(progress=False)
    assert (guide / "ema.safetensors").stat().st_mtime_ns == written  # kept once, not rewritten on resume


def test_sampling_with_a_guide_changes_the_images_and_refuses_what_cannot_guide(guided_run, tmp_path):
    model, guide = load(guided_run), load(guided_run / "guide")
    options = {"sampler": "dpm++2m", "steps": 6, "labels": [1, 7], "seed": 3}
    plain = sample(model, 2, **options)
    guided = sample(model, 2, guidance=1.0, guide=guided_run / "guide", **options)
    assert guided.shape == plain.shape and not torch.allclose(guided, plain, atol=1e-3)
    assert guided.abs().max() <= 1
    with pytest.raises(TinydiffError, match="needs a guidance weight"):
        sample(model, 2, guide=guide, **options)
    unconditional = random_unet()  # another condition: no classes
    other = type(model)(unconditional, model.schedule, "v", {**model.config, "net": {**model.config["net"]}})
    other.config["net"]["num_classes"] = None
    with pytest.raises(TinydiffError, match="classes"):
        sample(model, 2, guidance=1.0, guide=other, **options)
    linear = type(model)(guide.net, NoiseSchedule.create("linear", 1000), "v", guide.config)
    with pytest.raises(TinydiffError, match="noise schedule"):
        sample(model, 2, guidance=1.0, guide=linear, **options)


def test_eval_with_a_guide_counts_the_guides_evaluations(guided_run, capsys):
    """Guided at 3 of 6 steps: 6 + 3 network evaluations per sample, the guide's included."""
    schedule = NoiseSchedule.create("cosine", 1000)
    steps = timesteps("ddim", schedule, 6, "trailing")
    sigma = [float(schedule.snr(torch.tensor(t)).rsqrt()) for t in steps]
    interval = f"{sigma[4]},{sigma[1]}"  # guides at steps[1], [2] and [3]
    main(
        ["eval", "--ckpt", str(guided_run), "--guide", str(guided_run / "guide"), "--guidance", "0.5",
         "--guidance-interval", interval, "--sampler", "ddim", "--steps", "6", "--spacing", "trailing",
         "--n", "10", "--metrics", "kid", "--no-floor", "--quiet", "--json"]
    )  # fmt: skip
    report = json.loads(capsys.readouterr().out)
    assert report["nfe"] == 9
    assert list(guided_run.glob("eval-*-by-run-guide-*.npz"))


def test_a_lab_samples_a_run_guided_by_its_own_guide_and_counts_both_networks(tmp_path):
    """What benchmarks/time_to_quality.py --recipes autoguided samples: the run guided by its guide folder."""
    from tinydiff.experiments.lab import Lab

    lab = Lab("t", tmp_path / "out", tmp_path / "cache", quick=True)
    m = lab.trained("ag", data="digits", minutes=None, steps=8, batch_size=8, conditional=True, guide_at=0.5)
    guide = lab.guide(m)
    assert guide.ident != m.ident
    kept = load(tmp_path / "cache" / "models" / m.ident / "guide").net.state_dict()
    assert all(torch.equal(v, kept[k]) for k, v in guide.model.net.state_dict().items())
    options = {"sampler": "dpm++2m", "steps": 4, "eta": 0.0}
    plain = lab.samples(m, 8, **options)
    guided = lab.samples(m, 8, guide=guide, guidance=1.0, **options)  # guided at every step: twice the evaluations
    assert guided != plain
    assert lab.sampling_record(plain)["nfe"] == 4 and lab.sampling_record(guided)["nfe"] == 8
    assert not np.allclose(lab.load(guided)["x"], lab.load(plain)["x"], atol=1e-3)
