import numpy as np
import pytest
import scipy.stats
import torch

from tinydiff.denoiser import PREDICTIONS, as_denoiser, to_eps_x0
from tinydiff.objectives import diffusion_loss, log_normal_probabilities, loss_weight, sample_timesteps, target
from tinydiff.schedule import NoiseSchedule

COSINE = NoiseSchedule.create("cosine")


@pytest.mark.parametrize("kind", PREDICTIONS)
def test_target_and_conversion_round_trip(kind):
    s = NoiseSchedule.create("cosine")
    gen = torch.Generator().manual_seed(0)
    x0 = torch.rand(16, 1, 4, 4, generator=gen, dtype=torch.float64) * 2 - 1
    eps = torch.randn(x0.shape, generator=gen, dtype=torch.float64)
    t = torch.randint(0, 1000, (16,), generator=gen)
    x_t = s.q_sample(x0, t, eps)
    eps_hat, x0_hat = to_eps_x0(kind, target(kind, x0, eps, s.alpha_bar_at(t)), x_t, s.alpha_bar_at(t))
    torch.testing.assert_close(eps_hat, eps, rtol=0, atol=1e-6)
    torch.testing.assert_close(x0_hat, x0, rtol=0, atol=1e-6)


def test_min_snr_weights_equal_the_x0_space_weight():
    snr = torch.tensor([0.01, 1.0, 5.0, 100.0], dtype=torch.float64)
    expected_x0_weight = snr.clamp(max=5.0)
    # eps-MSE = snr * x0-MSE and v-MSE = (snr + 1) * x0-MSE
    torch.testing.assert_close(loss_weight("eps", snr, "min-snr") * snr, expected_x0_weight)
    torch.testing.assert_close(loss_weight("v", snr, "min-snr") * (snr + 1), expected_x0_weight)
    torch.testing.assert_close(loss_weight("x0", snr, "min-snr"), expected_x0_weight)
    assert torch.equal(loss_weight("eps", snr, "none"), torch.ones(4, dtype=torch.float64))
    # min-snr-plus-one: x0 weight min(SNR, 5) + 1, i.e. the plain v-MSE up to SNR 5, then truncated
    plus_one = loss_weight("v", snr, "min-snr-plus-one")
    torch.testing.assert_close(plus_one, torch.tensor([1.0, 1.0, 1.0, 6.0 / 101.0], dtype=torch.float64))
    torch.testing.assert_close(loss_weight("eps", snr, "min-snr-plus-one") * snr, expected_x0_weight + 1)
    with pytest.raises(ValueError, match="weighting"):
        loss_weight("eps", snr, "p2")


def test_snr_gamma_is_the_cap_of_the_loss_weight():
    s = NoiseSchedule.create("cosine")
    x0 = torch.rand(6, 1, 4, 4) * 2 - 1
    noise = torch.randn_like(x0)
    t = torch.tensor([10, 50, 150, 300, 600, 900])  # SNR from 1,000 down to 0.02
    zero = lambda x_t, t_: torch.zeros_like(x_t)  # noqa: E731
    ratio = diffusion_loss(zero, s, x0, t, noise, "v", "min-snr", gamma=20.0) / diffusion_loss(
        zero, s, x0, t, noise, "v", "min-snr"
    )
    snr = s.snr(t)
    torch.testing.assert_close(ratio, (snr.clamp(max=20.0) / snr.clamp(max=5.0)).float())
    assert ratio[0] == pytest.approx(4.0) and (ratio[snr <= 5] == 1).all() and (snr <= 5).sum() >= 2


@pytest.mark.parametrize("kind", PREDICTIONS)
def test_loss_is_zero_for_an_oracle_and_positive_otherwise(kind):
    s = NoiseSchedule.create("linear")
    x0 = torch.rand(8, 1, 4, 4) * 2 - 1
    noise = torch.randn_like(x0)
    t = torch.randint(0, 1000, (8,))
    oracle = lambda x_t, t_: target(kind, x0, noise, s.alpha_bar_at(t_))  # noqa: E731
    assert diffusion_loss(oracle, s, x0, t, noise, kind).abs().max() < 1e-10
    zero = lambda x_t, t_: torch.zeros_like(x_t)  # noqa: E731
    assert (diffusion_loss(zero, s, x0, t, noise, kind, "min-snr") > 0).all()


