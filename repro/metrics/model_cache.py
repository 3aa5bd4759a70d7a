"""Models for profiling, built on the ``meta`` device, and a per-process cache of them and of their traces.

:func:`build_profile_model` builds one model without weights; :class:`ModelCache` keeps the built models and their
traces by configuration, so that everything profiled in one process (pipeline entries, the model blocks of reported
cells, a recompute budget) builds and traces each configuration once.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from repro.metrics.trace import FastMeta, ModelTrace, trace_model
from repro.records.entries import ImageSize, parse_size, size_text

__all__ = ["ModelCache", "build_profile_model"]


def build_profile_model(name: str, num_classes: int | None = None, opts: Mapping[str, Any] | None = None) -> nn.Module:
    """Build ``name`` (registered model or SAP architecture string) on the ``meta`` device, falling back to the CPU
    for models whose constructors need real tensors."""
    from repro.models import build_model

    opts = dict(opts or {})
    try:
        with torch.device("meta"), FastMeta(), _initialisers_skipped():
            return build_model(name, num_classes, **opts)
    except (NotImplementedError, RuntimeError):
        return build_model(name, num_classes, **opts)


_INITIALISERS = (
    "uniform_",
    "normal_",
    "trunc_normal_",
    "constant_",
    "ones_",
    "zeros_",
    "eye_",
    "dirac_",
    "xavier_uniform_",
    "xavier_normal_",
    "kaiming_uniform_",
    "kaiming_normal_",
    "orthogonal_",
    "sparse_",
)


def _unchanged(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    return tensor


@contextmanager
def _initialisers_skipped() -> Iterator[None]:
    """``torch.nn.init``'s in-place initialisers as no-ops while a model is built on the ``meta`` device, where
    they only cost Python time: meta tensors hold no values, so the model is the same (the usual "empty weights"
    construction). Not thread-safe: the functions are swapped module-wide while the block runs."""
    saved = {name: getattr(nn.init, name) for name in _INITIALISERS if hasattr(nn.init, name)}
    for name in saved:
        setattr(nn.init, name, _unchanged)
    try:
        yield
    finally:
        for name, function in saved.items():
            setattr(nn.init, name, function)


class ModelCache:
    """Built models (:func:`build_profile_model`) and their traces (:func:`~repro.metrics.trace.trace_model`) by
    configuration. A model whose build fails is not cached: asking again raises again."""

    def __init__(self) -> None:
        self._models: dict[str, nn.Module] = {}
        self._traces: dict[tuple[str, str], ModelTrace] = {}

    @staticmethod
    def key(name: str, num_classes: int | None, opts: Mapping[str, Any] | None) -> str:
        return json.dumps([name, num_classes, dict(opts or {})], sort_keys=True)

    def model(self, name: str, num_classes: int | None = None, opts: Mapping[str, Any] | None = None) -> nn.Module:
        key = self.key(name, num_classes, opts)
        if key not in self._models:
            self._models[key] = build_profile_model(name, num_classes, opts)
        return self._models[key]

    def trace(
        self,
        name: str,
        num_classes: int | None,
        opts: Mapping[str, Any] | None,
        image_size: ImageSize | str | int,
    ) -> ModelTrace:
        size = parse_size(image_size)
        key = (self.key(name, num_classes, opts), size_text(size))
        if key not in self._traces:
            self._traces[key] = trace_model(self.model(name, num_classes, opts), size)
        return self._traces[key]
