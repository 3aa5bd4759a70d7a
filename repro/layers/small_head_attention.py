"""Multi-head self-attention for small head sizes on the CPU, forward and backward, as compiled loops.

At the head sizes of the self-attentive pools (d = C/h = 8 in the default ResNet and MobileNet stages) the CPU
flash kernel behind ``F.scaled_dot_product_attention`` spends its time in matrix products whose inner or outer
dimension is d, where BLAS is far from its peak. Written as loops over the keys (vectorised over keys, unrolled
over the d head channels) the same computation runs in a few passes over data that stays in the L1/L2 cache:

* forward, per query row i: ``s_j = q_i·k_j / √d``, ``p_j = exp(s_j - max s)``, ``o_i = Σ p_j v_j / Σ p_j`` and
  the log-sum-exp ``L_i`` is kept;
* backward, per row i: ``p_j = exp(s_j - L_i)`` is recomputed, ``ds_j = p_j (dO_i·v_j - dO_i·o_i)``, then
  ``dq_i = Σ ds_j k_j / √d``, ``dk_j += ds_j q_i / √d``, ``dv_j += p_j dO_i``.

The exponential is a Cephes-style polynomial (relative error below 3e-7) so that the compiler can vectorise it.
The kernels are compiled by numba on first use for each head size (a few seconds, cached on disk).

:func:`packed_self_attention` takes the packed ``in_proj`` output ``(B, N, 3E)`` and returns the concatenated heads
``(B, N, E)``; :func:`kernel_applies` says when it is used instead of ``F.scaled_dot_product_attention``
(float32 CPU tensors, no dropout, head size ≤ :data:`MAX_HEAD_DIM`, not under tracing, compilation or a dispatch
mode such as the MAC counter, and numba importable).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import torch
from torch.autograd.function import once_differentiable
from torch.utils._python_dispatch import _get_current_dispatch_mode

try:
    import numba
except ImportError:  # pragma: no cover - numba is a dependency; without it every call falls back to SDPA
    numba = None

__all__ = [
    "MAX_HEAD_DIM",
    "kernel_applies",
    "kernels_enabled",
    "packed_self_attention",
    "set_kernels_enabled",
    "small_head_kernels",
]

MAX_HEAD_DIM = 8
"""Largest head size that uses these kernels; from d = 16 on, the BLAS-based flash kernel is faster (measured with
``python -m repro.bench attention``, docs/performance.md)."""

_ROW_BLOCK = 64  # query rows per parallel work item of the forward kernel
_enabled = True


_LOG2E = np.float32(math.log2(math.e))
_LN2_HI = np.float32(0.693359375)
_LN2_LO = np.float32(-2.12194440e-4)
_C5, _C4, _C3, _C2, _C1, _C0 = (
    np.float32(c) for c in (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1, 0.5)
)


def _exp(x):  # pragma: no cover - compiled
    """``exp`` for float32 arguments ≤ 88 (Cephes ``expf``: 2ⁿ·P(r), |r| ≤ ln2/2), inlinable and vectorisable."""
    x = max(x, np.float32(-87.3))
    n = np.floor(x * _LOG2E + np.float32(0.5))
    r = x - n * _LN2_HI - n * _LN2_LO
    y = ((((_C5 * r + _C4) * r + _C3) * r + _C2) * r + _C1) * r + _C0
    y = y * r * r + r + np.float32(1.0)
    return y * np.int32((np.int32(n) + 127) << 23).view(np.float32)


if numba is not None:
    _exp = numba.njit(fastmath=True, cache=True, inline="always")(_exp)


def kernels_enabled() -> bool:
    """Whether :func:`kernel_applies` may return True (numba present and not switched off)."""
    return _enabled and numba is not None


def set_kernels_enabled(enabled: bool) -> None:
    """Switch the kernels on or off process-wide (off: every attention goes through SDPA)."""
    global _enabled
    _enabled = bool(enabled)


@contextmanager
def small_head_kernels(enabled: bool) -> Iterator[None]:
    """Context manager that switches the kernels on or off temporarily (e.g. to time or audit the SDPA path)."""
    previous = _enabled
    set_kernels_enabled(enabled)
    try:
        yield
    finally:
        set_kernels_enabled(previous)


def kernel_applies(qkv: torch.Tensor, heads: int, dropout: float = 0.0) -> bool:
    """Whether :func:`packed_self_attention` can replace SDPA for this packed ``(B, N, 3E)`` projection."""
    if not kernels_enabled() or dropout > 0.0:
        return False
    if qkv.device.type != "cpu" or qkv.dtype != torch.float32 or qkv.dim() != 3 or qkv.shape[-1] % (3 * heads):
        return False
    if qkv.shape[-1] // (3 * heads) > MAX_HEAD_DIM:
        return False
    if torch.jit.is_tracing() or torch.jit.is_scripting() or torch.compiler.is_compiling():
        return False
    return _get_current_dispatch_mode() is None


def packed_self_attention(qkv: torch.Tensor, heads: int) -> torch.Tensor:
    """Softmax attention of the packed projection ``qkv`` (B, N, 3E) = [Q | K | V] with ``heads`` heads of size
    d = E/heads and scale 1/√d; returns the concatenated heads (B, N, E) (before any output projection)."""
    if qkv.device.type != "cpu" or qkv.dtype != torch.float32:
        raise ValueError(f"packed_self_attention needs a float32 CPU tensor, got {qkv.dtype} on {qkv.device}")
    if qkv.dim() != 3 or heads < 1 or qkv.shape[-1] % (3 * heads):
        raise ValueError(f"expected a (B, N, 3·heads·d) projection for {heads} heads, got shape {tuple(qkv.shape)}")
    return _SmallHeadAttention.apply(qkv, heads)


class _SmallHeadAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, qkv: torch.Tensor, heads: int) -> torch.Tensor:
        b, n, three_e = qkv.shape
        e = three_e // 3
        d = e // heads
        packed = qkv.detach().contiguous().view(b, n, 3, heads, d)
        k_t, v_t = _keys_last(packed, 1), _keys_last(packed, 2)
        out = qkv.new_empty(b, n, heads, d)
        lse = qkv.new_empty(b, heads, n)
        forward_kernel, _ = _kernels(d)
        with _numba_threads():
            forward_kernel(packed.numpy(), k_t.numpy(), v_t.numpy(), np.float32(d**-0.5), out.numpy(), lse.numpy())
        out = out.view(b, n, e)
        ctx.save_for_backward(packed, k_t, v_t, out, lse)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: torch.Tensor):
        packed, k_t, v_t, out, lse = ctx.saved_tensors
        b, n, _, heads, d = packed.shape
        grad = grad_out.detach().contiguous().view(b, n, heads, d)
        grad_qkv = packed.new_empty(b, n, 3, heads, d)
        grad_k_t = torch.empty_like(k_t)
        grad_v_t = torch.empty_like(v_t)
        _, backward_kernel = _kernels(d)
        with _numba_threads():
            backward_kernel(
                packed.numpy(),
                k_t.numpy(),
                v_t.numpy(),
                out.detach().view(b, n, heads, d).numpy(),
                grad.numpy(),
                lse.numpy(),
                np.float32(d**-0.5),
                grad_qkv.numpy(),
                grad_k_t.numpy(),
                grad_v_t.numpy(),
            )
        grad_qkv[:, :, 1] = grad_k_t.permute(0, 3, 1, 2)
        grad_qkv[:, :, 2] = grad_v_t.permute(0, 3, 1, 2)
        return grad_qkv.view(b, n, 3 * heads * d), None


def _keys_last(packed: torch.Tensor, which: int) -> torch.Tensor:
    """K or V of a packed (B, N, 3, h, d) projection as a contiguous (B, h, d, N) copy (keys along the last axis)."""
    return packed[:, :, which].permute(0, 2, 3, 1).contiguous()


@contextmanager
def _numba_threads():
    """Run numba's parallel loops on as many threads as PyTorch's intra-op pool."""
    previous = numba.get_num_threads()
    numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))
    try:
        yield
    finally:
        numba.set_num_threads(previous)


@functools.cache
def _kernels(head_dim: int) -> tuple[Callable, Callable]:
    """(forward, backward) compiled for one head size; the head size is a compile-time constant so that the loops
    over it unroll and the loops over keys vectorise."""
    return _build_kernels(head_dim, _ROW_BLOCK)


def _build_kernels(head_dim: int, row_block: int) -> tuple[Callable, Callable]:
    jit = functools.partial(numba.njit, fastmath=True, cache=True, parallel=True)
    dim = head_dim

    @jit
    def forward(qkv, k_t, v_t, scale, out, lse):  # pragma: no cover - compiled
        batch, tokens, _, heads, _ = qkv.shape
        blocks = (tokens + row_block - 1) // row_block
        for item in numba.prange(batch * heads * blocks):
            b = item // (heads * blocks)
            h = (item // blocks) % heads
            start = (item % blocks) * row_block
            keys, values = k_t[b, h], v_t[b, h]
            q = np.empty(dim, np.float32)
            scores = np.empty(tokens, np.float32)
            for i in range(start, min(start + row_block, tokens)):
                for c in range(dim):
                    q[c] = qkv[b, i, 0, h, c] * scale
                for j in range(tokens):
                    acc = np.float32(0)
                    for c in range(dim):
                        acc += q[c] * keys[c, j]
                    scores[j] = acc
                top = np.float32(-np.inf)
                for j in range(tokens):
                    top = max(top, scores[j])
                total = np.float32(0)
                for j in range(tokens):
                    p = _exp(scores[j] - top)
                    scores[j] = p
                    total += p
                inv = np.float32(1) / total
                for c in range(dim):
                    row = values[c]
                    acc = np.float32(0)
                    for j in range(tokens):
                        acc += scores[j] * row[j]
                    out[b, i, h, c] = acc * inv
                lse[b, h, i] = top + np.log(total)

    @jit
    def backward(qkv, k_t, v_t, out, grad_out, lse, scale, grad_qkv, grad_k_t, grad_v_t):  # pragma: no cover
        batch, tokens, _, heads, _ = qkv.shape
        for item in numba.prange(batch * heads):
            b, h = item // heads, item % heads
            keys, values = k_t[b, h], v_t[b, h]
            grad_keys, grad_values = grad_k_t[b, h], grad_v_t[b, h]
            grad_keys[:] = 0
            grad_values[:] = 0
            q = np.empty(dim, np.float32)
            g = np.empty(dim, np.float32)
            probs = np.empty(tokens, np.float32)
            grad_scores = np.empty(tokens, np.float32)
            for i in range(tokens):
                delta = np.float32(0)
                for c in range(dim):
                    q[c] = qkv[b, i, 0, h, c] * scale
                    g[c] = grad_out[b, i, h, c]
                    delta += g[c] * out[b, i, h, c]
                normaliser = lse[b, h, i]
                for j in range(tokens):
                    acc = np.float32(0)
                    for c in range(dim):
                        acc += q[c] * keys[c, j]
                    probs[j] = acc
                for j in range(tokens):
                    acc = np.float32(0)
                    for c in range(dim):
                        acc += g[c] * values[c, j]
                    grad_scores[j] = acc
                for j in range(tokens):
                    p = _exp(probs[j] - normaliser)
                    probs[j] = p
                    grad_scores[j] = p * (grad_scores[j] - delta)
                for c in range(dim):
                    key_row, grad_key_row, grad_value_row = keys[c], grad_keys[c], grad_values[c]
                    qc, gc = q[c], g[c]
                    acc = np.float32(0)
                    for j in range(tokens):
                        ds = grad_scores[j]
                        acc += ds * key_row[j]
                        grad_key_row[j] += ds * qc
                        grad_value_row[j] += probs[j] * gc
                    grad_qkv[b, i, 0, h, c] = acc * scale

    return forward, backward
