"""Class-conditional training and classifier-free guidance (denoiser.py)."""

import numpy as np
import pytest
import torch
from helpers import digit_like_images, random_unet

from tinydiff import load, sample
from tinydiff.cli import main
from tinydiff.denoiser import as_denoiser, check_labels, guided_denoiser, to_eps_x0
from tinydiff.errors import TinydiffError
from tinydiff.objectives import drop_labels
from tinydiff.schedule import NoiseSchedule
from tinydiff.training import TrainConfig, Trainer


@pytest.fixture(scope="module")
def net():
    unet = random_unet(num_classes=10)
    torch.nn.init.normal_(unet.label.weight, std=2.0)  # classes that make a visible difference
    return unet


@pytest.fixture
def labelled_npz(tmp_path):
    path = tmp_path / "digits.npz"
    np.savez(path, x=digit_like_images(40), y=np.arange(40) % 10)
    return str(path)


@pytest.fixture
def conditional_run(labelled_npz, tmp_path):
    config = TrainConfig(
        data=labelled_npz, out=str(tmp_path / "run"), steps=4, batch_size=8, sample_grid=0, conditional=True
    )
    Trainer(config).run(progress=False)
    return tmp_path / "run"


def test_label_dropout_rate_and_kept_labels():
    labels = torch.arange(200_000) % 10
    dropped = drop_labels(labels, 0.1, 10, torch.Generator().manual_seed(0))
    null = dropped == 10
    rate = null.double().mean().item()
    assert rate == pytest.approx(0.1, abs=4 * (0.1 * 0.9 / len(labels)) ** 0.5)  # 4 sigma
    assert torch.equal(dropped[~null], labels[~null])
    assert not (drop_labels(labels, 0.0, 10, torch.Generator()) == 10).any()


@pytest.mark.parametrize("kind", ["eps", "v"])
def test_w0_is_exactly_the_conditional_prediction(net, kind):
    schedule = NoiseSchedule.create("linear", 1000)
    x, y = torch.randn(6, 1, 8, 8), torch.tensor([0, 1, 2, 3, 4, 9])
    with torch.inference_mode():
        guided = guided_denoiser(net, schedule, kind, y, 10, 0.0)(x, 500)
        conditional = as_denoiser(net, schedule, kind, y)(x, 500)
    assert all(torch.equal(a, b) for a, b in zip(guided, conditional))


