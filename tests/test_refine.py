"""Refining (SDEdit): a one-step student's digits finished by its teacher, what the noise level keeps
of the images, and what refining asks of its models."""

import re
from pathlib import Path

import pytest
import torch

import tinydiff
from tinydiff.cli import main
from tinydiff.errors import TinydiffError
from tinydiff.metrics.classifier import class_probabilities, load_classifier


@pytest.fixture(scope="module")
def models():
    return tinydiff.load("pretrained:mnist-adversarial"), tinydiff.load("pretrained:mnist")


def test_the_teacher_finishes_a_one_step_students_digits_in_the_evaluations_it_adds(models):
    student, teacher = models
    torch.set_num_threads(2)
    n = 20
    labels = torch.arange(n) % 10
    one = tinydiff.sample(student, n, seed=1, labels=labels)
    with student.count_evaluations(teacher) as count:
        refined = tinydiff.sample(student, n, seed=1, labels=labels, refine=teacher)
    assert count["images"] / n == 1 + 3
    probabilities = class_probabilities(load_classifier("mnist"), ((refined + 1) * 127.5).round().to(torch.uint8))
    assert (probabilities.argmax(1) == labels).float().mean() >= 0.7  # the shipped models' bar
    # noised to t = 600 the digits keep their shapes: each refined digit is nearer the student's digit it
    # started from than the student's other digit of its class (labels i and i + 10)
    distance = (refined[:, None] - one[None]).abs().mean((2, 3, 4))  # [refined, started from]
    other = (torch.arange(n) + 10) % n
    assert (distance.diagonal() < distance[torch.arange(n), other]).all()
    assert (refined - one).abs().mean() > 0.005  # and it did redraw them


def test_the_refiners_steps_run_evenly_in_log_snr_down_to_sigma_0_08(models):
    """DPM-Solver's spacing (Sec. 3.3) between t and the karras spacing's lowest noise level."""
    _, teacher = models
    for start, steps in [(500, 3), (300, 4)]:
        tau = tinydiff.api.refine_trajectory(teacher, start, steps)
        assert tau[0] == start and len(tau) == steps
        assert float(teacher.schedule.sigma(tau[-1])) == pytest.approx(0.08, rel=0.1)
        gaps = (teacher.schedule.snr(torch.tensor(tau)).log() / 2).diff()
        assert torch.allclose(gaps, gaps.mean().expand_as(gaps), rtol=0.05)
    assert tinydiff.api.refine_trajectory(teacher, 50, 1) == [50]


def test_the_noise_level_decides_how_much_of_the_images_survives(models):
    """From t = 999 (sqrt(alpha_bar) = 0.006) two different inputs with the same noise end nearly
    alike; from t = 20 the refiner returns its input nearly unchanged."""
    _, teacher = models
    torch.set_num_threads(2)
    labels = torch.arange(8) % 10
    digits = tinydiff.sample(teacher, 8, sampler="dpm++2m", steps=10, seed=2, labels=labels)
    blank = -torch.ones_like(digits)

    def refine(images, start, steps):
        generator = torch.Generator().manual_seed(3)
        return tinydiff.api.refine_images(teacher, images, start, steps, labels, generator)

    far = (refine(digits, 999, 10) - refine(blank, 999, 10)).abs().mean()
    near = (refine(digits, 200, 3) - refine(blank, 200, 3)).abs().mean()
    assert far < 0.1 * near
    assert (refine(digits, 20, 1) - digits).abs().mean() < 0.05 < (blank - digits).abs().mean()


@pytest.mark.parametrize(
    "refiner, options, message",
    [
        ("pretrained:emoji", {}, "the refiner model's image shape ((3, 32, 32)) differs"),
        ("pretrained:mnist-text", {}, "the refiner model's classes"),
        ("pretrained:mnist", {"refine_from": 1000}, "refine from a timestep in [0, 999]"),
        ("pretrained:mnist", {"refine_from": 2, "refine_steps": 4}, "refine from a timestep"),
    ],
)
def test_a_refiner_of_other_images_or_a_trajectory_that_is_not_one_is_refused_before_any_work(
    models, refiner, options, message
):
    student, _ = models
    with student.count_evaluations() as count, pytest.raises(TinydiffError, match=re.escape(message)):
        tinydiff.sample(student, 2, labels=[0, 1], refine=refiner, **options)
    assert count["images"] == 0


def test_sample_refine_writes_a_grid_named_by_its_refiner(capsys):
    main(["sample", "--ckpt", "pretrained:mnist-adversarial", "--refine", "pretrained:mnist", "--n", "10", "--quiet"])
    grid = capsys.readouterr().out.split("grid: ")[1].strip()
    assert "refined-pretrained-mnist-t600x3" in grid and Path(grid).exists()
