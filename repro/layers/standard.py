"""The standard pools (``skip``, ``maxp``, ``avgp``) and the settings convention of pools that take none.

All three use kernel = stride = ``s`` and no padding, so the output is (B, C, ⌊H/s⌋, ⌊W/s⌋) (reference_spec §2.0).
``skip`` builds no module: the stage's own convolution takes the stride instead.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import nn

from repro.layers.create_pool import register_pool

#: Settings meant for the self-attentive pools; the official code passes them to every pool factory and the
#: baseline pools (skip, maxp, avgp, lip, gaussian_pool, ...) ignore them.
SELF_ATTENTIVE_KEYS = frozenset({"patch_size", "heads", "reduction", "win_norm", "conv_layer"})


def check_ignored_cfg(pool: str, cfg: Mapping[str, object], accepted: frozenset[str] = frozenset()) -> None:
    """Accept (and ignore) the self-attentive settings; reject any other key with a message naming the valid ones.

    ``accepted`` lists the pool's own extra keywords, which the caller consumes itself.
    """
    unknown = sorted(set(cfg) - SELF_ATTENTIVE_KEYS - accepted)
    if unknown:
        valid = ", ".join(sorted(SELF_ATTENTIVE_KEYS | accepted))
        raise TypeError(f"pool {pool!r} got unexpected setting(s) {', '.join(map(repr, unknown))}; valid: {valid}")


def check_stride(pool: str, stride: int) -> int:
    """Return ``stride`` as an int, or raise a ValueError when it is not a positive integer."""
    if isinstance(stride, bool) or int(stride) != stride or stride < 1:
        raise ValueError(f"pool {pool!r} needs a positive integer stride, got {stride!r}")
    return int(stride)


@register_pool("skip")
def skip(channels: int, stride: int, **cfg) -> None:
    """No pooling module: the stage's convolution is strided instead."""
    check_ignored_cfg("skip", cfg)
    check_stride("skip", stride)
    return None


@register_pool("maxp")
def maxp(channels: int, stride: int, **cfg) -> nn.MaxPool2d:
    """``nn.MaxPool2d(s, s, 0)``."""
    check_ignored_cfg("maxp", cfg)
    s = check_stride("maxp", stride)
    return nn.MaxPool2d(kernel_size=s, stride=s, padding=0)


@register_pool("avgp")
def avgp(channels: int, stride: int, **cfg) -> nn.AvgPool2d:
    """``nn.AvgPool2d(s, s, 0)``."""
    check_ignored_cfg("avgp", cfg)
    s = check_stride("avgp", stride)
    return nn.AvgPool2d(kernel_size=s, stride=s, padding=0)
