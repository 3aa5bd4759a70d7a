"""Deformable self-attentive pooling: ``dfmnlp``, ``mixp`` and ``dfmixp`` (reference_spec §2.2).

The official code samples with a pure-PyTorch "deformable conv v2" helper whose grid was written for 3×3 kernels
with padding 1 (B8). :func:`deform_sample` reproduces it exactly with ``grid='official'`` and offers a corrected
grid with ``grid='corrected'``. For a k×k patch grid (k = patch size) with offsets Δ of shape (B, 2k², ⌈H/k⌉, ⌈W/k⌉)
(channels 0..k²−1 are row offsets, k²..2k²−1 column offsets, kernel position n = i·k + j), output pixel
(a·k + i, b·k + j) samples the input at:

* ``official``:  row ``a·k + i + 1 + ⌊−(k−1)/2⌋ + Δ_row`` (likewise for columns). With Δ = 0 this is a shift of
  +1 pixel for k = 1, 0 for k = 2 and 3, −1 for k = 4 and −3 for k = 8. The point and its four corners are clamped
  into the image and the bilinear weights are computed from the clamped values, so a point on or beyond the last
  row/column (or before the first) gets weight 2 on the edge pixel: borders are double-counted.
* ``corrected``: row ``a·k + i + Δ_row``: each k×k cell samples itself, so zero offsets are the identity, and
  plain bilinear interpolation whose weights sum to at most 1. Features are sampled with zeros outside the image (a
  corner outside contributes nothing): the semantics of DCNv2 and ``torchvision.ops.deform_conv2d`` (stride k,
  padding 0). The pooling weights, resampled with −Δ, use border padding instead (the point is clamped into the
  image, then interpolated without double counting) so that they stay positive and a window can never sum to 0.

The official offset and mask convs register a backward hook meant to scale their gradients by 0.1; it builds
generators and returns None, so it has no effect (B9). No hook is added here; the behaviour is the same.
"""

from __future__ import annotations

import torch
from torch import nn

from repro.layers.create_pool import register_pool
from repro.layers.nlp import SelfAttentiveWeights, embed_dim_for, nlp_param_count
from repro.layers.pool_base import WeightedPool2d

__all__ = [
    "GRIDS",
    "PADDINGS",
    "DeformablePatchEmbed",
    "DeformableSampler",
    "DeformableSelfAttentiveWeights",
    "OffsetConv",
    "deform_sample",
    "dfmnlp_param_count",
    "grid_shift",
    "mixp_param_count",
]

GRIDS = ("official", "corrected")
PADDINGS = ("zeros", "border")


def _check_grid(grid: str) -> str:
    if grid not in GRIDS:
        raise ValueError(f"unknown deformable grid {grid!r}; valid choices: {', '.join(map(repr, GRIDS))}")
    return grid


def grid_shift(kernel_size: int, grid: str = "official") -> int:
    """Where zero offsets sample, relative to the output pixel: ``1 + ⌊−(k−1)/2⌋`` officially, 0 when corrected."""
    return 1 + (-(kernel_size - 1)) // 2 if _check_grid(grid) == "official" else 0


def _full_resolution(channels: torch.Tensor, k: int) -> torch.Tensor:
    """(B, k², h, w) per-cell values for kernel positions n = i·k + j → (B, h·k, w·k) at pixel (a·k + i, b·k + j)."""
    b, _, h, w = channels.shape
    return channels.view(b, k, k, h, w).permute(0, 3, 1, 4, 2).reshape(b, h * k, w * k)


def _axis_weights(coord: torch.Tensor, size: int, grid: str, padding: str) -> tuple[torch.Tensor, ...]:
    """Bilinear corner indices and weights along one axis: (low index, high index, low weight, high weight)."""
    if grid == "official":
        floor = coord.detach().floor()
        low = floor.clamp(0, size - 1)
        high = (floor + 1).clamp(0, size - 1)
        point = coord.clamp(0, size - 1)
        return low.long(), high.long(), 1 + (low - point), 1 - (high - point)
    if padding == "border":
        coord = coord.clamp(0, size - 1)
    floor = coord.detach().floor()
    low, high = floor, floor + 1
    frac = coord - floor
    w_low = (1 - frac) * ((low >= 0) & (low <= size - 1))
    w_high = frac * ((high >= 0) & (high <= size - 1))
    return low.clamp(0, size - 1).long(), high.clamp(0, size - 1).long(), w_low, w_high


