"""Progressive distillation: the target's closed form, the trajectories, a student that really
matches its teacher's two steps with one, and the command that runs the rounds."""

import functools
import json

import pytest
import torch
from helpers import digit_like_images

import tinydiff
from tinydiff.cli import main
from tinydiff.errors import TinydiffError
from tinydiff.samplers import timesteps
from tinydiff.schedule import NoiseSchedule, broadcast
from tinydiff.training import TrainConfig, Trainer
from tinydiff.training.distill import Distillation, TeacherStep


def test_one_student_step_to_the_target_lands_where_two_teacher_steps_do(teacher):
    """Alg. 2's x~ is the x0 whose single DDIM step from z_t reaches the teacher's z''."""
    model = tinydiff.load(teacher / "teacher", device="cpu")
    distillation = Distillation(TeacherStep(str(teacher / "teacher"), 1.0, model.schedule, "cpu"), 4, model.schedule)
    x0 = torch.from_numpy(digit_like_images(8)).float() / 127.5 - 1
    noise, labels = torch.randn_like(x0), torch.arange(8) % 5  # 4: the null class
    for t in torch.tensor([0, 300, 999]):
        t_batch = t.expand(8)
        k = t * 4 // 1000
        t0, t1, t2 = (int(distillation.grid[2 * k + j]) for j in range(3))
        a0, a2 = (float(model.schedule.alpha_bar_at(s)) for s in (t0, t2))
        z = a0**0.5 * x0 + (1 - a0) ** 0.5 * noise
        z2 = distillation.teacher(
            distillation.teacher(z, torch.full((8,), t0), torch.full((8,), t1), labels),
            torch.full((8,), t1), torch.full((8,), t2), labels,
        )  # fmt: skip

        # the loss of a "student" that outputs x~ exactly is zero; x~ then steps from z to z''
        def perfect(x, s, y, z2=z2, t2=t2):
            return _x0_as_v(model, x, s, z2, t2)

        assert distillation(perfect, x0, t_batch, noise, labels, "v").abs().max() < 1e-8
        assert t2 != -1 or torch.allclose(z2, z2.clamp(-1, 1))  # the last step ends on clipped data


def _x0_as_v(model, z, s, z2, t2, change=lambda x: x):
    """The v prediction whose x0 takes one DDIM step from z (at s) to z2 (at t2): x~ from Alg. 2
    (``change``d, e.g. pushed past a bound)."""
    a0 = broadcast(model.schedule.alpha_bar_at(s), z)
    a2 = broadcast(model.schedule.alpha_bar_at(torch.full_like(s, t2)), z)
    ratio = ((1 - a2) / (1 - a0)).sqrt()
    x_tilde = change((z2 - ratio * z) / (a2.sqrt() - ratio * a0.sqrt()))
    eps = (z - a0.sqrt() * x_tilde) / (1 - a0).sqrt()
    return a0.sqrt() * eps - (1 - a0).sqrt() * x_tilde  # v = sqrt(a) eps - sqrt(1 - a) x0


def test_at_the_last_step_a_student_may_overshoot_a_bound_the_clip_restores(teacher):
    """The student's output is clipped: past -1 where the target is -1 costs nothing, short of it does."""
    model = tinydiff.load(teacher / "teacher", device="cpu")
    distillation = Distillation(TeacherStep(str(teacher / "teacher"), 0.0, model.schedule, "cpu"), 4, model.schedule)
    x0 = torch.from_numpy(digit_like_images(8)).float() / 127.5 - 1
    noise, t = torch.randn_like(x0), torch.full((8,), 999)  # the last of 4 student steps ends at clean data
    t0, t2 = int(distillation.grid[6]), int(distillation.grid[8])
    a0 = float(model.schedule.alpha_bar_at(t0))
    z = a0**0.5 * x0 + (1 - a0) ** 0.5 * noise
    z2 = distillation.teacher(
        distillation.teacher(z, torch.full((8,), t0), torch.full((8,), int(distillation.grid[7])), None),
        torch.full((8,), int(distillation.grid[7])), torch.full((8,), t2), None,
    )  # fmt: skip
    on_bound = z2.abs() >= 1
    assert on_bound.float().mean() > 0.2  # the teacher's output: its background clipped onto -1

    def student(change):
        return lambda x, s, y=None: _x0_as_v(model, x, s, z2, t2, change)

    past = distillation(student(lambda x: x + 0.5 * torch.sign(x) * (x.abs() >= 1)), x0, t, noise, None, "v")
    short = distillation(student(lambda x: x - 0.1 * torch.sign(x) * (x.abs() >= 1)), x0, t, noise, None, "v")
    assert past.abs().max() < 1e-8 and (short > 1e-4).all()


