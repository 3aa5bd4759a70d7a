"""Self-attentive pooling (NLP, reference_spec §2.1) and its ablations, as one weight network with flags.

The weight network :class:`SelfAttentiveWeights` turns ``x`` (B, C, H, W) into positive weights of the same shape:

1. patch embedding ``u = ReLU(BN(Conv_{C→E}(x; kernel p, stride p)))``, E = heads · round(r·C / heads);
2. tokens ``t = flatten(u) + pos`` (learned DETR table, column embedding first);
3. multi-head self-attention over all ``⌊H/p⌋·⌊W/p⌋`` tokens (no residual, norm or FFN);
4. nearest upsampling back to (H, W), then ``v = Sigmoid(BN(Conv1x1_{E→C}))``;
5. ``w = exp(v)``.

:class:`repro.layers.WeightedPool2d` pools with these weights. The official ablation files become flags:

=================  ===============================  ==================================================
pool name          flag                             state-dict effect (mirrors the official files)
=================  ===============================  ==================================================
``nlpnoexp``       ``use_exp=False``                none
``nlpnosigmoid``   ``use_sigmoid=False``            none (``restore`` = conv, BN)
``nlpnope``        ``position_embedding=None``      no ``pos_embed.*`` keys
``nlpnobn1``       ``embed_bn=False``               ``downsample`` = (conv, ReLU): no ``downsample.1.*``
``nlpnobn2``       ``restore_bn=False``             ``restore`` = (conv, Sigmoid): no ``restore.1.*``
=================  ===============================  ==================================================

Two numerically equivalent implementations are selectable with ``impl``:

* ``'faithful'``: the official operations (``nn.MultiheadAttention`` with ``need_weights=True``, an
  ``F.interpolate`` to (H, W) even when it is the identity);
* ``'fast'`` (default): fused attention on the same ``in_proj``/``out_proj`` parameters (no attention matrix is
  formed): the compiled kernels of :mod:`repro.layers.small_head_attention` for head sizes ≤ 32 on CPU float32,
  ``F.scaled_dot_product_attention`` otherwise; no upsampling when p = 1, and a broadcast copy instead of
  ``F.interpolate`` when that gives the same nearest-neighbour indices. Inside :class:`WeightedPool2d` with
  ``win_norm`` the final ``exp(sigmoid(·))`` is fused into the pooling (:mod:`repro.layers.exp_sigmoid_pool`).

``impl=None`` on a module follows the process-wide default (:func:`set_default_impl`), so an audit can switch every
pool of an existing model at once.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from repro.layers.create_pool import register_pool
from repro.layers.pool_base import WeightedPool2d
from repro.layers.pos_embed import build_position_embedding
from repro.layers.small_head_attention import kernel_applies, packed_self_attention

__all__ = [
    "IMPLS",
    "SelfAttentiveWeights",
    "architecture_ops",
    "attention_impl",
    "check_impl",
    "embed_dim_for",
    "get_default_impl",
    "nlp_param_count",
    "self_attention_2d",
    "set_default_impl",
    "upsample_nearest",
]

IMPLS = ("fast", "faithful")
_default_impl = "fast"


def check_impl(impl: str) -> str:
    if impl not in IMPLS:
        raise ValueError(f"unknown attention impl {impl!r}; valid choices: {', '.join(map(repr, IMPLS))}")
    return impl


def get_default_impl() -> str:
    """The implementation used by modules built with ``impl=None``."""
    return _default_impl


def set_default_impl(impl: str) -> None:
    """Set the process-wide implementation (``'fast'`` or ``'faithful'``) for modules built with ``impl=None``."""
    global _default_impl
    _default_impl = check_impl(impl)


_fused_token_path = True


@contextmanager
def architecture_ops() -> Iterator[None]:
    """Run the fast path without the fused token-layout path (convs as matrix products, ``out_proj`` folded into
    the restore conv) and without the compiled attention kernels (attention goes through SDPA), so that op counters
    and memory tracers see the architecture's own modules and operations. Outputs are unchanged."""
    global _fused_token_path
    previous, _fused_token_path = _fused_token_path, False
    try:
        yield
    finally:
        _fused_token_path = previous


@contextmanager
def attention_impl(impl: str) -> Iterator[None]:
    """Context manager that switches the default implementation temporarily (e.g. to audit against the official)."""
    previous = get_default_impl()
    set_default_impl(impl)
    try:
        yield
    finally:
        set_default_impl(previous)


