"""The one training loop of the experiments: small models on in-memory tensors, seeded, single process.

The engine's :func:`repro.engine.train.train` is built for dataset names, augmentation, checkpoints and DDP; the
probes and the shoot-out train hundreds of tiny models on tensors that fit in memory, where that machinery would cost
more than the training. :func:`fit` keeps what matters from it: seeding (:func:`repro.engine.seed.seed_everything`),
the cosine schedule per iteration (:func:`repro.engine.schedule.lr_at`) and the parameter digest
(:func:`repro.engine.train.param_digest`).

Accuracy is top-1 for classes and *exact match* (every label right) for multi-label targets.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from repro.engine.recipes import Recipe
from repro.engine.schedule import lr_at
from repro.engine.seed import seed_everything
from repro.engine.train import param_digest

__all__ = [
    "FitResult",
    "FitSettings",
    "TensorSplit",
    "accuracy",
    "channel_stats",
    "evaluate",
    "fit",
    "progress_enabled",
    "torch_threads",
]

OPTIMIZERS = ("adam", "sgd")


@dataclass(frozen=True)
class TensorSplit:
    """Normalised images ``(N, C, H, W)`` float32 and targets: int64 classes ``(N,)`` or float multi-hot ``(N, K)``."""

    images: torch.Tensor
    targets: torch.Tensor

    @property
    def multilabel(self) -> bool:
        return self.targets.dim() == 2

    def __len__(self) -> int:
        return len(self.images)

    @classmethod
    def from_arrays(
        cls, images: np.ndarray, targets: np.ndarray, mean: Sequence[float], std: Sequence[float]
    ) -> TensorSplit:
        """``uint8`` images ``(N, H, W)`` (one channel) or ``(N, H, W, C)``, scaled to [0, 1], then ``(x - mean) /
        std`` per channel; multi-hot targets become float."""
        x = torch.from_numpy(np.ascontiguousarray(images)).float().div_(255.0)
        x = x.unsqueeze(1) if x.dim() == 3 else x.permute(0, 3, 1, 2).contiguous()
        y = torch.from_numpy(np.ascontiguousarray(targets))
        y = y.float() if y.dim() == 2 else y.long()
        shape = (1, -1, 1, 1)
        return cls(x.sub_(torch.tensor(mean).view(shape)).div_(torch.tensor(std).view(shape)), y)


def channel_stats(images: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and standard deviation of ``uint8`` images ``(N, H, W)`` or ``(N, H, W, C)``, in [0, 1]
    units (the normalisation of :meth:`TensorSplit.from_arrays`, computed on the training split)."""
    x = images.reshape(*images.shape[:3], -1).astype(np.float64) / 255.0
    mean = x.mean(axis=(0, 1, 2))
    std = x.std(axis=(0, 1, 2))
    return [round(float(m), 6) for m in mean], [round(float(max(s, 1e-6)), 6) for s in std]


@dataclass(frozen=True)
class FitSettings:
    """How one model is trained: Adam (or SGD with momentum 0.9), cosine LR per iteration from ``lr`` to 0 over
    ``epochs``; ``stop_at``: stop as soon as the test accuracy reaches it (then evaluated after every epoch)."""

    epochs: int
    batch_size: int = 64
    lr: float = 0.01
    weight_decay: float = 0.0
    optimizer: str = "adam"
    stop_at: float | None = None
    eval_every_epoch: bool = False
    eval_batch_size: int = 500

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.eval_batch_size < 1:
            raise ValueError(f"epochs, batch_size and eval_batch_size must be >= 1: {self}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")


