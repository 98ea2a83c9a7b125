"""Consistency distillation and its sampler: the sampler against the exact consistency function of
Gaussian data (a closed form), the loss's boundary condition on a real teacher, and a student that
really becomes more self-consistent, sampled by the command line in the steps it records."""

import pytest
import torch
from helpers import digit_like_images, gaussian_denoiser

import tinydiff
from tinydiff.cli import main
from tinydiff.config import validate
from tinydiff.errors import TinydiffError
from tinydiff.samplers import SAMPLERS, get_sampler
from tinydiff.schedule import NoiseSchedule, broadcast
from tinydiff.training import TrainConfig
from tinydiff.training.consistency import ConsistencyDistillation
from tinydiff.training.distill import TeacherStep

MU, S = 0.3, 0.5


def exact_consistency(schedule: NoiseSchedule, mu: float, s: float):
    """The probability-flow ODE's map from x_t to its end x0 for data N(mu, s^2): the flow keeps each
    point's standardised value, x0 = mu + s (x_t - sqrt(a) mu) / sqrt(a s^2 + 1 - a)."""

    def denoise(x_t, t):
        a = broadcast(schedule.alpha_bar_at(torch.as_tensor(t).expand(x_t.shape[0])), x_t)
        x0 = mu + s * (x_t - a.sqrt() * mu) / (a * s**2 + 1 - a).sqrt()
        return (x_t - a.sqrt() * x0) / (1 - a).sqrt(), x0

    return denoise


def test_consistency_sampling_with_the_exact_consistency_function_is_exact_at_any_steps():
    """f maps x_T to a draw of the data in one step, and every renoise-and-map step keeps that
    distribution; the posterior mean E[x0 | x_T] instead (a diffusion model's x0) is a blur."""
    schedule = NoiseSchedule.create("linear", 1000)
    x_T = torch.randn(40_000, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    sampler = get_sampler("consistency")
    for steps in (1, 2, 4):
        tau = schedule.timesteps(steps, "trailing")
        out = sampler(exact_consistency(schedule, MU, S), schedule, x_T, tau, clip_x0=False,
                      generator=torch.Generator().manual_seed(1))  # fmt: skip
        assert abs(out.mean().item() - MU) < 0.01 and abs(out.std().item() - S) < 0.01, steps
    blurred = sampler(gaussian_denoiser(schedule, MU, S), schedule, x_T, [999], clip_x0=False)
    assert blurred.std().item() < 0.1 * S
    assert "consistency" not in SAMPLERS  # not offered as a sampler of diffusion models


def _draws(n=64, seed=9):
    generator = torch.Generator().manual_seed(seed)
    x0 = torch.from_numpy(digit_like_images(n, seed=seed)).float() / 127.5 - 1
    return x0, torch.randn(x0.shape, generator=generator), torch.arange(n) % 4, generator


def test_within_the_last_gap_the_target_is_the_teachers_clean_x0(teacher):
    """The boundary f(x, -1) = x: within one gap of clean data the teacher's own step is its clipped x0,
    so the teacher as the student costs nothing there; further up, a diffusion model is not
    self-consistent (its x0 moves along its own trajectory) and the loss is not zero."""
    model = tinydiff.load(teacher / "teacher", device="cpu")
    step = TeacherStep(str(teacher / "teacher"), 0.0, model.schedule, "cpu")
    loss = ConsistencyDistillation(step, 1, 10, model.schedule)  # gap: 100
    x0, noise, labels, generator = _draws()
    with torch.no_grad():
        last = loss(model.net, x0, torch.randint(0, 100, (64,), generator=generator), noise, labels, model.prediction)
        higher = loss(
            model.net, x0, torch.randint(300, 1000, (64,), generator=generator), noise, labels, model.prediction
        )
    assert last.abs().max() < 1e-5 and (higher > 1e-3).all()


def test_a_consistency_student_becomes_more_self_consistent_and_samples_in_its_steps(teacher, capsys):
    student = tinydiff.distill(
        teacher / "teacher", 2, teacher / "student", from_steps=8, consistency=True, minutes=None,
        train_steps=120, progress=False, lr=1e-3,
    )  # fmt: skip
    model, before = tinydiff.load(student.parent, device="cpu"), tinydiff.load(teacher / "teacher", device="cpu")
    loss = ConsistencyDistillation(
        TeacherStep(str(teacher / "teacher"), 0.0, model.schedule, "cpu"), 2, 8, model.schedule
    )
    x0, noise, labels, generator = _draws(256)  # draws the training never saw
    t = torch.randint(0, 1000, (256,), generator=generator)
    with torch.no_grad():
        learned, untrained = (loss(m.net, x0, t, noise, labels, model.prediction).mean() for m in (model, before))
    assert learned < 0.75 * untrained, (learned, untrained)
    with model.count_evaluations() as count:
        images = tinydiff.sample(model, 8, labels=labels[:8])  # the recorded recipe: consistency, 2 steps
    assert count["images"] == 2 * 8
    # what it is for: in one step it lands nearer the end of the teacher's trajectory from the same x_T
    # (8 DDIM steps) than the teacher's own one step does (its x0 at T - 1, a blurred average)
    x_T = torch.randn(64, *images.shape[1:], generator=generator)
    end = tinydiff.sample(before, 64, labels=labels[:64], x_T=x_T, sampler="ddim", steps=8, spacing="trailing")
    one_step = {"labels": labels[:64], "x_T": x_T, "steps": 1, "spacing": "trailing"}
    ours, theirs = ((tinydiff.sample(m, 64, **one_step) - end).pow(2).mean() for m in (model, before))
    assert ours < 0.8 * theirs, (ours, theirs)
    seen = []  # another number of steps keeps the recorded spacing: one step starts at T - 1
    tinydiff.sample(model, 8, labels=labels[:8], steps=1, callback=lambda i, t, x, x0: seen.append(t))
    assert seen == [model.schedule.num_timesteps - 1]
    # the command line: a run of a few seconds, sampled with no options
    args = ["distill", "--consistency", "--ckpt", str(teacher / "teacher"), "--steps", "1", "--from-steps", "8"]
    assert main([*args, "--minutes", "0.02", "--out", str(teacher / "cli"), "--quiet"]) == 0
    assert "samples it in 1 step" in capsys.readouterr().out
    assert (
        main(["sample", "--ckpt", str(teacher / "cli" / "consistency"), "--n", "4", "--out", str(teacher / "s.png")])
        == 0
    )
    assert (teacher / "s.png").stat().st_size > 100


@pytest.mark.parametrize(
    "options, says",
    [
        ({"consistency_steps": 1}, "--consistency-steps must be an integer >= 2"),  # gap T: no trajectory
        ({"consistency_steps": 8, "prediction": "eps"}, "ill-posed"),  # x0 from eps divides by sqrt(a) ~ 0
        ({"consistency_steps": 8, "teacher": None, "student_steps": None}, "needs --teacher"),
    ],
)
def test_a_consistency_run_that_cannot_work_is_refused_in_one_line(options, says):
    config = TrainConfig(**{"teacher": "a-teacher", "student_steps": 1, **options})
    with pytest.raises(TinydiffError, match=says) as error:
        validate(config)
    assert "\n" not in str(error.value)
