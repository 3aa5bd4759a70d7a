"""Learning-rate schedules as pure functions of the position in training.

The LR depends only on (recipe, epoch, step, steps_per_epoch), so a resumed run needs no scheduler state: the epoch and
step stored in the checkpoint fully determine it. Epochs are counted from 1, as in the SAP code.
"""

from __future__ import annotations

import math

from torch.optim import Optimizer

from repro.engine.recipes import Recipe


def lr_at(recipe: Recipe, epoch: int, step: int = 0, steps_per_epoch: int = 1) -> float:
    """The learning rate for ``step`` (0-based) of ``epoch`` (1-based) under ``recipe`` (a classification recipe or a
    :class:`repro.engine.detection_recipes.DetectionRecipe`, which has the same schedule fields).

    * ``step``: the SAP rule — at the start of each milestone epoch the LR is divided by ``lr_reduce``. The division is
      repeated (``lr / 5 / 5``), as the official code does it in place on the optimizer.
    * ``cosine``: ``lr * (1 + cos(pi * t / T)) / 2`` with ``t`` the elapsed epochs (fractional when per iteration) and
      ``T = cosine_epochs or epochs``; linear warm-up ``lr * t / warmup_epochs`` during the first ``warmup_epochs``.
    * ``constant``: ``lr``.
    """
    if epoch < 1:
        raise ValueError(f"epochs are counted from 1, got epoch={epoch}")
    if recipe.schedule == "constant":
        return recipe.lr
    if recipe.schedule == "step":
        lr = recipe.lr
        for milestone in recipe.milestones():
            if epoch >= milestone:
                lr = lr / recipe.lr_reduce
        return lr
    # cosine
    elapsed = float(epoch - 1)
    if recipe.per_iteration:
        elapsed += step / max(1, steps_per_epoch)
    if recipe.warmup_epochs and elapsed < recipe.warmup_epochs:
        return recipe.lr * elapsed / recipe.warmup_epochs
    period = float(recipe.cosine_epochs or recipe.epochs) - recipe.warmup_epochs
    return recipe.lr * (1.0 + math.cos(math.pi * (elapsed - recipe.warmup_epochs) / period)) / 2.0


def epochs_to_run(recipe: Recipe, epochs_compat_299: bool = False) -> int:
    """How many epochs the loop runs: ``recipe.epochs``, or one fewer with the logged runs' ``range(1, epochs)``
    (quirk B22; the schedule is still computed for ``recipe.epochs``)."""
    return recipe.epochs - 1 if epochs_compat_299 else recipe.epochs


def lr_table(recipe: Recipe, epochs: int | None = None) -> list[tuple[int, float]]:
    """``(epoch, lr at its first step)`` for every epoch 1..``epochs`` (default ``recipe.epochs``)."""
    return [(epoch, lr_at(recipe, epoch)) for epoch in range(1, (epochs or recipe.epochs) + 1)]


def set_lr(optimizer: Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def linear_warmup(lr: float, iteration: int, warmup_iters: int, warmup_ratio: float) -> float:
    """mmcv's linear warm-up on top of the scheduled ``lr``: from ``lr * warmup_ratio`` at iteration 0 to ``lr`` at
    ``warmup_iters`` (iterations counted from 0 over the whole run); ``lr`` unchanged afterwards."""
    if iteration >= warmup_iters:
        return lr
    k = (1.0 - iteration / warmup_iters) * (1.0 - warmup_ratio)
    return lr * (1.0 - k)


def scheduled_lr(recipe, epoch: int, step: int = 0, steps_per_epoch: int = 1) -> float:
    """:func:`lr_at` with the recipe's iteration warm-up (``warmup_iters``, ``warmup_ratio``; detection recipes)."""
    lr = lr_at(recipe, epoch, step, steps_per_epoch)
    warmup_iters = getattr(recipe, "warmup_iters", 0)
    if warmup_iters:
        lr = linear_warmup(lr, (epoch - 1) * steps_per_epoch + step, warmup_iters, recipe.warmup_ratio)
    return lr
