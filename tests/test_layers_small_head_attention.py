"""The compiled small-head attention kernels equal softmax attention (forward and gradients), and are used exactly
where they apply."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from repro.layers import create_pool
from repro.layers import small_head_attention as sha
from repro.metrics.macs import MacCounter

TOL = 1e-5


def _reference(qkv: torch.Tensor, heads: int) -> torch.Tensor:
    b, n, three_e = qkv.shape
    q, k, v = qkv.view(b, n, 3, heads, three_e // (3 * heads)).permute(2, 0, 3, 1, 4).unbind(0)
    return F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, three_e // 3)


@pytest.mark.parametrize(
    ("batch", "tokens", "heads", "head_dim"),
    [
        (2, 1, 1, 8),
        (2, 7, 3, 3),
        (1, 65, 2, 8),
        (3, 130, 4, 3),
        (2, 256, 8, 8),
        (1, 33, 2, 12),
        (2, 70, 1, 16),
        (1, 99, 2, 32),
    ],
)
def test_forward_and_gradients_match_exact_attention(batch, tokens, heads, head_dim):
    """Within 1e-5 of float64 attention (gradients relative to the largest one, at least 1); row blocks of 64
    queries are crossed at 65 and 130 tokens, groups of 4 rows end early at 1, 7, 33, 65, 99 tokens, head sizes
    cover whole and partial channel chunks of 8 (3, 12) and odd ones, and B·h ≤ 2 makes the backward split
    the queries of each head (:func:`repro.layers.small_head_attention.query_splits`)."""
    g = torch.Generator().manual_seed(tokens)
    qkv = (torch.randn(batch, tokens, 3 * heads * head_dim, generator=g) * 2).requires_grad_(True)
    grad = torch.randn(batch, tokens, heads * head_dim, generator=g)
    assert sha.kernel_applies(qkv, heads)
    out = sha.packed_self_attention(qkv, heads)
    (grad_qkv,) = torch.autograd.grad(out, qkv, grad)
    exact_in = qkv.detach().double().requires_grad_(True)
    exact = _reference(exact_in, heads)
    (exact_grad,) = torch.autograd.grad(exact, exact_in, grad.double())
    assert out.shape == (batch, tokens, heads * head_dim)
    assert (out.double() - exact).abs().max().item() <= TOL
    scale = max(1.0, exact_grad.abs().max().item())  # float32 SDPA itself is off by ~2e-6 x the largest gradient
    assert (grad_qkv.double() - exact_grad).abs().max().item() <= TOL * scale


def test_large_logits_stay_finite_and_as_accurate_as_sdpa():
    """Scores of several hundred: the max-subtraction and the stored log-sum-exp keep every exp in range, and the
    result is as far from float64 as float32 SDPA's, in order of magnitude (the scores carry the same rounding)."""
    g = torch.Generator().manual_seed(0)
    qkv = (torch.randn(1, 50, 3 * 8, generator=g) * 12).requires_grad_(True)
    grad = torch.randn(1, 50, 8, generator=g)
    exact_in = qkv.detach().double().requires_grad_(True)
    exact = _reference(exact_in, 1)
    (exact_grad,) = torch.autograd.grad(exact, exact_in, grad.double())
    errors = {}
    for name, fn in (("kernel", sha.packed_self_attention), ("sdpa", _reference)):
        out = fn(qkv, 1)
        (grad_qkv,) = torch.autograd.grad(out, qkv, grad)
        assert torch.isfinite(out).all() and torch.isfinite(grad_qkv).all()
        errors[name] = ((out.double() - exact).abs().max().item(), (grad_qkv.double() - exact_grad).abs().max().item())
    for kernel_error, sdpa_error in zip(errors["kernel"], errors["sdpa"]):
        assert kernel_error <= max(TOL, 4 * sdpa_error)  # the same order: seeds vary the ratio between 0.5 and 3.5


def test_compiled_exp_is_accurate():
    """The vectorisable polynomial exp is within 5e-7 relative (4 float32 ulps) of the exact one, softmax range."""
    xs = np.linspace(-87.0, 0.5, 200_001, dtype=np.float32)
    got = np.array([sha._exp(x) for x in xs[::97]], dtype=np.float64)
    exact = np.exp(xs[::97].astype(np.float64))
    assert np.max(np.abs(got - exact) / exact) < 5e-7