def deform_sample(
    x: torch.Tensor, offset: torch.Tensor, kernel_size: int, grid: str = "official", padding: str = "zeros"
) -> torch.Tensor:
    """Bilinearly resample ``x`` (B, C, H, W) on a k×k-per-cell deformable grid; see the module docstring.

    ``offset`` has shape (B, 2k², h, w) (row offsets first); the result has shape (B, C, h·k, w·k), pixel
    (a·k + i, b·k + j) holding sample n = i·k + j of cell (a, b) (the official ``reshape_x_offset`` tiling).
    ``padding`` applies to the corrected grid: ``'zeros'`` (outside the image is 0) or ``'border'`` (points are
    clamped into the image first, so the result is a convex combination of pixels).
    """
    _check_grid(grid)
    if padding not in PADDINGS:
        raise ValueError(f"unknown padding {padding!r}; valid choices: {', '.join(map(repr, PADDINGS))}")
    k = kernel_size
    n = k * k
    b, c, height, width = x.shape
    if offset.shape[0] != b or offset.shape[1] != 2 * n:
        raise ValueError(f"offset must have shape (B={b}, 2·k²={2 * n}, h, w), got {tuple(offset.shape)}")
    rows, cols = _full_resolution(offset[:, :n], k), _full_resolution(offset[:, n:], k)
    out_h, out_w = rows.shape[-2:]
    shift = grid_shift(k, grid)
    # Coordinates in at least single precision: half precision cannot represent pixel indices above 256 (2048).
    coord_dtype = torch.promote_types(offset.dtype, torch.float32)
    rows, cols = rows.to(coord_dtype), cols.to(coord_dtype)
    base_rows = torch.arange(out_h, device=x.device, dtype=coord_dtype) + shift
    base_cols = torch.arange(out_w, device=x.device, dtype=coord_dtype) + shift
    r_lo, r_hi, wr_lo, wr_hi = _axis_weights(rows + base_rows[:, None], height, grid, padding)
    c_lo, c_hi, wc_lo, wc_hi = _axis_weights(cols + base_cols[None, :], width, grid, padding)

    flat = x.reshape(b, c, height * width)

    def gather(r: torch.Tensor, col: torch.Tensor) -> torch.Tensor:
        index = (r * width + col).view(b, 1, out_h * out_w).expand(b, c, -1)
        return flat.gather(2, index).view(b, c, out_h, out_w)

    # Same order of terms as the official sampler: (low, low), (high, high), (low, high), (high, low).
    out = (
        (wr_lo * wc_lo).unsqueeze(1) * gather(r_lo, c_lo)
        + (wr_hi * wc_hi).unsqueeze(1) * gather(r_hi, c_hi)
        + (wr_lo * wc_hi).unsqueeze(1) * gather(r_lo, c_hi)
        + (wr_hi * wc_lo).unsqueeze(1) * gather(r_hi, c_lo)
    )
    return out.to(x.dtype)


