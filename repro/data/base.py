"""Classification dataset bases: images held in memory (STL10, CIFAR, digits) or listed as files (ImageFolder, VWW)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from repro.data.errors import DataFileError, DatasetError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".webp")


def load_rgb(path: Path) -> Image.Image:
    """Read an image file as RGB; a corrupt or truncated file fails with its path."""
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except Image.DecompressionBombError as err:  # a small file that decodes to gigapixels
        raise DataFileError(f"cannot read image {path}: {err}; refusing it") from None
    except FileNotFoundError:
        raise DatasetError(f"image {path} is missing; the dataset is incomplete, re-download it") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise DataFileError(
            f"cannot read image {path}: {err}; the file is corrupt or truncated, re-download it"
        ) from None


class ArrayImageDataset(Dataset):
    """Images held as a ``(N, H, W, 3)`` uint8 array with integer labels; yields ``(PIL image, label)``."""

    def __init__(
        self,
        images: np.ndarray,
        labels: Sequence[int] | np.ndarray,
        classes: Sequence[str],
        transform: Callable | None = None,
    ) -> None:
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise ValueError(f"images must be (N, H, W, 3) uint8, got {images.shape} {images.dtype}")
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images = images
        self.labels = np.asarray(labels, dtype=np.int64)
        self.classes = list(classes)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        image = Image.fromarray(np.ascontiguousarray(self.images[index]))
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.labels[index])

    def fingerprint(self) -> str:
        """A cheap content hash (labels and a sample of the pixels) that changes when the data changes."""
        digest = hashlib.sha1(repr(self.images.shape).encode())
        digest.update(self.labels.tobytes())
        step = max(1, len(self.images) // 64)
        digest.update(np.ascontiguousarray(self.images[::step]).tobytes())
        return digest.hexdigest()


class ImageFileDataset(Dataset):
    """A list of ``(image path, label)``; yields ``(PIL image, label)`` like torchvision's ``ImageFolder``."""

    def __init__(
        self,
        samples: Sequence[tuple[Path, int]],
        classes: Sequence[str],
        transform: Callable | None = None,
        root: Path | None = None,
    ) -> None:
        self.samples = list(samples)
        self.targets = [label for _, label in self.samples]
        self.classes = list(classes)
        self.transform = transform
        self.root = root

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        path, label = self.samples[index]
        image = load_rgb(path)
        if self.transform is not None:
            image = self.transform(image)
        return image, label

    def fingerprint(self) -> str:
        """Hash of the sorted file list and labels (not the pixels)."""
        digest = hashlib.sha1()
        for path, label in self.samples:
            rel = path.relative_to(self.root) if self.root is not None else path
            digest.update(f"{rel}:{label}\n".encode())
        return digest.hexdigest()


def scan_image_folder(
    split_dir: Path, classes: Sequence[str] | None = None
) -> tuple[list[tuple[Path, int]], list[str], list[str]]:
    """``split_dir/<class>/<image>`` -> (samples, classes, empty class dirs); classes sorted as ImageFolder sorts.

    With ``classes`` given, only those sub-directories are read, in that order; missing ones are reported as empty.
    """
    if classes is None:
        classes = sorted(entry.name for entry in split_dir.iterdir() if entry.is_dir())
    samples: list[tuple[Path, int]] = []
    empty: list[str] = []
    for label, name in enumerate(classes):
        class_dir = split_dir / name
        files = (
            sorted(p for p in class_dir.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS) if class_dir.is_dir() else []
        )
        if not files:
            empty.append(name)
        samples.extend((path, label) for path in files)
    return samples, list(classes), empty
