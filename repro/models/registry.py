"""Model registry: ``register_model`` entry points and ``build_model(arch, num_classes, **opts)``.

Names registered with :func:`register_model` (RNNPool models, face detectors, ...) are looked up first; any other
name is parsed with the Self-Attentive-Pooling architecture grammar (:mod:`repro.arch`) and built by the SAP zoo.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

ModelFn = Callable[..., nn.Module]

_MODELS: dict[str, ModelFn] = {}
_FAMILIES: dict[str, str] = {}


def register_model(name: str | None = None, *, family: str = "other") -> Callable[[ModelFn], ModelFn]:
    """Decorator: register ``fn(num_classes=..., **opts) -> nn.Module`` under ``name`` (default: its ``__name__``)."""

    def wrap(fn: ModelFn) -> ModelFn:
        key = name or fn.__name__
        if key in _MODELS:
            raise ValueError(f"model {key!r} is registered twice")
        _MODELS[key] = fn
        _FAMILIES[key] = family
        return fn

    return wrap


def list_models(family: str | None = None) -> list[str]:
    """Registered model names (optionally of one family), sorted. SAP grammar names are not enumerated here."""
    _import_zoo()
    return sorted(k for k in _MODELS if family is None or _FAMILIES[k] == family)


def model_family(name: str) -> str:
    _import_zoo()
    return _FAMILIES[name]


def is_registered(name: str) -> bool:
    _import_zoo()
    return name in _MODELS


def build_model(arch, num_classes: int = 1000, **opts) -> nn.Module:
    """Build a model from a registered name, an SAP architecture string or a parsed :class:`repro.arch.Arch`."""
    _import_zoo()
    if isinstance(arch, str) and arch in _MODELS:
        return _MODELS[arch](num_classes=num_classes, **opts)
    from repro.models.sap import build_sap_model

    return build_sap_model(arch, num_classes=num_classes, **opts)


def _import_zoo() -> None:
    """Import the model modules so that their ``@register_model`` decorators run."""
    import repro.models  # noqa: F401
