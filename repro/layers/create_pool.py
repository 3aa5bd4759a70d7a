"""Registry of pooling layers: ``create_pool(name, channels, stride, **cfg)``, in the spirit of timm's ``create_aa``."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

PoolFactory = Callable[..., nn.Module | None]

_POOLS: dict[str, PoolFactory] = {}


def register_pool(*names: str) -> Callable[[PoolFactory], PoolFactory]:
    """Register a factory ``fn(channels, stride, **cfg) -> nn.Module | None`` under one or more names."""

    def wrap(fn: PoolFactory) -> PoolFactory:
        for name in names:
            if name in _POOLS:
                raise ValueError(f"pool {name!r} is registered twice")
            _POOLS[name] = fn
        return fn

    return wrap


def list_pools() -> list[str]:
    """Names accepted by :func:`create_pool`, sorted."""
    return sorted(_POOLS)


def create_pool(name: str, channels: int, stride: int, **cfg) -> nn.Module | None:
    """Build the pooling layer ``name`` for ``channels`` input channels with kernel = stride = ``stride``.

    Self-attentive pools take ``patch_size``, ``heads``, ``reduction`` and ``win_norm``; keys whose value is
    ``None`` are dropped so that each layer's own default applies. ``skip`` returns ``None`` (the conv strides).
    """
    if name not in _POOLS:
        raise KeyError(f"unknown pool {name!r}; valid pools: {', '.join(list_pools())}")
    cfg = {k: v for k, v in cfg.items() if v is not None}
    return _POOLS[name](channels, stride, **cfg)
