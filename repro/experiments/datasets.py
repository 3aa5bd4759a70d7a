"""The classification data of the experiments as normalised in-memory tensors.

* ``compass`` - generated (:mod:`repro.data.generate_compass`), options ``n_train``, ``n_test``, ``seed`` and the
  generator's own (``image_size``, ``glyph``, ``clutter``, ...); not comparable with any paper number;
* ``digits`` - scikit-learn's bundled 8x8 digits, upsampled (:mod:`repro.data.digits`), option ``image_size``;
* ``cifar10`` - the real CIFAR-10 under the data root (:mod:`repro.data.cifar`), no options.

Images are normalised per channel with the training split's mean and std. Each process keeps the last few sets.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import numpy as np

from repro.data.errors import DatasetError
from repro.experiments.training import TensorSplit, channel_stats

__all__ = ["GENERATED", "SOURCES", "load_classification"]

SOURCES = ("compass", "digits", "cifar10")
GENERATED = ("compass",)


def _digest(images: np.ndarray, labels: np.ndarray) -> str:
    sha = hashlib.sha256(repr(images.shape).encode())
    sha.update(np.ascontiguousarray(images).tobytes())
    sha.update(np.ascontiguousarray(labels).tobytes())
    return sha.hexdigest()


def _arrays(name: str, options: dict[str, Any], data_root: str | None):
    if name == "compass":
        from repro.data.generate_compass import CLASSES, make_compass

        opts = dict(options)
        n_train, n_test = int(opts.pop("n_train", 1000)), int(opts.pop("n_test", 500))
        train = make_compass("train", n=n_train, **opts)
        test = make_compass("test", n=n_test, **opts)
        return train[:2], test[:2], list(CLASSES), {"generator": train[2]}
    if name in ("digits", "cifar10"):
        from repro.data import get_dataset

        if name == "cifar10" and options:
            raise DatasetError(f"cifar10 takes no options, got {sorted(options)}")
        train = get_dataset(name, data_root, "train", **options)
        test = get_dataset(name, data_root, "test", **options)
        return (train.images, train.labels), (test.images, test.labels), list(train.classes), {}
    raise DatasetError(f"unknown experiment dataset {name!r}; valid: {', '.join(SOURCES)}")


@lru_cache(maxsize=4)
def _load(name: str, options_json: str, data_root: str | None):
    (x_train, y_train), (x_test, y_test), classes, info = _arrays(name, json.loads(options_json), data_root)
    mean, std = channel_stats(x_train)
    info = {
        **info,
        "classes": classes,
        "n_train": len(x_train),
        "n_test": len(x_test),
        "image_size": int(x_train.shape[1]),
        "mean": mean,
        "std": std,
        "train_digest": _digest(x_train, y_train),
        "test_digest": _digest(x_test, y_test),
    }
    return (
        TensorSplit.from_arrays(x_train, y_train, mean, std),
        TensorSplit.from_arrays(x_test, y_test, mean, std),
        info,
    )


def load_classification(
    name: str, options: Mapping[str, Any] | None = None, data_root: str | None = None
) -> tuple[TensorSplit, TensorSplit, dict[str, Any]]:
    """``(train, test, info)``; ``info`` has the classes, sizes, normalisation and SHA-256 digests of the data."""
    return _load(name, json.dumps(dict(options or {}), sort_keys=True), data_root)
