"""Epoch-deterministic classification loaders over the torchvision or the ffcv path, and a detection collate."""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from repro.data.errors import DatasetError
from repro.data.generated import read_meta
from repro.data.paths import resolve_data_root
from repro.data.registry import DatasetSpec, get_spec
from repro.data.transforms import Augmentation, build_transforms, get_augmentation

BACKENDS = ("torch", "ffcv")


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed for one sample of one epoch (splitmix-style mixing of the three numbers)."""
    z = (seed * 0x9E3779B97F4A7C15 + epoch * 0xBF58476D1CE4E5B9 + index * 0x94D049BB133111EB) & (2**64 - 1)
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & (2**64 - 1)
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & (2**64 - 1)
    return (z ^ (z >> 31)) >> 1


def epoch_order(
    num_samples: int,
    *,
    epoch: int,
    seed: int,
    shuffle: bool,
    rank: int = 0,
    world_size: int = 1,
    drop_last: bool = False,
    batch_size: int = 1,
) -> np.ndarray:
    """The sample indices one rank reads in one epoch.

    The permutation depends only on ``(seed, epoch)``, so every rank agrees on it; it is split as
    ``DistributedSampler`` splits (rank ``r`` takes every ``world_size``-th index from ``r``; without ``drop_last``
    the tail is padded with the first indices so that all ranks get the same count). With ``drop_last`` the
    incomplete last batch is dropped.
    """
    order = np.random.default_rng([seed, epoch]).permutation(num_samples) if shuffle else np.arange(num_samples)
    if world_size > 1:
        if drop_last:
            order = order[: num_samples // world_size * world_size]
        else:
            order = np.resize(order, math.ceil(num_samples / world_size) * world_size)
        order = order[rank::world_size]
    if drop_last:
        order = order[: len(order) // batch_size * batch_size]
    return order


class SeededTransform(Dataset):
    """Applies ``transform`` with the torch generator seeded per (seed, epoch, sample): the same augmentation on every
    run and in any worker, without touching the caller's random state.

    ``joint``: the transform takes and returns ``(image, target)`` (detection), else it maps the image alone.
    """

    def __init__(self, dataset: Dataset, transform, *, seed: int, randomised: bool, joint: bool = False) -> None:
        self.dataset, self.transform, self.seed, self.randomised = dataset, transform, seed, randomised
        self.joint = joint
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.dataset)

    def _apply(self, image, label):
        return self.transform(image, label) if self.joint else (self.transform(image), label)

    def __getitem__(self, index: int):
        image, label = self.dataset[index]
        if not self.randomised:
            return self._apply(image, label)
        # Seed the CPU generator directly (torch.manual_seed also visits every accelerator: ~100x slower).
        generator = torch.default_generator
        state = generator.get_state()
        generator.manual_seed(sample_seed(self.seed, self.epoch, int(index)))
        try:
            return self._apply(image, label)
        finally:
            generator.set_state(state)


def dataset_fingerprint(spec: DatasetSpec, data_root: Path, dataset: Dataset) -> str:
    """Identifies the data a ``.beton`` was written from (generated sets: their options too)."""
    digest = hashlib.sha1(spec.name.encode())
    if spec.generated:
        digest.update(json.dumps(read_meta(data_root / spec.name), sort_keys=True).encode())
    if hasattr(dataset, "fingerprint"):
        digest.update(dataset.fingerprint().encode())
    digest.update(str(len(dataset)).encode())
    return digest.hexdigest()


class ClassificationLoader:
    """Batches ``(float images (B, 3, S, S) normalised, int64 labels (B,))`` of one split, one rank.

    ``len()`` is the number of batches per epoch. ``set_epoch(e)`` picks the epoch: order and augmentation depend
    only on ``(seed, epoch)`` (and the rank's shard), so a resumed run sees the same batches.
    """

    def __init__(
        self,
        dataset: Dataset,
        *,
        name: str,
        backend: str,
        recipe: Augmentation,
        image_size: int,
        batch_size: int,
        train: bool,
        shuffle: bool,
        num_workers: int,
        seed: int,
        drop_last: bool,
        rank: int,
        world_size: int,
        device: torch.device,
        faithful: bool,
        beton: Path | None = None,
    ) -> None:
        self.dataset, self.name, self.backend, self.recipe = dataset, name, backend, recipe
        self.image_size, self.batch_size, self.train, self.shuffle = image_size, batch_size, train, shuffle
        self.num_workers, self.seed, self.drop_last = num_workers, seed, drop_last
        self.rank, self.world_size, self.device = rank, world_size, device
        self.mean, self.std = recipe.mean_std(name)
        self.epoch = 0
        self.beton = beton
        if backend == "ffcv":
            from repro.data.ffcv_io import FfcvBatches

            self._ffcv = FfcvBatches(
                beton,
                recipe=recipe,
                image_size=image_size,
                train=train,
                batch_size=batch_size,
                num_workers=num_workers,
                seed=seed,
                device=device,
                mean=self.mean,
                std=self.std,
            )
            if self._ffcv.num_samples != len(dataset):
                raise DatasetError(
                    f"{beton} holds {self._ffcv.num_samples} samples but {name} has {len(dataset)}; "
                    "delete the .beton to rewrite it"
                )
        else:
            transform = build_transforms(recipe.name, image_size, train, dataset=name, faithful=faithful)
            self._torch = SeededTransform(dataset, transform, seed=seed, randomised=recipe.is_random(train))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def order(self, epoch: int | None = None) -> np.ndarray:
        """The sample indices of this rank for ``epoch`` (default: the current one)."""
        return epoch_order(
            len(self.dataset),
            epoch=self.epoch if epoch is None else epoch,
            seed=self.seed,
            shuffle=self.shuffle,
            rank=self.rank,
            world_size=self.world_size,
            drop_last=self.drop_last,
            batch_size=self.batch_size,
        )

    def __len__(self) -> int:
        return math.ceil(len(self.order()) / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = self.order()
        if len(order) == 0:
            return
        if self.backend == "ffcv":
            yield from self._ffcv.iterate(order)
            return
        self._torch.epoch = self.epoch
        loader = DataLoader(
            self._torch,
            batch_size=self.batch_size,
            sampler=order.tolist(),
            num_workers=self.num_workers,
            pin_memory=self.device.type == "cuda",
            generator=torch.Generator().manual_seed(self.seed + self.epoch),
        )
        for images, labels in loader:
            yield images.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True)


def build_loader(
    dataset: str,
    split: str,
    *,
    root: str | os.PathLike | None = None,
    image_size: int,
    batch_size: int,
    recipe: str,
    train: bool,
    backend: str = "torch",
    num_workers: int = 0,
    seed: int = 0,
    drop_last: bool = False,
    rank: int = 0,
    world_size: int = 1,
    device: str | torch.device = "cpu",
    shuffle: bool | None = None,
    faithful: bool = True,
    ffcv_mode: str = "raw",
    ffcv_max_resolution: int | None = None,
    dataset_opts: dict | None = None,
) -> ClassificationLoader:
    """A :class:`ClassificationLoader` for ``dataset``/``split`` with ``recipe``'s transforms.

    ``backend='ffcv'`` reads ``<root>/ffcv/<dataset>/<split>-<ffcv_mode>.beton``, writing it first when missing or
    stale. ``shuffle`` defaults to ``train``. ``faithful=False`` corrects quirk B18 in the SAP recipes.
    """
    if backend not in BACKENDS:
        raise DatasetError(f"unknown loader backend {backend!r}; valid: {', '.join(BACKENDS)}")
    if batch_size < 1 or image_size < 1 or num_workers < 0:
        raise DatasetError(
            f"batch_size and image_size must be >= 1 and num_workers >= 0, got {batch_size}, "
            f"{image_size}, {num_workers}"
        )
    if world_size < 1 or not 0 <= rank < world_size:
        raise DatasetError(f"rank must be in [0, world_size), got rank={rank}, world_size={world_size}")
    spec = get_spec(dataset)
    if spec.task != "classification":
        raise DatasetError(f"{spec.name} is a detection dataset; use repro.data.get_dataset with detection_collate")
    resolved = get_augmentation(recipe).resolved(image_size, faithful=faithful)
    data_root = resolve_data_root(root)
    split = spec.resolve_split(split)
    base = spec.build(data_root, split, transform=None, **(dataset_opts or {}))
    if len(base) == 0:
        raise DatasetError(f"{spec.name}: split {split!r} under {data_root} has no images")
    beton = None
    if backend == "ffcv":
        from repro.data.ffcv_io import beton_path, write_beton

        beton = write_beton(
            base,
            beton_path(data_root, spec.name, split, ffcv_mode, ffcv_max_resolution),
            mode=ffcv_mode,
            max_resolution=ffcv_max_resolution,
            fingerprint=dataset_fingerprint(spec, data_root, base),
        )
    return ClassificationLoader(
        base,
        name=spec.name,
        backend=backend,
        recipe=resolved,
        image_size=image_size,
        batch_size=batch_size,
        train=train,
        shuffle=train if shuffle is None else shuffle,
        num_workers=num_workers,
        seed=seed,
        drop_last=drop_last,
        rank=rank,
        world_size=world_size,
        device=torch.device(device),
        faithful=faithful,
        beton=beton,
    )


def detection_collate(batch: list) -> tuple[list, list]:
    """Keep images and targets as lists (detection images differ in size)."""
    images, targets = zip(*batch) if batch else ((), ())
    return list(images), list(targets)
