"""Self-conditioning (objectives.py, denoiser.py; Chen et al. 2022): the network's own x0 estimate as an input."""

import json

import numpy as np
import pytest
import torch
from helpers import digit_like_images, random_unet

from tinydiff import load, sample
from tinydiff.cli import main
from tinydiff.denoiser import PREDICTIONS, to_eps_x0
from tinydiff.errors import TinydiffError
from tinydiff.model import DiffusionModel
from tinydiff.objectives import diffusion_loss
from tinydiff.schedule import NoiseSchedule
from tinydiff.training import TrainConfig, Trainer, trainer


def test_the_unet_reads_x_self_as_more_input_channels():
    net = random_unet(self_condition=True)
    assert net.stem.in_channels == 2
    x, t = torch.randn(3, 1, 12, 12), torch.tensor([5, 500, 900])
    with torch.no_grad():
        torch.testing.assert_close(net(x, t), net(x, t, x_self=torch.zeros_like(x)), rtol=0, atol=0)
        assert (net(x, t, x_self=torch.rand_like(x)) - net(x, t)).abs().max() > 1e-3
    with pytest.raises(ValueError, match="self_condition=True"):
        random_unet()(x, t, x_self=x)


class Recording:
    """A self-conditioned toy network net(x_t, t, x_self) that records what it was fed."""

    def __init__(self):
        self.weight = torch.tensor(0.3, requires_grad=True)
        self.calls = []

    def __call__(self, x_t, t, y=None, x_self=None):
        self.calls.append((torch.is_grad_enabled(), None if x_self is None else x_self.clone()))
        x_self = torch.zeros_like(x_t) if x_self is None else x_self
        return self.weight * x_t + 2.0 * x_self  # an x0 estimate beyond [-1, 1] where x_t is large


@pytest.mark.parametrize("kind", PREDICTIONS)
def test_the_loss_feeds_a_gradient_free_first_estimate_to_the_second_pass(kind):
    s = NoiseSchedule.create("cosine")
    gen = torch.Generator().manual_seed(0)
    x0 = torch.rand(6, 1, 4, 4, generator=gen) * 2 - 1
    noise = torch.randn(x0.shape, generator=gen)
    t = torch.tensor([0, 100, 300, 500, 700, 999])
    net = Recording()
    loss = diffusion_loss(net, s, x0, t, noise, kind, "min-snr", self_condition=True)
    (first_grad, first_in), (second_grad, second_in) = net.calls
    assert not first_grad and torch.equal(first_in, torch.zeros_like(x0))  # zeros, no graph
    assert second_grad
    x_t = s.q_sample(x0, t, noise)
    estimate = to_eps_x0(kind, net.weight.detach() * x_t, x_t, s.alpha_bar_at(t))[1].clamp(-1, 1)
    torch.testing.assert_close(second_in, estimate)
    # the loss is the plain loss of the network fed that estimate, and its gradient flows through the second pass only
    fed = lambda x, t_: net.weight * x + 2.0 * estimate  # noqa: E731
    torch.testing.assert_close(loss, diffusion_loss(fed, s, x0, t, noise, kind, "min-snr"))
    (grad,) = torch.autograd.grad(loss.sum(), net.weight)
    (expected,) = torch.autograd.grad(diffusion_loss(fed, s, x0, t, noise, kind, "min-snr").sum(), net.weight)
    torch.testing.assert_close(grad, expected)


@pytest.mark.parametrize("guidance", [0.0, 2.0])
def test_each_sampler_step_feeds_the_x0_of_the_step_before(guidance):
    net = random_unet(self_condition=True, num_classes=10)
    fed = []
    net.register_forward_pre_hook(lambda module, args, kwargs: fed.append(kwargs["x_self"].clone()), with_kwargs=True)
    config = {"net": {"image_shape": [1, 12, 12], "num_classes": 10, "self_condition": True}}
    model = DiffusionModel(net, NoiseSchedule.create("cosine"), "v", {**config, "train": {"clip_aware_loss": False}})
    predicted = []
    sample(model, 3, sampler="dpm++2m", steps=5, labels=[1, 2, 3], guidance=guidance, eta=1.0, batch_size=3,
           callback=lambda i, t, x_t, x0: predicted.append(x0.clone()))  # fmt: skip
    assert len(fed) == 5
    copies = 2 if guidance else 1  # the guided call's conditional and unconditional halves
    assert torch.equal(fed[0], torch.zeros(3 * copies, 1, 12, 12))  # nothing to feed at the first step
    for i in range(1, 5):  # what the sampler used at step i - 1: clipped, guided when guided
        torch.testing.assert_close(fed[i], predicted[i - 1].repeat(copies, 1, 1, 1), rtol=0, atol=0)
    # a new trajectory (the next batch, the next call) starts from zeros again
    fed.clear()
    sample(model, 4, sampler="ddim", steps=2, labels=[1, 2, 3, 4], batch_size=2)
    assert [bool(f.any()) for f in fed] == [False, True, False, True]


def test_training_with_self_condition_records_it_resumes_and_loads(tmp_path, monkeypatch):
    npz = tmp_path / "digits.npz"
    np.savez(npz, x=digit_like_images(48), y=np.arange(48) % 10)
    seen = []
    real = trainer.diffusion_loss
    monkeypatch.setattr(trainer, "diffusion_loss", lambda *a, **kw: seen.append(kw["self_condition"]) or real(*a, **kw))
    base = dict(data=str(npz), batch_size=8, ckpt_every=10, sample_grid=0, lr_schedule="constant", conditional=True)
    Trainer(TrainConfig(out=str(tmp_path / "plain"), steps=4, **base)).run(progress=False)
    assert seen == [False] * 4  # no self-conditioning, and no coin drawn for it (the runs before it are unchanged)
    seen.clear()
    main(["train", "--data", str(npz), "--out", str(tmp_path / "a"), "--steps", "40", "--batch-size", "8",
          "--conditional", "--self-condition", "--sample-grid", "0", "--quiet"])  # fmt: skip
    assert 10 <= sum(seen) <= 30 and len(seen) == 40  # about half of the batches
    model = load(tmp_path / "a")
    assert model.config["net"]["self_condition"] and model.net.stem.in_channels == 2
    assert sample(model, 2, steps=3, labels=[4, 5]).shape == (2, *model.image_shape)
    # resume: steps 0-2 then 3-5 give the weights of steps 0-5 in one go
    Trainer(TrainConfig(out=str(tmp_path / "full"), steps=6, self_condition=True, **base)).run(progress=False)
    Trainer(TrainConfig(out=str(tmp_path / "part"), steps=3, self_condition=True, **base)).run(progress=False)
    resumed = Trainer(TrainConfig(out=str(tmp_path / "part"), steps=6, self_condition=True, **base), resume=True)
    resumed.run(progress=False)
    a, b = (load(tmp_path / run, ema=False).net.state_dict() for run in ("full", "part"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    # a checkpoint written before the option existed was trained without it
    config = tmp_path / "plain" / "ckpt-0000004" / "config.json"
    saved = json.loads(config.read_text())
    del saved["train"]["self_condition"]
    config.write_text(json.dumps(saved))
    assert not load(tmp_path / "plain").config["net"].get("self_condition")
    with pytest.raises(TinydiffError, match="self_condition=False"):
        Trainer(TrainConfig(out=str(tmp_path / "plain"), steps=6, self_condition=True, **base), resume=True)
