"""BatchNorm statistics re-estimated on training batches before evaluation ("precise BN").

After short training with a fast optimiser the running averages (momentum 0.1) lag far behind the weights and
eval-mode predictions collapse (reference/detection_notes.md §4.2). :func:`recompute_bn_stats` resets every BatchNorm,
switches it to a cumulative average (``momentum=None``) and runs a few no-grad train-mode forwards; the weights do not
change, and the caller's random state is restored so that training continues as without it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from repro.engine.checkpoint import capture_rng_state, restore_rng_state


def batch_norms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


@torch.no_grad()
def recompute_bn_stats(
    model: nn.Module, batches: Iterable[Any], num_batches: int, forward: Callable[[nn.Module, Any], Any]
) -> int:
    """Re-estimate the BatchNorm statistics of ``model`` from up to ``num_batches`` of ``batches``.

    ``forward(model, batch)`` runs one training-mode forward (a detector needs its targets). Returns the number of
    batches used (0 when the model has no BatchNorm).
    """
    norms = batch_norms(model)
    if not norms or num_batches < 1:
        return 0
    momenta = [bn.momentum for bn in norms]
    was_training = model.training
    rng = capture_rng_state()
    used = 0
    try:
        for bn in norms:
            bn.reset_running_stats()
            bn.momentum = None
        model.train()
        for batch in batches:
            if used >= num_batches:
                break
            forward(model, batch)
            used += 1
    finally:
        for bn, momentum in zip(norms, momenta):
            bn.momentum = momentum
        model.train(was_training)
        restore_rng_state(rng)
    return used
