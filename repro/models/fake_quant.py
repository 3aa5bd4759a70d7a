"""Quantisation-aware training by fake quantisation (``torch.ao.quantization``, eager mode): the "int8" networks of
Condensation-Net's quantised comparison (and any model asked for it).

:func:`prepare_fake_quant` swaps every ``Conv2d`` / ``Linear`` for its QAT twin, whose weights pass an int8
per-channel symmetric fake quantiser, and puts a uint8 per-tensor affine fake quantiser (moving-average min/max
observer, the full 0..255 range) on the output of every module the eager-mode QAT mapping quantises. Training and
evaluation then run in float on values rounded to the 8-bit grid; no integer kernel is used. The observers' statistics
are buffers, so they travel with ``state_dict`` (checkpoints, exact resume). :func:`frozen_observers` keeps them
fixed, e.g. during evaluation (an observer would otherwise keep learning from the test images) and BatchNorm
re-estimation.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import Any

from torch import nn

QUANTIZATIONS = ("none", "int8")


def _ao():
    with warnings.catch_warnings():  # eager-mode torch.ao.quantization announces its move to torchao
        warnings.simplefilter("ignore", DeprecationWarning)
        import torch.ao.quantization as ao
    return ao


def int8_qconfig():
    """Weights: int8 per-channel symmetric; activations: uint8 per-tensor affine over 0..255 (no reduced range)."""
    ao = _ao()
    return ao.QConfig(activation=ao.default_fused_act_fake_quant, weight=ao.default_fused_per_channel_wt_fake_quant)


def prepare_fake_quant(model: nn.Module, scheme: str = "int8") -> dict[str, Any] | None:
    """Make ``model`` (in place, before its optimizer is built) fake-quantised; ``"none"`` leaves it alone.
    Returns what a result records (``None`` for ``"none"``)."""
    if scheme not in QUANTIZATIONS:
        raise ValueError(f"unknown quantization {scheme!r}; choose one of {', '.join(QUANTIZATIONS)}")
    if scheme == "none":
        return None
    ao = _ao()
    model.train()
    model.qconfig = int8_qconfig()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ao.prepare_qat(model, inplace=True)
    quantisers = [m for m in model.modules() if isinstance(m, ao.FakeQuantizeBase)]
    weights = sum(1 for name, _ in model.named_modules() if name.endswith("weight_fake_quant"))
    return {
        "scheme": scheme,
        "method": "torch.ao.quantization eager-mode QAT (fake quantisation)",
        "weights": "int8 per-channel symmetric",
        "activations": "uint8 per-tensor affine, moving-average min/max",
        "fake_quantizers": len(quantisers),
        "quantized_weights": weights,
    }


@contextlib.contextmanager
def frozen_observers(model: nn.Module) -> Iterator[None]:
    """Within the block the fake quantisers keep their ranges (observers off); they are switched back on after."""
    ao = _ao()
    quantisers = [m for m in model.modules() if isinstance(m, ao.FakeQuantizeBase)]
    states = [bool(q.observer_enabled[0]) for q in quantisers]
    for q in quantisers:
        q.disable_observer()
    try:
        yield
    finally:
        for q, enabled in zip(quantisers, states):
            if enabled:
                q.enable_observer()


__all__ = ["QUANTIZATIONS", "frozen_observers", "int8_qconfig", "prepare_fake_quant"]