def embed_dim_for(channels: int, heads: int, reduction: float = 1.0) -> int:
    """Official embedding size: ``heads · d`` with ``d = round(reduction·channels/heads)`` (banker's), 0 → 1 (B16)."""
    if heads < 1:
        raise ValueError(f"heads must be a positive integer, got {heads}")
    if reduction <= 0:
        raise ValueError(f"reduction (dim_reduced_ratio) must be > 0, got {reduction}")
    head_dim = round(reduction * channels / heads)
    return heads * max(head_dim, 1)


def nlp_param_count(channels: int, patch_size: int = 1, heads: int = 2, reduction: float = 1.0) -> int:
    """Closed form of reference_spec §2.1: ``4E² + (p²+1)·C·E + 263·E + 3·C`` (learned position table of 256)."""
    e = embed_dim_for(channels, heads, reduction)
    return 4 * e * e + (patch_size**2 + 1) * channels * e + 263 * e + 3 * channels


@functools.lru_cache(maxsize=256)
def _nearest_is_repeat(src: int, dst: int) -> bool:
    """Whether ``F.interpolate(mode='nearest')`` from ``src`` to ``dst`` is a plain repeat of each element.

    True when ``dst`` is a multiple of ``src`` except for a few factors (41, 47, 55, ...) where PyTorch's float scale
    rounds an index down; checked once per size pair on a tiny tensor.
    """
    if dst % src:
        return False
    ramp = torch.arange(src, dtype=torch.float32).view(1, 1, src)
    return torch.equal(F.interpolate(ramp, size=dst, mode="nearest"), ramp.repeat_interleave(dst // src, dim=-1))


def upsample_nearest(x: torch.Tensor, size: tuple[int, int], impl: str = "fast") -> torch.Tensor:
    """``F.interpolate(x, size, mode='nearest')``; with ``impl='fast'`` skipped or replaced by a broadcast copy
    whenever that gives identical results."""
    if impl == "faithful":
        return F.interpolate(x, size=size, mode="nearest")
    (h, w), (out_h, out_w) = x.shape[-2:], size
    if (h, w) == (out_h, out_w):
        return x
    if _nearest_is_repeat(h, out_h) and _nearest_is_repeat(w, out_w):
        b, c = x.shape[:2]
        ph, pw = out_h // h, out_w // w
        return x[:, :, :, None, :, None].expand(b, c, h, ph, w, pw).reshape(b, c, out_h, out_w)
    return F.interpolate(x, size=size, mode="nearest")


def _attention_heads(tokens: torch.Tensor, mha: nn.MultiheadAttention) -> torch.Tensor:
    """The concatenated attention heads (B, N, E) of ``mha`` (before ``out_proj``) from ``mha``'s packed ``in_proj``
    parameters: through the compiled small-head kernels where they apply
    (:func:`repro.layers.small_head_attention.kernel_applies`, not under :func:`architecture_ops`), else through
    ``F.scaled_dot_product_attention``."""
    b, n, e = tokens.shape
    heads = mha.num_heads
    qkv = F.linear(tokens, mha.in_proj_weight, mha.in_proj_bias)
    dropout = mha.dropout if mha.training else 0.0
    if _fused_token_path and kernel_applies(qkv, heads, dropout):
        return packed_self_attention(qkv, heads)
    q, k, v = qkv.view(b, n, 3, heads, e // heads).permute(2, 0, 3, 1, 4).unbind(0)
    out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout)
    return out.transpose(1, 2).reshape(b, n, e)  # a view: the CPU kernel already writes (B, N, h, d)


def _fast_attention(tokens: torch.Tensor, mha: nn.MultiheadAttention) -> torch.Tensor:
    """Self-attention with ``mha``'s packed parameters, without the attention weights (see :func:`_attention_heads`)."""
    return F.linear(_attention_heads(tokens, mha), mha.out_proj.weight, mha.out_proj.bias)


def _is_plain_1x1(conv: nn.Module) -> bool:
    """Whether ``conv`` is an ``nn.Conv2d`` that is a per-pixel linear map (1×1 kernel, stride 1, no padding)."""
    return (
        type(conv) is nn.Conv2d
        and conv.kernel_size == (1, 1)
        and conv.stride == (1, 1)
        and conv.padding in ((0, 0), "valid")
        and conv.groups == 1
    )


def self_attention_2d(
    u: torch.Tensor, mha: nn.MultiheadAttention, pos_embed: nn.Module | None, impl: str = "fast"
) -> torch.Tensor:
    """Tokens of ``u`` (B, E, H, W) plus position embedding → multi-head self-attention → (B, E, H, W)."""
    b, e, h, w = u.shape
    tokens = u.flatten(2).transpose(1, 2)
    if pos_embed is not None:
        tokens = tokens + pos_embed(u).flatten(2).transpose(1, 2)
    if impl == "faithful":
        out, _ = mha(tokens, tokens, tokens)  # need_weights=True, as the official code
    else:
        out = _fast_attention(tokens, mha)
    return out.transpose(1, 2).reshape(b, e, h, w)


class SelfAttentiveWeights(nn.Module):
    """The NLP weight network (official ``NLP_BASE``), with the ablations as flags; see the module docstring.

    Args:
        channels: input channels C.
        patch_size: p, kernel and stride of the patch embedding (tokens = ⌊H/p⌋·⌊W/p⌋).
        heads: attention heads h.
        reduction: r (official ``dim_reduced_ratio``); E = h · round(r·C/h).
        position_embedding: ``'learned'`` (official), ``'sine'`` (a working DETR sine, B17) or None (``nlpnope``).
        embed_bn, restore_bn, use_sigmoid, use_exp: False gives ``nlpnobn1``, ``nlpnobn2``, ``nlpnosigmoid``,
            ``nlpnoexp``.
        conv_layer: conv class for the patch and restore convs (``nn.Conv2d`` or a dynamic conv with its signature).
        impl: ``'fast'``, ``'faithful'`` or None (the process default, see :func:`set_default_impl`).
    """

    def __init__(
        self,
        channels: int,
        patch_size: int = 1,
        heads: int = 2,
        reduction: float = 1.0,
        *,
        position_embedding: str | None = "learned",
        embed_bn: bool = True,
        restore_bn: bool = True,
        use_sigmoid: bool = True,
        use_exp: bool = True,
        conv_layer: type[nn.Module] = nn.Conv2d,
        impl: str | None = None,
    ) -> None:
        super().__init__()
        if patch_size < 1:
            raise ValueError(f"patch_size must be >= 1, got {patch_size} (a placeholder 0 is not a patch size, B13)")
        embed_dim = embed_dim_for(channels, heads, reduction)
        if position_embedding is not None and embed_dim % 2:
            raise ValueError(
                f"the position embedding needs an even embedding size, but heads={heads} and reduction={reduction} "
                f"give E={embed_dim} for {channels} channels; use an even number of heads"
            )
        self.channels = channels
        self.patch_size = patch_size
        self.heads = heads
        self.embed_dim = embed_dim
        self.use_exp = use_exp
        self.impl = None if impl is None else check_impl(impl)

        # Construction order follows the official code so that a seed gives the same initial parameters.
        self.downsample = nn.Sequential(
            conv_layer(channels, embed_dim, kernel_size=patch_size, stride=patch_size, padding=0),
            *([nn.BatchNorm2d(embed_dim)] if embed_bn else []),
            nn.ReLU(inplace=True),
        )
        self.multihead_attn = nn.MultiheadAttention(embed_dim=embed_dim, num_heads=heads, batch_first=True)
        self.restore = nn.Sequential(
            conv_layer(embed_dim, channels, kernel_size=1, stride=1, padding=0),
            *([nn.BatchNorm2d(channels)] if restore_bn else []),
            *([nn.Sigmoid()] if use_sigmoid else []),
        )
        self.pos_embed = build_position_embedding(position_embedding, embed_dim)

    @property
    def active_impl(self) -> str:
        """The implementation the next forward pass uses."""
        return self.impl or _default_impl

    def attend(self, u: torch.Tensor) -> torch.Tensor:
        """Steps 2–3: position embedding and self-attention over the patch tokens ``u`` (B, E, H', W')."""
        return self_attention_2d(u, self.multihead_attn, self.pos_embed, self.active_impl)

    def restore_weights(self, a: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Steps 4–5: upsample the attended tokens to ``size``, restore C channels, then exp (unless ``use_exp``
        is off)."""
        v = self.restore(upsample_nearest(a, size, self.active_impl))
        return torch.exp(v) if self.use_exp else v

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._token_path_applies():
            return self._forward_tokens(x)
        return self.restore_weights(self.attend(self.downsample(x)), x.shape[-2:])

    def exp_sigmoid_logits(self, x: torch.Tensor) -> torch.Tensor | None:
        """``z`` with ``forward(x) = exp(sigmoid(z))`` (the restore BatchNorm's output), for a pooling that fuses
        the tail (:mod:`repro.layers.exp_sigmoid_pool`); None where the fast token path does not apply or the tail is
        not ``exp ∘ sigmoid`` (ablations, subclasses with their own forward)."""
        if not (self._fuses_tail and self.use_exp and isinstance(self.restore[-1], nn.Sigmoid)):
            return None
        if not self._token_path_applies():
            return None
        return self._forward_tokens(x, tail=False)

    _fuses_tail = True  # False in subclasses whose forward is not this one's

    def _token_path_applies(self) -> bool:
        return (
            _fused_token_path
            and self.active_impl == "fast"
            and _is_plain_1x1(self.downsample[0])
            and _is_plain_1x1(self.restore[0])
        )

    def _forward_tokens(self, x: torch.Tensor, tail: bool = True) -> torch.Tensor:
        """The fast path for patch size 1 with plain 1×1 convs: the same computation kept in token layout.

        The patch-embedding conv is a matrix product on a (B, N, C) view of ``x``, BatchNorm and ReLU run on a
        channels-last view of the (B, N, E) result, and ``out_proj`` is folded into the restore conv
        (``W_r (W_o a + b_o) + b_r``), which writes (B, C, N) directly. Same parameters, buffers and modules.
        ``tail=False`` stops before the last restore layer (the Sigmoid) and the exp.
        """
        b, c, h, w = x.shape
        embed, *embed_post = self.downsample
        u = F.linear(x.flatten(2).transpose(1, 2), embed.weight.flatten(1), embed.bias)  # (B, N, E)
        u = u.view(b, h, w, self.embed_dim).permute(0, 3, 1, 2)  # channels-last (B, E, H, W) view
        for layer in embed_post:
            u = layer(u)
        tokens = u.permute(0, 2, 3, 1).reshape(b, h * w, self.embed_dim)
        if self.pos_embed is not None:
            tokens = tokens + self.pos_embed(u).permute(0, 2, 3, 1).reshape(1, h * w, self.embed_dim)
        heads = _attention_heads(tokens, self.multihead_attn)
        conv, *restore_post = self.restore
        out_proj = self.multihead_attn.out_proj
        weight, bias = conv.weight.flatten(1), conv.bias  # (C, E), (C,)
        if c < b * h * w:  # folding costs C·E² MACs and saves B·N·E²
            bias = torch.mv(weight, out_proj.bias) + (bias if bias is not None else 0)
            weight = weight @ out_proj.weight
        else:
            heads = F.linear(heads, out_proj.weight, out_proj.bias)
        if bias is None:
            v = torch.matmul(weight, heads.transpose(1, 2)).view(b, c, h, w)
        else:
            v = torch.baddbmm(bias.view(1, c, 1), weight.expand(b, -1, -1), heads.transpose(1, 2)).view(b, c, h, w)
        if not tail:
            restore_post = restore_post[:-1]
        for layer in restore_post:
            v = layer(v)
        if not tail:
            return v
        return torch.exp(v) if self.use_exp else v

    def extra_repr(self) -> str:
        return (
            f"channels={self.channels}, embed_dim={self.embed_dim}, heads={self.heads}, patch_size={self.patch_size}, "
            f"use_exp={self.use_exp}, impl={self.impl}"
        )


_ABLATIONS: dict[str, dict] = {
    "nlp": {},
    "nlpnoexp": {"use_exp": False},
    "nlpnosigmoid": {"use_sigmoid": False},
    "nlpnope": {"position_embedding": None},
    "nlpnobn1": {"embed_bn": False},
    "nlpnobn2": {"restore_bn": False},
}


def _make_factory(name: str, flags: dict):
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
        position_embedding: str | None = "learned",
    ) -> WeightedPool2d:
        if "position_embedding" in flags and position_embedding != "learned":
            raise ValueError(f"{name} has no position embedding; do not pass position_embedding")
        options = {"position_embedding": position_embedding, **flags}
        weights = SelfAttentiveWeights(
            channels, patch_size, heads, reduction, conv_layer=conv_layer, impl=impl, **options
        )
        return WeightedPool2d(weights, stride, win_norm)

    factory.__name__ = f"{name}_pool"
    factory.__doc__ = f"``{name}``: :class:`WeightedPool2d` over :class:`SelfAttentiveWeights` ({flags or 'full'})."
    return factory


for _name, _flags in _ABLATIONS.items():
    register_pool(_name)(_make_factory(_name, _flags))
