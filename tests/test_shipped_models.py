"""What users run, on what they run it on: every sampler on every model tinydiff ships.

The project's own classifiers (metrics/classifier.py) must recognise the class asked for in most
samples of every sampler at 10, 20 and 50 network evaluations (the 64x64 model at 10 and 20, for
time; a text-conditioned model is asked by the class names, "zero", "one", ...). The bar is set by
what each classifier reads in real images (class-balanced, held-out): 98.8 % for MNIST's and 90.0 %
for Fashion-MNIST's, where the shipped models score 95-100 % (MNIST, two images per class) and 80-98 %
(Fashion-MNIST, four per class, so that no single image decides the bar) with every sampler (noise:
10 %), but 54 % for the emoji's (6 % of Activities, 99 % of People & Body), where the shipped model at
32x32 scores 39-56 % (four images per category; noise: 11 %). A distilled student is trained for one
trajectory only, the one its checkpoint records: it is sampled with that, and held to its data's bar.
"""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import tinydiff
from tinydiff.metrics.classifier import class_probabilities, classifier_name, load_classifier
from tinydiff.model import PRETRAINED
from tinydiff.samplers import SAMPLERS

REFERENCE = Path(__file__).parent / "data" / "pretrained_mnist_samples.npz"
BAR = {"mnist": 0.7, "fashion-mnist": 0.7, "emoji": 0.3}  # least share recognised, by classifier
PER_CLASS = {"mnist": 2, "fashion-mnist": 4, "emoji": 4}


def recorded_sampling(name: str) -> dict | None:
    """The sampler a shipped model records (a distilled student's), None for an ordinary model."""
    return json.loads((PRETRAINED[name] / "config.json").read_text()).get("sampling")


STUDENTS = [name for name in sorted(PRETRAINED) if recorded_sampling(name)]


@pytest.fixture(scope="module", params=[name for name in sorted(PRETRAINED) if name not in STUDENTS])
def shipped(request):
    model = tinydiff.load(f"pretrained:{request.param}")
    return model, classifier_name(model.config["data"]["spec"])


@pytest.mark.parametrize("sampler", list(SAMPLERS))
def test_every_sampler_gives_recognisable_images_on_every_shipped_model(shipped, sampler):
    model, name = shipped
    classifier = load_classifier(name)
    torch.set_num_threads(2)  # the suite's one thread would make this its slowest test
    classes = classifier.head.out_features
    n = PER_CLASS[name] * classes
    labels = torch.arange(n) % classes
    for evaluations in (10, 20, 50) if model.image_shape[-1] <= 32 else (10, 20):
        steps = SAMPLERS[sampler].steps_for(evaluations)
        with model.count_evaluations() as count:
            images = tinydiff.sample(model, n, sampler=sampler, steps=steps, seed=1, **model.every_class(n))
        assert count["images"] / n == evaluations - (sampler == "heun")  # heun: 2 S - 1 is odd
        probabilities = class_probabilities(classifier, ((images + 1) * 127.5).round().to(torch.uint8))
        recognised = (probabilities.argmax(1) == labels).sum().item() / n  # exact: 14 / 20 is 70 %
        assert recognised >= BAR[name], f"{sampler} at {evaluations} evaluations: {recognised:.0%} recognised"


@pytest.mark.parametrize("name", STUDENTS)
def test_every_distilled_student_gives_recognisable_images_in_the_steps_it_records(name):
    """A student was trained for one trajectory (its recorded sampler and steps) and is sampled with
    no options: one network evaluation per recorded step, and the class asked for."""
    model = tinydiff.load(f"pretrained:{name}")
    data = classifier_name(model.config["data"]["spec"])
    classifier = load_classifier(data)
    torch.set_num_threads(2)
    n = 4 * model.num_classes
    with model.count_evaluations() as count:
        images = tinydiff.sample(model, n, seed=1, **model.every_class(n))
    assert count["images"] / n == recorded_sampling(name)["steps"]
    probabilities = class_probabilities(classifier, ((images + 1) * 127.5).round().to(torch.uint8))
    recognised = (probabilities.argmax(1) == torch.arange(n) % model.num_classes).sum().item() / n
    assert recognised >= BAR[data], f"{recognised:.0%} recognised"


def test_the_shipped_model_samples_as_it_did_before_samplers_took_explicit_trajectories():
    """Recorded with samplers that built their own trajectory from (steps, spacing): the same seed and
    options give the same images, to float rounding (CPUs differ in the last bits: 1e-5 between an
    Intel Xeon and an AMD EPYC; a timestep off by one moves pixels by far more)."""
    reference = np.load(REFERENCE)
    cases = {
        "ddim": {"sampler": "ddim"},
        "ddim_eta1": {"sampler": "ddim", "eta": 1.0},
        "ddpm": {"sampler": "ddpm"},
        "dpmpp2m": {"sampler": "dpm++2m"},
        "ddim_guided": {"sampler": "ddim", "guidance": 2.0},
    }
    for name, options in cases.items():
        images = tinydiff.sample("pretrained:mnist", 2, steps=10, seed=0, labels=[3, 7], **options)
        np.testing.assert_allclose(images.numpy(), reference[name], rtol=0, atol=1e-4, err_msg=name)
