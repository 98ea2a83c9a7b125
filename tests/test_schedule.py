import math

import pytest
import torch

from tinydiff.schedule import SCHEDULES, SPACINGS, NoiseSchedule


def test_linear_schedule_is_the_papers():
    s = NoiseSchedule.create("linear", 1000)
    assert s.betas[0].item() == pytest.approx(1e-4, abs=1e-15)
    assert s.betas[-1].item() == pytest.approx(0.02, abs=1e-15)
    assert s.alpha_bar.dtype == torch.float64
    assert (s.alpha_bar.diff() < 0).all() and (s.alpha_bar > 0).all()
    # alpha_bar_T = prod(1 - beta_t) ~ 4.04e-5 (DDPM: "x_T is nearly pure noise")
    assert s.alpha_bar[-1].item() == pytest.approx(math.prod(1 - b for b in s.betas.tolist()), rel=1e-12)
    assert 3e-5 < s.alpha_bar[-1].item() < 5e-5


def test_cosine_schedule_endpoints_and_closed_form():
    T, s_off = 1000, 0.008
    s = NoiseSchedule.create("cosine", T)
    f = lambda t: math.cos((t / T + s_off) / (1 + s_off) * math.pi / 2) ** 2  # noqa: E731
    assert (s.betas <= 0.999).all() and s.betas[-1].item() == pytest.approx(0.999)
    assert (s.alpha_bar.diff() < 0).all()
    for t in (0, 1, 250, 500, 900):  # unclipped region: alpha_bar(t) = f(t+1) / f(0)
        assert s.alpha_bar[t].item() == pytest.approx(f(t + 1) / f(0), rel=1e-9)
    assert s.alpha_bar[0].item() > 0.9999 and s.alpha_bar[-1].item() < 1e-6


def test_alpha_bar_of_minus_one_is_clean_data():
    s = NoiseSchedule.create("linear", 100)
    assert s.alpha_bar_at(-1).item() == 1.0
    assert torch.equal(s.alpha_bar_at(torch.tensor([0, 99])), s.alpha_bar[[0, 99]])


def test_q_sample_moments_match_closed_form():
    s = NoiseSchedule.create("linear", 1000)
    gen = torch.Generator().manual_seed(0)
    x0 = torch.full((200_000, 1), 0.7, dtype=torch.float64)
    for t in (0, 100, 500, 999):
        noise = torch.randn(x0.shape, generator=gen, dtype=torch.float64)
        x_t = s.q_sample(x0, torch.full((len(x0),), t), noise)
        a = s.alpha_bar[t].item()
        assert x_t.mean().item() == pytest.approx(math.sqrt(a) * 0.7, abs=0.01)
        assert x_t.var().item() == pytest.approx(1 - a, rel=0.02, abs=1e-4)


def test_q_sample_equals_iterating_the_markov_chain():
    """q(x_t|x_0) in closed form (eq. 4) agrees with running q(x_t|x_{t-1}) (eq. 2) t times."""
    s = NoiseSchedule.create("cosine", 200)
    gen = torch.Generator().manual_seed(1)
    x = torch.full((100_000,), -0.5, dtype=torch.float64)
    for t in range(120):
        x = s.alphas[t].sqrt() * x + s.betas[t].sqrt() * torch.randn(x.shape, generator=gen, dtype=torch.float64)
    a = s.alpha_bar[119].item()
    assert x.mean().item() == pytest.approx(-0.5 * math.sqrt(a), abs=0.01)
    assert x.var().item() == pytest.approx(1 - a, rel=0.02)


