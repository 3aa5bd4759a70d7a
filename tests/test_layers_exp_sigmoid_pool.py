"""The fused ``exp(sigmoid(z))``-weighted pooling equals the unfused operations and is used exactly where it applies."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from repro.layers import create_pool
from repro.layers import exp_sigmoid_pool as esp
from repro.layers.nlp import architecture_ops

TOL = 1e-5


def _unfused(x: torch.Tensor, z: torch.Tensor, stride: int) -> torch.Tensor:
    w = torch.exp(torch.sigmoid(z))
    return F.avg_pool2d(x * w, stride, stride) / F.avg_pool2d(w, stride, stride)


@pytest.mark.parametrize(("height", "width", "stride"), [(8, 8, 2), (13, 11, 2), (9, 10, 3), (4, 4, 4)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_matches_float64_unfused_pooling(height, width, stride, channels_last):
    """Outputs and gradients of x and z within 1e-5 of float64 (gradients relative to the largest one), also on the
    rows and columns the pooling drops (zero) and for channels-last inputs."""
    g = torch.Generator().manual_seed(height * width)
    x = torch.randn(2, 3, height, width, generator=g)
    z = torch.randn(2, 3, height, width, generator=g) * 3
    if channels_last:
        x, z = x.to(memory_format=torch.channels_last), z.to(memory_format=torch.channels_last)
    grad = torch.randn(2, 3, height // stride, width // stride, generator=g)
    xi, zi = x.clone().requires_grad_(True), z.clone().requires_grad_(True)
    out = esp.exp_sigmoid_pool(xi, zi, stride)
    assert out.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    got = torch.autograd.grad(out, [xi, zi], grad)
    xd, zd = x.double().requires_grad_(True), z.double().requires_grad_(True)
    exact_out = _unfused(xd, zd, stride)
    exact = torch.autograd.grad(exact_out, [xd, zd], grad.double())
    assert (out.double() - exact_out).abs().max().item() <= TOL
    for a, b in zip(got, exact):
        assert (a.double() - b).abs().max().item() <= TOL * max(1.0, b.abs().max().item())


def test_extreme_logits_stay_finite():
    x = torch.randn(1, 2, 4, 4)
    z = torch.tensor([-500.0, -90.0, 0.0, 90.0, 500.0]).repeat(7)[:32].view(1, 2, 4, 4).requires_grad_(True)
    out = esp.exp_sigmoid_pool(x, z, 2)
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(z.grad).all()
    assert (out - _unfused(x, z.detach(), 2)).abs().max().item() <= TOL


def test_rejects_what_it_cannot_compute():
    with pytest.raises(ValueError, match="float32 CPU"):
        esp.exp_sigmoid_pool(torch.randn(1, 1, 4, 4, dtype=torch.float64), torch.randn(1, 1, 4, 4), 2)
    with pytest.raises(ValueError, match="does not fit"):
        esp.exp_sigmoid_pool(torch.randn(1, 1, 4, 4), torch.randn(1, 1, 4, 4), 5)


@pytest.fixture
def fused_calls(monkeypatch):
    calls: list[int] = []
    original = esp._ExpSigmoidPool.apply
    monkeypatch.setattr(esp._ExpSigmoidPool, "apply", lambda *args: calls.append(args[2]) or original(*args))
    return calls


def test_the_nlp_pool_fuses_its_tail_only_where_the_module_calls_are_not_watched(fused_calls):
    torch.manual_seed(0)
    pool = create_pool("nlp", 16, 2, heads=2, impl="fast")
    x = torch.randn(2, 16, 8, 8)
    fused = pool(x)
    assert fused_calls == [2]
    with architecture_ops():  # profilers and tracers see the module calls
        unfused = pool(x)
    handle = pool.logit.pool_weight.register_forward_hook(lambda *args: None)
    hooked = pool(x)
    handle.remove()
    assert fused_calls == [2]
    assert (fused - unfused).abs().max().item() <= TOL and (fused - hooked).abs().max().item() <= TOL
    create_pool("nlp", 16, 2, heads=2, impl="faithful")(x)
    create_pool("nlpnoexp", 16, 2, heads=2, impl="fast")(x)
    create_pool("nlpnosigmoid", 16, 2, heads=2, impl="fast")(x)
    create_pool("nlp", 16, 2, heads=2, impl="fast", win_norm=False)(x)
    create_pool("dfmnlp", 16, 2, heads=2, impl="fast")(x)  # resamples after exp(sigmoid(.)): not fusable
    assert fused_calls == [2]