def _prediction_of_x0(kind, x0_pred, x_t, alpha_bar):
    """The network output of ``kind`` whose x0 at x_t is x0_pred (requires_grad)."""
    a = alpha_bar.view(-1, 1, 1, 1)
    eps = (x_t - a.sqrt() * x0_pred) / (1 - a).sqrt()
    return target(kind, x0_pred, eps, alpha_bar)


@pytest.mark.parametrize("kind", PREDICTIONS)
def test_clip_aware_loss_ignores_overshoot_only_at_the_bound_the_target_sits_on(kind):
    s = NoiseSchedule.create("cosine")
    gen = torch.Generator().manual_seed(0)
    # columns: background (-1), a stroke (0.3), a saturated pixel (+1), each 4 pixels high
    x0 = torch.tensor([-1.0, 0.3, 1.0], dtype=torch.float64).repeat(2, 1, 4, 1)
    noise = torch.randn(x0.shape, generator=gen, dtype=torch.float64)
    t = torch.tensor([20, 500])
    x_t = s.q_sample(x0, t, noise)
    # The prediction overshoots every column: -1.2 below the background, -1.2 on the stroke (a true
    # error that the clip would not repair), 1.3 above the saturated pixel.
    x0_pred = torch.tensor([-1.2, -1.2, 1.3], dtype=torch.float64).repeat(2, 1, 4, 1).requires_grad_()
    pred = _prediction_of_x0(kind, x0_pred, x_t, s.alpha_bar_at(t))
    plain = diffusion_loss(lambda *_: pred, s, x0, t, noise, kind)
    aware = diffusion_loss(lambda *_: pred, s, x0, t, noise, kind, clip_aware=True)
    # only the stroke column (a third of the pixels) still costs, exactly as much as before
    per_pixel = (pred - target(kind, x0, noise, s.alpha_bar_at(t))).pow(2)
    torch.testing.assert_close(aware, per_pixel[..., 1].flatten(1).sum(1) / 12)
    assert (plain > aware).all()
    (grad,) = torch.autograd.grad(aware.sum(), x0_pred)
    assert (grad[..., 0] == 0).all() and (grad[..., 2] == 0).all() and (grad[..., 1] < 0).all()  # pushed up to 0.3
    # inside the range nothing changes, also on the bound's pixels
    inside = _prediction_of_x0(kind, torch.full_like(x0, -0.9), x_t, s.alpha_bar_at(t))
    torch.testing.assert_close(
        diffusion_loss(lambda *_: inside, s, x0, t, noise, kind, "min-snr", clip_aware=True),
        diffusion_loss(lambda *_: inside, s, x0, t, noise, kind, "min-snr"),
    )


def test_as_denoiser_converts_any_prediction():
    s = NoiseSchedule.create("linear")
    x_t = torch.randn(4, 1, 2, 2, dtype=torch.float64)
    for kind in PREDICTIONS:
        net = lambda x, t: 0.5 * x  # noqa: E731
        eps, x0 = as_denoiser(net, s, kind)(x_t, 10)
        a = s.alpha_bar[10]
        torch.testing.assert_close(a.sqrt() * x0 + (1 - a).sqrt() * eps, x_t)  # consistent with x_t


