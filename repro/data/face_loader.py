"""Loaders of the face detectors over the WIDER FACE layout (``widerface``, the generated ``synth_faces``) and
SCUT-HEAD Part B (``scut_head``).

Training batches come from :class:`~repro.data.detection_loader.DetectionLoader` (epoch-deterministic order and
augmentation, a rank's shard) with a :class:`~repro.data.face_transforms.FaceTransform`: every image of a batch has
the recipe's size, so the trainer stacks them. Training drops the images without a face, as EdgeML's list does.
Evaluation runs the test-time protocol image by image on :func:`face_eval_set`'s first ``max_images`` images.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from torch.utils.data import Dataset, Subset

from repro.data.detection_loader import DetectionLoader
from repro.data.errors import DatasetError
from repro.data.face_transforms import FaceTransform
from repro.data.registry import get_dataset, get_spec
from repro.data.scut_head import ScutHead
from repro.data.widerface import WiderFace

EVAL_PROTOCOLS = ("wider", "scut")


def _face_dataset(name: str, root: str | os.PathLike | None, split: str) -> WiderFace | ScutHead:
    spec = get_spec(name)
    dataset = get_dataset(spec.name, root, split, label_offset=1)
    if not isinstance(dataset, WiderFace | ScutHead):
        raise DatasetError(
            f"{spec.name} is not a face set; the face detectors read the WIDER FACE layout (widerface, synth_faces) "
            "or SCUT-HEAD (scut_head)"
        )
    if len(dataset) == 0:
        raise DatasetError(f"{spec.name}: split {split!r} has no images")
    return dataset


def _num_faces(dataset: WiderFace | ScutHead, index: int) -> int:
    boxes = dataset.target(index)["boxes"]
    return int(((boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])).sum())


def build_face_loader(
    dataset: str,
    split: str,
    *,
    root: str | os.PathLike | None = None,
    batch_size: int,
    image_size: tuple[int, int],
    augment: str = "none",
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
    num_workers: int = 0,
    min_face: float = 6.0,
    crop_side: int = 640,
) -> DetectionLoader:
    """Shuffled training batches ``(list of (3, H, W) images in 0..255, list of targets)`` of the images with faces;
    ``targets[i]["boxes"]`` are xyxy pixels of the transformed image, ``labels`` 1."""
    base = _face_dataset(dataset, root, split)
    with_faces = [i for i in range(len(base)) if _num_faces(base, i) > 0]
    if not with_faces:
        raise DatasetError(f"{dataset}: split {split!r} has no image with a face to train on")
    return DetectionLoader(
        Subset(base, with_faces),
        transform=FaceTransform(augment, image_size, min_face=min_face, crop_side=crop_side),
        batch_size=batch_size,
        shuffle=True,
        seed=seed,
        rank=rank,
        world_size=world_size,
        num_workers=num_workers,
    )


@dataclass(frozen=True)
class FaceEvalSet:
    """The evaluated images: ``dataset`` (yields ``(PIL image, target)`` with ``target["file"]``), its
    ``protocol`` (``wider``: the eval tool's ``.mat`` files in ``gt_dir``; ``scut``: every head counts) and the keys
    ``<event>/<name>`` (``<name>`` for SCUT-HEAD) of its prediction files."""

    dataset: Dataset
    protocol: str
    keys: tuple[str, ...]
    gt_dir: Path | None
    source: WiderFace | ScutHead


def face_eval_set(
    dataset: str, split: str = "val", *, root: str | os.PathLike | None = None, max_images: int | None = None
) -> FaceEvalSet:
    """The first ``max_images`` images (default all) of ``split`` and how they are scored."""
    base = _face_dataset(dataset, root, split)
    count = len(base) if max_images is None else min(max_images, len(base))
    files = [base.target(i)["file"] for i in range(count)]
    keys = tuple(f.rsplit(".", 1)[0] for f in files)
    if isinstance(base, WiderFace):
        if base.gt_dir is None:
            raise DatasetError(f"{dataset}: split {split!r} has no evaluation files; evaluate on 'val'")
        return FaceEvalSet(Subset(base, range(count)), "wider", keys, base.gt_dir, base)
    return FaceEvalSet(Subset(base, range(count)), "scut", keys, None, base)


__all__ = ["EVAL_PROTOCOLS", "FaceEvalSet", "build_face_loader", "face_eval_set"]