@dataclass
class FitResult:
    """What one training run gives: final and best test accuracy, history, timing, the parameter digest."""

    final_accuracy: float
    best_accuracy: float
    best_epoch: int
    epochs_run: int
    stopped_early: bool
    train_seconds: float
    images_per_second: float
    params: int
    param_digest: str
    history: list[dict[str, float]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def progress_enabled(progress: bool) -> bool:
    """``progress`` unless ``REPRO_NO_PROGRESS=1``."""
    return progress and os.environ.get("REPRO_NO_PROGRESS") != "1"


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Run the block with ``threads`` intra-op threads, then restore the previous count."""
    previous = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def accuracy(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """Top-1 accuracy, or exact-match accuracy (all labels right, a logit > 0 meaning present) for multi-hot
    targets."""
    hits = ((logits > 0) == (targets > 0.5)).all(dim=1) if targets.dim() == 2 else logits.argmax(dim=1) == targets
    return float(hits.float().mean().item())


def _loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    if targets.dim() == 2:
        return F.binary_cross_entropy_with_logits(logits, targets)
    return F.cross_entropy(logits, targets)


@torch.no_grad()
def evaluate(model: nn.Module, split: TensorSplit, batch_size: int = 500) -> float:
    """Accuracy of ``model`` on ``split`` (eval mode, restored afterwards)."""
    was_training = model.training
    model.eval()
    try:
        logits = torch.cat([model(split.images[i : i + batch_size]) for i in range(0, len(split), batch_size)])
    finally:
        model.train(was_training)
    return accuracy(logits, split.targets)


def _optimizer(model: nn.Module, settings: FitSettings) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if settings.optimizer == "adam":
        return torch.optim.Adam(params, lr=settings.lr, weight_decay=settings.weight_decay)
    return torch.optim.SGD(params, lr=settings.lr, momentum=0.9, weight_decay=settings.weight_decay)


def _schedule(settings: FitSettings, steps_per_epoch: int) -> Callable[[int, int], float]:
    recipe = Recipe(
        name="experiment",
        description="",
        source="repro.experiments",
        dataset="-",
        epochs=settings.epochs,
        batch_size=settings.batch_size,
        image_size=1,
        lr=settings.lr,
        optimizer="adam",
        schedule="cosine",
        per_iteration=True,
    )
    return lambda epoch, step: lr_at(recipe, epoch, step, steps_per_epoch)


def fit(
    build: Callable[[], nn.Module],
    train: TensorSplit,
    test: TensorSplit,
    settings: FitSettings,
    *,
    seed: int,
    progress: bool = False,
    desc: str = "",
) -> FitResult:
    """Seed with ``seed``, build the model with ``build()``, train it on ``train`` and measure it on ``test``.

    The batches are a seeded permutation per epoch (the last incomplete batch is dropped); nothing else is random,
    so on one thread count the same seed gives bit-identical weights. The best accuracy is the best over the
    evaluated epochs (every epoch when ``eval_every_epoch`` or ``stop_at`` is set, else only the last).
    """
    seed_everything(seed)
    model = build()
    optimizer = _optimizer(model, settings)
    generator = torch.Generator().manual_seed(seed)
    steps_per_epoch = max(1, len(train) // settings.batch_size)
    lr_for = _schedule(settings, steps_per_epoch)
    evaluate_each = settings.eval_every_epoch or settings.stop_at is not None
    history: list[dict[str, float]] = []
    best, best_epoch, stopped, seconds, seen = -1.0, 0, False, 0.0, 0
    bar = None
    if progress_enabled(progress):
        from tqdm.auto import tqdm

        bar = tqdm(total=settings.epochs, desc=desc or "fit", leave=False, unit="epoch")
    model.train()
    try:
        for epoch in range(1, settings.epochs + 1):
            start = time.perf_counter()
            order = torch.randperm(len(train), generator=generator)
            loss_sum = 0.0
            for step in range(steps_per_epoch):
                index = order[step * settings.batch_size : (step + 1) * settings.batch_size]
                for group in optimizer.param_groups:
                    group["lr"] = lr_for(epoch, step)
                loss = _loss(model(train.images[index]), train.targets[index])
                value = float(loss.item())
                if not math.isfinite(value):
                    raise FloatingPointError(f"{desc or 'fit'}: loss is {value} at epoch {epoch}, step {step}")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                loss_sum += value
                seen += len(index)
            seconds += time.perf_counter() - start
            row: dict[str, float] = {"epoch": epoch, "train_loss": loss_sum / steps_per_epoch}
            if evaluate_each or epoch == settings.epochs:
                row["test_accuracy"] = evaluate(model, test, settings.eval_batch_size)
                if row["test_accuracy"] > best:
                    best, best_epoch = row["test_accuracy"], epoch
            history.append(row)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{row['train_loss']:.3f}", acc=f"{row.get('test_accuracy', float('nan')):.3f}")
            if settings.stop_at is not None and row.get("test_accuracy", -1.0) >= settings.stop_at:
                stopped = epoch < settings.epochs
                break
    finally:
        if bar is not None:
            bar.close()
    final = history[-1]["test_accuracy"]
    return FitResult(
        final_accuracy=final,
        best_accuracy=best,
        best_epoch=best_epoch,
        epochs_run=len(history),
        stopped_early=stopped,
        train_seconds=round(seconds, 3),
        images_per_second=round(seen / seconds, 1) if seconds > 0 else 0.0,
        params=sum(p.numel() for p in model.parameters()),
        param_digest=param_digest(model),
        history=history,
    )
