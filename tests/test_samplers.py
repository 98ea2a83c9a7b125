import pytest
import torch
from helpers import gaussian_denoiser

from tinydiff.samplers import SAMPLERS, get_sampler
from tinydiff.schedule import NoiseSchedule

MU, S = 0.3, 0.5


def _x_T(n=40_000, seed=0):
    return torch.randn(n, 1, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize(
    "name, options",
    [
        ("ddpm", {}),
        ("ddpm", {"variance": "beta"}),
        ("ddim", {}),
        ("ddim", {"eta": 1.0}),
        ("ddim", {"eta": 0.5, "spacing": "quadratic"}),  # spacing: the trajectory's, the rest the sampler's
        ("ddim", {"sigma_hat": True}),
    ],
)
def test_samplers_approach_the_gaussian_data_distribution(name, options):
    """With the exact denoiser, the error in the output's mean and std shrinks as steps grow
    (discretisation error only) and is within sampling noise at S = T."""
    schedule = NoiseSchedule.create("linear", 1000)
    errors = []
    options = dict(options)
    spacing = options.pop("spacing", "uniform")
    for steps in (10, 100, 1000):
        out = get_sampler(name)(
            gaussian_denoiser(schedule, MU, S),
            schedule,
            _x_T(),
            schedule.timesteps(steps, spacing),
            clip_x0=False,
            generator=torch.Generator().manual_seed(1),
            **options,
        )
        errors.append(abs(out.mean().item() - MU) + abs(out.std().item() - S))
    assert errors[0] > errors[2] and errors[1] > errors[2] - 0.005
    assert errors[2] < 0.02


def test_ddim_eta1_equals_ddpm_posterior():
    """DDIM eta = 1 is DDPM with the posterior variance beta~ (DDIM Sec. 4.1), at S = T and skipping steps."""
    schedule = NoiseSchedule.create("cosine", 100)
    denoise = gaussian_denoiser(schedule, MU, S)
    for steps in (100, 10):
        a = SAMPLERS["ddim"](
            denoise,
            schedule,
            _x_T(1000),
            schedule.timesteps(steps),
            eta=1.0,
            clip_x0=False,
            generator=torch.Generator().manual_seed(3),
        )
        b = SAMPLERS["ddpm"](
            denoise,
            schedule,
            _x_T(1000),
            schedule.timesteps(steps),
            clip_x0=False,
            generator=torch.Generator().manual_seed(3),
        )
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)


def test_ddim_sigma_hat_equals_ddpm_beta_variance():
    schedule = NoiseSchedule.create("linear", 100)
    denoise = gaussian_denoiser(schedule, MU, S)
    a = SAMPLERS["ddim"](
        denoise,
        schedule,
        _x_T(500),
        schedule.timesteps(25),
        sigma_hat=True,
        clip_x0=False,
        generator=torch.Generator().manual_seed(4),
    )
    b = SAMPLERS["ddpm"](
        denoise,
        schedule,
        _x_T(500),
        schedule.timesteps(25),
        variance="beta",
        clip_x0=False,
        generator=torch.Generator().manual_seed(4),
    )
    torch.testing.assert_close(a, b, rtol=0, atol=1e-10)


def test_ddim_eta0_is_deterministic_and_uses_no_noise():
    schedule = NoiseSchedule.create("linear")
    denoise = gaussian_denoiser(schedule, MU, S)
    a = SAMPLERS["ddim"](
        denoise, schedule, _x_T(100), schedule.timesteps(10), generator=torch.Generator().manual_seed(0)
    )
    b = SAMPLERS["ddim"](
        denoise, schedule, _x_T(100), schedule.timesteps(10), generator=torch.Generator().manual_seed(99)
    )
    assert torch.equal(a, b)


