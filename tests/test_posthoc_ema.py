"""Post-hoc EMA (EDM2): power-function profiles, their inner products, the reconstruction of an
average of another length from two stored ones, and `--posthoc-ema` / `export --sigma-rel` on real runs."""

import json

import numpy as np
import pytest
import torch
from helpers import digit_like_images
from safetensors.torch import load_file, save_file
from scipy.integrate import quad
from torch import nn

from tinydiff import load
from tinydiff.cli import main
from tinydiff.config import TrainConfig, recipe_of
from tinydiff.training import Trainer
from tinydiff.training.ema import PowerEMA, gamma_of, sigma_rel_of
from tinydiff.training.posthoc import FOLDER, Profiles, average, coefficients, profile_dot, snapshots


def test_gamma_of_sigma_rel_inverts_edm2_eq3_and_gives_the_papers_exponents():
    # EDM2 (Sec. 3.1) stores sigma_rel = 0.05 and 0.10 as gamma = 16.97 and 6.94
    assert gamma_of(0.05) == pytest.approx(16.97, abs=0.005) and gamma_of(0.10) == pytest.approx(6.94, abs=0.005)
    for s in (0.01, 0.05, 0.13, 0.25):
        assert sigma_rel_of(gamma_of(s)) == pytest.approx(s, rel=1e-9)
    for bad in (0.0, -0.1, 0.3):  # sigma_rel(gamma = 0) = 12^-1/2 = 0.289 is the longest profile
        with pytest.raises(ValueError):
            gamma_of(bad)


def test_profile_dot_is_the_integral_of_the_two_profiles():
    def profile(t, g):
        return lambda tau: (g + 1) * tau**g / t ** (g + 1) if tau <= t else 0.0

    for t_a, g_a, t_b, g_b in [(100, 6.94, 100, 16.97), (40, 6.94, 100, 16.97), (100, 3.0, 30, 8.0)]:
        pa, pb = profile(t_a, g_a), profile(t_b, g_b)
        expected, _ = quad(lambda tau, pa=pa, pb=pb: pa(tau) * pb(tau), 0, min(t_a, t_b), epsabs=1e-14, epsrel=1e-12)
        assert profile_dot(t_a, g_a, t_b, g_b) == pytest.approx(expected, rel=1e-8)
        assert profile_dot(t_a, g_a, t_b, g_b) == pytest.approx(profile_dot(t_b, g_b, t_a, g_a), rel=1e-12)


def test_power_ema_weighs_step_tau_by_the_profile_integrated_over_that_step():
    """After t updates, step tau's weights carry (tau/t)^(g+1) - ((tau-1)/t)^(g+1), the integral of
    p(u) = (g + 1) u^g / t^(g + 1) over [tau - 1, tau]."""
    net, t = nn.Linear(1, 40, bias=False), 40
    average = PowerEMA(net, 0.1)
    values = torch.randn(t, 40, 1, dtype=torch.float64)
    with torch.no_grad():
        for tau in range(1, t + 1):
            net.weight.copy_(values[tau - 1])
            average.update(net, tau)
    g = average.gamma
    weights = torch.tensor([(tau / t) ** (g + 1) - ((tau - 1) / t) ** (g + 1) for tau in range(1, t + 1)])
    expected = (weights[:, None, None] * values).sum(0)
    torch.testing.assert_close(average.shadow.weight.double(), expected, rtol=1e-5, atol=1e-6)


def _trajectory(tmp_path, steps=2000, every=100, track=(0.07, 0.15)):
    """A parameter that drifts like a training run's (a trend and noise), its two profiles stored every
    ``every`` steps, and averages of other lengths tracked directly for comparison."""
    torch.manual_seed(0)
    net = nn.Linear(1, 64)
    profiles, direct = Profiles(net), [PowerEMA(net, s) for s in track]
    trend = torch.randn(2, 65)
    with torch.no_grad():
        for t in range(1, steps + 1):
            u = t / steps
            drift = trend[0] * np.exp(-3 * u) + trend[1] * u + 0.3 * torch.randn(65)
            net.weight.copy_(drift[:64, None])
            net.bias.copy_(drift[64:])
            profiles.update(net, t)
            for d in direct:
                d.update(net, t)
            if t % every == 0:
                profiles.save(tmp_path, t)
    return {s: d.shadow.state_dict() for s, d in zip(track, direct)}


def test_an_average_of_another_length_is_made_from_the_two_stored_ones(tmp_path):
    direct = _trajectory(tmp_path)
    assert [t for t, _ in snapshots(tmp_path)] == list(range(100, 2001, 100))
    for s, expected in direct.items():
        made = average(tmp_path, 2000, s)
        for name in expected:  # within 0.3 % of the spread of the weights over training (noise 0.3, trend ~1)
            assert (made[name] - expected[name]).abs().max() < 3e-3, (s, name)
    # a stored profile comes back as itself: coefficient one on it, zero elsewhere
    stored = [(t, gamma_of(s)) for t in (100, 200, 300) for s in (0.05, 0.10)]
    np.testing.assert_allclose(coefficients(stored, 200, gamma_of(0.10)), [0, 0, 0, 1, 0, 0], atol=1e-9)


