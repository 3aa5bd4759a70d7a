"""Pieces shared by the RNNPool classification models: the early downsampling block and its Table 2 alternatives.

RNNPool Table 2, block 2: "the image goes through a conv and then an operator that reduces it by 4x4". Every
alternative outputs the same ``4 * h2`` channels as the RNNPool block it replaces, so the rest of the network is
identical across the rows:

* ``rnnpool``: :class:`~repro.layers.rnnpool.RNNPool2d` (patch ``k``, stride ``s``), its map replicate-padded at the
  right/bottom to ``floor(H / s)``. For every paper configuration (k = 6 or 8, s = 4 on 112x112) this is exactly
  EdgeML's one-pixel pad (27 -> 28); it also gives the intended 28x28 for the patch-4 ablation, where EdgeML's
  fixed pad would give 29;
* ``avg`` / ``max``: ``s x s`` average / max pooling, then a 1x1 conv-BN-act to ``4 h2`` channels (as the paper's
  App. C.2 does "to ensure the same output dimension");
* ``strided_conv``: a ``k x k`` conv-BN-act with stride ``s`` and ``4 h2`` filters (App. C.2: "a convolution layer of
  4 x h2 filters"), padding ``(k - s) / 2`` so that the map matches RNNPool's;
* ``renet``: :class:`~repro.layers.rnnpool.ReNet2d` on ``s x s`` patches (patch = stride, paper App. B) with GRU cells
  of ``2 h2`` units per direction.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import nn
from torchvision.ops import Conv2dNormActivation

from repro.layers.rnnpool import ReNet2d, RNNPool2d, pair_hidden

DOWNSAMPLERS = ("rnnpool", "avg", "max", "strided_conv", "renet")


def make_downsampler(
    kind: str,
    in_channels: int,
    patch_size: int,
    stride: int,
    hidden: int | Sequence[int],
    rnn_cell: str = "fastgrnn",
    activation_layer: Callable[..., nn.Module] = nn.ReLU,
    rnnpool_padding: str = "floor",
) -> nn.Module:
    """Build the early downsampling block named ``kind``; the result has an ``out_channels`` attribute (= 4 h2)."""
    if kind not in DOWNSAMPLERS:
        raise ValueError(f"unknown downsampling block replace={kind!r}; valid: {', '.join(DOWNSAMPLERS)}")
    out_channels = 4 * pair_hidden(hidden)[1]
    if kind == "rnnpool":
        block: nn.Module = RNNPool2d(
            in_channels, patch_size, stride, hidden, rnn_cell=rnn_cell, padding=rnnpool_padding
        )
    elif kind in ("avg", "max"):
        pool = nn.AvgPool2d(stride, stride) if kind == "avg" else nn.MaxPool2d(stride, stride)
        layers = [pool]
        if out_channels != in_channels:
            layers.append(Conv2dNormActivation(in_channels, out_channels, 1, activation_layer=activation_layer))
        block = nn.Sequential(*layers)
    elif kind == "strided_conv":
        if (patch_size - stride) % 2:
            raise ValueError(f"strided_conv needs patch_size - stride to be even, got {patch_size} - {stride}")
        block = Conv2dNormActivation(
            in_channels,
            out_channels,
            patch_size,
            stride,
            padding=(patch_size - stride) // 2,
            activation_layer=activation_layer,
        )
    else:
        if out_channels % 2:
            raise ValueError(f"renet needs an even output width (2 x hidden units), got {out_channels}")
        block = ReNet2d(in_channels, out_channels // 2, stride, rnn_cell="gru")
    block.out_channels = out_channels
    return block


def block_settings(
    patch_size: int | Sequence[int], stride: int | Sequence[int], hidden: int | Sequence
) -> list[tuple[int, int, int | tuple[int, int]]]:
    """Per-block ``(patch_size, stride, hidden)`` for one or more consecutive downsampling blocks.

    ``patch_size`` and ``stride`` are ints (one block) or sequences (one entry per block; lengths must agree).
    ``hidden`` is an int (``h1 = h2``, shared by every block), a pair ``(h1, h2)`` for a single block, or a sequence
    with one entry (int or pair) per block.
    """
    lengths = {len(v) for v in (patch_size, stride) if not isinstance(v, int)}
    if len(lengths) > 1:
        raise ValueError(f"patch_size {patch_size!r} and stride {stride!r} give different numbers of blocks")
    n = lengths.pop() if lengths else 1
    patches = (patch_size,) * n if isinstance(patch_size, int) else tuple(patch_size)
    strides = (stride,) * n if isinstance(stride, int) else tuple(stride)
    if isinstance(hidden, int):
        hiddens = (hidden,) * n
    elif n == 1 and len(hidden) == 2 and all(isinstance(h, int) for h in hidden):
        hiddens = (tuple(hidden),)
    else:
        hiddens = tuple(hidden)
        if len(hiddens) != n:
            raise ValueError(f"hidden {hidden!r} must be an int or have one entry per block ({n} blocks)")
    return list(zip(patches, strides, hiddens))


def init_new_modules(module: nn.Module, conv_mode: str = "fan_out") -> None:
    """Kaiming-normal convs, unit BN, N(0, 0.01) linear layers; RNN cells keep their EdgeML initialisation."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode=conv_mode)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)


def count_parameters(model: nn.Module) -> int:
    """Number of distinct parameter elements (shared tensors counted once)."""
    return sum(p.numel() for p in model.parameters())
