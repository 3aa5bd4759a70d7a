"""scikit-learn's bundled handwritten digits (1,797 real 8x8 scans), upscaled to RGB: a small real dataset."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from repro.data.base import ArrayImageDataset
from repro.data.errors import DatasetError
from repro.data.registry import DatasetSpec, register_dataset

NAME = "digits"
DEFAULT_SIZE = 32
TEST_EVERY = 5  # every 5th image (index % 5 == 0) is a test image: 1,437 train / 360 test


@lru_cache(maxsize=4)
def digit_images(image_size: int = DEFAULT_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """All digits as ``(1797, S, S, 3)`` uint8 (grey 0..16 scaled to 0..255, bilinear upscaling) and labels."""
    if image_size < 8:
        raise DatasetError(f"{NAME}: image_size must be >= 8, got {image_size}")
    from sklearn.datasets import load_digits

    bunch = load_digits()
    grey = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)
    resized = [np.asarray(Image.fromarray(g).resize((image_size, image_size), Image.BILINEAR)) for g in grey]
    images = np.repeat(np.stack(resized)[..., None], 3, axis=3)
    return images, bunch.target.astype(np.int64)


def build(root: Path, split: str, transform=None, *, image_size: int = DEFAULT_SIZE) -> ArrayImageDataset:
    images, labels = digit_images(int(image_size))
    is_test = np.arange(len(images)) % TEST_EVERY == 0
    keep = is_test if split == "test" else ~is_test
    return ArrayImageDataset(images[keep], labels[keep], [str(d) for d in range(10)], transform)


def check(root: Path) -> Path:
    build(root, "train")
    return root / NAME


register_dataset(
    DatasetSpec(
        name=NAME,
        task="classification",
        num_classes=10,
        splits=("train", "test"),
        split_aliases={"val": "test"},
        build=build,
        check=check,
        description="scikit-learn handwritten digits, 8x8 upscaled to 32x32 RGB (1,437 train / 360 test)",
        source="bundled with scikit-learn (sklearn.datasets.load_digits); nothing to download",
    )
)
