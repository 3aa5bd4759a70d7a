"""Detection training recipes: the official SAP mmdetection schedules per detector, a tiny ``smoke`` variant of each
(the pipeline's default profile) and a ``learn`` variant (the CPU learning checks), in their own registry.

Schedules reuse :func:`repro.engine.schedule.lr_at` (``step`` / ``cosine`` / ``constant`` per epoch, epochs counted
from 1) with mmcv's linear warm-up over the first ``warmup_iters`` iterations on top
(:func:`repro.engine.schedule.linear_warmup`). ``lr_steps`` are the 1-based epochs at whose start the LR is divided
by ``lr_reduce``: mmdetection's ``step=[8, 11]`` (0-based) is ``(9, 12)``.

``model_options`` go to :func:`repro.detection.build_detector` (the smoke recipes cut the sampled RoIs and proposals:
the RoI head dominates a CPU step). ``precise_bn`` re-estimates the BatchNorm statistics on training batches before
each evaluation (short runs leave them behind the weights and eval-mode predictions collapse). ``pretrained`` loads
the torchvision ImageNet weights into ResNet backbones from ``<data_root>/pretrained/<resnet18|resnet50>.pth``, as
the official configs' ``pth_file`` (MobileNets start from scratch).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from repro.engine.recipes import OPTIMIZERS, SCHEDULES, RecipeError

PROFILES = ("full", "smoke", "learn")


@dataclass(frozen=True)
class DetectionRecipe:
    """A complete detection training recipe (``batch_size`` is the global batch, split over DDP processes)."""

    name: str
    description: str
    source: str
    detector: str
    dataset: str
    epochs: int
    batch_size: int
    image_size: int | tuple[int, int]
    lr: float
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 0.0
    nesterov: bool = False
    schedule: str = "step"
    lr_steps: tuple[int, ...] = ()
    lr_reduce: float = 10.0
    cosine_epochs: int | None = None
    per_iteration: bool = False
    warmup_epochs: int = 0
    warmup_iters: int = 0
    warmup_ratio: float = 0.001
    grad_clip: float | None = None
    max_steps_per_epoch: int | None = None
    eval_batch_size: int | None = None
    eval_interval: int = 1
    eval_max_images: int | None = None
    augment: str = "flip"
    model_options: dict[str, Any] = field(default_factory=dict)
    precise_bn: bool = False
    precise_bn_batches: int = 8
    pretrained: bool = False

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise RecipeError(f"recipe {self.name!r}: optimizer {self.optimizer!r} is not one of {OPTIMIZERS}")
        if self.schedule not in SCHEDULES:
            raise RecipeError(f"recipe {self.name!r}: schedule {self.schedule!r} is not one of {SCHEDULES}")
        sizes = (self.image_size,) if isinstance(self.image_size, int) else tuple(self.image_size)
        for name, value in (
            ("epochs", self.epochs),
            ("batch_size", self.batch_size),
            ("eval_interval", self.eval_interval),
        ):
            if value < 1:
                raise RecipeError(f"recipe {self.name!r}: {name} must be >= 1, got {value}")
        if not 1 <= len(sizes) <= 2 or any(not isinstance(s, int) or s < 1 for s in sizes):
            raise RecipeError(
                f"recipe {self.name!r}: image_size must be a side or (short, long), got {self.image_size}"
            )
        if self.lr <= 0 or (self.grad_clip is not None and self.grad_clip <= 0):
            raise RecipeError(f"recipe {self.name!r}: lr and grad_clip must be > 0")
        for name in ("max_steps_per_epoch", "eval_max_images", "eval_batch_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise RecipeError(f"recipe {self.name!r}: {name} must be >= 1 or None, got {value}")

    def milestones(self) -> tuple[int, ...]:
        """The 1-based epochs at whose start the step schedule divides the LR by ``lr_reduce``."""
        return self.lr_steps

    def replace(self, **changes: Any) -> DetectionRecipe:
        """A copy with some fields changed (``None`` values are ignored), validated again."""
        changes = {k: v for k, v in changes.items() if v is not None}
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise RecipeError(f"unknown detection recipe field(s) {sorted(unknown)}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_RECIPES: dict[str, DetectionRecipe] = {}


def register_detection_recipe(recipe: DetectionRecipe) -> DetectionRecipe:
    if recipe.name in _RECIPES:
        raise RecipeError(f"detection recipe {recipe.name!r} is registered twice")
    _RECIPES[recipe.name] = recipe
    return recipe


def get_detection_recipe(name: str | DetectionRecipe) -> DetectionRecipe:
    """The registered recipe called ``name`` (a :class:`DetectionRecipe` is returned unchanged)."""
    if isinstance(name, DetectionRecipe):
        return name
    try:
        return _RECIPES[name]
    except KeyError:
        raise RecipeError(f"unknown detection recipe {name!r}; choose one of {list_detection_recipes()}") from None


def list_detection_recipes() -> list[str]:
    return sorted(_RECIPES)


def detection_recipe_name(detector: str, profile: str = "smoke") -> str:
    """The recipe of ``detector`` for a profile: ``full`` (the paper settings), ``smoke`` or ``learn``."""
    if profile not in PROFILES:
        raise RecipeError(f"unknown profile {profile!r}; choose one of {PROFILES}")
    detector = {"ssdlite": "ssd"}.get(detector, detector)
    return f"{detector}-{'sap' if profile == 'full' else profile}"


# -- the official SAP mmdetection 2.x configs (reference_spec §4.2) --

FASTER_RCNN_SAP = register_detection_recipe(
    DetectionRecipe(
        name="faster_rcnn-sap",
        description="SAP Faster R-CNN + FPN on COCO-8: Resize (1333, 800) keeping the ratio, flip 0.5, pad 32; SGD"
        " 0.02, momentum 0.9, wd 1e-4, grad-clip 20, linear warm-up 500 it from 0.001, LR / 10 after epochs 8 and 11,"
        " 12 epochs, 2 images per step (one GPU; B25: lr 0.02 is tuned for 16), ImageNet-pretrained ResNet.",
        source="SAP mmdet_repo/configs/network/faster_rcnn/_base_.py, common/schedule.py (reference_spec §4.2)",
        detector="faster_rcnn",
        dataset="coco8",
        epochs=12,
        batch_size=2,
        image_size=(800, 1333),
        lr=0.02,
        weight_decay=1e-4,
        schedule="step",
        lr_steps=(9, 12),
        warmup_iters=500,
        warmup_ratio=0.001,
        grad_clip=20.0,
        augment="flip",
        pretrained=True,
    )
)

SSD_SAP = register_detection_recipe(
    DetectionRecipe(
        name="ssd-sap",
        description="SAP SSD (SSDlite style) on COCO-8 at 320x320: Expand 1-4, MinIoURandomCrop, flip,"
        " PhotoMetricDistortion; SGD 0.015, momentum 0.9, wd 4e-5, cosine to 0 with a 500-it warm-up at 0.001, 20"
        " epochs, 16 images per step, evaluation every 5 epochs; ResNet18 ImageNet-pretrained, MobileNet from scratch.",
        source="SAP mmdet_repo/configs/network/ssd/_base_.py (reference_spec §4.2)",
        detector="ssd",
        dataset="coco8",
        epochs=20,
        batch_size=16,
        image_size=320,
        lr=0.015,
        weight_decay=4e-5,
        schedule="cosine",
        warmup_iters=500,
        warmup_ratio=0.001,
        eval_interval=5,
        augment="ssd",
        pretrained=True,
    )
)

YOLOV3_SAP = register_detection_recipe(
    DetectionRecipe(
        name="yolov3-sap",
        description="SAP YOLOv3 on COCO-8: Expand 1-2, MinIoURandomCrop, multi-scale resize 320-608 keeping the"
        " ratio, flip, PhotoMetricDistortion, /255, pad 32, test at 608; SGD 1e-3, momentum 0.9, wd 5e-4, grad-clip"
        " 35, linear warm-up 2000 it at 0.1, LR steps at epochs 218/246 (never reached: constant), 10 epochs, 8 images"
        " per step.",
        source="SAP mmdet_repo/configs/network/yolov3/_base_.py, mmdetection 2.x yolov3 baseline (reference_spec §4.2)",
        detector="yolov3",
        dataset="coco8",
        epochs=10,
        batch_size=8,
        image_size=608,
        lr=1e-3,
        weight_decay=5e-4,
        schedule="step",
        lr_steps=(219, 247),
        warmup_iters=2000,
        warmup_ratio=0.1,
        grad_clip=35.0,
        augment="yolov3",
        model_options={"train_scales": (320, 608)},
        pretrained=True,
    )
)

# -- smoke: the default pipeline profile (two steps and a small evaluation per entry; not comparable) --

_SMOKE = {
    "source": "this suite (no paper source)",
    "dataset": "shapes_det",
    "epochs": 1,
    "batch_size": 2,
    "image_size": 128,
    "lr": 3e-4,
    "optimizer": "adam",
    "schedule": "constant",
    "max_steps_per_epoch": 2,
    "eval_max_images": 8,
    "augment": "flip",
    "precise_bn": True,
    "precise_bn_batches": 2,
}
FASTER_RCNN_SMOKE = register_detection_recipe(
    DetectionRecipe(
        name="faster_rcnn-smoke",
        description="2 Adam steps of Faster R-CNN at 128 px on the generated shapes_det set (64 sampled RoIs, 200"
        " proposals), BN re-estimated, evaluated on 8 images. Smoke: not comparable with any number.",
        detector="faster_rcnn",
        model_options={
            "rpn_pre_nms_top_n_train": 400,
            "rpn_post_nms_top_n_train": 200,
            "rpn_pre_nms_top_n_test": 200,
            "rpn_post_nms_top_n_test": 100,
            "box_batch_size_per_image": 64,
        },
        **_SMOKE,
    )
)
SSD_SMOKE = register_detection_recipe(
    DetectionRecipe(
        name="ssd-smoke",
        description="2 Adam steps of SSD at 128 px on shapes_det, BN re-estimated, evaluated on 8 images. Smoke.",
        detector="ssd",
        **_SMOKE,
    )
)
YOLOV3_SMOKE = register_detection_recipe(
    DetectionRecipe(
        name="yolov3-smoke",
        description="2 Adam steps of YOLOv3 at 128 px (no multi-scale) on shapes_det, BN re-estimated, evaluated on 8"
        " images. Smoke.",
        detector="yolov3",
        model_options={"train_scales": None},
        **_SMOKE,
    )
)

# -- learn: the CPU learning checks (tests/test_detection_learning.py) on "easy" generated shapes at 96 px
# (``prepare("shapes_det", root, image_size=96, min_scale=0.25, max_scale=0.7, max_objects=3, clutter=0)``) --

_LEARN = {
    "source": "this suite; budgets from reference/detection_notes.md §4.2 (measured on the development machine)",
    "dataset": "shapes_det",
    "image_size": 96,
    "optimizer": "adam",
    "schedule": "constant",
    "augment": "flip",
    "precise_bn": True,
    "precise_bn_batches": 8,
}
FASTER_RCNN_LEARN = register_detection_recipe(
    DetectionRecipe(
        name="faster_rcnn-learn",
        description="Faster R-CNN at 96 px, batch 4, Adam 3e-4, 64 sampled RoIs, 200 proposals, one epoch (50 steps)"
        " of the generated set, BN re-estimated before the evaluation.",
        detector="faster_rcnn",
        epochs=1,
        batch_size=4,
        lr=3e-4,
        model_options=dict(FASTER_RCNN_SMOKE.model_options),
        **_LEARN,
    )
)
SSD_LEARN = register_detection_recipe(
    DetectionRecipe(
        name="ssd-learn",
        description="SSD at 96 px, batch 8, Adam 2e-3, 6 epochs (150 steps) of the generated set, BN re-estimated"
        " before the final evaluation.",
        detector="ssd",
        epochs=6,
        eval_interval=6,
        batch_size=8,
        lr=2e-3,
        **_LEARN,
    )
)
YOLOV3_LEARN = register_detection_recipe(
    DetectionRecipe(
        name="yolov3-learn",
        description="YOLOv3 at 96 px (no multi-scale), batch 8, Adam 1e-3, 6 epochs (150 steps) of the generated set,"
        " BN re-estimated before the final evaluation.",
        detector="yolov3",
        epochs=6,
        eval_interval=6,
        batch_size=8,
        lr=1e-3,
        model_options={"train_scales": None},
        **_LEARN,
    )
)