def test_posthoc_ema_resumes_exactly_and_adds_nothing_to_the_recipe_when_off(tmp_path):
    npz = tmp_path / "digits.npz"
    np.savez(npz, x=digit_like_images(48))
    base = dict(data=str(npz), batch_size=8, ckpt_every=3, sample_grid=0, lr=1e-3, lr_schedule="constant")
    Trainer(TrainConfig(out=str(tmp_path / "full"), steps=6, posthoc_ema=True, **base)).run(progress=False)
    Trainer(TrainConfig(out=str(tmp_path / "part"), steps=3, posthoc_ema=True, **base)).run(progress=False)
    Trainer(TrainConfig(out=str(tmp_path / "part"), steps=6, posthoc_ema=True, **base), resume=True).run(progress=False)
    full, part = snapshots(tmp_path / "full"), snapshots(tmp_path / "part")
    assert [t for t, _ in full] == [t for t, _ in part] == [3, 6]
    for (_, a), (_, b) in zip(full, part):
        a, b = load_file(a), load_file(b)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # the cached models of the reproduction suite are keyed as before the option existed
    assert (
        "posthoc_ema" not in recipe_of(TrainConfig(**base))
        and recipe_of(TrainConfig(posthoc_ema=True, **base))["posthoc_ema"]
    )


def test_export_sigma_rel_writes_a_model_that_samples(tmp_path, capsys):
    npz, run = tmp_path / "digits.npz", tmp_path / "run"
    np.savez(npz, x=digit_like_images(32))
    train = f"train --data {npz} --out {run} --steps 8 --batch-size 8 --ckpt-every 4 --sample-grid 0 --quiet"
    assert main(f"{train} --posthoc-ema".split()) == 0
    assert main(f"export --ckpt {run} --sigma-rel 0.1 --out {tmp_path / 'm'}".split()) == 0
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["averaged"] == {"posthoc_ema": {"sigma_rel": 0.1, "step": 8}}
    stored = Profiles(load(run).net)
    stored.load(run, 8)  # sigma_rel 0.10 at the last step is the stored profile itself
    for name, value in load(tmp_path / "m").net.state_dict().items():
        torch.testing.assert_close(value, stored.averages[1].shadow.state_dict()[name])
    out = tmp_path / "x.npz"
    assert main(f"sample --ckpt {tmp_path / 'm'} --n 4 --steps 3 --out {tmp_path / 'x.png'} --npz {out}".split()) == 0
    assert np.isfinite(np.load(out)["x"]).all()
    capsys.readouterr()
    # what cannot be done says so in one line, and writes nothing
    for bad, says in [
        (f"--ckpt {tmp_path / 'm'} --sigma-rel 0.1", "needs a run trained with --posthoc-ema"),
        (f"--ckpt {run} --sigma-rel 0.5", "--sigma-rel must be in (0, 0.289)"),
        (f"--ckpt {run} --sigma-rel 0.1 --weights raw", "leave out --weights raw"),
    ]:
        assert main(f"export {bad} --out {tmp_path / 'no'}".split()) == 2
        err = capsys.readouterr().err
        assert says in err and err.count("\n") == 1, err
        assert not (tmp_path / "no").exists()
    last = run / FOLDER / "0000008.safetensors"
    save_file(load_file(last), last, metadata={"step": "8", "sigma_rel": "0.05,wide"})  # a damaged record
    assert main(f"export --ckpt {run} --sigma-rel 0.1 --out {tmp_path / 'no'}".split()) == 2
    assert "is not valid" in capsys.readouterr().err and not (tmp_path / "no").exists()
    (run / FOLDER).rename(tmp_path / "moved")  # a run trained with the option cannot resume without its profiles
    assert main(f"{train} --posthoc-ema --steps 12 --resume".split()) == 2
    assert "is missing" in capsys.readouterr().err


def test_a_lab_scores_a_runs_post_hoc_average_as_its_own_model(tmp_path):
    """What benchmarks/time_to_quality.py --sigma-rel samples: the run's network with the averaged weights."""
    from tinydiff.experiments.lab import Lab
    from tinydiff.training.posthoc import reconstruct

    lab = Lab("t", tmp_path / "out", tmp_path / "cache", quick=True)
    m = lab.trained("ph", data="digits", minutes=None, steps=8, ckpt_every=4, batch_size=8, posthoc_ema=True)
    averaged = lab.averaged(m, 0.07)
    assert averaged.ident != m.ident and averaged.data == m.data
    expected, step = reconstruct(tmp_path / "cache" / "models" / m.ident, 0.07)
    assert step == 8
    for name, value in averaged.model.net.state_dict().items():
        assert torch.equal(value, expected[name])
    ema = load(tmp_path / "cache" / "models" / m.ident).net.state_dict()  # the run's own EMA is left as it was
    assert all(torch.equal(v, ema[k]) for k, v in m.model.net.state_dict().items())
    assert not all(torch.equal(v, ema[k]) for k, v in averaged.model.net.state_dict().items())
