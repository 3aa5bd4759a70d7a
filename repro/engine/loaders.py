"""The trainer's view of :mod:`repro.data`: train, test and (optional) held-out validation loaders for one process.

The loaders are :class:`repro.data.ClassificationLoader`: order and augmentation depend only on ``(seed, epoch)``
and the process's shard, never on the global random state. ``val_split`` > 0 holds out a fixed fraction of the
*training* set (chosen by :data:`HOLDOUT_SEED`, the same for every run seed) for validation-based model selection.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from repro.engine.distributed import DistContext

#: Seed of the train/validation partition: fixed, so runs with different seeds share the same held-out images.
HOLDOUT_SEED = 20230103


@dataclass
class Loaders:
    train: Iterable
    test: Iterable
    val: Iterable | None
    num_classes: int


def holdout_indices(num_samples: int, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """``(train indices, validation indices)``: a fixed random ``fraction`` of ``range(num_samples)`` held out."""
    order = np.random.default_rng(HOLDOUT_SEED).permutation(num_samples)
    n_val = round(fraction * num_samples)
    if not 0 < n_val < num_samples:
        raise ValueError(f"val_split {fraction} of {num_samples} training images leaves an empty split")
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def shard_size(num_samples: int, ctx: DistContext) -> int:
    """How many distinct samples this process holds when ``num_samples`` are split over the processes.

    The data loaders pad the last shards with repeated samples (as ``DistributedSampler`` does); those come last in a
    shard, so counting only the first ``shard_size`` samples of every shard counts each sample exactly once.
    """
    return len(range(ctx.rank, num_samples, ctx.world_size))


def build_eval_loader(
    *,
    dataset: str,
    split: str,
    data_root: str | None,
    image_size: int,
    batch_size: int,
    augment: str,
    backend: str,
    num_workers: int,
    seed: int,
    faithful: bool,
    ctx: DistContext,
) -> Iterable:
    """An evaluation loader (no augmentation, fixed order) over this process's shard of ``split``."""
    from repro.data import build_loader

    return build_loader(
        dataset,
        split,
        root=data_root,
        image_size=image_size,
        batch_size=batch_size,
        recipe=augment,
        train=False,
        backend=backend,
        num_workers=num_workers,
        seed=seed,
        drop_last=False,
        rank=ctx.rank,
        world_size=ctx.world_size,
        device=ctx.device,
        faithful=faithful,
    )


def build_loaders(
    *,
    dataset: str,
    data_root: str | None,
    image_size: int,
    batch_size: int,
    eval_batch_size: int,
    augment: str,
    backend: str,
    num_workers: int,
    seed: int,
    faithful: bool,
    val_split: float,
    ctx: DistContext,
) -> Loaders:
    """Loaders for one process: ``batch_size`` and ``eval_batch_size`` are per process; shards follow ``ctx``."""
    from repro.data import build_loader, get_spec

    spec = get_spec(dataset)
    if spec.task != "classification":
        raise ValueError(f"{dataset!r} is a {spec.task} dataset; the classification trainer needs a classification one")
    common: dict[str, Any] = {
        "root": data_root,
        "image_size": image_size,
        "recipe": augment,
        "backend": backend,
        "num_workers": num_workers,
        "seed": seed,
        "rank": ctx.rank,
        "world_size": ctx.world_size,
        "device": ctx.device,
        "faithful": faithful,
    }
    eval_kw = {k: v for k, v in common.items() if k not in ("root", "recipe", "rank", "world_size", "device")}
    test = build_eval_loader(
        dataset=dataset,
        split="test",
        data_root=data_root,
        batch_size=eval_batch_size,
        augment=augment,
        ctx=ctx,
        **eval_kw,
    )
    if not val_split:
        train = build_loader(dataset, "train", batch_size=batch_size, train=True, drop_last=False, **common)
        return Loaders(train=train, test=test, val=None, num_classes=spec.num_classes)
    train, val = _holdout_loaders(dataset, val_split, batch_size, eval_batch_size, common)
    return Loaders(train=train, test=test, val=val, num_classes=spec.num_classes)


def _holdout_loaders(
    dataset: str, val_split: float, batch_size: int, eval_batch_size: int, common: dict[str, Any]
) -> tuple[Iterable, Iterable]:
    """Train and validation loaders over a fixed partition of the training split (torch backend only)."""
    import torch
    from torch.utils.data import Subset

    from repro.data import ClassificationLoader, get_dataset, get_spec
    from repro.data.transforms import get_augmentation as get_image_recipe

    if common["backend"] != "torch":
        raise ValueError("val_split needs backend 'torch' (the ffcv files hold whole splits); pass --backend torch")
    spec = get_spec(dataset)
    base = get_dataset(dataset, common["root"], "train")
    train_idx, val_idx = holdout_indices(len(base), val_split)
    image_recipe = get_image_recipe(common["recipe"]).resolved(common["image_size"], faithful=common["faithful"])
    shared = {
        "name": spec.name,
        "backend": "torch",
        "recipe": image_recipe,
        "image_size": common["image_size"],
        "num_workers": common["num_workers"],
        "seed": common["seed"],
        "drop_last": False,
        "rank": common["rank"],
        "world_size": common["world_size"],
        "device": torch.device(common["device"]),
        "faithful": common["faithful"],
    }
    train = ClassificationLoader(
        Subset(base, train_idx.tolist()), batch_size=batch_size, train=True, shuffle=True, **shared
    )
    val = ClassificationLoader(
        Subset(base, val_idx.tolist()), batch_size=eval_batch_size, train=False, shuffle=False, **shared
    )
    return train, val
