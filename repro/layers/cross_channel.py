"""Cross-channel pooling of Condensation-Net (Chen et al., arXiv 2104.14124) — **our reading of the abstract**.

Only the abstract of the paper could be read (reference_spec §2.8). We read "cross-channel pooling" as a Maxout-style
reduction over groups of ``k`` adjacent channels::

    y[:, j] = reduce_{i in [j k, (j + 1) k)} x[:, i]        reduce = max (default) or mean

placed right after a convolution that has ``k * C`` filters, so the layer pair outputs ``C`` channels. "Virtual feature
maps" means the ``k * C`` map is never written to memory: the reduction is applied as the convolution produces each
group of channels. Memory accounting must therefore count only the ``C``-channel output; modules here advertise
this through ``virtual_input_channels_factor = k``.
"""

from __future__ import annotations

import torch
from torch import nn

from repro.layers.create_pool import register_pool

CROSS_CHANNEL_MODES = ("max", "avg")


class CrossChannelPool(nn.Module):
    """Reduce every group of ``k`` adjacent channels to one: (B, k C, H, W) -> (B, C, H, W). No parameters.

    Memory tracers: ``virtual_input_channels_factor`` (= ``k``) says that the input of this module is a *virtual*
    feature map (never stored); the stored map is the output, ``1 / k`` of the input's size.
    """

    def __init__(self, k: int = 2, mode: str = "max") -> None:
        super().__init__()
        if k < 1:
            raise ValueError(f"cross-channel pooling group size k must be >= 1, got {k}")
        if mode not in CROSS_CHANNEL_MODES:
            raise ValueError(f"unknown cross-channel pooling mode {mode!r}; valid: {', '.join(CROSS_CHANNEL_MODES)}")
        self.k, self.mode = int(k), mode

    @property
    def virtual_input_channels_factor(self) -> int:
        return self.k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        if c % self.k:
            raise ValueError(
                f"cross-channel pooling with k={self.k} needs a channel count divisible by {self.k}, got {c}; "
                f"give the preceding conv {self.k} * C_out filters"
            )
        groups = x.view(b, c // self.k, self.k, h, w)
        return groups.amax(dim=2) if self.mode == "max" else groups.mean(dim=2)

    def extra_repr(self) -> str:
        return f"k={self.k}, mode={self.mode!r}"


class CondensedConv2d(nn.Module):
    """A convolution with ``k * out_channels`` filters followed by :class:`CrossChannelPool` (Condensation-Net block).

    The ``k * out_channels`` map between the two is virtual (``virtual_input_channels_factor``/``virtual_channels``),
    so the block's stored output is the same size as a plain ``out_channels`` conv while its compute is ``k`` times.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        padding: int | None = None,
        bias: bool = False,
        k: int = 2,
        mode: str = "max",
    ) -> None:
        super().__init__()
        padding = kernel_size // 2 if padding is None else padding
        self.conv = nn.Conv2d(in_channels, k * out_channels, kernel_size, stride, padding, bias=bias)
        self.pool = CrossChannelPool(k, mode)
        self.in_channels, self.out_channels = in_channels, out_channels

    @property
    def virtual_channels(self) -> int:
        """Width of the never-stored intermediate map."""
        return self.conv.out_channels

    @property
    def virtual_input_channels_factor(self) -> int:
        return self.pool.k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.conv(x))


class _CrossChannelSpatialPool(nn.Sequential):
    """Cross-channel pooling followed, when ``stride > 1``, by a ``stride x stride`` max pool (for create_pool)."""

    def __init__(self, k: int, mode: str, stride: int) -> None:
        layers: list[nn.Module] = [CrossChannelPool(k, mode)]
        if stride > 1:
            layers.append(nn.MaxPool2d(stride, stride))
        super().__init__(*layers)

    @property
    def virtual_input_channels_factor(self) -> int:
        return self[0].k


def _factory(mode: str):
    def create(channels: int, stride: int, k: int = 2, **unused) -> nn.Module:
        """``create_pool('cross_channel_<mode>', C, s, k=2)``: input ``k C`` channels -> ``C`` channels, ``H/s x W/s``.

        Unlike the spatial pools, this one changes the channel count: ``channels`` is the *output* width, and the
        preceding conv must produce ``k * channels``.
        """
        if unused:
            raise TypeError(f"cross-channel pooling takes only k, not {', '.join(sorted(unused))}")
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        return _CrossChannelSpatialPool(k, mode, stride)

    return create


register_pool("cross_channel_max")(_factory("max"))
register_pool("cross_channel_avg")(_factory("avg"))