def test_the_student_trajectory_is_every_other_teacher_step():
    schedule = NoiseSchedule.create("cosine", 1000)
    for n in (1, 2, 4, 32):
        assert timesteps("ddim", schedule, 2 * n, "trailing")[::2] == timesteps("ddim", schedule, n, "trailing")
    with pytest.raises(TinydiffError, match="power of two"):  # the rare N whose rounding breaks the nesting
        Distillation(TeacherStep("pretrained:mnist", 0.0, schedule, "cpu"), 112, schedule)


def test_a_distilled_student_matches_two_teacher_steps_with_one(teacher, capsys):
    """After a short round, on fresh data, the student's one step lands much nearer the teacher's two
    than the teacher's own single step does (the loss it was trained on, measured on new draws); it
    records its sampler, so sampling it needs no options."""
    distil = functools.partial(tinydiff.distill, teacher / "teacher", 2, teacher / "student", from_steps=4)
    student = distil(minutes=None, train_steps=120, progress=False, lr=1e-3)
    model, before = tinydiff.load(student.parent, device="cpu"), tinydiff.load(teacher / "teacher", device="cpu")
    distillation = Distillation(TeacherStep(str(teacher / "teacher"), 0.0, model.schedule, "cpu"), 2, model.schedule)
    generator = torch.Generator().manual_seed(7)  # draws the training never saw
    x0 = torch.from_numpy(digit_like_images(256, seed=9)).float() / 127.5 - 1
    t = torch.randint(0, 1000, (256,), generator=generator)
    noise, labels = torch.randn(x0.shape, generator=generator), torch.arange(256) % 4
    with torch.no_grad():
        learned = distillation(model.net, x0, t, noise, labels, model.prediction).mean()
        untrained = distillation(before.net, x0, t, noise, labels, model.prediction).mean()
    # (measured 0.62x: the teacher already gets the background, on the clipped bound, for free)
    assert learned < 0.75 * untrained, (learned, untrained)
    with model.count_evaluations() as count:
        tinydiff.sample(model, 8, labels=labels[:8])  # the recorded recipe: ddim, 2 trailing steps
    assert count["images"] == 2 * 8
    # a rerun finds the round done; the command line refuses what cannot halve
    again = distil(minutes=None, train_steps=120, progress=False, lr=1e-3)
    assert again == student
    assert main(["sample", "--ckpt", str(student.parent), "--n", "4", "--out", str(teacher / "s.png")]) == 0
    assert main(["distill", "--ckpt", str(teacher / "teacher"), "--steps", "3", "--out", str(teacher / "x")]) == 2
    assert "powers of two" in capsys.readouterr().err


