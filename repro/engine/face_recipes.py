"""Face-detection training recipes (:class:`FaceRecipe`): RNNPool App. G for the RNNPool detectors, EdgeML's QVGA
settings for M4, a darknet-based reading for Condensation-Net's Tiny-YOLOv2 pair, and per family a tiny ``smoke``
recipe (the pipeline's default profile) and a ``learn`` recipe (the CPU learning check).

A face recipe is a :class:`~repro.engine.detection_recipes.DetectionRecipe` (same schedule, optimiser, precise-BN
and evaluation fields; ``detector`` is the kind, ``s3fd`` or ``yolov2``) with what the face trainer adds:
``image_size`` is the (H, W) of the training batches; ``augment`` a :mod:`repro.data.face_transforms` name with its
``min_face`` / ``crop_side``; ``test_time`` the test-time protocol of :mod:`repro.detection.face_test_time` (with
``test_area`` replacing its reference area: at 160 x 120 the ``vga`` protocol is a single pass at the native size of
the generated faces); ``decode_options`` go to the decoder (EdgeML's QVGA confidence 0.05 for M4); ``quantization``
``none`` or ``int8`` (fake quantisation, :mod:`repro.models.fake_quant`); ``eval_split`` the evaluated split.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from repro.detection.face_test_time import PROTOCOLS
from repro.engine.detection_recipes import PROFILES, DetectionRecipe
from repro.engine.recipes import RecipeError
from repro.utils.registry import Registry

FACE_KINDS = ("s3fd", "yolov2")


@dataclass(frozen=True)
class FaceRecipe(DetectionRecipe):
    """A complete face-detection training recipe (see the module docstring)."""

    test_time: str = "vga"
    test_area: int | None = None
    decode_options: dict[str, Any] = field(default_factory=dict)
    min_face: float = 6.0
    crop_side: int = 640
    quantization: str = "none"
    eval_split: str = "val"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.detector not in FACE_KINDS:
            raise RecipeError(f"face recipe {self.name!r}: detector {self.detector!r} is not one of {FACE_KINDS}")
        if isinstance(self.image_size, int) or len(self.image_size) != 2:
            raise RecipeError(f"face recipe {self.name!r}: image_size must be (H, W), got {self.image_size}")
        if self.test_time not in PROTOCOLS:
            raise RecipeError(
                f"face recipe {self.name!r}: test_time {self.test_time!r} is not one of {', '.join(PROTOCOLS)}"
            )
        if self.test_area is not None and self.test_area < 1:
            raise RecipeError(f"face recipe {self.name!r}: test_area must be >= 1, got {self.test_area}")
        if self.quantization not in ("none", "int8"):
            raise RecipeError(f"face recipe {self.name!r}: quantization must be 'none' or 'int8'")


_RECIPES: Registry[FaceRecipe] = Registry("face recipe", error=RecipeError)


def register_face_recipe(recipe: FaceRecipe) -> FaceRecipe:
    return _RECIPES.add(recipe.name, recipe)


def get_face_recipe(name: str | FaceRecipe) -> FaceRecipe:
    """The registered face recipe called ``name`` (a :class:`FaceRecipe` is returned unchanged)."""
    return name if isinstance(name, FaceRecipe) else _RECIPES.get(name)


def list_face_recipes() -> list[str]:
    return _RECIPES.names()


def face_recipe_name(model: str, kind: str, profile: str = "smoke") -> str:
    """The recipe of face detector ``model`` (of ``kind`` ``s3fd`` / ``yolov2``) for a profile: ``full`` (the paper
    settings), ``smoke`` or ``learn`` (RNNPool detectors only)."""
    if profile not in PROFILES:
        raise RecipeError(f"unknown profile {profile!r}; choose one of {PROFILES}")
    family = "rnnpool_face" if kind == "s3fd" else "tiny_yolov2_face"
    if profile == "full":
        if model == "rnnpool_face_m4":
            return "rnnpool_face_m4-paper"
        return f"{family}-{'paper' if kind == 's3fd' else 'darknet'}"
    if profile == "learn" and kind != "s3fd":
        raise RecipeError(f"no learn recipe for {model!r}; the learning check trains an RNNPool face detector")
    return f"{family}-{profile}"


# -- the paper recipes --

_APP_G = {
    "optimizer": "sgd",
    "lr": 0.01,
    "momentum": 0.9,
    "weight_decay": 4e-5,
    "schedule": "cosine",
    "per_iteration": True,
    "warmup_epochs": 5,
    "epochs": 300,
    "augment": "s3fd",
    "eval_interval": 300,
}
RNNPOOL_FACE_PAPER = register_face_recipe(
    FaceRecipe(
        name="rnnpool_face-paper",
        description="RNNPool App. G for Face-A/B/C/Quant on WIDER FACE: SGD 0.01, momentum 0.9, wd 4e-5, 5 warm-up"
        " epochs from 0 then cosine to 0, per iteration (EdgeML train.py), 300 epochs, batch 32, S3FD augmentation"
        " with 640x640 crops; evaluated once at the end on WIDER val with EdgeML's multi-scale + flip + box voting"
        " test (App. G: 'multi-scale testing with NMS').",
        source="RNNPool App. G (paper_numbers §2.7; EdgeML train.py defaults wd to 5e-4, the paper says 4e-5)",
        detector="s3fd",
        dataset="widerface",
        batch_size=32,
        image_size=(640, 640),
        test_time="edgeml",
        **_APP_G,
    )
)
RNNPOOL_FACE_M4_PAPER = register_face_recipe(
    FaceRecipe(
        name="rnnpool_face_m4-paper",
        description="RNNPool-Face-M4 on WIDER FACE as EdgeML README_M4 trains it: App. G optimiser and schedule, 300"
        " epochs, batch 128, monochrome 320x320 training crops (640 data-anchor crops resized), faces >= 1 px, decoder"
        " confidence 0.05; tested with one pass at the QVGA area. Table 5 then fine-tunes on SCUT-HEAD"
        " (rnnpool_face_m4-scut).",
        source="EdgeML README_M4.md, data/config_qvga.py; RNNPool App. G",
        detector="s3fd",
        dataset="widerface",
        batch_size=128,
        image_size=(320, 320),
        test_time="qvga",
        min_face=1.0,
        decode_options={"conf_thresh": 0.05},
        **_APP_G,
    )
)
RNNPOOL_FACE_M4_SCUT = register_face_recipe(
    RNNPOOL_FACE_M4_PAPER.replace(
        name="rnnpool_face_m4-scut",
        description="The Table 5 fine-tuning of M4 on SCUT-HEAD Part B (EdgeML README_M4 --finetune): batch 64,"
        " otherwise as rnnpool_face_m4-paper; start from the WIDER run's weights (init_checkpoint); evaluated with"
        " the WIDER protocol with every head counted (EdgeML scut_evaluation.py).",
        source="EdgeML README_M4.md (Finetuning)",
        dataset="scut_head",
        batch_size=64,
    )
)
TINY_YOLOV2_DARKNET = register_face_recipe(
    FaceRecipe(
        name="tiny_yolov2_face-darknet",
        description="Our reading for Condensation-Net's Tiny-YOLOv2 pair (the paper's recipe is not known): darknet"
        " yolov2-tiny-voc.cfg — SGD 1e-3, momentum 0.9, decay 5e-4, batch 64, 416x416 — with its 40,200 iterations"
        " as 200 WIDER FACE epochs, LR x0.1 for the first 100 iterations (here a linear warm-up) and / 10 at"
        " iterations 20,000 and 30,000 (epochs 100 and 150); S3FD augmentation resized to 416x416 instead of"
        " darknet's jitter; one pass at the VGA area, resized to 416x416.",
        source="pjreddie/darknet cfg/yolov2-tiny-voc.cfg (our reading; arXiv 2104.14124 gives no recipe)",
        detector="yolov2",
        dataset="widerface",
        epochs=200,
        batch_size=64,
        image_size=(416, 416),
        lr=1e-3,
        momentum=0.9,
        weight_decay=5e-4,
        schedule="step",
        lr_steps=(100, 150),
        warmup_iters=100,
        warmup_ratio=0.1,
        augment="s3fd",
        eval_interval=200,
        test_time="vga",
    )
)
TINY_YOLOV2_DARKNET_INT8 = register_face_recipe(
    TINY_YOLOV2_DARKNET.replace(
        name="tiny_yolov2_face-darknet-int8",
        description="tiny_yolov2_face-darknet with int8 fake quantisation from the first step (Condensation-Net's"
        " quantised comparison; how the paper quantised is not known).",
        quantization="int8",
    )
)

# -- smoke: the default pipeline profile (one or two steps, a few val images; not comparable with any number) --

_SMOKE = {
    "source": "this suite (no paper source)",
    "dataset": "synth_faces",
    "epochs": 1,
    "batch_size": 2,
    "lr": 3e-4,
    "optimizer": "adam",
    "schedule": "constant",
    "max_steps_per_epoch": 2,
    "eval_max_images": 4,
    "augment": "flip",
    "precise_bn": True,
    "precise_bn_batches": 2,
    "test_time": "vga",
    "test_area": 160 * 120,
}
RNNPOOL_FACE_SMOKE = register_face_recipe(
    FaceRecipe(
        name="rnnpool_face-smoke",
        description="2 Adam steps of an RNNPool face detector on the generated synth_faces at their native 160x120,"
        " BN re-estimated, 4 val images through the vga protocol at the 160x120 area (one native pass). Smoke.",
        detector="s3fd",
        image_size=(120, 160),
        **_SMOKE,
    )
)
TINY_YOLOV2_SMOKE = register_face_recipe(
    FaceRecipe(
        name="tiny_yolov2_face-smoke",
        description="1 Adam step of Tiny-YOLOv2 (with or without cross-channel pooling; its 1024-channel convs make a"
        " step cost a second) on synth_faces resized to 160x128 (its grid needs multiples of 32), BN re-estimated on"
        " one batch, 2 val images in one pass resized to 160x128. Smoke.",
        detector="yolov2",
        image_size=(128, 160),
        **{**_SMOKE, "max_steps_per_epoch": 1, "eval_max_images": 2, "precise_bn_batches": 1},
    )
)

# -- learn: the CPU learning check (tests/test_face_train.py, reference/detection_notes.md §4.2) --

RNNPOOL_FACE_LEARN = register_face_recipe(
    FaceRecipe(
        name="rnnpool_face-learn",
        description="An RNNPool face detector on synth_faces at 160x120, batch 8, Adam 1e-3, 12 epochs of 25 steps"
        " (300 steps), flips, BN re-estimated on 8 batches before the one evaluation on all 50 val images (vga"
        " protocol at the 160x120 area: one native pass).",
        source="this suite; budget from reference/detection_notes.md §4.2 (0.0007 -> 0.29 AP50 in 300 steps)",
        detector="s3fd",
        dataset="synth_faces",
        epochs=12,
        eval_interval=12,
        batch_size=8,
        image_size=(120, 160),
        lr=1e-3,
        optimizer="adam",
        schedule="constant",
        augment="flip",
        precise_bn=True,
        precise_bn_batches=8,
        test_time="vga",
        test_area=160 * 120,
    )
)

__all__ = [
    "FACE_KINDS",
    "FaceRecipe",
    "face_recipe_name",
    "get_face_recipe",
    "list_face_recipes",
    "register_face_recipe",
]
