"""What users run, on what they run it on: every sampler on every model tinydiff ships.

The project's own 28x28 classifiers (metrics/classifier.py) must recognise the class asked for in
most samples of every sampler at 10, 20 and 50 network evaluations (a text-conditioned model
is asked by the class names, "zero", "one", ...). Noise scores 10 %; the shipped
models score 80-100 % with every sampler here (20 images, two of each class).
"""

from pathlib import Path

import numpy as np
import pytest
import torch

import tinydiff
from tinydiff.metrics.classifier import class_probabilities, load_classifier
from tinydiff.model import PRETRAINED
from tinydiff.samplers import SAMPLERS

REFERENCE = Path(__file__).parent / "data" / "pretrained_mnist_samples.npz"


@pytest.fixture(scope="module", params=sorted(PRETRAINED))
def shipped(request):
    model = tinydiff.load(f"pretrained:{request.param}")
    dataset = model.config["data"]["spec"]
    return model, load_classifier("fashion-mnist" if dataset == "fashion-mnist" else "mnist")


@pytest.mark.parametrize("sampler", list(SAMPLERS))
def test_every_sampler_gives_recognisable_images_on_every_shipped_model(shipped, sampler):
    model, classifier = shipped
    torch.set_num_threads(2)  # the suite's one thread would make this its slowest test
    labels = torch.arange(20) % 10
    for evaluations in (10, 20, 50):
        steps = SAMPLERS[sampler].steps_for(evaluations)
        with model.count_evaluations() as count:
            images = tinydiff.sample(model, 20, sampler=sampler, steps=steps, seed=1, **model.every_class(20))
        assert count["images"] / 20 == evaluations - (sampler == "heun")  # heun: 2 S - 1 is odd
        probabilities = class_probabilities(classifier, ((images + 1) * 127.5).round().to(torch.uint8))
        recognised = (probabilities.argmax(1) == labels).float().mean().item()
        assert recognised >= 0.7, f"{sampler} at {evaluations} evaluations: {recognised:.0%} recognised"


def test_the_shipped_model_samples_as_it_did_before_samplers_took_explicit_trajectories():
    """Recorded with samplers that built their own trajectory from (steps, spacing): the same seed and
    options give bit-identical images."""
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
        assert np.array_equal(images.numpy(), reference[name]), name
