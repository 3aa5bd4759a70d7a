"""Parameter counts: total and trainable, each shared parameter counted once."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

__all__ = ["ParamCount", "count_params"]


@dataclass(frozen=True)
class ParamCount:
    """Number of parameter elements of a model (buffers such as BN running statistics are not parameters)."""

    total: int
    trainable: int

    @property
    def frozen(self) -> int:
        return self.total - self.trainable


def count_params(model: nn.Module) -> ParamCount:
    """Total and trainable (``requires_grad``) parameter elements; works on ``meta`` models too."""
    total = trainable = 0
    for p in model.parameters():  # nn.Module.parameters() already yields a shared parameter once
        total += p.numel()
        if p.requires_grad:
            trainable += p.numel()
    return ParamCount(total, trainable)
