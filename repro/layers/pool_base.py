"""The weighted-pooling wrapper shared by LIP, the self-attentive family and their ablations (reference_spec §2.0)."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn


class WeightedPool2d(nn.Module):
    """Pool ``x`` with positive weights ``w = weight_net(x)`` over non-overlapping ``stride x stride`` windows.

    ``win_norm=True``:  ``y = avg(x * w) / avg(w)`` (a soft-max over each window when ``w = exp(z)``).
    ``win_norm=False``: ``y = avg(x * w)`` (the official ``nowin`` form, unnormalised).

    The weight network sits at ``logit.pool_weight`` so that state-dict keys match the official code and
    visualisation hooks can find it by name.
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
        weight = self.logit(x)
        if self.win_norm:
            return self.pool(x * weight) / self.pool(weight)
        return self.pool(x * weight)

    def extra_repr(self) -> str:
        return f"stride={self.stride}, win_norm={self.win_norm}"
