"""Registry of pooling layers and ``create_pool(pool, channels, stride, **cfg)``, in the spirit of timm's ``create_aa``.

``pool`` is a registered name (``create_pool("nlp", 64, 2, heads=8)``), an ``nn.Module`` class taking
``(channels, stride, **cfg)``, or any callable with that signature returning a module (or ``None`` for "no pool, the
conv strides"): a user's experimental pool goes into a SAP backbone without editing the grammar
(``build_sap_model("resnet18-maxp-2222", pool_layer=MyPool)``).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from repro.utils.registry import Registry

PoolFactory = Callable[..., nn.Module | None]
PoolLayer = str | type[nn.Module] | PoolFactory

_POOLS: Registry[PoolFactory] = Registry("pool")


def register_pool(*names: str) -> Callable[[PoolFactory], PoolFactory]:
    """Register a factory ``fn(channels, stride, **cfg) -> nn.Module | None`` under one or more names."""
    return _POOLS.register(*names)


def list_pools() -> list[str]:
    """Names accepted by :func:`create_pool`, sorted."""
    return _POOLS.names()


def pool_name(pool: PoolLayer) -> str:
    """A name for ``pool`` to record with a result: the registered name, else the class's or callable's
    qualified name."""
    if isinstance(pool, str):
        return pool
    return f"{getattr(pool, '__module__', '?')}.{getattr(pool, '__qualname__', type(pool).__name__)}"


def create_pool(pool: PoolLayer, channels: int, stride: int, **cfg) -> nn.Module | None:
    """Build the pooling layer ``pool`` for ``channels`` input channels with kernel = stride = ``stride``.

    Self-attentive pools take ``patch_size``, ``heads``, ``reduction`` and ``win_norm``; keys whose value is
    ``None`` are dropped so that each layer's own default applies. ``skip`` returns ``None`` (the conv strides).
    """
    cfg = {k: v for k, v in cfg.items() if v is not None}
    if isinstance(pool, str):
        return _POOLS.get(pool)(channels, stride, **cfg)
    if not callable(pool):
        raise TypeError(f"pool must be a registered name, an nn.Module class or a callable, got {pool!r}")
    module = pool(channels, stride, **cfg)
    if module is not None and not isinstance(module, nn.Module):
        raise TypeError(f"pool {pool_name(pool)} returned {type(module).__name__}, not an nn.Module or None")
    return module
