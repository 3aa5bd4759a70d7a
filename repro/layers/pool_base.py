"""The weighted-pooling wrapper shared by LIP, the self-attentive family and their ablations (reference_spec §2.0)."""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from repro.layers.exp_sigmoid_pool import exp_sigmoid_pool, fused_pool_applies


class _NormalizedWeightedPool(torch.autograd.Function):
    """``avg(x * w) / avg(w)`` over non-overlapping ``s x s`` windows (trailing rows/columns dropped, as
    ``AvgPool2d``), with a hand-written backward that needs a few elementwise passes instead of autograd's chain
    of mul, two pools, div and their backwards."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, stride: int) -> torch.Tensor:
        num = F.avg_pool2d(x * weight, stride, stride)
        den = F.avg_pool2d(weight, stride, stride)
        y = num / den
        ctx.save_for_backward(x, weight, den, y)
        ctx.stride = stride
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        x, weight, den, y = ctx.saved_tensors
        s = ctx.stride
        b, c, out_h, out_w = y.shape
        # dy/d(x w) = 1 / (s² den) and dy/dw = x / (s² den) - y / (s² den) on every pixel of the window.
        g_num = grad / (den * (s * s))
        g_den = g_num * y
        up_shape = (b, c, out_h, s, out_w, s)
        g_num = g_num[:, :, :, None, :, None].expand(up_shape)
        g_den = g_den[:, :, :, None, :, None].expand(up_shape)
        crop = (slice(None), slice(None), slice(0, out_h * s), slice(0, out_w * s))

        def windows(t: torch.Tensor) -> torch.Tensor:
            return t[crop].unflatten(3, (out_w, s)).unflatten(2, (out_h, s))

        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_x = _uncrop(torch.mul(g_num, windows(weight)), x.shape)
        if ctx.needs_input_grad[1]:
            grad_w = _uncrop(torch.mul(g_num, windows(x)).sub_(g_den), weight.shape)
        return grad_x, grad_w, None


def _uncrop(windows: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """(B, C, H', s, W', s) window gradients → (B, C, H, W), zero on the rows/columns the pooling dropped."""
    b, c, out_h, s, out_w, _ = windows.shape
    flat = windows.reshape(b, c, out_h * s, out_w * s)
    if flat.shape == shape:
        return flat
    full = flat.new_zeros(shape)
    full[:, :, : out_h * s, : out_w * s] = flat
    return full


class WeightedPool2d(nn.Module):
    """Pool ``x`` with positive weights ``w = weight_net(x)`` over non-overlapping ``stride x stride`` windows.

    ``win_norm=True``:  ``y = avg(x * w) / avg(w)`` (a soft-max over each window when ``w = exp(z)``).
    ``win_norm=False``: ``y = avg(x * w)`` (the official ``nowin`` form, unnormalised).

    The weight network sits at ``logit.pool_weight`` so that state-dict keys match the official code and
    visualisation hooks can find it by name. A weight network whose last steps are ``exp(sigmoid(z))`` can offer
    ``exp_sigmoid_logits(x) -> z | None``; with ``win_norm`` and no hooks on it, the pooling then applies the tail
    itself, fused (:mod:`repro.layers.exp_sigmoid_pool`).
    """

    def __init__(self, weight_net: nn.Module, stride: int, win_norm: bool = True) -> None:
        super().__init__()
        self.stride = int(stride)
        self.win_norm = bool(win_norm)
        self.logit = nn.Sequential(OrderedDict([("pool_weight", weight_net)]))
        self.pool = nn.AvgPool2d(kernel_size=self.stride, stride=self.stride, padding=0)

    @property
    def weight_net(self) -> nn.Module:
        return self.logit.pool_weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.win_norm and self._may_fuse():
            logits = self.weight_net.exp_sigmoid_logits(x)
            if logits is not None:
                if fused_pool_applies(x, logits):
                    return exp_sigmoid_pool(x, logits, self.stride)
                return _NormalizedWeightedPool.apply(x, torch.exp(torch.sigmoid(logits)), self.stride)
        weight = self.logit(x)
        if self.win_norm:
            return _NormalizedWeightedPool.apply(x, weight, self.stride)
        return self.pool(x * weight)

    def _may_fuse(self) -> bool:
        """Whether the weight network offers ``exp_sigmoid_logits`` and no hook expects its module call."""
        net = self.weight_net
        if not hasattr(net, "exp_sigmoid_logits"):
            return False
        hooked = (self.logit, net)
        if any(m._forward_hooks or m._forward_pre_hooks for m in hooked):
            return False
        return not (nn.modules.module._global_forward_hooks or nn.modules.module._global_forward_pre_hooks)

    def extra_repr(self) -> str:
        return f"stride={self.stride}, win_norm={self.win_norm}"
