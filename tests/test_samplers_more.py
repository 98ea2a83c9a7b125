"""PNDM (PLMS), Heun and DPM-Solver++(2M): closed-form accuracy with the exact Gaussian denoiser, the sampler
contract (callback, determinism, network evaluations), and parity of all samplers with diffusers' schedulers."""

import math

import pytest
import torch
from helpers import gaussian_denoiser

from tinydiff.samplers import SAMPLERS
from tinydiff.schedule import NoiseSchedule

MU, S = 0.3, 0.5
NEW = ("pndm", "heun", "dpm++2m")


def _x_T(shape=(40_000, 1), seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _counting(denoise):
    """denoise, plus a list that records the timestep of every call (one network evaluation each)."""
    calls = []

    def counted(x_t, t):
        calls.append(t)
        return denoise(x_t, t)

    return counted, calls


def _tau(name, schedule, steps, spacing=None):
    """``steps`` timesteps from T - 1, spaced by ``spacing`` or the sampler's default spacing."""
    return schedule.timesteps(steps, spacing or SAMPLERS[name].spacing)


def _distribution_error(name, schedule, steps, spacing=None, **options):
    """|mean - mu| + |std - s| of the samples drawn with the exact denoiser for N(mu, s^2) data; and the number of
    network evaluations used."""
    denoise, calls = _counting(gaussian_denoiser(schedule, MU, S))
    out = SAMPLERS[name](denoise, schedule, _x_T(), _tau(name, schedule, steps, spacing), clip_x0=False, **options)
    return abs(out.mean().item() - MU) + abs(out.std().item() - S), len(calls)


# ---------------------------------------------------------------- closed form


@pytest.mark.parametrize("name", NEW)
def test_new_samplers_approach_the_gaussian_data_distribution(name):
    """With the exact denoiser only discretisation error remains: it shrinks as steps grow and is within sampling
    noise (about 0.007 for these 40 000 samples) at S = T."""
    schedule = NoiseSchedule.create("linear", 1000)
    errors = [_distribution_error(name, schedule, steps)[0] for steps in (10, 100, 1000)]
    assert errors[0] > errors[2] and errors[1] > errors[2] - 0.005
    assert errors[2] < 0.02


@pytest.mark.parametrize("eta", [0.5, 1.0, 2.0])
def test_stochastic_dpm_solver_approaches_the_gaussian_data_distribution(eta):
    """The same for DPM-Solver++(2M) with the reverse SDE mixed in (eta > 0; above 1 more noise is renewed)."""
    schedule = NoiseSchedule.create("linear", 1000)
    errors = [
        _distribution_error("dpm++2m", schedule, steps, eta=eta, generator=torch.Generator().manual_seed(1))[0]
        for steps in (10, 100, 1000)
    ]
    assert errors[0] > errors[2] and errors[1] > errors[2] - 0.005
    assert errors[2] < 0.02


@pytest.mark.parametrize(
    "name, steps, spacing",
    [
        ("pndm", 9, "uniform"),  # 10 evaluations: 0.020 against DDIM's 0.140
        ("pndm", 9, "quadratic"),
        ("dpm++2m", 10, "trailing"),  # 10 evaluations: 0.097 against 0.131
        ("dpm++2m", 10, "quadratic"),  # 0.059 against 0.081
        ("heun", 10, "uniform"),  # 19 evaluations: 0.051 against 0.075
    ],
)
def test_higher_order_samplers_beat_ddim_at_equal_network_evaluations(name, steps, spacing):
    """Each higher-order sampler is more accurate than DDIM (eta = 0) given the same number of network evaluations.

    Where it does not hold, and why (checked; the samplers match diffusers to 1e-10, see the parity tests):
    - dpm++2m on "uniform" and "leading" at 10 evaluations (0.20 against DDIM's 0.14): these trajectories end at
      t = 0, where lambda jumps from 0.97 (t = 111) to 4.61, so the step into t = 0 is 4.7 times longer in lambda
      than the one before it, and the second-order multistep extrapolates x0 with 1 / (2 r) = 2.4 past the point
      where x0 has saturated. diffusers never puts t = 0 on a DPM-Solver trajectory (all its spacings for
      DPMSolverMultistepScheduler drop it and step from about T / S straight to sigma = 0), which is our "trailing".
    - heun at 9 or 11 evaluations (e.g. 0.161 against 0.127 at 11): 5 or 6 Heun steps against 9 or 11 DDIM steps.
      DDIM is the Euler method of the same sigma-ODE and is exact where sigma >> s (x - mu grows linearly in
      sigma there), so the error comes from the few steps near sigma ~ s; two Euler steps there beat one Heun step.
      From about 20 evaluations on Heun's second order wins.
    """
    schedule = NoiseSchedule.create("linear", 1000)
    error, evaluations = _distribution_error(name, schedule, steps, spacing=spacing)
    ddim_error, _ = _distribution_error("ddim", schedule, evaluations, spacing=spacing)
    assert error < 0.8 * ddim_error


# ---------------------------------------------------------------- contract


@pytest.mark.parametrize("name", NEW)
def test_callback_once_per_step_in_trajectory_order(name):
    schedule = NoiseSchedule.create("linear")
    seen = []
    out = SAMPLERS[name](
        gaussian_denoiser(schedule, MU, S),
        schedule,
        _x_T((10, 2)),
        schedule.timesteps(7, "quadratic"),
        callback=lambda i, t, x, x0: seen.append((i, t, x, x0)),
    )
    assert [i for i, *_ in seen] == list(range(7))
    assert [t for _, t, *_ in seen] == schedule.timesteps(7, "quadratic").tolist()
    assert all(x.shape == x0.shape == out.shape for *_, x, x0 in seen)
    assert torch.equal(seen[-1][2], out)  # the last state is the output (for heun: the VP state, not x_sigma)


@pytest.mark.parametrize("name", NEW)
def test_deterministic_samplers_ignore_the_generator(name):
    schedule = NoiseSchedule.create("linear")
    denoise = gaussian_denoiser(schedule, MU, S)
    a, b, c = (
        SAMPLERS[name](denoise, schedule, _x_T((100, 1)), _tau(name, schedule, 10), generator=generator)
        for generator in (torch.Generator().manual_seed(0), torch.Generator().manual_seed(99), None)
    )
    assert torch.equal(a, b) and torch.equal(a, c)


@pytest.mark.parametrize(
    "name, steps, evaluations",
    [
        ("pndm", 1, 1),
        ("pndm", 2, 3),
        ("pndm", 10, 11),  # steps + 1: the warm-up's extra evaluation
        ("heun", 1, 1),
        ("heun", 10, 19),  # 2 steps - 1: the last step is Euler
        ("dpm++2m", 1, 1),
        ("dpm++2m", 10, 10),
    ],
)
def test_network_evaluations(name, steps, evaluations):
    schedule = NoiseSchedule.create("linear")
    denoise, calls = _counting(gaussian_denoiser(schedule, MU, S))
    tau = _tau(name, schedule, steps)
    SAMPLERS[name](denoise, schedule, _x_T((4, 1)), tau)
    assert len(calls) == evaluations
    assert set(calls) <= set(tau.tolist())  # only on the trajectory's timesteps


@pytest.mark.parametrize("name", NEW)
def test_one_step_is_ddim_and_clipping_keeps_x0_in_range(name):
    """With a single step every one of them is the jump to x0 predicted at t = T - 1, i.e. one DDIM step."""
    schedule = NoiseSchedule.create("linear")
    far = gaussian_denoiser(schedule, 5.0, 0.1)  # data far outside [-1, 1]
    x0s = []
    out = SAMPLERS[name](
        far, schedule, _x_T((100, 1)), schedule.timesteps(10), callback=lambda i, t, x, x0: x0s.append(x0)
    )
    assert all(x0.abs().max() <= 1 for x0 in x0s)
    assert out.abs().max() <= 1 + 1e-9  # the last step returns a clipped x0 (pndm's: its transfer part's)
    one = SAMPLERS[name](far, schedule, _x_T((100, 1)), schedule.timesteps(1), clip_x0=False)
    torch.testing.assert_close(
        one, SAMPLERS["ddim"](far, schedule, _x_T((100, 1)), schedule.timesteps(1), clip_x0=False)
    )


# ---------------------------------------------------------------- parity with diffusers
#
# Same float64 x_T, same model, same integer timesteps; whole trajectories are compared. diffusers keeps betas and
# alpha_bar in float32 (relative error ~1e-7): its tables are replaced by our float64 ones so that the comparison
# is of the algorithms. Timesteps are 0-based indices in both.

PARITY_SHAPE = (8, 2, 4)  # [N, C, L]: DPMSolverMultistepScheduler's thresholding wants channel and spatial dims


def _wiggly_denoiser(schedule):
    """A smooth nonlinear model: the exact Gaussian eps plus a t-dependent wiggle (so that multistep and Heun
    corrections matter), with x0 consistent with eps (DDPM eq. 4)."""
    gaussian = gaussian_denoiser(schedule, MU, S)

    def denoise(x_t, t):
        eps = gaussian(x_t, t)[0] + 0.1 * torch.sin(3 * x_t + t / 100)
        a = float(schedule.alpha_bar_at(t))
        return eps, (x_t - math.sqrt(1 - a) * eps) / math.sqrt(a)

    return denoise


def _scheduler(cls_name, schedule, **config):
    diffusers = pytest.importorskip("diffusers")
    scheduler = getattr(diffusers, cls_name)(
        num_train_timesteps=schedule.num_timesteps, trained_betas=schedule.betas.numpy(), **config
    )
    scheduler.betas, scheduler.alphas, scheduler.alphas_cumprod = schedule.betas, schedule.alphas, schedule.alpha_bar
    return scheduler


def _float64_sigmas(scheduler, schedule):
    """HeunDiscrete and DPMSolverMultistep compute sigma_t = sqrt((1 - a) / a) at their timesteps (then 0) in
    set_timesteps and round it to float32. After checking that they are our sigmas, put the float64 values back:
    with 10 steps the rounding alone moves the outputs by ~5e-7, with 2 or 3 steps by up to 5e-4 (Heun, whose jump
    from sigma = 157 to 0.01 cancels digits) and 2e-5 (DPM-Solver), which would hide real differences."""
    sigmas = torch.cat([schedule.snr(scheduler.timesteps.long()).rsqrt(), torch.zeros(1, dtype=torch.float64)])
    torch.testing.assert_close(scheduler.sigmas.double(), sigmas, rtol=1e-6, atol=0)
    scheduler.sigmas = sigmas


def _diffusers_states(scheduler, x, denoise, step_options=lambda i: {}):
    """The state after every scheduler.step (the usual pipeline loop)."""
    states = []
    for i, t in enumerate(scheduler.timesteps):
        eps = denoise(scheduler.scale_model_input(x, t), int(t))[0]
        x = scheduler.step(eps, t, x, **step_options(i)).prev_sample
        states.append(x)
    return states


def _our_states(name, schedule, x_T, denoise, timesteps, **options):
    states = []
    SAMPLERS[name](denoise, schedule, x_T, timesteps, callback=lambda i, t, x, x0: states.append(x), **options)
    return states


def _max_difference(ours, theirs):
    assert len(ours) == len(theirs)
    return max((a - b).abs().max().item() for a, b in zip(ours, theirs))


@pytest.mark.parametrize("variance, variance_type", [("posterior", "fixed_small"), ("beta", "fixed_large")])
@pytest.mark.parametrize("clip", [False, True])
def test_ddpm_matches_diffusers(variance, variance_type, clip):
    """DDPMScheduler on 50 of T = 1000 steps ("linspace" = our "uniform"); the noise comes from the same
    generator, drawn in the same order (one draw per step but the last in both)."""
    schedule = NoiseSchedule.create("cosine", 1000)
    denoise, x_T = _wiggly_denoiser(schedule), _x_T(PARITY_SHAPE)
    scheduler = _scheduler(
        "DDPMScheduler", schedule, variance_type=variance_type, clip_sample=clip, timestep_spacing="linspace"
    )
    scheduler.set_timesteps(50)
    assert scheduler.timesteps.tolist() == schedule.timesteps(50, "uniform").tolist()
    theirs_generator = torch.Generator().manual_seed(7)
    theirs = _diffusers_states(scheduler, x_T, denoise, lambda i: {"generator": theirs_generator})
    generator = torch.Generator().manual_seed(7)
    ours = _our_states(
        "ddpm", schedule, x_T, denoise, schedule.timesteps(50), variance=variance, clip_x0=clip, generator=generator
    )
    assert _max_difference(ours, theirs) < 1e-9


def test_ddpm_last_step_noise_differs_from_diffusers_on_trajectories_ending_above_zero():
    """Intended difference. diffusers adds noise whenever t > 0, also on the last step (to t = -1, alpha_bar = 1):
    with "fixed_large" that noise has variance beta'_t = 1 - alpha_bar_t (with "fixed_small" the posterior variance
    is 0 there, clamped to 1e-20). On trajectories that end at t = 0 ("linspace", "leading", all T steps) no noise is
    added and the two agree; "trailing" ends at t = T / S - 1 > 0. We follow DDPM Algorithm 2 (z = 0 on the last
    step: the output is the posterior mean), so our last state is diffusers' one minus that noise."""
    schedule = NoiseSchedule.create("linear", 1000)
    denoise, x_T = _wiggly_denoiser(schedule), _x_T(PARITY_SHAPE)
    scheduler = _scheduler(
        "DDPMScheduler", schedule, variance_type="fixed_large", clip_sample=False, timestep_spacing="trailing"
    )
    scheduler.set_timesteps(10)
    assert scheduler.timesteps.tolist() == schedule.timesteps(10, "trailing").tolist()
    theirs_generator = torch.Generator().manual_seed(7)
    theirs = _diffusers_states(scheduler, x_T, denoise, lambda i: {"generator": theirs_generator})
    generator = torch.Generator().manual_seed(7)
    ours = _our_states(
        "ddpm",
        schedule,
        x_T,
        denoise,
        schedule.timesteps(10, "trailing"),
        variance="beta",
        clip_x0=False,
        generator=generator,
    )
    assert _max_difference(ours[:-1], theirs[:-1]) < 1e-9
    replay = torch.Generator().manual_seed(7)
    z = [torch.randn(PARITY_SHAPE, generator=replay, dtype=torch.float64) for _ in range(10)][-1]  # diffusers' 10th
    last_t = schedule.timesteps(10, "trailing")[-1]
    torch.testing.assert_close(theirs[-1], ours[-1] + (1 - schedule.alpha_bar[last_t]).sqrt() * z, rtol=0, atol=1e-9)


@pytest.mark.parametrize("eta, clip", [(0.0, False), (1.0, False), (0.0, True), (1.0, True)])
def test_ddim_matches_diffusers(eta, clip):
    """DDIMScheduler with "leading" spacing (steps_offset = 0) and set_alpha_to_one, against our "leading". For
    eta > 0 the noise we draw is replayed from the same seed and handed to diffusers as ``variance_noise`` (we draw
    none on the last step, where sigma = 0 anyway). With clipping, ``use_clipped_model_output`` is our
    recomputation of eps from the clipped x0."""
    schedule = NoiseSchedule.create("linear", 1000)
    denoise, x_T, steps = _wiggly_denoiser(schedule), _x_T(PARITY_SHAPE), 20
    scheduler = _scheduler(
        "DDIMScheduler", schedule, clip_sample=clip, set_alpha_to_one=True, steps_offset=0, timestep_spacing="leading"
    )
    scheduler.set_timesteps(steps)
    assert scheduler.timesteps.tolist() == schedule.timesteps(steps, "leading").tolist()
    replay = torch.Generator().manual_seed(5)
    noise = [torch.randn(PARITY_SHAPE, generator=replay, dtype=torch.float64) for _ in range(steps - 1)]
    noise.append(torch.zeros(PARITY_SHAPE, dtype=torch.float64))

    def options(i):
        return {"eta": eta, "use_clipped_model_output": clip, "variance_noise": noise[i] if eta > 0 else None}

    theirs = _diffusers_states(scheduler, x_T, denoise, options)
    generator = torch.Generator().manual_seed(5)
    ours = _our_states(
        "ddim", schedule, x_T, denoise, schedule.timesteps(steps, "leading"), eta=eta, clip_x0=clip, generator=generator
    )
    assert _max_difference(ours, theirs) < 1e-9


@pytest.mark.parametrize("steps", [1, 2, 3, 4, 10, 25])
def test_pndm_matches_diffusers(steps):
    """PNDMScheduler(skip_prk_steps=True), "leading" spacing. Its timestep list repeats tau_2 (T - 1, tau_2, tau_2,
    ...): the first step() is the Euler predictor of the pseudo improved Euler warm-up, the second its correction,
    so it makes steps + 1 calls; its states after call 2, 3, ... are ours after step 1, 2, ... (one call for S = 1).
    diffusers computes the previous timestep as t - T // S, which is the next element of "leading"."""
    schedule = NoiseSchedule.create("linear", 1000)
    denoise, x_T = _wiggly_denoiser(schedule), _x_T(PARITY_SHAPE)
    scheduler = _scheduler(
        "PNDMScheduler",
        schedule,
        skip_prk_steps=True,
        set_alpha_to_one=True,
        steps_offset=0,
        timestep_spacing="leading",
    )
    scheduler.set_timesteps(steps)
    assert scheduler.timesteps.unique().flip(0).tolist() == schedule.timesteps(steps, "leading").tolist()
    assert len(scheduler.timesteps) == (steps + 1 if steps > 1 else 1)  # network evaluations
    theirs = _diffusers_states(scheduler, x_T, denoise)
    ours = _our_states("pndm", schedule, x_T, denoise, schedule.timesteps(steps, "leading"), clip_x0=False)
    assert _max_difference(ours, theirs[1:] if steps > 1 else theirs) < 1e-9


@pytest.mark.parametrize("spacing", ["uniform", "quadratic", "trailing"])
@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # numpy 2 on torch tensors
@pytest.mark.parametrize("clip", [False, True])
def test_dpm_solver_matches_diffusers(spacing, clip):
    """DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", solver_order=2, final_sigmas_type="zero",
    lower_order_final=True). Its own "trailing" equals ours; its "linspace" and "leading" take S + 1 points and drop
    t = 0, unlike ours, so uniform and quadratic trajectories are handed over as custom timesteps. Its thresholding
    with sample_max_value = 1 clamps x0 to [-1, 1], which is our clip_x0.
    Tolerance 1e-6: diffusers' step() casts the state to float32 ("upcast") before every update."""
    schedule = NoiseSchedule.create("linear", 1000)
    denoise, x_T, steps = _wiggly_denoiser(schedule), _x_T(PARITY_SHAPE), 10
    scheduler = _scheduler(
        "DPMSolverMultistepScheduler",
        schedule,
        algorithm_type="dpmsolver++",
        solver_order=2,
        final_sigmas_type="zero",
        lower_order_final=True,
        thresholding=clip,
        sample_max_value=1.0,
        timestep_spacing="trailing",
    )
    if spacing == "trailing":
        scheduler.set_timesteps(steps)
    else:
        scheduler.set_timesteps(timesteps=schedule.timesteps(steps, spacing).tolist())
    assert scheduler.timesteps.tolist() == schedule.timesteps(steps, spacing).tolist()
    _float64_sigmas(scheduler, schedule)
    theirs = _diffusers_states(scheduler, x_T, denoise)
    ours = _our_states("dpm++2m", schedule, x_T, denoise, schedule.timesteps(steps, spacing), clip_x0=clip)
    assert _max_difference(ours, theirs) < 1e-6


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # numpy 2 on torch tensors
@pytest.mark.parametrize("clip", [False, True])
def test_sde_dpm_solver_matches_diffusers(clip):
    """eta = 1 against DPMSolverMultistepScheduler(algorithm_type="sde-dpmsolver++", solver_type="midpoint"): the
    noise we draw (one z per step, the last included) is replayed from the same seed and handed over as
    ``variance_noise``. Tolerance 1e-6: diffusers casts the state and the noise to float32."""
    schedule = NoiseSchedule.create("linear", 1000)
    denoise, x_T, steps = _wiggly_denoiser(schedule), _x_T(PARITY_SHAPE), 10
    scheduler = _scheduler(
        "DPMSolverMultistepScheduler",
        schedule,
        algorithm_type="sde-dpmsolver++",
        solver_type="midpoint",
        solver_order=2,
        final_sigmas_type="zero",
        lower_order_final=True,
        thresholding=clip,
        sample_max_value=1.0,
        timestep_spacing="trailing",
    )
    scheduler.set_timesteps(steps)
    _float64_sigmas(scheduler, schedule)
    replay = torch.Generator().manual_seed(5)
    noise = [torch.randn(PARITY_SHAPE, generator=replay, dtype=torch.float64) for _ in range(steps)]
    theirs = _diffusers_states(scheduler, x_T, denoise, lambda i: {"variance_noise": noise[i]})
    generator = torch.Generator().manual_seed(5)
    ours = _our_states(
        "dpm++2m",
        schedule,
        x_T,
        denoise,
        schedule.timesteps(steps, "trailing"),
        eta=1.0,
        clip_x0=clip,
        generator=generator,
    )
    assert _max_difference(ours, theirs) < 1e-6
    # and the noise matters: another seed gives other samples
    other = _our_states(
        "dpm++2m", schedule, x_T, denoise, schedule.timesteps(steps, "trailing"), eta=1.0, generator=torch.Generator()
    )
    assert (other[-1] - ours[-1]).abs().max() > 0.1


@pytest.mark.parametrize("spacing", ["leading", "trailing", "uniform", "quadratic"])
@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # numpy 2 on torch tensors
@pytest.mark.parametrize("clip", [False, True])
def test_heun_matches_diffusers(spacing, clip):
    """HeunDiscreteScheduler (no Karras sigmas; clip_sample clamps x0 like our clip_x0).

    Its discretisation matches ours only on integer timesteps. Its default "linspace" spacing does not round:
    timesteps are np.linspace(0, T - 1, S), fractional, sigma is interpolated linearly between the sigmas of the
    neighbouring integer timesteps, and the model is called with the fractional timestep. Our sampler evaluates the
    network only at the integer timesteps it was trained on (our "uniform" is that linspace rounded), so "linspace"
    cannot match; its "leading" and "trailing" are integer and equal ours, and "uniform" / "quadratic" are handed
    over as custom (integer) timesteps, where its interpolation is exact.
    Its state is x_sigma = x_t / sqrt(alpha_bar_t); it makes 2 S - 1 calls (timesteps tau_1, tau_2, tau_2, tau_3,
    tau_3, ...; the calls with odd index are Heun corrections, the last call the final Euler step to sigma = 0), so
    its states after calls 1, 3, ..., 2 S - 3 and 2 S - 2, times sqrt(alpha_bar) of the timestep reached, are ours.
    It starts from x_T / sqrt(alpha_bar_{T-1}), i.e. our x_T mapped to x_sigma exactly (its init_noise_sigma is
    sigma_max for "linspace" / "trailing" and sqrt(sigma_max^2 + 1) for "leading"; only the latter is exact)."""
    schedule = NoiseSchedule.create("linear", 1000)
    denoise, x_T, steps = _wiggly_denoiser(schedule), _x_T(PARITY_SHAPE), 10
    tau = schedule.timesteps(steps, spacing)
    own_spacing = spacing in ("leading", "trailing")
    spacing_config = {"timestep_spacing": spacing, "steps_offset": 0} if own_spacing else {}
    scheduler = _scheduler("HeunDiscreteScheduler", schedule, clip_sample=clip, **spacing_config)
    if own_spacing:
        scheduler.set_timesteps(steps)
    else:
        scheduler.set_timesteps(timesteps=tau.tolist())
    assert scheduler.timesteps.long().unique().flip(0).tolist() == tau.tolist()
    assert len(scheduler.timesteps) == 2 * steps - 1  # network evaluations
    _float64_sigmas(scheduler, schedule)
    theirs = _diffusers_states(scheduler, x_T / schedule.alpha_bar_at(tau[0]).sqrt(), denoise)
    full_steps = [theirs[k] for k in range(1, 2 * steps - 2, 2)] + [theirs[-1]]
    reached = torch.cat([tau[1:], torch.tensor([-1])])
    theirs_vp = [x * schedule.alpha_bar_at(t).sqrt() for x, t in zip(full_steps, reached)]
    ours = _our_states("heun", schedule, x_T, denoise, schedule.timesteps(steps, spacing), clip_x0=clip)
    assert _max_difference(ours, theirs_vp) < 1e-9
