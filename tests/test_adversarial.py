"""The adversarial term of consistency distillation (training/adversarial.py): its discriminator, on the
frozen features of the shipped MNIST classifier, learns to tell digits from blurred digits; the student's
loss pushes its images the way the discriminator scores real; a distillation with it resumes bit for
bit and samples; runs that cannot work are refused in one line."""

import dataclasses
import json

import pytest
import torch
import torch.nn.functional as F
from helpers import digit_like_images

import tinydiff
from tinydiff.checkpoint import list_checkpoints, load_trainer_state
from tinydiff.cli import main
from tinydiff.config import validate
from tinydiff.errors import TinydiffError
from tinydiff.metrics import classifier
from tinydiff.schedule import NoiseSchedule
from tinydiff.training import TrainConfig, Trainer
from tinydiff.training.adversarial import AdversarialTerm


def _term(features, classes=10, weight=1.0) -> AdversarialTerm:
    return AdversarialTerm(features, classes, weight, NoiseSchedule.create("linear", 1000), torch.device("cpu"))


def test_the_discriminator_tells_digits_from_blurred_ones_and_the_student_loss_moves_toward_real():
    torch.manual_seed(0)
    real = torch.from_numpy(digit_like_images(32, size=28, seed=3)).float() / 127.5 - 1
    blurred = F.avg_pool2d(real, 5, stride=1, padding=2, count_include_pad=False)
    labels = torch.arange(32) % 10
    term = _term(classifier.load_classifier("mnist"))
    frozen = {k: v.clone() for k, v in term.discriminator.features.state_dict().items()}
    losses = []
    for _ in range(20):
        term.optimizer.zero_grad()
        loss = term.discriminator_loss(real, blurred, labels)
        loss.backward()
        term.optimizer.step()
        losses.append(loss.item())
    assert losses[0] > 1.5 and sum(losses[-5:]) / 5 < 0.5, losses[::4]
    # the classifier is frozen: its weights and batch statistics are as shipped
    assert all(torch.equal(v, frozen[k]) for k, v in term.discriminator.features.state_dict().items())
    # W * L_G: its gradient reaches the images, not the discriminator, and descending it raises D's score
    fake = blurred.clone().requires_grad_(True)
    term.generator_loss(fake, labels).backward()
    assert all(p.grad is None or not p.grad.any() for p in term.discriminator.parameters())
    with torch.no_grad():
        before = term.discriminator(blurred, labels).mean()
        after = term.discriminator(blurred - 0.5 * fake.grad / fake.grad.abs().max(), labels).mean()
    assert after > before + 0.1, (before, after)
    assert set(term.log()) == {"d_loss", "g_loss"} and term.log() == {"d_loss": 0.0, "g_loss": 0.0}


@pytest.fixture
def small_classifier(monkeypatch):
    """The 8x8, 4-class digits of the test teacher have no shipped classifier: a random one of their shape."""

    def load(dataset):
        with torch.random.fork_rng():
            torch.manual_seed(5)
            return classifier.SmallClassifier(4, 1, 8).eval()

    monkeypatch.setattr(classifier, "load_classifier", load)


def test_an_adversarial_distillation_resumes_bit_for_bit_and_samples(teacher, small_classifier, tmp_path, capsys):
    student = tinydiff.distill(
        teacher / "teacher", 1, tmp_path / "a", from_steps=8, consistency=True, adversarial=1.0, minutes=None,
        train_steps=10, progress=False, lr=1e-3,
    )  # fmt: skip
    assert student.parent == tmp_path / "a" / "adversarial" and student.name == "ckpt-0000004"
    assert list_checkpoints(tmp_path / "a" / "consistency")[-1].name == "ckpt-0000006"
    records = [json.loads(line) for line in (student.parent / "log.jsonl").read_text().splitlines()]
    assert all(r["d_loss"] > 0 and "g_loss" in r for r in records)
    config = json.loads((student / "config.json").read_text())["train"]
    assert config["adversarial"] == 1.0 and config["init"] == str(tmp_path / "a" / "consistency")
    assert config["lr_schedule"] == "constant"
    # the adversarial run cut after 2 of its 4 steps and resumed: the same student and discriminator
    cut = TrainConfig(**{**config, "out": str(tmp_path / "b"), "steps": 2})
    Trainer(cut).run(progress=False)
    Trainer(dataclasses.replace(cut, steps=4), resume=True).run(progress=False)
    resumed = list_checkpoints(tmp_path / "b")[-1]
    for ema in (False, True):
        a = tinydiff.load(student, ema=ema, device="cpu").net.state_dict()
        b = tinydiff.load(resumed, ema=ema, device="cpu").net.state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a)
    heads_a = load_trainer_state(student)["adversarial"]["discriminator"]
    heads_b = load_trainer_state(resumed)["adversarial"]["discriminator"]
    assert heads_a.keys() == heads_b.keys() and all(torch.equal(heads_a[k], heads_b[k]) for k in heads_a)
    assert not any(k.startswith("features.") for k in heads_a)  # the frozen classifier is not saved
    # sampled as any consistency student, with no options
    assert main(["sample", "--ckpt", str(student.parent), "--n", "4", "--out", str(tmp_path / "s.png"), "--quiet"]) == 0
    assert (tmp_path / "s.png").stat().st_size > 100
    # the command line: --adversarial needs --consistency
    args = ["distill", "--ckpt", str(teacher / "teacher"), "--steps", "1", "--adversarial", "1"]
    assert main([*args, "--out", str(tmp_path / "c"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "--adversarial trains a consistency student" in err and err.count("\n") == 1


@pytest.mark.parametrize(
    "options, says",
    [
        ({"adversarial": 1.0}, "--adversarial needs --consistency-steps"),
        ({"adversarial": 1.0, "consistency_steps": 8, "text": "words"}, "not with --text"),
        ({"adversarial": -1.0, "consistency_steps": 8}, "--adversarial must be a finite number >= 0"),
    ],
)
def test_an_adversarial_run_that_cannot_work_is_refused_in_one_line(options, says):
    config = TrainConfig(**{"teacher": "a-teacher", "student_steps": 1, **options})
    with pytest.raises(TinydiffError, match=says) as error:
        validate(config)
    assert "\n" not in str(error.value)


def test_an_adversarial_run_needs_a_classifier_of_its_data(teacher, tmp_path, monkeypatch):
    options = dict(
        data=str(teacher / "digits.npz"), teacher=str(teacher / "teacher"), student_steps=1, consistency_steps=8,
        adversarial=1.0, conditional=True, channels=16, clip_aware_loss=False, prediction="v",
    )  # fmt: skip
    with pytest.raises(TinydiffError, match="needs the data's classifier: no classifier for"):
        Trainer(TrainConfig(**options, out=str(tmp_path / "a")))
    monkeypatch.setattr(classifier, "load_classifier", lambda dataset: classifier.SmallClassifier())
    with pytest.raises(TinydiffError, match="takes 10 classes of 1x28x28 images, the data are 4 of 1x8x8"):
        Trainer(TrainConfig(**options, out=str(tmp_path / "b")))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()  # refused before anything is written
