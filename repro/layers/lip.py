"""Local Importance-based Pooling (LIP): the SAP repository's ``lip`` and the LIP paper's operator ``lip_orig``.

Both pool with positive weights ``w = exp(logit(x))``: ``y = A(x ⊙ w) / A(w)`` (reference_spec §2.4).

``lip`` (SAP repository, the faithful baseline):
    ``logit = Sigmoid(BN(Conv1x1_{C→C}(x)))`` (conv with bias), non-overlapping windows kernel = stride = s,
    always window-normalised (the official factory ignores ``win_norm``). Parameters: C² + 3C.

``lip_orig`` (Gao et al., ICCV 2019, "SimplifiedLIP"):
    ``logit = 12·sigmoid(InstanceNorm(Conv3x3_{C→C}(x)))`` (no conv bias, conv zero-initialised, affine IN), pooled
    over **overlapping** windows. For the registry's stride ``s`` the default window is kernel ``2s−1`` with padding
    ``s−1``: each window is centred on a stride-grid point and reaches up to, but not onto, the neighbouring grid
    points. ``s = 2`` gives exactly the paper's kernel 3, stride 2, padding 1. The zero padding enters numerator and
    denominator alike, so padded positions carry no weight. With ``floor_output=True`` (default) a trailing row or
    column that only the padding creates (odd sizes) is dropped, so the output is (B, C, ⌊H/s⌋, ⌊W/s⌋) like every
    other registered pool; ``floor_output=False`` keeps the paper's ⌈H/s⌉. At initialisation the logits are constant,
    so the layer is exactly an average pool over the valid pixels of each window.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from repro.layers.create_pool import register_pool
from repro.layers.pool_base import WeightedPool2d
from repro.layers.standard import check_ignored_cfg, check_stride


class LIPWeight(nn.Module):
    """SAP-repo LIP weight net: ``exp(Sigmoid(BN(Conv1x1(x))))`` (official key layout ``logit.{0,1}``)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.logit = nn.Sequential(
            nn.Conv2d(channels, channels, kernel_size=1, stride=1, padding=0, bias=True),
            nn.BatchNorm2d(channels),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.exp(self.logit(x))


class SoftGate(nn.Module):
    """``coeff · sigmoid(x)``: the LIP paper's logit gate, so that ``exp(logit)`` lies in (1, e^coeff)."""

    def __init__(self, coeff: float = 12.0) -> None:
        super().__init__()
        self.coeff = float(coeff)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(x) * self.coeff

    def extra_repr(self) -> str:
        return f"coeff={self.coeff}"


class SimplifiedLIPWeight(nn.Module):
    """The LIP paper's SimplifiedLIP weight net: ``exp(SoftGate(IN(Conv3x3(x))))`` with a zero-initialised conv."""

    def __init__(self, channels: int, coeff: float = 12.0) -> None:
        super().__init__()
        self.logit = nn.Sequential(
            OrderedDict(
                [
                    ("conv", nn.Conv2d(channels, channels, kernel_size=3, padding=1, bias=False)),
                    ("bn", nn.InstanceNorm2d(channels, affine=True)),
                    ("gate", SoftGate(coeff)),
                ]
            )
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Zero the conv (the paper's ``init_layer``) so that every weight is equal: an average pool."""
        nn.init.zeros_(self.logit.conv.weight)
        self.logit.bn.reset_parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.exp(self.logit(x))


class LIP2d(nn.Module):
    """Weighted pooling over overlapping windows: ``y = A_{k,s,p}(x ⊙ w) / A_{k,s,p}(w)`` with ``w = weight_net(x)``.

    ``kernel_size`` defaults to ``2·stride − 1`` and the padding is ``(kernel_size − 1) // 2``. With
    ``floor_output`` the output is cropped to (⌊H/s⌋, ⌊W/s⌋). The weight net sits at ``logit.pool_weight``, like the
    other weighted pools, so visualisation hooks find it by the same name.
    """

    def __init__(
        self, weight_net: nn.Module, stride: int = 2, kernel_size: int | None = None, floor_output: bool = True
    ) -> None:
        super().__init__()
        self.stride = check_stride("lip_orig", stride)
        self.kernel_size = 2 * self.stride - 1 if kernel_size is None else int(kernel_size)
        if self.kernel_size < self.stride:
            raise ValueError(
                f"lip_orig kernel_size={self.kernel_size} is smaller than stride={self.stride}, which would skip "
                f"pixels; use kernel_size >= stride (default 2*stride-1 = {2 * self.stride - 1})"
            )
        if self.stride == 1 and self.kernel_size % 2 == 0:
            raise ValueError(f"lip_orig with stride 1 needs an odd kernel_size to keep the size, got {kernel_size}")
        self.padding = (self.kernel_size - 1) // 2
        self.floor_output = bool(floor_output)
        self.logit = nn.Sequential(OrderedDict([("pool_weight", weight_net)]))

    @property
    def weight_net(self) -> nn.Module:
        return self.logit.pool_weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.logit(x)
        k, s, p = self.kernel_size, self.stride, self.padding
        y = F.avg_pool2d(x * weight, k, s, p) / F.avg_pool2d(weight, k, s, p)
        if self.floor_output:
            y = y[..., : x.shape[-2] // s, : x.shape[-1] // s]
        return y

    def extra_repr(self) -> str:
        return (
            f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
            f"floor_output={self.floor_output}"
        )


@register_pool("lip")
def lip(channels: int, stride: int, **cfg) -> WeightedPool2d:
    """SAP-repo LIP (non-overlapping windows, always window-normalised; self-attentive settings ignored)."""
    check_ignored_cfg("lip", cfg)
    return WeightedPool2d(LIPWeight(channels), check_stride("lip", stride), win_norm=True)


@register_pool("lip_orig")
def lip_orig(channels: int, stride: int, kernel_size: int | None = None, floor_output: bool = True, **cfg) -> LIP2d:
    """The LIP paper's SimplifiedLIP (overlapping windows, kernel ``2s−1`` by default; see the module docstring)."""
    check_ignored_cfg("lip_orig", cfg)
    return LIP2d(SimplifiedLIPWeight(channels), stride, kernel_size=kernel_size, floor_output=floor_output)
