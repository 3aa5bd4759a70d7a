"""SoftPool (Stergiou et al., ICCV 2021): per-channel softmax-weighted pooling (reference_spec §2.6).

``y = Σ_{i∈R} softmax_R(x)_i · x_i = A(x·eˣ) / A(eˣ)`` over each window R (kernel = stride = s, no padding, floor
mode), computed per channel as in the paper. The SAP repository has no SoftPool.

Numerical stability: the exponent is shifted by the maximum of each window (``torch.softmax``), which leaves the
ratio unchanged and, unlike a shift by the per-(b, c) maximum, also keeps windows far below the channel maximum from
underflowing to 0/0.

Differences from the authors' package, which this module does not reproduce by default:

* its CUDA kernel clamps the running sum at zero, so its output is ≥ 0. ``clamp_nonneg=True`` clamps the final
  output at zero; this equals the CUDA result whenever the partial sums stay non-negative (e.g. after a ReLU);
* its CPU fallback weights each pixel by ``Σ_c exp(x_c)`` (one weight per pixel, summed over channels), a different
  function from the paper's.
"""

from __future__ import annotations

import torch
from torch import nn

from repro.layers.create_pool import register_pool
from repro.layers.standard import check_ignored_cfg, check_stride


class SoftPool2d(nn.Module):
    """Per-channel SoftPool with ``kernel_size`` (default = stride) and ``stride``, no padding, floor mode."""

    def __init__(self, stride: int = 2, kernel_size: int | None = None, clamp_nonneg: bool = False) -> None:
        super().__init__()
        self.stride = check_stride("softpool", stride)
        self.kernel_size = self.stride if kernel_size is None else check_stride("softpool", kernel_size)
        self.clamp_nonneg = bool(clamp_nonneg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, s = self.kernel_size, self.stride
        if x.shape[-2] < k or x.shape[-1] < k:
            raise ValueError(f"SoftPool2d kernel {k} does not fit an input of size {tuple(x.shape[-2:])}")
        windows = x.unfold(2, k, s).unfold(3, k, s).flatten(-2)  # (B, C, H_out, W_out, k*k)
        y = (torch.softmax(windows, dim=-1) * windows).sum(dim=-1)
        return y.clamp_min(0) if self.clamp_nonneg else y

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, clamp_nonneg={self.clamp_nonneg}"


@register_pool("softpool")
def softpool(channels: int, stride: int, clamp_nonneg: bool = False, **cfg) -> SoftPool2d:
    """SoftPool with kernel = stride = ``stride`` (parameter-free; self-attentive settings ignored)."""
    check_ignored_cfg("softpool", cfg)
    return SoftPool2d(stride, clamp_nonneg=clamp_nonneg)
