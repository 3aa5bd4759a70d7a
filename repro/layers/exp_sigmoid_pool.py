"""The tail of the self-attentive weight networks fused with the window-normalised pooling, as compiled loops.

``y = avg(x·w) / avg(w)`` over non-overlapping ``s×s`` windows with ``w = exp(sigmoid(z))`` (``z`` the restore
BatchNorm's output): one pass over ``x`` and ``z`` forward, one backward, instead of sigmoid, exp, a product, two
poolings, a division and their backwards (about fifteen passes and as many synchronisations of the thread pool).
The backward recomputes ``w`` from ``z`` and returns

    dx = g·w,    dz = g·(x - y)·w·σ(z)·(1 - σ(z)),    g = dy / Σ_window w

on every pixel of a window (zero on the rows and columns the pooling drops, as ``AvgPool2d``). ``exp`` is the
vectorisable polynomial of :mod:`repro.layers.small_head_attention`. Used by :class:`repro.layers.WeightedPool2d`
when :func:`fused_pool_applies`: float32 CPU tensors, numba importable, not under tracing, compilation or a
dispatch mode; first derivatives only. The output has the input's memory format (channels-last stays
channels-last).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
import torch
from torch.autograd.function import once_differentiable
from torch.utils._python_dispatch import _get_current_dispatch_mode

from repro.layers.kernel_threads import run_items
from repro.layers.small_head_attention import _exp, kernels_enabled, numba

__all__ = ["exp_sigmoid_pool", "fused_pool_applies"]


def fused_pool_applies(x: torch.Tensor, z: torch.Tensor) -> bool:
    """Whether :func:`exp_sigmoid_pool` can replace the unfused operations for these tensors."""
    if not kernels_enabled() or x.shape != z.shape or x.dim() != 4:
        return False
    if any(t.device.type != "cpu" or t.dtype != torch.float32 for t in (x, z)):
        return False
    if torch.jit.is_tracing() or torch.jit.is_scripting() or torch.compiler.is_compiling():
        return False
    return _get_current_dispatch_mode() is None


def exp_sigmoid_pool(x: torch.Tensor, z: torch.Tensor, stride: int) -> torch.Tensor:
    """``avg(x·w) / avg(w)`` over ``stride×stride`` windows with ``w = exp(sigmoid(z))``; see the module docstring."""
    if not fused_pool_applies(x, z):
        raise ValueError(
            f"exp_sigmoid_pool needs two float32 CPU tensors of one 4-d shape, got {x.dtype} {tuple(x.shape)} on "
            f"{x.device} and {z.dtype} {tuple(z.shape)} on {z.device}"
        )
    if stride < 1 or stride > min(x.shape[-2:]):
        raise ValueError(f"stride {stride} does not fit the {tuple(x.shape[-2:])} map")
    return _ExpSigmoidPool.apply(x, z, stride)


class _ExpSigmoidPool(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, z: torch.Tensor, stride: int) -> torch.Tensor:
        b, c, h, w = x.shape
        xd, zd = x.detach().contiguous(), z.detach().contiguous()
        layout = torch.channels_last if _channels_last(x) else torch.contiguous_format
        y = torch.empty(b, c, h // stride, w // stride, memory_format=layout)  # the input's memory format
        total = torch.empty_like(y)
        forward_kernel, _ = _kernels()
        run_items(forward_kernel, b * c, xd.numpy(), zd.numpy(), stride, y.numpy(), total.numpy())
        ctx.save_for_backward(xd, zd, y, total)
        ctx.stride = stride
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        x, z, y, total = ctx.saved_tensors
        grad_x, grad_z = torch.empty_like(x), torch.empty_like(z)
        _, backward_kernel = _kernels()
        run_items(
            backward_kernel,
            x.shape[0] * x.shape[1],
            x.numpy(),
            z.numpy(),
            y.numpy(),
            total.numpy(),
            grad.detach().contiguous().numpy(),
            ctx.stride,
            grad_x.numpy(),
            grad_z.numpy(),
        )
        return grad_x, grad_z, None


def _channels_last(x: torch.Tensor) -> bool:
    return x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


@functools.cache
def _kernels() -> tuple[Callable, Callable]:
    jit = functools.partial(numba.njit, fastmath=True, cache=True, nogil=True, error_model="numpy")
    one = np.float32(1)
    limit = np.float32(80)  # exp(80)·(1 + ...) stays finite; sigmoid(-80) = 1.8e-35 is 0 for the pooling

    @jit
    def forward(first, last, x, z, stride, y, total):  # pragma: no cover - compiled
        channels, width = x.shape[1], x.shape[3]
        out_h, out_w = y.shape[2], y.shape[3]
        for plane in range(first, last):
            b, c = plane // channels, plane % channels
            weight = np.empty(width, np.float32)
            for i in range(out_h):
                num = np.zeros(out_w, np.float32)
                den = np.zeros(out_w, np.float32)
                for di in range(stride):
                    row = i * stride + di
                    zr, xr = z[b, c, row], x[b, c, row]
                    for j in range(width):
                        weight[j] = _exp(one / (one + _exp(min(-zr[j], limit))))
                    for k in range(out_w):
                        for dj in range(stride):
                            j = k * stride + dj
                            num[k] += xr[j] * weight[j]
                            den[k] += weight[j]
                for k in range(out_w):
                    y[b, c, i, k] = num[k] / den[k]
                    total[b, c, i, k] = den[k]

    @jit
    def backward(first, last, x, z, y, total, grad, stride, grad_x, grad_z):  # pragma: no cover - compiled
        _, channels, height, width = x.shape
        out_h, out_w = y.shape[2], y.shape[3]
        for plane in range(first, last):
            b, c = plane // channels, plane % channels
            g = np.empty(width, np.float32)
            mean = np.empty(width, np.float32)
            for row in range(height):
                gx, gz = grad_x[b, c, row], grad_z[b, c, row]
                i = row // stride
                if i >= out_h:  # rows the pooling drops
                    gx[:] = 0
                    gz[:] = 0
                    continue
                g[:] = 0
                mean[:] = 0
                for k in range(out_w):
                    gk = grad[b, c, i, k] / total[b, c, i, k]
                    yk = y[b, c, i, k]
                    for dj in range(stride):
                        g[k * stride + dj] = gk
                        mean[k * stride + dj] = yk
                zr, xr = z[b, c, row], x[b, c, row]
                for j in range(width):
                    s = one / (one + _exp(min(-zr[j], limit)))
                    w = _exp(s)
                    gx[j] = g[j] * w
                    gz[j] = g[j] * (xr[j] - mean[j]) * w * s * (one - s)

    return forward, backward