def test_an_autoguided_teacher_steps_with_its_guide_only_inside_the_interval(teacher):
    """With a guide (autoguidance, Karras et al. 2024) the teacher's step is the DDIM step of the clipped
    (1 + w) D - w D_guide where sigma_t lies in the interval and its own step elsewhere; guided by
    itself, it is its own step everywhere. ``distill`` records the guide, and refuses one without w."""
    from tinydiff.training import TrainConfig, Trainer

    guide_run = teacher / "guide"  # the teacher's recipe stopped early: a weaker model of the same data
    config = TrainConfig(
        data=str(teacher / "digits.npz"), out=str(guide_run), steps=10, batch_size=32, sample_grid=0,
        conditional=True, channels=16, ckpt_every=10, seed=2,
    )  # fmt: skip
    Trainer(config).run(progress=False)
    model, guide = tinydiff.load(teacher / "teacher", device="cpu"), tinydiff.load(guide_run, device="cpu")
    plain = TeacherStep(str(teacher / "teacher"), 0.0, model.schedule, "cpu")
    itself = TeacherStep(str(teacher / "teacher"), 1.0, model.schedule, "cpu", str(teacher / "teacher"))
    guided = TeacherStep(str(teacher / "teacher"), 1.0, model.schedule, "cpu", str(guide_run), "0,0.6")
    x0 = torch.from_numpy(digit_like_images(8)).float() / 127.5 - 1
    noise, labels = torch.randn_like(x0), torch.arange(8) % 4
    sigma = model.schedule.snr(torch.arange(1000)).rsqrt()
    for t, inside in ((int((sigma <= 0.3).sum()) - 1, True), (int((sigma <= 2).sum()), False)):
        assert bool(sigma[t] <= 0.6) == inside
        t_now, t_prev = torch.full((8,), t), torch.full((8,), t - 50)
        a, a_prev = (float(model.schedule.alpha_bar_at(s)) for s in (t, t - 50))
        z = a**0.5 * x0 + (1 - a) ** 0.5 * noise
        assert torch.allclose(itself(z, t_now, t_prev, labels), plain(z, t_now, t_prev, labels), atol=1e-6)
        with torch.no_grad():
            d, d_guide = (m.denoiser(labels)(z, t_now)[1] for m in (model, guide))
        x0_hat = (2 * d - d_guide if inside else d).clamp(-1, 1)
        eps = (z - a**0.5 * x0_hat) / (1 - a) ** 0.5
        step = a_prev**0.5 * x0_hat + (1 - a_prev) ** 0.5 * eps  # DDIM eq. 12, eta = 0
        assert torch.allclose(guided(z, t_now, t_prev, labels), step, atol=1e-5)
        assert inside != torch.allclose(step, plain(z, t_now, t_prev, labels), atol=1e-3)
    student = tinydiff.distill(
        teacher / "teacher", 1, teacher / "autoguided", from_steps=4, consistency=True, minutes=None, train_steps=2,
        guidance=1.0, guide=guide_run, guidance_interval=(0, 0.6), progress=False,
    )  # fmt: skip
    recorded = tinydiff.load(student, device="cpu").config["train"]
    assert (recorded["teacher_guide"], recorded["teacher_guidance_interval"]) == (str(guide_run), "0,0.6")
    with pytest.raises(TinydiffError, match="--guidance w > 0"):
        tinydiff.distill(teacher / "teacher", 1, teacher / "x", consistency=True, guide=guide_run, progress=False)


def test_a_student_run_inherits_neither_its_teacher_s_guide_nor_its_optimizer(teacher, tmp_path):
    """A teacher trained with --guide-at kept a weaker copy of itself; its students' runs keep none. It
    trained with Muon (the default); its students train with AdamW, as their recipe was measured."""
    options = dict(data=str(teacher / "digits.npz"), steps=8, batch_size=16, sample_grid=0, conditional=True)
    Trainer(TrainConfig(**options, channels=16, ckpt_every=8, guide_at=0.5, out=str(tmp_path / "t"))).run(
        progress=False
    )
    assert (tmp_path / "t" / "guide").is_dir()
    student = tinydiff.distill(
        tmp_path / "t", 1, tmp_path / "s", from_steps=2, minutes=None, train_steps=4, progress=False
    )
    assert tinydiff.load(tmp_path / "t", device="cpu").config["train"]["optimizer"] == "muon"
    recorded = json.loads((student / "config.json").read_text())["train"]
    assert recorded["guide_at"] is None and recorded["optimizer"] == "adamw"
    assert not (student.parent / "guide").exists()
