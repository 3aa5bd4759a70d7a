"""Image transforms of the training recipes, as data (:class:`Augmentation`) shared by the torchvision and ffcv paths.

| recipe | train | eval | normalisation |
|---|---|---|---|
| ``sap-stl10`` | Resize(S) → RandomResizedCrop(S) → flip | Resize(S) → CenterCrop(S) | mean = std = 0.5 |
| ``sap-imagenet`` | Resize(S) → RandomResizedCrop(S) → flip | Resize(S) → CenterCrop(S) (B18) | ImageNet |
| ``sap-cifar`` | S = 32: RandomCrop(32, pad 4) → flip; else Resize → RRC(S) → flip | no resize (B18) | CIFAR |
| ``rnnpool-imagenet`` | RandomResizedCrop(S, 0.08–1) → flip | Resize(S·256/224) → CenterCrop(S) | ImageNet |
| ``rnnpool-vww`` | RandomResizedCrop(S, 0.2–1) → flip | Resize(S·256/224) → CenterCrop(S) | ImageNet |
| ``smoke`` | Resize(S) → CenterCrop(S) → flip | Resize(S) → CenterCrop(S) | 0.5 |
| ``eval-plain`` | Resize(S) → CenterCrop(S) | Resize(S) → CenterCrop(S) | 0.5 |

``faithful=False`` corrects the B18 quirks: ``sap-imagenet`` evaluates with Resize(S·256/224) → CenterCrop(S) and
``sap-cifar`` resizes test images to S.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torchvision import transforms as T

from repro.data.errors import DatasetError

MEAN_STD = {
    "half": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "cifar100": ((0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)),
}
IMAGENET_EVAL_FRACTION = 224 / 256


@dataclass(frozen=True)
class Augmentation:
    """One training recipe's image pipeline (its ``augment`` name), described once for both loaders.

    ``crop_scale`` None means no random-resized crop (train images are resized and centre-cropped like eval);
    ``pad_crop`` > 0 means RandomCrop(S, padding) on images already of size S; ``eval_fraction`` f means
    Resize(round(S / f)) → CenterCrop(S), and None means the image is left at its stored size (B18).
    """

    name: str
    norm: str
    resize_first: bool = False
    crop_scale: tuple[float, float] | None = (0.08, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    pad_crop: int = 0
    flip: bool = True
    eval_fraction: float | None = 1.0
    fixed_eval_fraction: float | None = None  # the corrected value for faithful=False, where it differs

    def resolved(self, image_size: int, *, faithful: bool = True) -> Augmentation:
        """The recipe for one image size, with the B18 corrections applied when ``faithful`` is False."""
        recipe = self
        if not faithful and self.fixed_eval_fraction is not None:
            recipe = replace(recipe, eval_fraction=self.fixed_eval_fraction)
        if recipe.name == "sap-cifar" and image_size == 32:  # ann.py without --im_size
            recipe = replace(recipe, crop_scale=None, resize_first=False, pad_crop=4)
        return recipe

    def mean_std(self, dataset: str | None = None) -> tuple[tuple[float, ...], tuple[float, ...]]:
        norm = "cifar100" if self.norm == "cifar" and dataset == "cifar100" else self.norm
        return MEAN_STD["cifar10" if norm == "cifar" else norm]

    def is_random(self, train: bool) -> bool:
        return train and (self.crop_scale is not None or self.pad_crop > 0 or self.flip)


AUGMENTATIONS = {
    r.name: r
    for r in (
        Augmentation("sap-stl10", "half", resize_first=True),
        Augmentation("sap-imagenet", "imagenet", resize_first=True, fixed_eval_fraction=IMAGENET_EVAL_FRACTION),
        Augmentation("sap-cifar", "cifar", resize_first=True, eval_fraction=None, fixed_eval_fraction=1.0),
        Augmentation("rnnpool-imagenet", "imagenet", eval_fraction=IMAGENET_EVAL_FRACTION),
        Augmentation("rnnpool-vww", "imagenet", crop_scale=(0.2, 1.0), eval_fraction=IMAGENET_EVAL_FRACTION),
        Augmentation("smoke", "half", crop_scale=None),
        Augmentation("eval-plain", "half", crop_scale=None, flip=False),
    )
}


def get_augmentation(name: str) -> Augmentation:
    """The image pipeline named by a training recipe's ``augment`` field."""
    if name not in AUGMENTATIONS:
        raise DatasetError(f"unknown recipe {name!r}; valid recipes: {', '.join(AUGMENTATIONS)}")
    return AUGMENTATIONS[name]


def eval_resize(image_size: int, fraction: float) -> int:
    """The Resize size that a centre crop of ``image_size`` covering ``fraction`` of the short side needs."""
    return round(image_size / fraction)


def build_transforms(
    recipe: str, image_size: int, train: bool, *, dataset: str | None = None, faithful: bool = True
) -> T.Compose:
    """The torchvision pipeline ``PIL image -> normalised float tensor (3, S, S)`` of ``recipe``.

    ``dataset`` picks CIFAR-100 statistics for ``sap-cifar``; ``faithful=False`` corrects quirk B18.
    """
    spec = get_augmentation(recipe).resolved(image_size, faithful=faithful)
    ops: list = []
    if train and spec.crop_scale is not None:
        if spec.resize_first:
            ops.append(T.Resize(image_size))
        ops.append(T.RandomResizedCrop(image_size, scale=spec.crop_scale, ratio=spec.crop_ratio))
    elif train and spec.pad_crop:
        ops.append(T.RandomCrop(image_size, padding=spec.pad_crop))
    elif spec.eval_fraction is not None:
        ops += [T.Resize(eval_resize(image_size, spec.eval_fraction)), T.CenterCrop(image_size)]
    if train and spec.flip:
        ops.append(T.RandomHorizontalFlip())
    mean, std = spec.mean_std(dataset)
    ops += [T.ToTensor(), T.Normalize(mean, std)]
    return T.Compose(ops)


def normalise_uint8(images: torch.Tensor, mean, std) -> torch.Tensor:
    """``uint8 (B, 3, H, W) -> float``, with the same operations as ``ToTensor`` + ``Normalize`` (bit-identical)."""
    x = images.to(torch.float32, memory_format=torch.contiguous_format).div(255)
    mean_t = torch.as_tensor(mean, dtype=torch.float32, device=x.device).view(-1, 1, 1)
    std_t = torch.as_tensor(std, dtype=torch.float32, device=x.device).view(-1, 1, 1)
    return x.sub_(mean_t).div_(std_t)