@pytest.mark.parametrize("kind", ["eps", "x0", "v"])
def test_the_batched_guided_call_equals_two_separate_calls(net, kind):
    schedule = NoiseSchedule.create("linear", 1000)
    x, y, w = torch.randn(6, 1, 8, 8), torch.tensor([0, 1, 2, 3, 4, 9]), 2.0
    t = torch.full((6,), 300)
    with torch.inference_mode():
        eps, x0 = guided_denoiser(net, schedule, kind, y, 10, w)(x, 300)
        # two calls, combined in eps space as in Ho & Salimans eq. 6
        eps_c, x0_c = to_eps_x0(kind, net(x, t, y), x, schedule.alpha_bar_at(t))
        eps_u, x0_u = to_eps_x0(kind, net(x, t, torch.full_like(y, 10)), x, schedule.alpha_bar_at(t))
    torch.testing.assert_close(eps, (1 + w) * eps_c - w * eps_u, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(x0, (1 + w) * x0_c - w * x0_u, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(eps, eps_c, atol=1e-3)  # guidance changed something


@pytest.mark.parametrize("kind", ["eps", "v"])
def test_the_guidance_interval_guides_only_inside_it(net, kind):
    """(sigma_lo, sigma_hi]: the guided prediction inside, the conditional one outside, from one
    network call on N images instead of 2N; per-image timesteps are gated image by image."""
    schedule = NoiseSchedule.create("linear", 1000)
    x, y, w = torch.randn(6, 1, 8, 8), torch.tensor([0, 1, 2, 3, 4, 9]), 2.0
    sigma = schedule.snr(torch.arange(1000)).rsqrt()  # increasing in t
    interval = (float(sigma[200]), float(sigma[600]))  # guides t = 201..600
    calls = []

    def counting(x_t, t, labels):
        calls.append(len(x_t))
        return net(x_t, t, labels)

    gated = guided_denoiser(counting, schedule, kind, y, 10, w, interval)
    guided = guided_denoiser(net, schedule, kind, y, 10, w)
    conditional = guided_denoiser(net, schedule, kind, y, 10, 0.0)
    with torch.inference_mode():
        for t, inside in [(200, False), (201, True), (600, True), (601, False), (900, False), (10, False)]:
            calls.clear()
            got, want = gated(x, t), (guided if inside else conditional)(x, t)
            assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(got, want)), t
            assert calls == [12 if inside else 6]
        t = torch.tensor([100, 300, 500, 700, 300, 900])
        inside = torch.tensor([False, True, True, False, True, False])
        got, on, off = gated(x, t), guided(x, t), conditional(x, t)
        for a, b, c in zip(got, on, off):
            torch.testing.assert_close(a[inside], b[inside], atol=1e-6, rtol=1e-6)
            torch.testing.assert_close(a[~inside], c[~inside], atol=1e-6, rtol=1e-6)
    assert not torch.allclose(on[0][inside], off[0][inside], atol=1e-3)  # guidance changed something
    with pytest.raises(TinydiffError, match="needs a guidance weight"):
        guided_denoiser(net, schedule, kind, y, 10, 0.0, interval)
    with pytest.raises(TinydiffError, match="sigma_lo < sigma_hi"):
        guided_denoiser(net, schedule, kind, y, 10, w, (2.0, 1.0))


def test_bad_labels_give_clear_errors():
    with pytest.raises(TinydiffError, match="out of range"):
        check_labels([0, 10], 10, 2)
    with pytest.raises(TinydiffError, match="out of range"):
        check_labels(-1, 10, 3)
    with pytest.raises(TinydiffError, match="3 class labels for 2 images"):
        check_labels([0, 1, 2], 10, 2)
    with pytest.raises(TinydiffError, match="must be integers"):
        check_labels([0.5, 1.0], 10, 2)
    with pytest.raises(TinydiffError, match="not class-conditional"):
        check_labels([0, 1], None, 2)
    assert torch.equal(check_labels(3, 10, 4), torch.full((4,), 3))


def test_conditional_training_and_guided_sampling(conditional_run, labelled_npz):
    model = load(conditional_run)
    assert model.num_classes == 10 and model.config["train"]["p_uncond"] == 0.1
    unguided = sample(model, 4, steps=3, labels=[1, 2, 3, 4])
    guided = sample(model, 4, steps=3, labels=[1, 2, 3, 4], guidance=2.0)
    null = sample(model, 4, steps=3)  # no labels: the null class
    assert guided.shape == (4, 1, 8, 8) and not torch.equal(guided, unguided) and not torch.equal(null, unguided)
    # the labels follow their images through batching
    torch.testing.assert_close(sample(model, 4, steps=3, labels=[1, 2, 3, 4], batch_size=3), unguided)
    with pytest.raises(TinydiffError, match="guidance needs class labels"):
        sample(model, 4, steps=3, guidance=1.0)
    with pytest.raises(TinydiffError, match="guidance needs class labels"):
        sample(model, 4, steps=3, guidance_interval=(0.5, 2.0))
    # an interval covering every noise level of the trajectory is plain guidance
    everywhere = sample(model, 4, steps=3, labels=[1, 2, 3, 4], guidance=2.0, guidance_interval=(0.0, 1e9))
    torch.testing.assert_close(everywhere, guided)


def test_network_evaluations_are_counted(conditional_run):
    model = load(conditional_run)
    labels, seen = [1, 2, 3, 4], []

    def nfe_and_calls(**options):
        with model.count_evaluations() as count:
            sample(model, 4, labels=labels, callback=lambda i, t, x_t, x0: seen.append(int(t)), **options)
        return count["images"] / 4, count["calls"]

    assert nfe_and_calls(sampler="ddim", steps=5) == (5, 5)
    assert nfe_and_calls(sampler="ddim", steps=5, batch_size=3) == (5, 10)  # batches of 3 and 1
    assert nfe_and_calls(sampler="heun", steps=5) == (9, 9)  # 2 S - 1 (samplers/heun.py)
    assert nfe_and_calls(sampler="ddim", steps=5, guidance=1.0) == (10, 5)  # one batch of 2N per step
    # an interval holding the noise levels of DDIM's 2nd and 3rd steps: 2 guided steps of 5
    seen.clear()
    nfe_and_calls(sampler="ddim", steps=5)
    sigma = model.schedule.snr(torch.tensor(seen)).rsqrt().tolist()  # decreasing along the trajectory
    assert nfe_and_calls(sampler="ddim", steps=5, guidance=1.0, guidance_interval=(sigma[3], sigma[1])) == (7, 5)
    with model.count_evaluations() as count:
        pass
    sample(model, 4, steps=2)
    assert count == {"calls": 0, "images": 0}  # the hook is gone once the block ends


def test_conditional_training_needs_labels(tmp_path):
    path = tmp_path / "unlabelled.npz"
    np.savez(path, x=digit_like_images(16))
    with pytest.raises(TinydiffError, match="needs class labels"):
        Trainer(TrainConfig(data=str(path), out=str(tmp_path / "x"), conditional=True))


def test_cli_class_all_grid_and_errors(conditional_run, tmp_path, capsys):
    npz = tmp_path / "s.npz"
    args = ["sample", "--ckpt", str(conditional_run), "--steps", "2", "--out", str(tmp_path / "g.png"), "--overwrite"]
    assert main([*args, "--class", "all", "--per-class", "2", "--guidance", "1", "--npz", str(npz)]) == 0
    saved = np.load(npz)
    assert saved["x"].shape == (20, 8, 8, 1) and saved["y"].tolist() == [c for c in range(10) for _ in range(2)]
    from PIL import Image

    width, height = Image.open(tmp_path / "g.png").size
    assert height > 4 * width  # 10 rows of 2
    capsys.readouterr()
    assert main([*args, "--class", "10"]) == 2
    assert "out of range" in capsys.readouterr().err
    assert main([*args, "--class", "three"]) == 2
    assert "--class must be" in capsys.readouterr().err
    assert main([*args, "--class", "none", "--guidance", "2"]) == 2
    assert "guidance needs class labels" in capsys.readouterr().err
    assert main([*args, "--class", "all", "--guidance", "1", "--guidance-interval", "0.5,2"]) == 0
    assert main([*args, "--class", "3", "--guidance-interval", "0.5,2"]) == 2
    assert "needs a guidance weight" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*args, "--class", "3", "--guidance", "1", "--guidance-interval", "0.5"])
    assert "expected LO,HI" in capsys.readouterr().err