def test_snr_decreasing():
    s = NoiseSchedule.create("linear")
    snr = s.snr(torch.arange(1000))
    assert (snr.diff() < 0).all()
    assert snr[0].item() == pytest.approx((1 - 1e-4) / 1e-4)


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("steps", [1, 10, 20, 50, 100, 1000])
def test_trajectories(schedule, spacing, steps):
    # cosine + logsnr, S = 20 once ran past T - 1: its top grid points collapse onto t = 999
    s = NoiseSchedule.create(schedule, 1000)
    tau = s.timesteps(steps, spacing)
    assert len(tau) == steps and (tau.diff() < 0).all()
    assert tau.min() >= 0 and tau.max() <= 999


@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("steps", [1, 10, 50, 991])
def test_a_trajectory_from_an_earlier_start_is_that_of_a_shorter_schedule(spacing, steps):
    s = NoiseSchedule.create("cosine", 1000)
    tau = s.timesteps(steps, spacing, start=990)
    assert len(tau) == steps and (tau.diff() < 0).all() and tau.min() >= 0 and tau.max() <= 990
    if spacing in ("uniform", "trailing", "logsnr"):
        assert tau[0] == 990  # these start at the top
    assert torch.equal(s.timesteps(steps, spacing, start=999), s.timesteps(steps, spacing))
    shorter = NoiseSchedule(s.betas[:991])
    assert torch.equal(tau, shorter.timesteps(steps, spacing))
    with pytest.raises(ValueError, match="steps must be in"):
        s.timesteps(992, spacing, start=990)
    with pytest.raises(ValueError, match="first timestep"):
        s.timesteps(1, spacing, start=1000)


@pytest.mark.parametrize("name", SCHEDULES)
def test_sigma_and_the_start_below_a_noise_level(name):
    s = NoiseSchedule.create(name, 1000)
    t = torch.arange(1000)
    a = s.alpha_bar_at(t)
    torch.testing.assert_close(s.sigma(t), ((1 - a) / a).sqrt(), rtol=1e-12, atol=0)
    for sigma_max in (0.5, 80.0, 1e3):
        start = s.start_below(sigma_max)
        assert s.sigma(start) <= sigma_max and (start == 999 or s.sigma(start + 1) > sigma_max)
    assert s.start_below(math.inf) == 999 and s.start_below(0.0) == 0
    # the cosine schedule's last timestep is far above EDM's sigma_max = 80; the linear one's at 157
    assert s.sigma(999) > (2e4 if name == "cosine" else 150)


def test_trajectory_values():
    s = NoiseSchedule.create("linear", 1000)
    assert s.timesteps(10, "leading").tolist() == list(range(900, -1, -100))
    assert s.timesteps(10, "trailing").tolist() == list(range(999, 0, -100))
    uniform = s.timesteps(50, "uniform")
    assert uniform[0] == 999 and uniform[-1] == 0
    assert s.timesteps(1000, "uniform").tolist() == list(range(999, -1, -1))
    assert s.timesteps(1, "uniform").tolist() == [999]  # one step starts from pure noise
    with pytest.raises(ValueError, match="steps must be in"):
        s.timesteps(1001)
    assert s.timesteps(50, "quadratic")[-4:].tolist() == [3, 2, 1, 0]  # DDIM's 0, 0, 1, 3 made distinct
    assert s.timesteps(1000, "quadratic").tolist() == list(range(999, -1, -1))
    # logsnr: equal steps in lambda = log(SNR) / 2, from lambda(T-1) towards lambda(0)
    tau = s.timesteps(10, "logsnr")
    lam = s.snr(tau).log() / 2
    step = (s.snr(0).log() / 2 - s.snr(999).log() / 2) / 10
    assert tau[0] == 999 and torch.allclose(lam.diff(), step.expand(9), rtol=0.05)


