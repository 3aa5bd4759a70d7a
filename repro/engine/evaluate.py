"""Top-1 evaluation of a classifier, on one process or summed over DDP processes."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from repro.engine.distributed import DistContext, all_reduce_sum
from repro.utils.amp import autocast


@torch.no_grad()
def count_correct(
    model: nn.Module,
    loader: Iterable,
    *,
    device: torch.device | str | None = None,
    amp: bool = False,
    channels_last: bool = False,
    max_samples: int | None = None,
) -> tuple[int, int]:
    """``(correct top-1 predictions, images counted)`` over ``loader`` on this process; only the first
    ``max_samples`` images are counted when given. Restores the training mode."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    correct = torch.zeros((), dtype=torch.int64, device=device)
    seen = 0
    try:
        for images, labels in loader:
            if max_samples is not None and seen >= max_samples:
                break
            images = images.to(device, non_blocking=True)
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            labels = labels.to(device, non_blocking=True)
            with autocast(device, amp):
                logits = model(images)
            hits = logits.argmax(dim=1) == labels
            if max_samples is not None:
                hits = hits[: max_samples - seen]
            correct += hits.sum()
            seen += hits.numel()
    finally:
        model.train(was_training)
    return int(correct.item()), seen


def evaluate(
    model: nn.Module,
    loader: Iterable,
    *,
    device: torch.device | str | None = None,
    amp: bool = False,
    channels_last: bool = False,
    ctx: DistContext | None = None,
    max_samples: int | None = None,
) -> float:
    """Top-1 accuracy in [0, 1] of ``model`` on ``loader`` (the fraction the SAP logs print).

    With a distributed ``ctx`` each process evaluates its shard and the counts are summed over processes;
    ``max_samples`` limits the count of this process (to leave out the padding of a sharded loader).
    """
    correct, seen = count_correct(
        model, loader, device=device, amp=amp, channels_last=channels_last, max_samples=max_samples
    )
    if ctx is not None and ctx.distributed:
        totals = torch.tensor([correct, seen], dtype=torch.int64, device=ctx.device)
        all_reduce_sum(totals, ctx)
        correct, seen = int(totals[0]), int(totals[1])
    if seen == 0:
        raise ValueError("evaluation loader yielded no images")
    return correct / seen


def evaluate_checkpoint(
    path: str | Path,
    *,
    split: str = "test",
    data_root: str | None = None,
    batch_size: int | None = None,
    device: str = "auto",
    backend: str = "torch",
    num_workers: int = 0,
) -> dict[str, Any]:
    """Rebuild the model of a ``repro train`` checkpoint (``checkpoint.pt`` or ``best.pt``); top-1 on ``split``."""
    from repro.engine.checkpoint import CheckpointError, check_training_checkpoint, load_checkpoint, load_model_weights
    from repro.engine.distributed import DistContext, resolve_device
    from repro.engine.loaders import build_eval_loader
    from repro.engine.recipes import recipe_from_dict
    from repro.models import build_model

    saved = load_checkpoint(path)
    check_training_checkpoint(saved, path)
    config = saved["config"]
    try:
        recipe = recipe_from_dict(saved["recipe"])
    except (TypeError, ValueError, KeyError) as exc:
        raise CheckpointError(f"checkpoint {str(path)!r}: field 'recipe' is not a valid recipe ({exc})") from None
    opts = {k: config[k] for k in ("placement",) if config.get(k) is not None}
    if config.get("strict"):
        opts["strict"] = True
    try:
        model = build_model(config["arch"], num_classes=saved["num_classes"], **opts)
    except (ValueError, TypeError, KeyError) as exc:
        raise CheckpointError(
            f"checkpoint {str(path)!r}: field 'config.arch' = {config['arch']!r} does not build a model ({exc})"
        ) from None
    load_model_weights(model, saved["model"], path)
    ctx = DistContext(device=resolve_device(device))
    model.to(ctx.device)
    loader = build_eval_loader(
        dataset=recipe.dataset,
        split=split,
        data_root=data_root if data_root is not None else config.get("data_root"),
        image_size=recipe.image_size,
        batch_size=batch_size or recipe.eval_batch_size or recipe.batch_size,
        augment=recipe.augment,
        backend=backend,
        num_workers=num_workers,
        seed=config["seed"],
        faithful=not config.get("fix_b18", False),
        ctx=ctx,
    )
    top1 = evaluate(model, loader, device=ctx.device, amp=ctx.device.type == "cuda")
    return {
        "top1": top1,
        "split": split,
        "dataset": recipe.dataset,
        "arch": config["arch"],
        "recipe": recipe.name,
        "image_size": recipe.image_size,
        "epoch": int(saved["epoch"]),
        "checkpoint": str(path),
    }