def test_stratified_timesteps_cover_every_band_once_and_are_marginally_uniform():
    g = torch.Generator().manual_seed(0)
    for n in (1, 8, 125, 1000):  # n divides the 1000 timesteps, so the bands hold whole timesteps
        t = sample_timesteps(n, COSINE, "stratified", g)
        assert t.dtype == torch.long and t.min() >= 0 and t.max() < 1000
        assert torch.equal(torch.sort(t * n // 1000).values, torch.arange(n))  # one per 1/n-th band
    # marginally uniform over [0, 1000): each tenth gets a tenth of 20,000 draws of batches of 8
    draws = torch.cat([sample_timesteps(8, COSINE, "stratified", g) for _ in range(2500)])
    counts = torch.bincount(draws // 100, minlength=10).double()
    assert (counts - 2000).abs().max() < 5 * (2000 * 0.9) ** 0.5
    # the batch's bands arrive in random order (micro-batches and ranks get a spread of t)
    t = sample_timesteps(64, COSINE, "stratified", g)
    assert not torch.equal(t, t.sort().values)
    # uniform draws do not stratify: some band of a batch of 64 is empty (a batch of i.i.d. draws
    # covers all 64 bands with probability 64!/64^64)
    t = sample_timesteps(64, COSINE, "uniform", g)
    assert len(torch.unique(t * 64 // 1000)) < 64
    with pytest.raises(ValueError, match="stratified"):
        sample_timesteps(4, COSINE, "sobol", g)


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_elbo_weights_are_ddpm_bound_terms_and_favour_small_noise(name):
    """DDPM eq. 12 with sigma_t^2 = beta~_t puts beta_t^2 / (2 sigma_t^2 alpha_t (1 - alpha_bar_t)) =
    beta_t / (2 alpha_t (1 - alpha_bar_{t-1})) on the eps-MSE of L_{t-1}: the same up to scale."""
    from tinydiff.objectives import elbo_weights

    schedule = NoiseSchedule.create(name)
    weights = elbo_weights(schedule)
    beta = schedule.betas.double()
    alpha_bar = schedule.alpha_bar.double()
    direct = beta[1:] / (2 * (1 - beta[1:]) * (1 - alpha_bar[:-1]))
    assert torch.allclose(weights[1:] / weights[1:].mean(), direct / direct.mean(), rtol=1e-6)
    assert weights.mean().item() == pytest.approx(1.0) and weights[1] > 50 * weights[500]


@pytest.mark.parametrize("kind", ["eps", "x0", "v"])
def test_the_elbo_weighting_gives_every_prediction_kind_the_same_loss(kind):
    schedule = NoiseSchedule.create("linear")
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.rand(6, 1, 4, 4, generator=g) * 2 - 1, torch.randn(6, 1, 4, 4, generator=g)
    t = torch.tensor([0, 1, 10, 200, 600, 900])  # (at t = 999 float32's x0 from eps loses digits)
    x_t = schedule.q_sample(x0, t, noise)
    wrong = torch.randn(x0.shape, generator=g) * 0.1 + noise  # an eps prediction, expressed in each kind
    eps_loss = diffusion_loss(lambda x, t, y=None: wrong, schedule, x0, t, noise, "eps", "elbo")
    a = schedule.alpha_bar_at(t).view(-1, 1, 1, 1)
    as_kind = {"eps": wrong, "x0": (x_t - (1 - a).sqrt() * wrong) / a.sqrt()}
    as_kind["v"] = a.sqrt() * wrong - (1 - a).sqrt() * as_kind["x0"]
    loss = diffusion_loss(lambda x, t, y=None: as_kind[kind].float(), schedule, x0, t, noise, kind, "elbo")
    assert torch.allclose(loss, eps_loss, rtol=1e-3)  # float32 predictions


def test_log_normal_timesteps_give_edm_noise_levels():
    # ln(sigma_t) of the drawn timesteps follows N(-1.2, 1.2^2) (Karras et al. 2022, Table 1), checked
    # against scipy's normal: its mean, spread and quantiles, up to the grid of 1,000 noise levels
    g = torch.Generator().manual_seed(0)
    for schedule in (COSINE, NoiseSchedule.create("linear")):
        p = log_normal_probabilities(schedule)
        assert p.shape == (1000,) and (p >= 0).all() and abs(p.sum().item() - 1) < 1e-12
        t = sample_timesteps(200_000, schedule, "log-normal", g)
        log_sigma = schedule.sigma(t).log().numpy()
        assert abs(log_sigma.mean() + 1.2) < 0.03 and abs(log_sigma.std() - 1.2) < 0.03
        for q in (0.1, 0.5, 0.9):
            assert abs(np.quantile(log_sigma, q) - scipy.stats.norm.ppf(q, -1.2, 1.2)) < 0.05
    # uniform t puts half the draws above sigma = 1 on the cosine schedule; log-normal about 16 %
    above = (COSINE.sigma(torch.arange(1000)) > 1).double()
    assert abs((above * log_normal_probabilities(COSINE)).sum() - scipy.stats.norm.sf(0, -1.2, 1.2)) < 0.01
    assert abs(above.mean() - 0.5) < 0.02