def test_kernel_applies_only_where_it_is_exact_and_visible():
    qkv = torch.randn(2, 10, 3 * 16)
    assert sha.kernel_applies(qkv, 2)  # head size 8
    assert sha.kernel_applies(qkv, 1)  # head size 16
    assert not sha.kernel_applies(torch.randn(2, 10, 3 * 64), 1)  # head size 64 > MAX_HEAD_DIM: SDPA
    assert not sha.kernel_applies(qkv.double(), 2)
    assert not sha.kernel_applies(qkv, 2, dropout=0.1)
    with MacCounter():
        assert not sha.kernel_applies(qkv, 2)  # op counters must see the attention op
    with sha.small_head_kernels(False):
        assert not sha.kernel_applies(qkv, 2)
    assert sha.kernel_applies(qkv, 2)


def test_packed_self_attention_rejects_what_it_cannot_compute():
    with pytest.raises(ValueError, match="float32 CPU"):
        sha.packed_self_attention(torch.randn(1, 4, 24, dtype=torch.float64), 2)
    with pytest.raises(ValueError, match="3·heads·d"):
        sha.packed_self_attention(torch.randn(1, 4, 20), 3)


def test_pool_with_kernels_equals_pool_through_sdpa():
    """In eval mode the fast pool gives the same outputs and gradients with the kernels as with SDPA (C=32, 4 heads:
    d = 8). Train mode, where the restore BatchNorm amplifies float32 rounding, is compared against float64 in
    test_layers_fast_equivalence.py (its pools have d = 4, so they run these kernels)."""
    torch.manual_seed(0)
    pool = create_pool("nlp", 32, 2, heads=4, impl="fast").eval()
    x = torch.randn(2, 32, 12, 12)
    grad = torch.randn(2, 32, 6, 6)

    def run() -> list[torch.Tensor]:
        xi = x.clone().requires_grad_(True)
        y = pool(xi)
        return [y.detach(), *torch.autograd.grad(y, [xi, *pool.parameters()], grad)]

    with_kernels = run()
    with sha.small_head_kernels(False):
        with_sdpa = run()
    scale = max(1.0, max(t.abs().max().item() for t in with_sdpa[1:]))
    for a, b in zip(with_kernels, with_sdpa):
        assert (a - b).abs().max().item() <= TOL * scale


def test_pool_calls_the_kernel(monkeypatch):
    calls = []
    original = sha._SmallHeadAttention.apply

    def spy(*args):
        calls.append(args[1])
        return original(*args)

    monkeypatch.setattr(sha._SmallHeadAttention, "apply", spy)
    create_pool("nlp", 32, 2, heads=4, impl="fast")(torch.randn(1, 32, 8, 8))
    assert calls == [4]


def test_query_splits_give_every_thread_several_work_items():
    assert sha.query_splits(batch_heads=64, tokens=1024, threads=2) == 1
    assert sha.query_splits(batch_heads=2, tokens=1024, threads=2) == 4
    assert sha.query_splits(batch_heads=1, tokens=40, threads=8) == 2  # at least 16 query rows per range
    assert sha.query_splits(batch_heads=1, tokens=3, threads=2) == 1


@pytest.mark.parametrize("threads", [1, 2])
def test_split_backward_equals_unsplit_backward(threads, monkeypatch):
    """Partial dK, dV per query range, summed: the same gradients as one range per head."""
    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(3)
    qkv = torch.randn(1, 90, 3 * 2 * 12, generator=g).requires_grad_(True)
    grad = torch.randn(1, 90, 2 * 12, generator=g)
    (split,) = torch.autograd.grad(sha.packed_self_attention(qkv, 2), qkv, grad)
    monkeypatch.setattr(sha, "query_splits", lambda *args: 1)
    (whole,) = torch.autograd.grad(sha.packed_self_attention(qkv, 2), qkv, grad)
    assert (split - whole).abs().max().item() <= 1e-6 * whole.abs().max().item()
