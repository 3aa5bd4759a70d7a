"""The probe models of RNNPool App. C: one pooling operator over the whole image, then one FC layer.

* :class:`RNNPoolProbe` (App. C.1, Table 7): an optional conv of 8 filters, 3x3, stride 2 (with BN and ReLU), then
  one RNNPool operator (hidden sizes ``h1``, ``h2``) over the whole map, then one FC layer.
* :func:`single_operator_probe` (App. C.2): the 32x32 image is reduced to 1x1 in one step by an operator with
  patch = stride = the image side and 128 outputs, then one FC layer. ``rnnpool`` (h1 = h2 = 32),
  ``strided_conv`` (128 filters), ``max`` / ``avg`` (pool to 1x1x3, then a 1x1 conv of 128 filters) are the paper's
  operators, built by :func:`repro.models.rnnpool_common.make_downsampler` exactly as the Table 2 blocks are;
  any pool of :func:`repro.layers.create_pool` (``nlp``, ``lip``, ``gaussian_pool``, ``softpool``, ...) can be the
  operator too, followed by the same 1x1 conv as max and avg pooling.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn
from torchvision.ops import Conv2dNormActivation

from repro.layers import create_pool
from repro.layers.rnnpool import GlobalRNNPool2d, pair_hidden, rnnpool_num_params
from repro.models.rnnpool_common import DOWNSAMPLERS, make_downsampler

__all__ = ["C2_PAPER_OPERATORS", "RNNPoolProbe", "probe_num_params", "single_operator_probe"]

C2_PAPER_OPERATORS: tuple[str, ...] = ("rnnpool", "strided_conv", "max", "avg")
"""The operators of App. C.2, in the paper's order."""


class RNNPoolProbe(nn.Module):
    """``[conv 3x3/s2 (conv_channels) - BN - ReLU] -> RNNPool(h1, h2) over the whole map -> FC(4 h2 -> outputs)``."""

    def __init__(
        self,
        in_channels: int,
        num_outputs: int,
        hidden: int | Sequence[int],
        *,
        conv: bool = False,
        conv_channels: int = 8,
        rnn_cell: str = "fastgrnn",
    ) -> None:
        super().__init__()
        self.h1, self.h2 = pair_hidden(hidden)
        self.conv = Conv2dNormActivation(in_channels, conv_channels, 3, stride=2) if conv else nn.Identity()
        self.pool = GlobalRNNPool2d(conv_channels if conv else in_channels, (self.h1, self.h2), rnn_cell=rnn_cell)
        self.fc = nn.Linear(4 * self.h2, num_outputs)

    def forward(self, x):
        return self.fc(self.pool(self.conv(x)).flatten(1))


def probe_num_params(
    in_channels: int, num_outputs: int, h1: int, h2: int, *, conv: bool, conv_channels: int = 8
) -> int:
    """Parameters of a FastGRNN :class:`RNNPoolProbe` without building it (conv weights + BN, RNNPool, FC)."""
    pool_in = conv_channels if conv else in_channels
    conv_params = in_channels * conv_channels * 9 + 2 * conv_channels if conv else 0
    return conv_params + rnnpool_num_params(pool_in, h1, h2) + 4 * h2 * num_outputs + num_outputs


def single_operator_probe(
    operator: str,
    *,
    in_channels: int = 3,
    image_size: int = 32,
    num_classes: int = 10,
    width: int = 128,
    pool_options: Mapping[str, Any] | None = None,
) -> nn.Sequential:
    """App. C.2: ``operator`` reduces the ``image_size`` map to 1x1 with ``width`` outputs, then ``FC(width ->
    num_classes)``. ``pool_options`` go to :func:`repro.layers.create_pool` for a pool that is not one of the
    paper's operators."""
    if operator in C2_PAPER_OPERATORS:
        if width % 4:
            raise ValueError(f"width must be divisible by 4 (RNNPool gives 4 h2 outputs), got {width}")
        block = make_downsampler(operator, in_channels, image_size, image_size, width // 4, rnnpool_padding="none")
    elif operator in DOWNSAMPLERS:
        raise ValueError(f"{operator!r} is not an App. C.2 operator; valid: {', '.join(C2_PAPER_OPERATORS)} or a pool")
    else:
        pool = create_pool(operator, in_channels, image_size, **dict(pool_options or {}))
        if pool is None:
            raise ValueError(f"pool {operator!r} builds no module (it leaves the stride to a conv): use strided_conv")
        block = nn.Sequential(pool, Conv2dNormActivation(in_channels, width, 1))
    return nn.Sequential(block, nn.Flatten(1), nn.Linear(width, num_classes))