class DeformableSampler(nn.Module):
    """Module form of :func:`deform_sample` (official attribute name: ``dfm_toolkit``); no parameters."""

    def __init__(self, kernel_size: int, grid: str = "official", padding: str = "zeros") -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.grid = _check_grid(grid)
        if padding not in PADDINGS:
            raise ValueError(f"unknown padding {padding!r}; valid choices: {', '.join(map(repr, PADDINGS))}")
        self.padding = padding

    def forward(self, x: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
        return deform_sample(x, offset, self.kernel_size, self.grid, self.padding)

    def extra_repr(self) -> str:
        padding = f", padding={self.padding!r}" if self.grid == "corrected" else ""
        return f"kernel_size={self.kernel_size}, grid={self.grid!r}{padding}"


class OffsetConv(nn.Module):
    """Offsets Δ = Conv3×3_{C→2k²}(x; stride k, padding 1); weight zero-initialised (official ``OffsetConv2d``).

    The official backward hook that was meant to scale the gradient by 0.1 does nothing (B9) and is not added.
    """

    def __init__(self, channels: int, kernel_size: int, conv_layer: type[nn.Module] = nn.Conv2d) -> None:
        super().__init__()
        k = kernel_size
        self.offset_conv = conv_layer(channels, 2 * k * k, kernel_size=3, padding=1, stride=k)
        nn.init.zeros_(self.offset_conv.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.offset_conv(x)


class DeformablePatchEmbed(nn.Module):
    """Modulated deformable k×k patch conv: ``Conv_{C→E}(T(x, Δ) ⊙ sigmoid(m_conv(x)); kernel k, stride k, no
    bias)`` (official ``DeformConv2d`` with ``modulation=True``, padding 0)."""

    def __init__(
        self,
        channels: int,
        embed_dim: int,
        kernel_size: int,
        grid: str = "official",
        conv_layer: type[nn.Module] = nn.Conv2d,
    ) -> None:
        super().__init__()
        k = kernel_size
        self.kernel_size = k
        self.dfm_toolkit = DeformableSampler(k, grid)
        self.m_conv = conv_layer(channels, k * k, kernel_size=3, padding=1, stride=k)
        nn.init.zeros_(self.m_conv.weight)
        self.conv = conv_layer(channels, embed_dim, kernel_size=k, stride=k, bias=False)

    def forward(self, x: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
        mask = _full_resolution(torch.sigmoid(self.m_conv(x)), self.kernel_size).unsqueeze(1)
        return self.conv(self.dfm_toolkit(x, offset) * mask)


class DeformableSelfAttentiveWeights(SelfAttentiveWeights):
    """Weight network of ``dfmnlp`` (``local=False``) and ``mixp`` / ``dfmixp`` (``local=True``; identical, B10).

    1. Δ = ``offset_conv(x)``; u = ReLU(BN(:class:`DeformablePatchEmbed`(x, Δ))).
    2. NLP steps 2–5 on u give ``w_nl`` (B, C, H, W); it is resampled with −Δ: ``w = T(w_nl, −Δ)``.
    3. ``local=True`` multiplies in ``exp(Sigmoid(BN(Conv_{C→C}(x; kernel p, padding 'same'))))``.

    H and W must be multiples of the patch size (the official code fails otherwise).
    """

    _fuses_tail = False  # the resampling and the local branch come after exp(sigmoid(.))

    def __init__(
        self,
        channels: int,
        patch_size: int = 1,
        heads: int = 2,
        reduction: float = 1.0,
        *,
        local: bool = False,
        grid: str = "official",
        position_embedding: str | None = "learned",
        conv_layer: type[nn.Module] = nn.Conv2d,
        impl: str | None = None,
    ) -> None:
        super().__init__(
            channels,
            patch_size,
            heads,
            reduction,
            position_embedding=position_embedding,
            conv_layer=conv_layer,
            impl=impl,
        )
        self.grid = _check_grid(grid)
        self.offset_conv = OffsetConv(channels, patch_size, conv_layer)
        # Replaces the plain patch embedding built by the parent (as the official subclass does).
        self.downsample = nn.Sequential(
            DeformablePatchEmbed(channels, self.embed_dim, patch_size, grid, conv_layer),
            nn.BatchNorm2d(self.embed_dim),
            nn.ReLU(inplace=True),
        )
        # Weights are resampled with border padding on the corrected grid: zero padding could empty a window.
        self.dfm_toolkit = DeformableSampler(patch_size, grid, padding="border")
        self.local = None
        if local:
            self.local = nn.Sequential(
                conv_layer(channels, channels, kernel_size=patch_size, stride=1, padding="same"),
                nn.BatchNorm2d(channels),
                nn.Sigmoid(),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        p = self.patch_size
        if height % p or width % p:
            raise ValueError(
                f"deformable pools need the input size to be a multiple of patch_size={p}, got {height}x{width}"
            )
        offset = self.offset_conv(x)
        embed, *post = self.downsample
        u = embed(x, offset)
        for layer in post:
            u = layer(u)
        weight = self.dfm_toolkit(self.restore_weights(self.attend(u), (height, width)), -offset)
        if self.local is not None:
            weight = torch.exp(self.local(x)) * weight
        return weight

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, grid={self.grid!r}, local={self.local is not None}"


def dfmnlp_param_count(channels: int, patch_size: int = 1, heads: int = 2, reduction: float = 1.0) -> int:
    """reference_spec §2.2: ``P_NLP − E + 27·C·p² + 3·p²``."""
    e = embed_dim_for(channels, heads, reduction)
    p2 = patch_size**2
    return nlp_param_count(channels, patch_size, heads, reduction) - e + 27 * channels * p2 + 3 * p2


def mixp_param_count(channels: int, patch_size: int = 1, heads: int = 2, reduction: float = 1.0) -> int:
    """reference_spec §2.2: ``DFMNLP + C²·p² + 3·C`` (also ``dfmixp``)."""
    return dfmnlp_param_count(channels, patch_size, heads, reduction) + channels**2 * patch_size**2 + 3 * channels


def _make_factory(name: str, local: bool):
    def factory(
        channels: int,
        stride: int,
        *,
        patch_size: int = 1,
        heads: int = 2,
        reduction: float = 1.0,
        win_norm: bool = True,
        conv_layer: type[nn.Module] = nn.Conv2d,
        impl: str | None = None,
        grid: str = "official",
    ) -> WeightedPool2d:
        weights = DeformableSelfAttentiveWeights(
            channels, patch_size, heads, reduction, local=local, grid=grid, conv_layer=conv_layer, impl=impl
        )
        return WeightedPool2d(weights, stride, win_norm)

    factory.__name__ = f"{name}_pool"
    factory.__doc__ = (
        f"``{name}``: :class:`WeightedPool2d` over :class:`DeformableSelfAttentiveWeights` (local={local}); "
        "``grid='official'`` (default) or ``'corrected'``."
    )
    return factory


register_pool("dfmnlp")(_make_factory("dfmnlp", local=False))
register_pool("mixp", "dfmixp")(_make_factory("mixp", local=True))
