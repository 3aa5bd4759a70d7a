"""``attnpool``: attention followed by a strided conv, listed among the baselines (reference_spec §2.3).

Unlike the self-attentive pools it does not weight an average; it outputs the pooled map directly:

1. u = ReLU(BN(Conv1x1_{C→E}(x))), one token per pixel (N = H·W);
2. learned position embedding, multi-head self-attention (2 heads, E = 2·round(C/2));
3. y = ReLU(BN(Conv_{E→C}(·; kernel s, stride s))) → (B, C, ⌊H/s⌋, ⌊W/s⌋).
"""

from __future__ import annotations

import torch
from torch import nn

from repro.layers.create_pool import register_pool
from repro.layers.nlp import check_impl, embed_dim_for, get_default_impl, self_attention_2d
from repro.layers.pos_embed import build_position_embedding

__all__ = ["AttentionPool2d"]


class AttentionPool2d(nn.Module):
    """Official ``ATTNPOOL_BASE`` (attribute names ``downsample``, ``multihead_attn``, ``map``, ``pos_embed``).

    ``impl`` selects the attention implementation as in :class:`repro.layers.nlp.SelfAttentiveWeights`.
    """

    def __init__(
        self,
        channels: int,
        stride: int,
        heads: int = 2,
        reduction: float = 1.0,
        *,
        position_embedding: str | None = "learned",
        conv_layer: type[nn.Module] = nn.Conv2d,
        impl: str | None = None,
    ) -> None:
        super().__init__()
        if stride < 1:
            raise ValueError(f"stride must be >= 1, got {stride}")
        embed_dim = embed_dim_for(channels, heads, reduction)
        if position_embedding is not None and embed_dim % 2:
            raise ValueError(f"the position embedding needs an even embedding size, got E={embed_dim}")
        self.channels = channels
        self.stride = stride
        self.heads = heads
        self.embed_dim = embed_dim
        self.impl = None if impl is None else check_impl(impl)
        self.downsample = nn.Sequential(
            conv_layer(channels, embed_dim, kernel_size=1, stride=1, padding=0),
            nn.BatchNorm2d(embed_dim),
            nn.ReLU(inplace=True),
        )
        self.multihead_attn = nn.MultiheadAttention(embed_dim=embed_dim, num_heads=heads, batch_first=True)
        self.map = nn.Sequential(
            conv_layer(embed_dim, channels, kernel_size=stride, stride=stride, padding=0),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
        )
        self.pos_embed = build_position_embedding(position_embedding, embed_dim)

    @property
    def active_impl(self) -> str:
        return self.impl or get_default_impl()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        attended = self_attention_2d(self.downsample(x), self.multihead_attn, self.pos_embed, self.active_impl)
        return self.map(attended)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, stride={self.stride}, embed_dim={self.embed_dim}, impl={self.impl}"


@register_pool("attnpool")
def attnpool(
    channels: int, stride: int, *, conv_layer: type[nn.Module] | None = None, impl: str | None = None, **unsupported
) -> AttentionPool2d:
    """``attnpool`` with the official configuration: 2 heads, E = C (rounded to even), plain ``nn.Conv2d``.

    The official builder passes only the stride, so ``conv_layer`` is accepted and ignored (``dy*`` models keep plain
    convs here, as officially); other self-attentive options are refused.
    """
    del conv_layer
    if unsupported:
        raise ValueError(
            f"attnpool takes only the stride (2 heads and E = C are fixed, as in the official code); "
            f"unsupported options: {', '.join(f'{k}={v!r}' for k, v in sorted(unsupported.items()))}"
        )
    return AttentionPool2d(channels, stride, impl=impl)
