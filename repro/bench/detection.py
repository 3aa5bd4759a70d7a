"""Detector training-step benchmark: forward with targets (all losses), backward and an SGD step on random images and
boxes, at the settings of a detection recipe (its image size, batch and model options: the smoke recipes by default).

Every detector is measured in the same process; ``time / baseline`` divides by the first one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from repro.bench.timing import measure

__all__ = ["DEFAULT_DETECTORS", "bench_detection", "parse_detector"]

DEFAULT_DETECTORS = (
    ("faster_rcnn", "resnet18-skip-1222"),
    ("ssd", "mobilenet-skip-1222121"),
    ("yolov3", "mobilenet-skip-1222121"),
)
BOXES_PER_IMAGE = 3
NUM_CLASSES = 5


def parse_detector(text: str) -> tuple[str, str]:
    """``DETECTOR:ARCH`` (e.g. ``ssd:mobilenet-skip-1222121``)."""
    detector, sep, arch = text.partition(":")
    if not sep or not detector or not arch:
        raise ValueError(f"{text!r} is not DETECTOR:ARCH, e.g. faster_rcnn:resnet18-skip-1222")
    return detector, arch


def _random_batch(batch: int, side: int, generator: torch.Generator, device: torch.device):
    images = [torch.rand(3, side, side, generator=generator).to(device) for _ in range(batch)]
    targets = []
    for _ in range(batch):
        xy = torch.rand(BOXES_PER_IMAGE, 2, generator=generator) * side * 0.6
        wh = (0.15 + 0.25 * torch.rand(BOXES_PER_IMAGE, 2, generator=generator)) * side
        labels = torch.randint(1, NUM_CLASSES + 1, (BOXES_PER_IMAGE,), generator=generator)
        targets.append({"boxes": torch.cat([xy, xy + wh], 1).to(device), "labels": labels.to(device)})
    return images, targets


def _train_step(model: nn.Module, images, targets) -> Callable[[], None]:
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        losses = model(images, [dict(t) for t in targets])
        sum(losses.values()).backward()
        optimizer.step()

    return step


def bench_detection(
    detectors: Sequence[tuple[str, str]],
    *,
    profile: str = "smoke",
    image_size: int | None = None,
    batch_size: int | None = None,
    device: str = "cpu",
    warmup: int = 2,
    repeats: int = 5,
    memory: bool = True,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> list[dict]:
    """Median training-step time (and peak memory) of each ``(detector, arch)`` under its ``profile`` recipe."""
    from repro.detection import build_detector
    from repro.engine.detection_recipes import detection_recipe_name, get_detection_recipe

    if not detectors:
        raise ValueError("give at least one DETECTOR:ARCH to benchmark")
    dev = torch.device(device)
    rows: list[dict] = []
    for detector, arch in detectors:
        recipe = get_detection_recipe(detection_recipe_name(detector, profile))
        size = image_size or recipe.image_size
        side = size if isinstance(size, int) else min(size)
        batch = batch_size or recipe.batch_size
        row = {"detector": detector, "arch": arch, "recipe": recipe.name, "image_size": side, "batch": batch}
        if progress:
            progress(f"{detector} {arch} ({recipe.name})")
        try:
            torch.manual_seed(seed)
            model = build_detector(detector, arch, NUM_CLASSES, size, **recipe.model_options).to(dev).train()
            images, targets = _random_batch(batch, side, torch.Generator().manual_seed(seed), dev)
            result = measure(_train_step(model, images, targets), device=dev, warmup=warmup, repeats=repeats,
                             memory=memory)  # fmt: skip
            row.update(ms=result.median_ms, iqr_ms=result.iqr_ms, repeats=result.repeats, peak_mib=result.peak_mib)
            row["ms_per_image"] = result.median_ms / batch
        except Exception as exc:
            row["error"] = f"{type(exc).__name__}: {exc}"
        rows.append(row)
    ref = next((r for r in rows if "ms" in r), None)
    for row in rows:
        if "ms" in row and ref is not None:
            row["x_vs_baseline"] = row["ms"] / ref["ms"]
            row["baseline"] = f"{ref['detector']}:{ref['arch']}"
    return rows