@pytest.mark.parametrize("name", SCHEDULES)
@pytest.mark.parametrize("steps", [3, 15, 20])
def test_karras_spacing_takes_the_timesteps_nearest_edm_noise_levels(name, steps):
    s = NoiseSchedule.create(name, 1000)
    tau = s.timesteps(steps, "karras")
    assert tau[0] == 999  # the first step from pure noise, as trailing
    # EDM eq. 5 written out again: rho = 7 between sigma 10 and 0.08
    i = torch.arange(steps - 1, dtype=torch.float64) / (steps - 2)
    levels = (10 ** (1 / 7) + i * (0.08 ** (1 / 7) - 10 ** (1 / 7))) ** 7
    sigma = s.sigma(torch.arange(1000))
    for t, level in zip(tau[1:].tolist(), levels.tolist()):
        gap = abs(float(sigma[t]) - level)
        assert gap <= abs(float(sigma[t - 1]) - level) and gap <= abs(float(sigma[t + 1]) - level)
    assert float(sigma[tau[1]]) == pytest.approx(10, rel=0.05)
    assert float(sigma[tau[-1]]) == pytest.approx(0.08, rel=0.05)


@pytest.mark.parametrize("name", SCHEDULES)
@pytest.mark.parametrize("start, steps", [(500, 3), (300, 5), (990, 10), (100, 1)])
def test_log_snr_steps_run_evenly_in_log_sigma_from_a_start_to_sigma_0_08(name, start, steps):
    s = NoiseSchedule.create(name, 1000)
    tau = s.log_snr_steps(steps, start)
    assert tau[0] == start and len(tau) == steps and (tau.diff() < 0).all()
    # lambda = -log sigma_t: the levels log-uniform from sigma_start to 0.08, each timestep the nearest
    sigma = s.sigma(torch.arange(1000))
    levels = torch.logspace(math.log10(float(sigma[start])), math.log10(0.08), steps, dtype=torch.float64)
    for t, level in zip(tau.tolist(), levels.tolist()):
        gap = abs(math.log(float(sigma[t]) / level))
        assert all(gap <= abs(math.log(float(sigma[u]) / level)) for u in (t - 1, t + 1) if 0 <= u <= start)


def test_log_snr_steps_from_below_sigma_0_08_or_the_top_of_the_cosine_schedule_stay_distinct():
    s = NoiseSchedule.create("cosine", 1000)
    assert s.sigma(20) < 0.08
    assert s.log_snr_steps(3, 20).tolist() == [20, 19, 18]
    assert s.log_snr_steps(3, 2).tolist() == [2, 1, 0]
    top = s.log_snr_steps(10, 999)  # sigma falls from 20,000 to 71 over the last ten timesteps
    assert top[0] == 999 and (top.diff() < 0).all() and top[-1] == 43
    with pytest.raises(ValueError, match="steps must be in"):
        s.log_snr_steps(4, 2)


@pytest.mark.parametrize("name", SCHEDULES)
@pytest.mark.parametrize("k", [0.5, 5.2])
def test_snr_scale_multiplies_the_snr_of_every_timestep(name, k):
    base, scaled = NoiseSchedule.create(name, 1000), NoiseSchedule.create(name, 1000, snr_scale=k)
    assert scaled.name == name
    # every step but the cosine schedule's last, whose beta is clipped at 0.999 in both
    last = 999 if name == "cosine" else 1000
    ratio = scaled.snr(torch.arange(last)) / base.snr(torch.arange(last))
    torch.testing.assert_close(ratio, torch.full_like(ratio, k), rtol=1e-9, atol=0)
    assert (scaled.betas > 0).all() and (scaled.betas <= 0.999).all()
    # more SNR is less noise: simple diffusion's shift moves every t towards the data
    assert ((scaled.alpha_bar[:last] > base.alpha_bar[:last]) == (k > 1)).all()
    assert scaled.alpha_bar[-1].item() < 1e-3  # x_T stays (nearly) pure noise
    assert torch.equal(NoiseSchedule.create(name, 1000, snr_scale=1.0).betas, base.betas)


def test_snr_scale_must_be_positive():
    with pytest.raises(ValueError, match="snr_scale must be positive"):
        NoiseSchedule.create("cosine", 100, snr_scale=0.0)