def test_callback_sees_the_trajectory_in_order():
    schedule = NoiseSchedule.create("linear")
    seen = []
    SAMPLERS["ddim"](
        gaussian_denoiser(schedule, MU, S),
        schedule,
        _x_T(10),
        schedule.timesteps(7, "quadratic"),
        callback=lambda i, t, x, x0: seen.append((i, t, x.shape, x0.shape)),
    )
    assert [t for _, t, _, _ in seen] == schedule.timesteps(7, "quadratic").tolist()
    assert [i for i, _, _, _ in seen] == list(range(7))


def test_clip_x0_keeps_predictions_in_range():
    schedule = NoiseSchedule.create("linear")
    x0s = []
    far = gaussian_denoiser(schedule, 5.0, 0.1)  # data far outside [-1, 1]
    out = SAMPLERS["ddim"](
        far, schedule, _x_T(100), schedule.timesteps(10), callback=lambda i, t, x, x0: x0s.append(x0)
    )
    assert all(x0.abs().max() <= 1 for x0 in x0s)
    assert out.abs().max() <= 1 + 1e-9


def test_bad_options():
    schedule = NoiseSchedule.create("linear")
    denoise = gaussian_denoiser(schedule, MU, S)
    tau = [999, 500, 0]
    with pytest.raises(ValueError, match="eta"):
        SAMPLERS["ddim"](denoise, schedule, _x_T(4), tau, eta=1.5)
    with pytest.raises(ValueError, match="eta"):
        SAMPLERS["dpm++2m"](denoise, schedule, _x_T(4), tau, eta=-0.5)
    with pytest.raises(ValueError, match="variance"):
        SAMPLERS["ddpm"](denoise, schedule, _x_T(4), tau, variance="large")
    for bad in ([], [0, 500], [500, 500, 3], [1000, 3], [10, -1]):
        for name in SAMPLERS:
            with pytest.raises(ValueError, match=r"timesteps must be a non-empty decreasing sequence in \[0, 999\]"):
                SAMPLERS[name](denoise, schedule, _x_T(4), bad)
    with pytest.raises(ValueError, match="unknown sampler"):
        get_sampler("euler")


def test_a_diffusers_unet_plugs_into_every_sampler():
    """Any network is sampled through the (eps, x0) denoiser wrapper, e.g. a diffusers UNet2DModel."""
    diffusers = pytest.importorskip("diffusers")
    from tinydiff.denoiser import as_denoiser

    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(
        sample_size=8,
        in_channels=1,
        out_channels=1,
        block_out_channels=(8, 16),
        layers_per_block=1,
        norm_num_groups=4,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
    )
    schedule = NoiseSchedule.create("linear")
    denoise = as_denoiser(lambda x, t: unet(x, t).sample, schedule, "eps")
    x_T = torch.randn(2, 1, 8, 8)
    with torch.inference_mode():
        for name in SAMPLERS:
            out = SAMPLERS[name](denoise, schedule, x_T, schedule.timesteps(3))
            assert out.shape == x_T.shape and torch.isfinite(out).all()


def test_ddim_eta0_is_an_invertible_ode_map():
    """Invert with DDIM (eta = 0) and decode: the round-trip error falls towards 0 as S grows."""
    from tinydiff.samplers.inversion import invert

    schedule = NoiseSchedule.create("linear", 1000)
    denoise = gaussian_denoiser(schedule, MU, S)
    x_0 = MU + S * torch.randn(2000, 1, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    errors = []
    for steps in (10, 50, 250, 1000):
        x_T = invert(denoise, schedule, x_0, schedule.timesteps(steps))
        back = SAMPLERS["ddim"](denoise, schedule, x_T, schedule.timesteps(steps), clip_x0=False)
        errors.append((back - x_0).pow(2).mean().item())
    assert all(a > b for a, b in zip(errors, errors[1:]))
    assert errors[-1] < 1e-5 and errors[-1] < errors[0] / 100
    # and the latent is distributed as x_T should be: close to N(0, 1)
    assert x_T.std().item() == pytest.approx(1.0, abs=0.05)
