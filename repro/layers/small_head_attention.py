"""Multi-head self-attention for the head sizes of the self-attentive pools on the CPU, forward and backward, as
compiled loops.

At the head sizes of the pools (d = C/h: 8 with the MINE head counts, 16 in ResNet18's stages, 12-32 with
``headfix2``) the CPU flash kernel behind ``F.scaled_dot_product_attention`` spends its time in matrix products whose
inner or outer dimension is d, where BLAS is far from its peak. Written as loops over the keys (vectorised over keys,
unrolled over the head channels) the same computation runs in a few passes over data that stays in the L1/L2 cache:

* forward, per query row i: ``s_j = q_i·k_j / √d``, ``p_j = exp(s_j - max s)``, ``o_i = Σ p_j v_j / Σ p_j`` and
  the log-sum-exp ``L_i`` is kept;
* backward, per row i: ``p_j = exp(s_j - L_i)`` is recomputed, ``ds_j = p_j (dO_i·v_j - dO_i·o_i)``, then
  ``dq_i = Σ ds_j k_j / √d``, ``dk_j += ds_j q_i / √d``, ``dv_j += p_j dO_i``.

Register blocking: every pass over the keys serves 4 query rows at once (each key or value element is loaded once
for 4 rows, and dk, dv are read and written once for 4 rows), in chunks of 8 head channels (a fully unrolled inner
loop for any d; the forward's weighted sum takes 2 value channels per pass). The forward runs in parallel
(:func:`repro.layers.kernel_threads.run_items`) over (batch, head, block of 64 query rows), the backward over
(batch, head, query range): when B·h gives fewer than 4 work items per thread, the queries of each head are split
(:func:`query_splits`) and every range accumulates its own partial dk, dv, summed afterwards. Rows past the end of a
range repeat its last row with a zero output gradient, so that no tail loop is needed.

The exponential is a Cephes-style polynomial (relative error below 3e-7) so that the compiler can vectorise it.
The kernels are compiled by numba on first use for each head size (about 6 s on 2 cores) and cached on disk
(``__pycache__`` beside this file), after which loading takes well under a second.

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

from repro.layers.kernel_threads import run_items

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

MAX_HEAD_DIM = 32
"""Largest head size that uses these kernels: up to 32 they beat the BLAS-based flash kernel at the pools' token
counts (``python -m repro.bench attention``, docs/performance.md); larger heads go through SDPA."""

_ROW_BLOCK = 64  # query rows per parallel work item of the forward kernel
_CHANNEL_CHUNK = 8  # head channels per vectorised pass over the keys (a fully unrolled inner loop)
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
        items = b * heads * (-(-n // _ROW_BLOCK))
        arrays = packed.numpy(), k_t.numpy(), v_t.numpy(), np.float32(d**-0.5), out.numpy(), lse.numpy()
        run_items(forward_kernel, items, *arrays)
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
        splits = query_splits(b * heads, n, torch.get_num_threads())
        grad_k_t = k_t.new_empty(splits, *k_t.shape)  # one partial dK, dV per query range
        grad_v_t = v_t.new_empty(splits, *v_t.shape)
        _, backward_kernel = _kernels(d)
        run_items(
            backward_kernel,
            b * heads * splits,
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
        grad_k_t, grad_v_t = (t[0] if splits == 1 else t.sum(0) for t in (grad_k_t, grad_v_t))
        grad_qkv[:, :, 1] = grad_k_t.permute(0, 3, 1, 2)
        grad_qkv[:, :, 2] = grad_v_t.permute(0, 3, 1, 2)
        return grad_qkv.view(b, n, 3 * heads * d), None


def _keys_last(packed: torch.Tensor, which: int) -> torch.Tensor:
    """K or V of a packed (B, N, 3, h, d) projection as a contiguous (B, h, d, N) copy (keys along the last axis)."""
    return packed[:, :, which].permute(0, 2, 3, 1).contiguous()


def query_splits(batch_heads: int, tokens: int, threads: int) -> int:
    """Query ranges per (batch, head) in the backward: enough work items for ``4·threads`` (so that a thread that
    the OS preempts does not hold up the others for long), at least 16 query rows each; 1 when B·h suffices."""
    wanted = -(-4 * threads // max(batch_heads, 1))
    return max(1, min(wanted, tokens // 16))


@functools.cache
def _kernels(head_dim: int) -> tuple[Callable, Callable]:
    """(forward, backward) compiled for one head size; the head size is a compile-time constant so that the loops
    over it unroll and the loops over keys vectorise."""
    return _build_kernels(head_dim, _ROW_BLOCK)


if numba is not None:
    _inline = functools.partial(numba.njit, fastmath=True, cache=True, inline="always")
else:  # pragma: no cover - without numba the kernels are never built

    def _inline(fn):
        return fn


@_inline
def _dots(vec, mat, s0, s1, s2, s3, c0, width, accumulate):  # pragma: no cover - compiled
    """``s_r[j] (+)= Σ_{c0 ≤ c < c0+width} vec[r, c]·mat[c, j]`` for the 4 rows r of ``vec``: one pass over the
    columns j of ``mat`` (vectorised over j) that reads each ``mat[c, j]`` once for the 4 rows."""
    for j in range(mat.shape[1]):
        if accumulate:
            a0, a1, a2, a3 = s0[j], s1[j], s2[j], s3[j]
        else:
            a0 = a1 = a2 = a3 = np.float32(0)
        for cc in range(width):
            m = mat[c0 + cc, j]
            a0 += vec[0, c0 + cc] * m
            a1 += vec[1, c0 + cc] * m
            a2 += vec[2, c0 + cc] * m
            a3 += vec[3, c0 + cc] * m
        s0[j] = a0
        s1[j] = a1
        s2[j] = a2
        s3[j] = a3


@_inline
def _row_products(vec, mat, s0, s1, s2, s3, full, rest):  # pragma: no cover - compiled
    """``s_r = vec[r] · mat`` (4 rows of length d times a (d, N) matrix) in passes of ``_CHANNEL_CHUNK``
    channels, so that each pass is a fully unrolled, vectorised loop; ``full`` channels in whole chunks, ``rest``
    in a last shorter one."""
    for c0 in range(0, full, _CHANNEL_CHUNK):
        _dots(vec, mat, s0, s1, s2, s3, c0, _CHANNEL_CHUNK, c0 > 0)
    if rest:
        _dots(vec, mat, s0, s1, s2, s3, full, rest, full > 0)


def _build_kernels(head_dim: int, row_block: int) -> tuple[Callable, Callable]:
    jit = functools.partial(numba.njit, fastmath=True, cache=True, nogil=True, error_model="numpy")
    dim = head_dim
    full = dim - dim % _CHANNEL_CHUNK
    rest = dim % _CHANNEL_CHUNK

    @jit
    def forward(first, last, qkv, k_t, v_t, scale, out, lse):  # pragma: no cover - compiled
        _, tokens, _, heads, _ = qkv.shape
        blocks = (tokens + row_block - 1) // row_block
        for item in range(first, last):
            b = item // (heads * blocks)
            h = (item // blocks) % heads
            start = (item % blocks) * row_block
            stop = min(start + row_block, tokens)
            keys, values = k_t[b, h], v_t[b, h]
            q = np.empty((4, dim), np.float32)
            s0 = np.empty(tokens, np.float32)
            s1 = np.empty(tokens, np.float32)
            s2 = np.empty(tokens, np.float32)
            s3 = np.empty(tokens, np.float32)
            for i in range(start, stop, 4):  # 4 query rows at a time; past ``stop`` the last row is repeated
                for r in range(4):
                    row = min(i + r, stop - 1)
                    for c in range(dim):
                        q[r, c] = qkv[b, row, 0, h, c] * scale
                _row_products(q, keys, s0, s1, s2, s3, full, rest)
                m0 = m1 = m2 = m3 = np.float32(-np.inf)
                for j in range(tokens):
                    m0 = max(m0, s0[j])
                    m1 = max(m1, s1[j])
                    m2 = max(m2, s2[j])
                    m3 = max(m3, s3[j])
                t0 = t1 = t2 = t3 = np.float32(0)
                for j in range(tokens):
                    p0, p1, p2, p3 = _exp(s0[j] - m0), _exp(s1[j] - m1), _exp(s2[j] - m2), _exp(s3[j] - m3)
                    s0[j], s1[j], s2[j], s3[j] = p0, p1, p2, p3
                    t0 += p0
                    t1 += p1
                    t2 += p2
                    t3 += p3
                inv = (np.float32(1) / t0, np.float32(1) / t1, np.float32(1) / t2, np.float32(1) / t3)
                valid = min(4, stop - i)
                for c in range(0, dim, 2):  # two value channels per pass over the keys (odd d: the last twice)
                    c1 = min(c + 1, dim - 1)
                    row_a, row_b = values[c], values[c1]
                    a0 = a1 = a2 = a3 = b0 = b1 = b2 = b3 = np.float32(0)
                    for j in range(tokens):
                        va, vb = row_a[j], row_b[j]
                        x0, x1, x2, x3 = s0[j], s1[j], s2[j], s3[j]
                        a0 += x0 * va
                        a1 += x1 * va
                        a2 += x2 * va
                        a3 += x3 * va
                        b0 += x0 * vb
                        b1 += x1 * vb
                        b2 += x2 * vb
                        b3 += x3 * vb
                    acc_a, acc_b = (a0, a1, a2, a3), (b0, b1, b2, b3)
                    for r in range(valid):
                        out[b, i + r, h, c] = acc_a[r] * inv[r]
                        out[b, i + r, h, c1] = acc_b[r] * inv[r]
                lse_rows = (m0 + np.log(t0), m1 + np.log(t1), m2 + np.log(t2), m3 + np.log(t3))
                for r in range(valid):
                    lse[b, h, i + r] = lse_rows[r]

    @jit
    def backward(  # pragma: no cover - compiled
        first, last, qkv, k_t, v_t, out, grad_out, lse, scale, grad_qkv, grad_k_t, grad_v_t
    ):
        splits, _, heads, _, tokens = grad_k_t.shape
        span = (tokens + splits - 1) // splits
        for item in range(first, last):
            b = item // (heads * splits)
            h = (item // splits) % heads
            split = item % splits
            start, stop = split * span, min((split + 1) * span, tokens)
            keys, values = k_t[b, h], v_t[b, h]
            grad_keys, grad_values = grad_k_t[split, b, h], grad_v_t[split, b, h]
            grad_keys[:] = 0
            grad_values[:] = 0
            q = np.empty((4, dim), np.float32)
            g = np.empty((4, dim), np.float32)
            delta = np.empty(4, np.float32)
            norm = np.empty(4, np.float32)
            p0 = np.empty(tokens, np.float32)
            p1 = np.empty(tokens, np.float32)
            p2 = np.empty(tokens, np.float32)
            p3 = np.empty(tokens, np.float32)
            d0 = np.empty(tokens, np.float32)
            d1 = np.empty(tokens, np.float32)
            d2 = np.empty(tokens, np.float32)
            d3 = np.empty(tokens, np.float32)
            for i in range(start, stop, 4):  # rows past ``stop`` repeat the last one with a zero output gradient
                for r in range(4):
                    row = min(i + r, stop - 1)
                    weight = np.float32(1) if i + r < stop else np.float32(0)
                    acc = np.float32(0)
                    for c in range(dim):
                        q[r, c] = qkv[b, row, 0, h, c] * scale
                        g[r, c] = grad_out[b, row, h, c] * weight
                        acc += g[r, c] * out[b, row, h, c]
                    delta[r] = acc
                    norm[r] = lse[b, h, row]
                _row_products(q, keys, p0, p1, p2, p3, full, rest)  # scores
                _row_products(g, values, d0, d1, d2, d3, full, rest)  # dO·v
                l0, l1, l2, l3 = norm[0], norm[1], norm[2], norm[3]
                e0, e1, e2, e3 = delta[0], delta[1], delta[2], delta[3]
                for j in range(tokens):
                    x0, x1, x2, x3 = _exp(p0[j] - l0), _exp(p1[j] - l1), _exp(p2[j] - l2), _exp(p3[j] - l3)
                    p0[j], p1[j], p2[j], p3[j] = x0, x1, x2, x3
                    d0[j] = x0 * (d0[j] - e0)
                    d1[j] = x1 * (d1[j] - e1)
                    d2[j] = x2 * (d2[j] - e2)
                    d3[j] = x3 * (d3[j] - e3)
                valid = min(4, stop - i)
                for c in range(dim):
                    key_row, grad_key_row, grad_value_row = keys[c], grad_keys[c], grad_values[c]
                    q0, q1, q2, q3 = q[0, c], q[1, c], q[2, c], q[3, c]
                    g0, g1, g2, g3 = g[0, c], g[1, c], g[2, c], g[3, c]
                    a0 = a1 = a2 = a3 = np.float32(0)
                    for j in range(tokens):
                        k = key_row[j]
                        a0 += d0[j] * k
                        a1 += d1[j] * k
                        a2 += d2[j] * k
                        a3 += d3[j] * k
                        grad_key_row[j] += d0[j] * q0 + d1[j] * q1 + d2[j] * q2 + d3[j] * q3
                        grad_value_row[j] += p0[j] * g0 + p1[j] * g1 + p2[j] * g2 + p3[j] * g3
                    acc = (a0, a1, a2, a3)
                    for r in range(valid):
                        grad_qkv[b, i + r, 0, h, c] = acc[r] * scale

    return forward, backward
