import errno
import json

import pytest
import torch

from tinydiff import checkpoint, load
from tinydiff.checkpoint import list_checkpoints, resolve_checkpoint, save_checkpoint
from tinydiff.errors import TinydiffError
from tinydiff.nets import build_net, net_config

CONFIG = {
    "net": net_config("unet", "tiny", (1, 8, 8)),
    "schedule": {"name": "linear", "timesteps": 1000},
    "prediction": "eps",
}


def _save(run, step, seed=0, keep=2):
    torch.manual_seed(seed)
    net = build_net(CONFIG["net"])
    for p in net.parameters():
        torch.nn.init.normal_(p)
    ema = build_net(CONFIG["net"])
    return save_checkpoint(run, step, CONFIG, net.state_dict(), ema.state_dict(), {"step": step}, keep), net, ema


def test_round_trip_loads_ema_or_raw_weights(tmp_path):
    ckpt, net, ema = _save(tmp_path / "run", 10)
    assert sorted(p.name for p in ckpt.iterdir()) == sorted(checkpoint.FILES)
    for use_ema, expected in ((True, ema), (False, net)):
        model = load(tmp_path / "run", ema=use_ema)
        assert not model.net.training
        for a, b in zip(model.net.state_dict().values(), expected.state_dict().values()):
            assert torch.equal(a, b)
    assert load(ckpt).prediction == "eps"


def test_latest_and_pruning(tmp_path):
    for step in (1, 2, 3):
        _save(tmp_path, step)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["ckpt-0000002", "ckpt-0000003"]
    assert resolve_checkpoint(tmp_path).name == "ckpt-0000003"
    (tmp_path / "latest").write_text("ckpt-0000009")  # points nowhere: fall back to the newest complete
    assert resolve_checkpoint(tmp_path).name == "ckpt-0000003"


def test_missing_file_and_foreign_config_are_clear_errors(tmp_path):
    ckpt, _, _ = _save(tmp_path / "a", 1)
    (ckpt / "ema.safetensors").unlink()
    with pytest.raises(TinydiffError, match="incomplete: missing ema.safetensors"):
        load(ckpt)
    ckpt, _, _ = _save(tmp_path / "b", 1)
    config = json.loads((ckpt / "config.json").read_text())
    config["net"]["channels"] = 64
    (ckpt / "config.json").write_text(json.dumps(config))
    with pytest.raises(TinydiffError, match="written by another config"):
        load(ckpt)
    (ckpt / "config.json").write_text("{broken")
    with pytest.raises(TinydiffError, match="not valid JSON"):
        load(ckpt)
    with pytest.raises(TinydiffError, match="does not exist"):
        load(tmp_path / "nothing")
    with pytest.raises(TinydiffError, match="no checkpoint found"):
        load(tmp_path)


def test_disk_full_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    first, net, _ = _save(tmp_path, 1)
    calls = []

    def full_disk(path, data):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(path, data)

    real_write = checkpoint._write
    monkeypatch.setattr(checkpoint, "_write", full_disk)
    with pytest.raises(TinydiffError, match="disk full"):
        _save(tmp_path, 2, seed=1)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["ckpt-0000001"]
    assert not list(tmp_path.glob(".tmp-*"))
    model = load(tmp_path, ema=False)
    assert torch.equal(next(iter(model.net.parameters())), next(iter(net.parameters())))


def test_export_keeps_what_sampling_needs(tmp_path):
    from tinydiff.checkpoint import export_model

    _, _, ema = _save(tmp_path / "run", 4)
    out = export_model(tmp_path / "run", tmp_path / "model")
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "ema.safetensors"]
    for a, b in zip(load(out).net.state_dict().values(), ema.state_dict().values()):
        assert torch.equal(a, b)
    with pytest.raises(TinydiffError, match="incomplete: missing model.safetensors"):
        load(out, ema=False)


def test_export_records_what_training_took(tmp_path):
    from tinydiff.checkpoint import export_model

    net = build_net(CONFIG["net"]).state_dict()
    config = {**CONFIG, "train": {"batch_size": 8, "accumulate": 2}}
    save_checkpoint(tmp_path / "run", 30, config, net, net, {"step": 30, "elapsed_s": 120.0})
    trained = json.loads((export_model(tmp_path / "run", tmp_path / "model") / "config.json").read_text())["trained"]
    assert trained == {"steps": 30, "minutes": 2.0, "images_per_s": 30 * 8 / 120}  # --accumulate splits the batch
    assert load(tmp_path / "model").config["trained"] == trained  # a shipped model says how long it trained


def test_export_of_the_raw_weights_from_the_command_line(tmp_path):
    from tinydiff.cli import main

    _, net, ema = _save(tmp_path / "run", 4)
    main(["export", "--ckpt", str(tmp_path / "run"), "--out", str(tmp_path / "raw"), "--weights", "raw"])
    for a, b, c in zip(
        load(tmp_path / "raw").net.state_dict().values(), net.state_dict().values(), ema.state_dict().values()
    ):
        assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize(
    "name, spec, shape, classes",
    [
        ("mnist", "mnist", (1, 28, 28), 10),
        ("fashion-mnist", "fashion-mnist", (1, 28, 28), 10),
        ("emoji", "emoji", (3, 32, 32), 9),
        ("emoji64", "emoji@64", (3, 64, 64), 9),
    ],
)
def test_the_shipped_models_load_and_sample_every_class(name, spec, shape, classes):
    from tinydiff import sample
    from tinydiff.model import PRETRAINED

    model = load(f"pretrained:{name}")
    assert model.config["data"]["spec"] == spec  # each folder holds a model of its dataset
    assert model.image_shape == shape and model.num_classes == classes
    size = sum(f.stat().st_size for f in PRETRAINED[name].iterdir())
    assert size < 20 * 2**20
    images = sample(model, classes, steps=2, labels=list(range(classes)), guidance=1.0)
    assert images.shape == (classes, *shape) and images.std() > 0.1


def test_the_mnist_model_is_the_default():
    assert load().config["data"]["spec"] == "mnist"  # no path: pretrained:mnist
    ships = (
        "emoji, emoji64, fashion-mnist, fashion-mnist-adversarial, fashion-mnist-consistency, fashion-mnist-guide, "
        "mnist, mnist-1step, mnist-2step, mnist-4step, mnist-adversarial, mnist-consistency, mnist-text"
    )
    with pytest.raises(TinydiffError, match=f"no shipped model 'cifar'; tinydiff ships: {ships}"):
        load("pretrained:cifar")