def test_cli_class_data_follows_the_training_data_proportions(tmp_path):
    """--class data: labels in the training data's class proportions (here 50/30/20 %), not balanced."""
    path = tmp_path / "skewed.npz"
    np.savez(path, x=digit_like_images(20), y=np.array([0] * 10 + [1] * 6 + [2] * 4))
    run = tmp_path / "run"
    Trainer(TrainConfig(data=str(path), out=str(run), steps=1, batch_size=4, sample_grid=0, conditional=True)).run(
        progress=False
    )
    npz = tmp_path / "s.npz"
    args = ["sample", "--ckpt", str(run), "--steps", "2", "--n", "10", "--out", str(tmp_path / "g.png")]
    assert main([*args, "--class", "data", "--npz", str(npz)]) == 0
    assert np.bincount(np.load(npz)["y"], minlength=3).tolist() == [5, 3, 2]


def test_guidance_costs_evaluations_only_inside_its_interval_and_grids_follow_it(conditional_run):
    from tinydiff.experiments.guidance import class_grid

    model = load(conditional_run)
    labels = torch.arange(20) % 3
    sigma_first = float(model.schedule.snr(torch.tensor([999])).rsqrt())
    for w, interval, nfe in [(0.0, None, 2), (2.0, None, 4), (2.0, (1.0, sigma_first), 3)]:
        with model.count_evaluations() as count:
            sample(model, 20, steps=2, labels=labels, guidance=w, guidance_interval=interval)
        assert count["images"] / 20 == nfe  # the interval holds the first of the two steps only
    grid = class_grid(model, 1.0, per_class=3, steps=2)
    assert grid.shape == (30, 1, 8, 8)
    # the grid takes the interval too: one above every noise level of the trajectory guides nowhere
    assert torch.equal(class_grid(model, 1.0, 3, 2, interval=(1e8, 1e9)), class_grid(model, 0.0, 3, 2))
    assert not torch.equal(class_grid(model, 1.0, 3, 2, interval=(0.0, 1e9)), class_grid(model, 0.0, 3, 2))


def test_dynamic_thresholding_scales_by_the_percentile_and_keeps_eps_consistent():
    """Imagen's rule: s = max(1, percentile_p |x0|) per image; x0 <- clip(x0, -s, s) / s."""
    from tinydiff.denoiser import clip_prediction

    x0 = torch.stack([torch.linspace(-0.5, 0.5, 16), torch.linspace(-3, 3, 16)]).view(2, 1, 4, 4)
    x_t, a = torch.randn(2, 1, 4, 4), 0.3
    eps, out = clip_prediction(x_t, x0, a, threshold=0.9)
    assert torch.equal(out[0], x0[0])  # inside [-1, 1]: s = 1, nothing changes
    s = torch.quantile(x0[1].abs().flatten(), 0.9)
    assert torch.allclose(out[1], x0[1].clamp(-s, s) / s) and out[1].abs().max() == 1
    assert torch.allclose(x_t, a**0.5 * out + (1 - a) ** 0.5 * eps, atol=1e-6)  # DDPM eq. 4 holds
    with pytest.raises(TinydiffError, match="percentile"):
        sample(load("pretrained:mnist"), 2, steps=2, dynamic_threshold=1.5)
