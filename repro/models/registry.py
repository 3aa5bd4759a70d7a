"""Model registry: ``register_model`` entry points, name resolvers, and ``build_model(arch, num_classes, **opts)``.

Names registered with :func:`register_model` (RNNPool models, face detectors, ...) are looked up first; any other
name goes to the registered resolvers in order (the Self-Attentive-Pooling grammar, :mod:`repro.models.sap`, is one).
Each registered model carries its own defaults (:class:`ModelDefaults`: classes, input size, dtype), which the
command line and the profiler use when the caller gives none.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from repro.utils.registry import Registry

ModelFn = Callable[..., nn.Module]
Resolver = Callable[[object], ModelFn | None]
ImageSize = int | tuple[int, int]


@dataclass(frozen=True)
class ModelDefaults:
    """What a model is built and profiled with when nothing else is said."""

    num_classes: int = 1000
    image_size: ImageSize = 224  # side, or (height, width)
    dtype: str = "fp32"  # bytes per activation element of the deployed model (fp32 or int8)


@dataclass(frozen=True)
class ModelSpec:
    name: str
    fn: ModelFn
    family: str
    defaults: ModelDefaults


_MODELS: Registry[ModelSpec] = Registry("model")
_RESOLVERS: list[tuple[Resolver, ModelDefaults]] = []


def _default_classes(fn: ModelFn) -> int:
    default = inspect.signature(fn).parameters.get("num_classes")
    if default is None or not isinstance(default.default, int):
        return ModelDefaults.num_classes
    return default.default


def register_model(
    name: str | None = None,
    *,
    family: str = "other",
    image_size: ImageSize = 224,
    dtype: str = "fp32",
) -> Callable[[ModelFn], ModelFn]:
    """Decorator: register ``fn(num_classes=..., **opts) -> nn.Module`` under ``name`` (default: its ``__name__``).

    The default class count is ``fn``'s own ``num_classes`` default; ``image_size`` and ``dtype`` say what the model
    is meant to run on.
    """

    def wrap(fn: ModelFn) -> ModelFn:
        key = name or fn.__name__
        _MODELS.add(key, ModelSpec(key, fn, family, ModelDefaults(_default_classes(fn), image_size, dtype)))
        return fn

    return wrap


def register_resolver(resolver: Resolver, defaults: ModelDefaults = ModelDefaults()) -> Resolver:
    """Add ``resolver(arch) -> builder | None``: a family of names (a grammar) that is not listed one by one."""
    _RESOLVERS.append((resolver, defaults))
    return resolver


def list_models(family: str | None = None) -> list[str]:
    """Registered model names (optionally of one family), sorted. Grammar names are not enumerated here."""
    return [name for name, spec in _MODELS.items() if family is None or spec.family == family]


def model_family(name: str) -> str:
    return _MODELS.get(name).family


def is_registered(name: str) -> bool:
    return name in _MODELS


def _resolve(arch) -> tuple[ModelFn, ModelDefaults]:
    if isinstance(arch, str) and arch in _MODELS:
        spec = _MODELS.get(arch)
        return spec.fn, spec.defaults
    for resolver, defaults in _RESOLVERS:
        fn = resolver(arch)
        if fn is not None:
            return fn, defaults
    names = ", ".join(list_models())
    raise ValueError(f"unknown model {arch!r}: not a registered model ({names}) and not an architecture name")


def model_defaults(arch) -> ModelDefaults:
    """The defaults of a registered model, or of the resolver (grammar) that builds ``arch``."""
    return _resolve(arch)[1]


def build_model(arch, num_classes: int | None = None, **opts) -> nn.Module:
    """Build a model from a registered name or a name a resolver knows (an SAP architecture string or a parsed
    :class:`repro.arch.Arch`); ``num_classes`` defaults to the model's own."""
    fn, defaults = _resolve(arch)
    return fn(num_classes=defaults.num_classes if num_classes is None else num_classes, **opts)
