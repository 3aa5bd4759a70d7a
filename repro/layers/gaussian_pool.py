"""Gaussian-based pooling (Kobayashi, NeurIPS 2019) as used by the SAP repository (reference_spec §2.5).

``y = μ₀ + W · σ₀`` where μ₀ and σ₀ are the mean and standard deviation of each s×s window and the per-channel
weight ``W`` comes from the global context of the input:

* ``Z = ReLU(BN(Conv1x1_{C→h}(GAP(x))))`` with h = ⌊C/2⌋,
* ``M = BN(Conv1x1_{h→C}(Z))``, ``S = Sigmoid(BN(Conv1x1_{h→C}(Z)))``,
* training: ``W = softplus(M + S·ε)``, ε ~ N(0, 1) of shape (B, C, H/s, W/s) for ``'HWCN'`` (the SAP setting) or
  (B, C, 1, 1) for ``'CN'``; ``stochasticity=None`` or evaluation mode: ``W = softplus(M)`` (deterministic).

The BNs act on 1×1 maps, so training needs more than one sample per device (B20).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from repro.layers.create_pool import register_pool
from repro.layers.standard import check_ignored_cfg, check_stride

STOCHASTICITIES = ("HWCN", "CN", None)


class GaussianPool2d(nn.Module):
    """Gaussian pooling with kernel = stride = ``stride``, padding 0, floor mode (official attribute names)."""

    def __init__(
        self,
        channels: int,
        stride: int = 2,
        hidden: int | None = None,
        stochasticity: str | None = "HWCN",
        eps: float = 1e-6,
    ) -> None:
        super().__init__()
        if stochasticity not in STOCHASTICITIES:
            raise ValueError(f"GaussianPool2d stochasticity must be one of {STOCHASTICITIES}, got {stochasticity!r}")
        self.stride = check_stride("gaussian_pool", stride)
        self.hidden = channels // 2 if hidden is None else int(hidden)
        if self.hidden < 1:
            raise ValueError(f"GaussianPool2d needs a hidden width >= 1 (channels // 2 by default), got {self.hidden}")
        self.stochasticity = stochasticity
        self.eps = float(eps)
        self.ToHidden = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(channels, self.hidden, kernel_size=1, bias=True),
            nn.BatchNorm2d(self.hidden),
            nn.ReLU(),
        )
        self.ToMean = nn.Sequential(
            nn.Conv2d(self.hidden, channels, kernel_size=1, bias=True),
            nn.BatchNorm2d(channels),
        )
        self.ToSigma = nn.Sequential(
            nn.Conv2d(self.hidden, channels, kernel_size=1, bias=True),
            nn.BatchNorm2d(channels),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and x.shape[0] == 1:
            raise ValueError(
                "GaussianPool2d cannot train on a batch of 1: its BatchNorm layers normalise 1x1 (globally pooled) "
                "maps, so one sample gives one value per channel and no batch statistics. Use a per-device batch "
                "size > 1, or call .eval() for inference."
            )
        s = self.stride
        mean = F.avg_pool2d(x, s, s, 0)
        var = F.avg_pool2d(x * x, s, s, 0) - mean * mean
        std = torch.sqrt(torch.clamp(var, min=self.eps))
        z = self.ToHidden(x)
        logit = self.ToMean(z)
        if self.training and self.stochasticity is not None:
            noise_shape = std.shape if self.stochasticity == "HWCN" else (*std.shape[:2], 1, 1)
            noise = torch.randn(noise_shape, dtype=std.dtype, device=std.device)
            logit = logit + self.ToSigma(z) * noise
        return mean + F.softplus(logit) * std

    def extra_repr(self) -> str:
        return f"stride={self.stride}, hidden={self.hidden}, stochasticity={self.stochasticity!r}, eps={self.eps}"


@register_pool("gaussian_pool")
def gaussian_pool(channels: int, stride: int, stochasticity: str | None = "HWCN", **cfg) -> GaussianPool2d:
    """GaussianPool as in the SAP repository (``stochasticity='HWCN'``; self-attentive settings ignored).

    ``create_pool`` drops ``None`` settings, so pass ``stochasticity="none"`` for the deterministic variant.
    """
    check_ignored_cfg("gaussian_pool", cfg)
    if isinstance(stochasticity, str) and stochasticity.lower() == "none":
        stochasticity = None
    return GaussianPool2d(channels, stride, stochasticity=stochasticity)
