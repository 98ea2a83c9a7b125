"""Muon (training/muon.py): the Newton-Schulz orthogonalisation against an SVD, the update against
torch.optim.Muon on 2-D weights, convolution kernels as their flattened matrices, AdamW's part against
torch.optim.AdamW, which parameters take which rule, and training with it through the command line."""

import copy
import json

import numpy as np
import pytest
import torch
from helpers import digit_like_images
from torch import nn

from tinydiff import load
from tinydiff.cli import main
from tinydiff.nets import build_net, net_config
from tinydiff.training.muon import Muon, orthogonalise, split_parameters


@pytest.mark.parametrize("shape", [(16, 16), (8, 40), (40, 8), (3, 6, 20)])
def test_orthogonalise_keeps_the_singular_vectors_and_brings_every_singular_value_near_one(shape):
    M = torch.randn(shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    M = M * torch.logspace(0, -1.5, shape[-1], dtype=torch.float64)  # columns scaled over 1.5 decades
    U, S, Vh = torch.linalg.svd(M, full_matrices=False)
    O = orthogonalise(M)
    inner = U.mT @ O @ Vh.mT  # diagonal iff O = U diag(s') V^T
    diagonal = inner.diagonal(dim1=-2, dim2=-1)
    off = inner - torch.diag_embed(diagonal)
    assert off.abs().max() < 1e-6
    # the quintic's band (Jordan et al. 2024: about 0.7 to 1.2); five steps reach it from 1/300 of the norm
    assert diagonal.min() > 0.6 and diagonal.max() < 1.25
    assert (O - U @ Vh).abs().max() > 0.01  # not the exact U V^T: the test would not see a swapped reference


def _grads(params, seed):
    g = torch.Generator().manual_seed(seed)
    for p in params:
        p.grad = torch.randn(p.shape, generator=g)


def test_the_update_of_a_weight_matrix_is_torch_muons_with_adamws_rms():
    net = nn.Sequential(nn.Linear(12, 24, bias=False), nn.Linear(24, 24, bias=False), nn.Linear(24, 12, bias=False))
    ours, theirs = net, copy.deepcopy(net)
    mine = Muon(ours, lr=0.02, weight_decay=0.1)
    reference = torch.optim.Muon(theirs.parameters(), lr=0.02, weight_decay=0.1, adjust_lr_fn="match_rms_adamw")
    start = [p.detach().clone() for p in ours.parameters()]
    for step in range(3):
        _grads(ours.parameters(), step)
        _grads(theirs.parameters(), step)
        mine.step()
        reference.step()
    for a, b, s in zip(ours.parameters(), theirs.parameters(), start):
        moved = (b - s).abs().max()
        assert moved > 0.01
        assert (a - b).abs().max() < 0.02 * moved  # torch orthogonalises in bf16, this in float32


def test_a_convolution_kernel_steps_as_its_flattened_matrix():
    conv = nn.Conv2d(6, 10, 3, bias=False)
    dense = nn.Linear(54, 10, bias=False)
    dense.weight.data.copy_(conv.weight.detach().flatten(1))
    opt_conv, opt_dense = Muon(conv, lr=0.01), Muon(dense, lr=0.01)
    for step in range(2):
        _grads([conv.weight], step)
        dense.weight.grad = conv.weight.grad.flatten(1).clone()
        opt_conv.step()
        opt_dense.step()
    torch.testing.assert_close(conv.weight.detach().flatten(1), dense.weight.detach(), rtol=0, atol=1e-6)


def test_the_rest_steps_exactly_as_torch_adamw():
    net = nn.Sequential(nn.Linear(5, 7), nn.Linear(7, 3))
    net.edge_layers = ("0", "1")  # every weight an edge layer's: AdamW takes the whole network
    theirs = copy.deepcopy(net)
    mine = Muon(net, lr=1e-2, weight_decay=0.05)
    reference = torch.optim.AdamW(theirs.parameters(), lr=1e-2, weight_decay=0.05, foreach=True)
    for step in range(4):
        _grads(net.parameters(), step)
        _grads(theirs.parameters(), step)
        mine.step()
        reference.step()
    assert all(torch.equal(a, b) for a, b in zip(net.parameters(), theirs.parameters()))


def test_the_unet_gives_muon_its_hidden_weights_and_adamw_its_edges_embeddings_biases_and_norms():
    net = build_net(net_config("unet", "nano", num_classes=10))
    muon, adamw = split_parameters(net)
    names = {id(p): n for n, p in net.named_parameters()}
    muon_names, adamw_names = {names[id(p)] for p in muon}, {names[id(p)] for p in adamw}
    assert {"stem.weight", "out.2.weight", "label.weight", "stem.bias"} <= adamw_names
    assert all(p.ndim >= 2 for p in muon) and len(muon) + len(adamw) == len(names)
    assert sum(p.ndim == 4 for p in muon) > 20  # the blocks' convolutions
    assert not any(n.startswith(("stem.", "out.", "label.")) for n in muon_names)


EDGES = {"mlp": ("body.0.weight", "body.6.weight"), "diffusers": ("unet.conv_in.weight", "unet.conv_out.weight")}


@pytest.mark.parametrize("kind, edges", EDGES.items())
def test_the_other_networks_keep_the_layers_that_read_and_write_the_image_with_adamw(kind, edges):
    if kind == "diffusers":
        pytest.importorskip("diffusers")
    net = build_net(net_config(kind, None, num_classes=10))
    muon, adamw = split_parameters(net)
    names = {id(p): n for n, p in net.named_parameters()}
    assert set(edges) <= {names[id(p)] for p in adamw}
    assert len(muon) >= 2 and all(p.ndim >= 2 for p in muon)  # the hidden layers


def test_train_with_muon_learns_records_it_and_resumes_only_with_the_optimizer_it_trained_with(tmp_path, capsys):
    data = tmp_path / "digits.npz"
    np.savez(data, x=digit_like_images(48))
    args = ["train", "--data", str(data), "--out", str(tmp_path / "run"), "--batch-size", "16", "--channels", "8"]
    args += ["--sample-grid", "0", "--quiet", "--log-every", "5", "--lr-schedule", "constant", "--warmup", "5"]
    assert main([*args, "--steps", "60", "--optimizer", "muon"]) == 0
    assert load(tmp_path / "run").config["train"]["optimizer"] == "muon"
    losses = [json.loads(line)["loss"] for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert sum(losses[-3:]) < 0.5 * sum(losses[:3])
    assert main([*args, "--steps", "70", "--resume", "--optimizer", "adamw"]) == 2
    assert "optimizer='muon' (now 'adamw')" in capsys.readouterr().err
    # a checkpoint written before the option existed was trained with AdamW
    old = [*args[:4], str(tmp_path / "old"), *args[5:]]
    assert main([*old, "--steps", "10", "--optimizer", "adamw"]) == 0
    config = next((tmp_path / "old").glob("ckpt-*")) / "config.json"
    saved = json.loads(config.read_text())
    del saved["train"]["optimizer"]
    config.write_text(json.dumps(saved))
    assert main([*old, "--steps", "20", "--resume", "--optimizer", "muon"]) == 2
    assert "optimizer='adamw' (now 'muon')" in capsys.readouterr().err
    assert main([*old, "--steps", "20", "--resume"]) == 0


def test_runs_trained_with_adamw_keep_their_cache_keys_now_that_muon_is_the_default():
    """A committed cell of benchmarks/time_to_quality.py (a model trained when AdamW was the default) is
    found again by its recipe with --optimizer adamw; the same recipe at the default (Muon) keys a run of
    its own rather than reusing the AdamW model."""
    from pathlib import Path

    from tinydiff.config import TrainConfig, recipe_of
    from tinydiff.experiments.lab import accelerator

    cells = Path(__file__).parent.parent / "benchmarks" / "results" / "cells" / "models"
    cell = json.loads((cells / "89f96930ede68624.json").read_text())["key"]
    assert cell["run"].startswith("ttq-mnist-autoguided-")  # 5 minutes of the autoguided recipe
    recipe = dict(data="mnist", minutes=5.0, steps=10**6, sample_grid=0, ckpt_every=250, amp=True)
    recipe.update(conditional=True, guide_at=0.2)
    key = {k: v for k, v in cell.items() if k != "run"}
    assert recipe_of(TrainConfig(optimizer="adamw", **recipe)) | accelerator("cpu") == key
    assert recipe_of(TrainConfig(**recipe))["optimizer"] == "muon"
