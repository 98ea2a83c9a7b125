import pytest
import torch
import torch.nn.functional as F

from tinydiff.nets import PRESETS, build_net, count_params, gflops_per_image, net_config
from tinydiff.nets.unet import Attention


def _randomize(net):
    """Zero-initialised output layers make a fresh net output 0; perturb them to test dependence."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    return net


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (1, 8, 8)])
def test_unet_shapes(shape):
    net = build_net(net_config("unet", "tiny", shape))
    x = torch.randn(3, *shape)
    assert net(x, torch.tensor([0, 10, 999])).shape == x.shape


def test_fresh_unet_starts_at_zero_and_depends_on_time():
    net = build_net(net_config("unet", "tiny", (1, 8, 8)))
    x = torch.randn(2, 1, 8, 8)
    assert net(x, torch.tensor([1, 2])).abs().max() == 0  # zero-initialised output conv
    _randomize(net)
    assert not torch.allclose(net(x, torch.tensor([0, 0])), net(x, torch.tensor([500, 500])))


def test_no_time_ablation_ignores_t():
    for kind, preset in (("unet", "tiny"), ("mlp", None)):
        net = _randomize(build_net(net_config(kind, preset, (1, 8, 8), use_time=False)))
        x = torch.randn(2, 1, 8, 8)
        torch.testing.assert_close(net(x, torch.tensor([0, 0])), net(x, torch.tensor([700, 3])))


def test_class_conditioning_changes_the_output():
    net = _randomize(build_net(net_config("unet", "tiny", (1, 8, 8), num_classes=10)))
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([5, 5])
    assert not torch.allclose(net(x, t, torch.tensor([1, 2])), net(x, t, torch.tensor([3, 4])))
    torch.testing.assert_close(net(x, t), net(x, t, torch.tensor([10, 10])))  # None = null class


def test_attention_matches_pytorchs_scaled_dot_product_attention():
    """The written-out attention (faster on CPU) is softmax(Q K^T / sqrt(d)) V, values and gradients."""
    attn = _randomize(Attention(32, heads=4))
    x = torch.randn(3, 32, 7, 7, requires_grad=True)
    q, k, v = attn.qkv(attn.norm(x)).reshape(3, 3, 4, 8, 49).transpose(-1, -2).unbind(1)  # [B, heads, HW, d]
    reference = x + attn.proj(F.scaled_dot_product_attention(q, k, v).transpose(-1, -2).reshape(3, 32, 7, 7))
    ours = attn(x)
    torch.testing.assert_close(ours, reference)
    assert (reference - x).abs().max() > 0.1  # the attention branch contributes
    grad_ours, grad_ref = (torch.autograd.grad(out.square().sum(), [x, attn.qkv.weight]) for out in (ours, reference))
    for a, b in zip(grad_ours, grad_ref):
        torch.testing.assert_close(a, b)


def test_presets_grow_in_compute():
    flops = [gflops_per_image(build_net(net_config("unet", p)), (1, 28, 28)) for p in PRESETS]
    assert all(a < b for a, b in zip(flops, flops[1:]))
    assert 0.01 < flops[0] < 1.0  # nano: a fraction of a GFLOP per 28x28 image


def test_mlp_baseline():
    net = build_net(net_config("mlp", None, (1, 28, 28)))
    x = torch.randn(4, 1, 28, 28)
    assert net(x, torch.arange(4)).shape == x.shape
    assert count_params(net) > 1e5


def test_bad_configs():
    with pytest.raises(ValueError, match="preset"):
        net_config("unet", "huge")
    with pytest.raises(ValueError, match="network"):
        net_config("transformer")
