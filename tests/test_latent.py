"""DDIM's latent space: inversion through a trained model, slerp, merge, and the CLI around them."""

import math

import numpy as np
import pytest
import torch
from helpers import digit_like_images

from tinydiff import load
from tinydiff.api import decode, invert
from tinydiff.cli import main
from tinydiff.errors import TinydiffError
from tinydiff.experiments.latent import merge, reconstruction
from tinydiff.samplers.inversion import slerp
from tinydiff.training import TrainConfig, Trainer

# a brief training on 8x8 bars
BRIEF = dict(steps=60, batch_size=16, sample_grid=0, ckpt_every=60, schedule="linear")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny model trained briefly on 8x8 bar images (enough for a smooth ODE)."""
    root = tmp_path_factory.mktemp("latent")
    np.savez(root / "bars.npz", x=digit_like_images(64))
    torch.set_num_threads(1)
    # DDIM's inversion experiments (Table 2) used DDPM's linear schedule; this briefly trained model,
    # under the cosine default, ends S = 100 at a round-trip error of 0.21x that of S = 5 instead of < 0.2x
    config = TrainConfig(
        data=str(root / "bars.npz"),
        out=str(root / "run"),
        **BRIEF,
        # The plain loss: a clip-aware model's denoiser includes the clip to [-1, 1], through which its
        # exact background inverts to nearly the same latent everywhere (test below), not to noise.
        clip_aware_loss=False,
    )
    Trainer(config).run(progress=False)
    return root


def test_slerp_endpoints_and_norms():
    g = torch.Generator().manual_seed(0)
    z0, z1 = torch.randn(5, 1, 28, 28, generator=g), torch.randn(5, 1, 28, 28, generator=g)
    z1 = z1 * (z0.flatten(1).norm(dim=1) / z1.flatten(1).norm(dim=1)).view(-1, 1, 1, 1)  # equal norms
    torch.testing.assert_close(slerp(z0, z1, 0.0), z0)
    torch.testing.assert_close(slerp(z0, z1, 1.0), z1)
    for alpha in (0.25, 0.5, 0.8):  # stays on the sphere, where the linear mix falls inside it
        mid = slerp(z0, z1, alpha)
        torch.testing.assert_close(mid.flatten(1).norm(dim=1), z0.flatten(1).norm(dim=1))
        linear = ((1 - alpha) * z0 + alpha * z1).flatten(1).norm(dim=1)
        assert (linear < 0.95 * z0.flatten(1).norm(dim=1)).all()
    # the angle grows linearly with alpha
    cos = torch.nn.functional.cosine_similarity(z0.flatten(1), slerp(z0, z1, 0.5).flatten(1))
    half = torch.nn.functional.cosine_similarity(z0.flatten(1), z1.flatten(1)).arccos() / 2
    torch.testing.assert_close(cos.arccos(), half, atol=1e-4, rtol=1e-4)
    # parallel latents: the linear mix, no division by zero
    torch.testing.assert_close(slerp(z0, 2 * z0, 0.5), 1.5 * z0)


def test_round_trip_error_falls_as_steps_grow_for_a_trained_model(trained):
    model = load(trained / "run")
    images = torch.from_numpy(digit_like_images(16, seed=3))
    rows = reconstruction(model, images, steps=(5, 20, 100), log=lambda m: None)
    errors = [row["mse"] for row in rows]
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < errors[0] / 5
    # the same figure through invert + decode, with the latents looking like noise
    z = invert(model, images, steps=100)
    assert 0.5 < z.std().item() < 1.5 and math.isfinite(z.abs().max().item())
    back = decode(model, z, steps=100)
    assert (back - (images.float() / 127.5 - 1)).pow(2).mean().item() == pytest.approx(errors[2], rel=1e-4)


def test_a_clip_aware_model_inverts_through_its_clip(tmp_path):
    """Its x0 beyond a bound is untrained, so inversion and decoding clip too: the round trip holds,
    but the exact background no longer inverts to noise."""
    np.savez(tmp_path / "bars.npz", x=digit_like_images(64))
    # a constant rate: these 60 steps sit inside the warm-up, and a decaying rate leaves the model untrained
    config = dict(data=str(tmp_path / "bars.npz"), **BRIEF, lr_schedule="constant")
    images = torch.from_numpy(digit_like_images(16, seed=3))
    latents = {}
    for aware in (True, False):
        Trainer(TrainConfig(out=str(tmp_path / str(aware)), clip_aware_loss=aware, **config)).run(progress=False)
        model = load(tmp_path / str(aware))
        assert model.clip_aware == aware
        latents[aware] = z = invert(model, images, steps=50)
        back = decode(model, z, steps=50)
        assert (back - (images.float() / 127.5 - 1)).pow(2).mean().item() < 0.05
    background = images == 0
    assert latents[True][background].std() < 0.5 * latents[False][background].std()


def test_merge_reproduces_both_images_at_its_ends(trained):
    model = load(trained / "run")
    a, b = torch.from_numpy(digit_like_images(2, seed=7)).split(1)
    merged, pixel = merge(model, a, b, frames=5, steps=100)
    assert merged.shape == pixel.shape == (5, 1, 8, 8)
    x = torch.cat([a, b]).float() / 127.5 - 1
    torch.testing.assert_close(pixel[[0, -1]], x)
    assert (merged[[0, -1]] - x).pow(2).mean().item() < 0.05  # the round trip at S = 100


def test_images_that_do_not_match_the_checkpoint_are_refused(trained, tmp_path, capsys):
    model = load(trained / "run")
    with pytest.raises(TinydiffError, match=r"\(3, 8, 8\) per image.*\(1, 8, 8\)"):
        invert(model, torch.zeros(2, 3, 8, 8, dtype=torch.uint8))
    with pytest.raises(TinydiffError, match=r"\(1, 28, 28\) per image"):
        invert(model, torch.zeros(2, 1, 28, 28, dtype=torch.uint8))
    np.savez(tmp_path / "big.npz", x=np.zeros((3, 28, 28, 1), dtype=np.uint8))
    assert main(["invert", "--ckpt", str(trained / "run"), "--images", str(tmp_path / "big.npz")]) == 2
    assert "trained on (1, 8, 8)" in capsys.readouterr().err


def test_cli_invert_interpolate_merge(trained, tmp_path, capsys):
    run, images = str(trained / "run"), str(trained / "bars.npz")
    latents = tmp_path / "z.npz"
    assert main(["invert", "--ckpt", run, "--images", images, "--n", "4", "--steps", "10", "--out", str(latents)]) == 0
    assert np.load(latents)["z"].shape == (4, 1, 8, 8)
    assert main(["interpolate", "--ckpt", run, "--steps", "5", "--frames", "4", "--out", str(tmp_path / "i.png")]) == 0
    args = ["merge", "--ckpt", run, "--images", images, "--pick", "0", "5", "--steps", "5"]
    assert main([*args, "--out", str(tmp_path / "m.png")]) == 0
    assert (tmp_path / "i.png").exists() and (tmp_path / "m.png").exists()
    assert main(["merge", "--ckpt", run, "--images", images, "--pick", "0", "64"]) == 2
    assert "--pick 64" in capsys.readouterr().err
