"""Baseline pools (skip, maxp, avgp, lip, lip_orig, gaussian_pool, softpool) and the dynamic convolution."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from repro.compat import load_official_state_dict
from repro.layers import WeightedPool2d, create_pool
from repro.layers.dynamic_conv import DynamicConv2d, anneal_temperature
from repro.layers.gaussian_pool import GaussianPool2d
from repro.layers.lip import LIP2d
from repro.layers.softpool import SoftPool2d

BASELINE_POOLS = ["skip", "maxp", "avgp", "lip", "lip_orig", "gaussian_pool", "softpool"]
PARAMETRIC_POOLS = ["lip", "lip_orig", "gaussian_pool"]


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# --------------------------------------------------------------------------------------------- official fixtures
@pytest.mark.parametrize("name", ["lip", "gaussian_pool"])
def test_matches_official_fixture(official_fixtures_dir, name):
    fixture = torch.load(official_fixtures_dir / f"pool_{name}.pt", weights_only=True)
    pool = create_pool(name, fixture["channels"], fixture["stride"])
    load_official_state_dict(pool, fixture["state_dict"])
    pool.eval()
    with torch.no_grad():
        out = pool(fixture["input"])
    torch.testing.assert_close(out, fixture["output"], atol=1e-5, rtol=0)


# --------------------------------------------------------------------------------------------- shapes and registry
@pytest.mark.parametrize("name", BASELINE_POOLS)
@pytest.mark.parametrize("stride", [2, 3])
@pytest.mark.parametrize("size", [(16, 16), (15, 17), (7, 9)])
def test_output_shape_is_floor(name, stride, size):
    pool = create_pool(name, 8, stride)
    if name == "skip":
        assert pool is None
        return
    x = torch.randn(2, 8, *size)
    assert pool(x).shape == (2, 8, size[0] // stride, size[1] // stride)


def test_standard_pools_are_torch_pools():
    assert isinstance(create_pool("maxp", 4, 2), nn.MaxPool2d)
    avg = create_pool("avgp", 4, 4)
    assert isinstance(avg, nn.AvgPool2d) and avg.kernel_size == avg.stride == 4 and avg.padding == 0


def test_unknown_pool_name_lists_valid_names():
    with pytest.raises(KeyError, match=r"unknown pool .lipp.; valid:.*lip_orig"):
        create_pool("lipp", 16, 2)


@pytest.mark.parametrize("name", BASELINE_POOLS)
def test_self_attentive_settings_are_ignored_other_settings_rejected(name):
    settings = {"patch_size": 2, "heads": 4, "reduction": 0.5, "win_norm": False, "conv_layer": DynamicConv2d}
    pool = create_pool(name, 16, 2, **settings)
    if pool is not None:
        assert not any(isinstance(m, DynamicConv2d) for m in pool.modules())
    with pytest.raises(TypeError, match=r"unexpected setting.*'num_heads'"):
        create_pool(name, 16, 2, num_heads=4)


def test_sap_lip_ignores_win_norm():
    pool = create_pool("lip", 16, 2, win_norm=False)
    assert isinstance(pool, WeightedPool2d) and pool.win_norm


@pytest.mark.parametrize("stride", [0, -2, 1.5])
def test_bad_stride_is_rejected(stride):
    with pytest.raises(ValueError, match="positive integer stride"):
        create_pool("maxp", 16, stride)


# --------------------------------------------------------------------------------------------- LIP
def test_lip_param_count_and_keys():
    for c in (16, 64):
        assert n_params(create_pool("lip", c, 2)) == c * c + 3 * c
    keys = set(create_pool("lip", 16, 2).state_dict())
    assert {"logit.pool_weight.logit.0.weight", "logit.pool_weight.logit.1.running_var"} <= keys


def test_lip_with_constant_weight_is_average_pool():
    pool = create_pool("lip", 8, 2)
    with torch.no_grad():
        pool.logit.pool_weight.logit[0].weight.zero_()
        pool.logit.pool_weight.logit[0].bias.uniform_(-3, 3)  # a constant per channel
        pool.logit.pool_weight.logit[1].running_mean.normal_()
    pool.eval()
    x = torch.randn(2, 8, 11, 10)
    torch.testing.assert_close(pool(x), F.avg_pool2d(x, 2, 2))


@pytest.mark.parametrize("stride", [2, 3])
@pytest.mark.parametrize("size", [(12, 12), (13, 11)])
def test_lip_orig_at_init_is_average_pool_over_its_window(stride, size):
    x = torch.randn(2, 6, *size)
    pool = create_pool("lip_orig", 6, stride)
    k, p = 2 * stride - 1, stride - 1
    assert (pool.kernel_size, pool.padding) == (k, p)
    ref = F.avg_pool2d(x, k, stride, p, count_include_pad=False)
    torch.testing.assert_close(pool(x), ref[..., : size[0] // stride, : size[1] // stride])
    full = create_pool("lip_orig", 6, stride, floor_output=False)
    torch.testing.assert_close(full(x), ref)  # the paper's ⌈H/s⌉ output


def test_lip_orig_structure_and_kernel_option():
    pool = create_pool("lip_orig", 16, 2)
    assert isinstance(pool, LIP2d) and (pool.kernel_size, pool.stride, pool.padding) == (3, 2, 1)
    assert n_params(pool) == 9 * 16 * 16 + 2 * 16  # Conv3x3 without bias + affine InstanceNorm
    assert set(pool.state_dict()) == {
        "logit.pool_weight.logit.conv.weight",
        "logit.pool_weight.logit.bn.weight",
        "logit.pool_weight.logit.bn.bias",
    }
    x = torch.randn(1, 16, 9, 9)
    weight = pool.weight_net(x)
    torch.testing.assert_close(weight, torch.full_like(weight, torch.e**6))  # exp(12 · sigmoid(0))
    non_overlapping = create_pool("lip_orig", 16, 2, kernel_size=2)
    torch.testing.assert_close(non_overlapping(x), F.avg_pool2d(x, 2, 2))
    with pytest.raises(ValueError, match="kernel_size=2 is smaller than stride=3"):
        create_pool("lip_orig", 16, 3, kernel_size=2)


def test_lip_orig_gate_bounds_weights():
    pool = create_pool("lip_orig", 4, 2)
    with torch.no_grad():
        pool.weight_net.logit.conv.weight.normal_(0, 10)
    weight = pool.weight_net(torch.randn(2, 4, 8, 8))
    assert weight.min() >= 1 and weight.max() <= torch.e**12 * (1 + 1e-6)


# --------------------------------------------------------------------------------------------- SoftPool
def softpool_loop(x: torch.Tensor, k: int, s: int) -> torch.Tensor:
    """The paper's formula, window by window and channel by channel, in float64."""
    b, c, h, w = x.shape
    out = torch.empty(b, c, (h - k) // s + 1, (w - k) // s + 1, dtype=torch.float64)
    for bi in range(b):
        for ci in range(c):
            for i in range(out.shape[2]):
                for j in range(out.shape[3]):
                    r = x[bi, ci, i * s : i * s + k, j * s : j * s + k].double()
                    out[bi, ci, i, j] = (r * r.exp()).sum() / r.exp().sum()
    return out


@pytest.mark.parametrize(("kernel", "stride"), [(2, 2), (3, 2), (3, 3)])
def test_softpool_equals_per_channel_formula(kernel, stride):
    x = torch.randn(2, 3, 9, 8, dtype=torch.float64)
    y = SoftPool2d(stride, kernel_size=kernel)(x)
    torch.testing.assert_close(y, softpool_loop(x, kernel, stride))


def test_softpool_registry_default_and_clamp():
    x = torch.randn(2, 3, 8, 8)
    pool = create_pool("softpool", 3, 2)
    assert isinstance(pool, SoftPool2d) and pool.kernel_size == 2 and n_params(pool) == 0
    torch.testing.assert_close(pool(x), softpool_loop(x, 2, 2).float())
    clamped = create_pool("softpool", 3, 2, clamp_nonneg=True)(x)
    assert clamped.min() >= 0
    torch.testing.assert_close(clamped, pool(x).clamp_min(0))


def test_softpool_approaches_max_pool_and_stays_finite():
    x = torch.randn(2, 4, 16, 16)
    pool = create_pool("softpool", 4, 2)
    # max − y = Σ_i softmax_i · (max − x_i) and d·e^(−d) ≤ 1/e, so the gap is at most (k² − 1)/e at any scale,
    # and the gap relative to the scale shrinks towards max pooling.
    relative_gaps = []
    for scale in (1.0, 10.0, 100.0, 1000.0):
        gap = F.max_pool2d(x * scale, 2) - pool(x * scale)
        assert gap.min() >= -1e-4 * scale and gap.max() <= 3 / torch.e + 1e-4 * scale
        relative_gaps.append(gap.mean().item() / scale)
    assert relative_gaps == sorted(relative_gaps, reverse=True) and relative_gaps[-1] < 1e-4
    huge = torch.randn(2, 4, 16, 16) * 1e4 + torch.linspace(-1e5, 1e5, 16)  # windows far below the channel max
    y = pool(huge)
    assert torch.isfinite(y).all()
    torch.testing.assert_close(y, F.max_pool2d(huge, 2), rtol=1e-5, atol=1.0)
    inp = (torch.randn(1, 2, 8, 8) * 1e4).requires_grad_()
    pool(inp).sum().backward()
    assert torch.isfinite(inp.grad).all()


# --------------------------------------------------------------------------------------------- GaussianPool
def test_gaussian_pool_param_count_and_defaults():
    for c in (16, 17, 64):
        h = c // 2
        assert n_params(create_pool("gaussian_pool", c, 2)) == 3 * c * h + 3 * h + 6 * c
    pool = create_pool("gaussian_pool", 16, 2)
    assert isinstance(pool, GaussianPool2d)
    assert (pool.hidden, pool.stochasticity, pool.eps) == (8, "HWCN", 1e-6)


def _normalised_weight(pool: GaussianPool2d, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Recover W = (y − μ₀) / σ₀ from the output."""
    mean = F.avg_pool2d(x, pool.stride)
    std = (F.avg_pool2d(x * x, pool.stride) - mean**2).clamp(min=pool.eps).sqrt()
    return (y - mean) / std


def test_gaussian_pool_eval_is_deterministic():
    pool = create_pool("gaussian_pool", 8, 2).eval()
    x = torch.randn(3, 8, 8, 8)
    y1, y2 = pool(x), pool(x)
    torch.testing.assert_close(y1, y2, rtol=0, atol=0)
    w = _normalised_weight(pool, x, y1)
    torch.testing.assert_close(w, w[..., :1, :1].expand_as(w))  # softplus(M): one weight per (b, c)


@pytest.mark.parametrize(("mode", "noise_shape"), [("HWCN", (4, 8, 4, 4)), ("CN", (4, 8, 1, 1))])
def test_gaussian_pool_training_noise(monkeypatch, mode, noise_shape):
    pool = create_pool("gaussian_pool", 8, 2, stochasticity=mode).train()
    x = torch.randn(4, 8, 8, 8)
    shapes = []
    randn = torch.randn

    def recording_randn(*args, **kwargs):
        shapes.append(tuple(args[0]))
        return randn(*args, **kwargs)

    monkeypatch.setattr(torch, "randn", recording_randn)
    y1, y2 = pool(x), pool(x)
    assert shapes == [noise_shape, noise_shape]
    assert not torch.allclose(y1, y2)
    spatial_spread = _normalised_weight(pool, x, y1).std(dim=(2, 3))
    if mode == "CN":
        assert spatial_spread.max() < 1e-4
    else:
        assert spatial_spread.min() > 1e-3


def test_gaussian_pool_without_stochasticity_and_errors():
    pool = create_pool("gaussian_pool", 8, 2, stochasticity="none").train()
    x = torch.randn(4, 8, 8, 8)
    torch.testing.assert_close(pool(x), pool(x), rtol=0, atol=0)
    with pytest.raises(ValueError, match="stochasticity must be one of"):
        GaussianPool2d(8, 2, stochasticity="HW")
    with pytest.raises(ValueError, match=r"batch of 1.*batch size > 1"):
        create_pool("gaussian_pool", 8, 2).train()(torch.randn(1, 8, 8, 8))
    assert create_pool("gaussian_pool", 8, 2).eval()(torch.randn(1, 8, 8, 8)).shape == (1, 8, 4, 4)


# --------------------------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("name", [n for n in BASELINE_POOLS if n != "skip"])
def test_gradients_reach_every_parameter(name):
    pool = create_pool(name, 8, 2).train()
    if name == "lip_orig":  # move off the zero init, where the InstanceNorm scale has no gradient
        nn.init.normal_(pool.weight_net.logit.conv.weight, std=0.1)
    x = torch.randn(4, 8, 8, 8, requires_grad=True)
    (pool(x) * torch.randn(4, 8, 4, 4)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    params = dict(pool.named_parameters())
    assert (len(params) > 0) == (name in PARAMETRIC_POOLS)
    for pname, p in params.items():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, pname


# --------------------------------------------------------------------------------------------- dynamic conv
def _uniform_attention(conv: DynamicConv2d) -> DynamicConv2d:
    with torch.no_grad():
        conv.attention.fc2.weight.zero_()
        conv.attention.fc2.bias.zero_()
        if conv.bias is not None:
            conv.bias.normal_()
    return conv


@pytest.mark.parametrize(
    ("cin", "cout", "k", "stride", "padding", "dilation", "groups", "bias"),
    [
        (3, 8, 7, 2, 3, 1, 1, False),
        (8, 12, 3, 1, 1, 1, 1, True),
        (8, 8, 3, 2, 2, 2, 4, True),
        (6, 4, 1, 1, 0, 1, 2, False),
    ],
)
def test_dynamic_conv_with_uniform_attention_is_mean_kernel_conv(cin, cout, k, stride, padding, dilation, groups, bias):
    conv = _uniform_attention(DynamicConv2d(cin, cout, k, stride, padding, dilation, groups, bias))
    x = torch.randn(3, cin, 11, 10)
    mean_bias = conv.bias.mean(0) if bias else None
    ref = F.conv2d(x, conv.weight.mean(0), mean_bias, stride, padding, dilation, groups)
    torch.testing.assert_close(conv(x), ref, rtol=1e-5, atol=1e-5)


def test_dynamic_conv_is_per_sample_and_accepts_non_contiguous_input():
    conv = DynamicConv2d(8, 16, 3, padding=1)
    with torch.no_grad():
        conv.attention.fc2.bias.copy_(torch.tensor([3.0, -3.0, 0.0, 1.0]) * 30)
        conv.bias.normal_()
    x = torch.randn(3, 9, 10, 8).permute(0, 3, 1, 2)  # non-contiguous (B12 crashed on .view here)
    assert not x.is_contiguous()
    y = conv(x)
    alpha = conv.attention(x)
    assert not torch.allclose(alpha, torch.full_like(alpha, 0.25))
    for b in range(3):
        kernel = torch.einsum("k,koihw->oihw", alpha[b], conv.weight)
        ref = F.conv2d(x[b : b + 1], kernel, alpha[b] @ conv.bias, padding=1)
        torch.testing.assert_close(y[b : b + 1], ref, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(conv(x[b : b + 1].contiguous()), y[b : b + 1], rtol=1e-5, atol=1e-5)


def test_dynamic_conv_official_layout_and_param_count():
    conv = DynamicConv2d(64, 128, 3, stride=2, padding=1, bias=False)
    assert set(conv.state_dict()) == {"weight", "attention.fc1.weight", "attention.fc2.weight", "attention.fc2.bias"}
    assert conv.weight.shape == (4, 128, 64, 3, 3)
    assert conv.attention.fc1.out_channels == int(64 * 0.25) + 1
    assert DynamicConv2d(3, 64, 7, bias=False).attention.fc1.out_channels == 4  # RGB input: hidden = K
    assert set(DynamicConv2d(4, 4, 3).state_dict()) >= {"bias"}
    # ResNet18 with every conv dynamic (dyresnet18-skip-1222, 10 classes): the official model has 44,995,394.
    convs = [(3, 64, 7)] + [(64, 64, 3)] * 4
    for cin, cout in [(64, 128), (128, 256), (256, 512)]:
        convs += [(cin, cout, 3), (cout, cout, 3), (cin, cout, 1), (cout, cout, 3), (cout, cout, 3)]
    total = sum(n_params(DynamicConv2d(cin, cout, k, bias=False)) for cin, cout, k in convs)
    bn_channels = [64] + [64] * 4 + [c for c in (128, 256, 512) for _ in range(5)]
    total += sum(2 * c for c in bn_channels) + 512 * 10 + 10
    assert total == 44_995_394


def test_dynamic_conv_temperature():
    model = nn.Sequential(DynamicConv2d(4, 4, 3), nn.ReLU(), DynamicConv2d(4, 4, 1))
    assert model[0].temperature == 34  # never annealed unless asked (B12)
    model(torch.randn(2, 4, 5, 5))
    assert model[0].temperature == 34
    assert anneal_temperature(model) == 2
    assert model[0].temperature == model[2].temperature == 31
    for _ in range(20):
        model[0].update_temperature()
    assert model[0].temperature == 1


def test_dynamic_conv_errors():
    with pytest.raises(ValueError, match="divisible by groups=3"):
        DynamicConv2d(8, 8, 3, groups=3)
    with pytest.raises(ValueError, match="expects 8 input channels, got 4"):
        DynamicConv2d(8, 8, 3)(torch.randn(2, 4, 5, 5))
