"""Detection training: :func:`train_detection` (Python API) for Faster R-CNN, SSD(lite) and YOLOv3 on SAP backbones.

One run writes into ``out_dir``:

* ``checkpoint.pt`` — full state after every epoch (and on SIGTERM/SIGINT), written atomically; ``resume=True``
  continues it and reproduces an uninterrupted run exactly on CPU;
* ``dvclive/`` — per-epoch ``train_loss`` and each loss term, ``lr``, ``AP``/``AP50``/``AP75``/``APs``/``APm``/``APl``,
  and the precision-recall curves of the last evaluation (``plots/custom/pr_*.json``);
* ``detections.json`` — the COCO results of the last evaluation on the test split;
* ``predictions.png`` — predicted (red) and ground-truth (green) boxes on the first test images;
* ``metrics.json`` — at the end: the COCO metrics (fractions), per-class AP, loss terms, the detector and its anchor
  strides, the compat flags, whether BN statistics were re-estimated, the configuration, recipe and provenance.

The loop is the one every detection trainer shares (:class:`repro.engine.detection_run.DetectionRun`: checkpoints,
exact resume, DDP, dvclive, precise BN, the OOM and non-finite-loss errors); ``torchrun`` runs it distributed, rank 0
writing. One process at a time writes a run directory (``<out>/.lock``). Recipes: ``repro.engine.detection_recipes``.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from repro.engine.checkpoint import CheckpointError
from repro.engine.detection_outputs import log_pr_curves, save_prediction_grid
from repro.engine.detection_recipes import DetectionRecipe, detection_recipe_name, get_detection_recipe
from repro.engine.detection_run import CHECKPOINT_NAME, METRICS_NAME, DetectionRun
from repro.engine.distributed import DistContext, cleanup_distributed, gather_objects, setup_distributed, wrap_model
from repro.engine.errors import TrainConfigError
from repro.engine.evaluate_detection import AGNOSTIC_CATEGORY, evaluate_detector, ground_truth
from repro.engine.loop import broadcast_buffers, build_optimizer, run_directory_lock
from repro.engine.seed import seed_everything, set_deterministic
from repro.records.runs import RunRecord
from repro.utils.amp import autocast
from repro.utils.atomic import write_json_atomic

log = logging.getLogger(__name__)

DETECTIONS_NAME = "detections.json"
PREDICTIONS_PNG = "predictions.png"
PRETRAINED_DIR = "pretrained"
COCO_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl")

RESUME_KEYS = (
    "arch",
    "detector",
    "recipe",
    "dataset",
    "image_size",
    "num_classes",
    "seed",
    "epochs",
    "batch_size",
    "lr",
    "max_steps_per_epoch",
    "compat_b26",
    "compat_b27",
    "placement",
    "strict",
    "class_agnostic",
    "pretrained",
)


@dataclass
class DetectionTrainConfig:
    """Everything that defines a detection run. ``None`` means "the recipe's value" (or the device's default).

    ``recipe`` defaults to ``<detector>-smoke``. ``image_size``: Faster R-CNN ``(short side, long side cap)`` or one
    side, SSD the input side, YOLOv3 the test long side. ``compat_b26`` / ``compat_b27`` reproduce the official config
    quirks (:func:`repro.detection.official_compat` says which an entry needs). ``class_agnostic`` trains and
    evaluates one ``object`` class. ``precise_bn`` re-estimates BatchNorm statistics before each evaluation (default:
    the recipe's, on for the short recipes). ``pretrained`` loads ``<data_root>/pretrained/<depth>.pth`` into ResNet
    backbones (default: the recipe's). ``eval_max_images`` evaluates the first N test images only.
    """

    arch: str
    detector: str = "faster_rcnn"
    recipe: str | None = None
    dataset: str | None = None
    image_size: int | tuple[int, int] | None = None
    num_classes: int | None = None
    seed: int = 0
    out_dir: str = "runs/detection"
    resume: bool = False
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    max_steps_per_epoch: int | None = None
    data_root: str | None = None
    num_workers: int = 0
    device: str = "auto"
    amp: bool | None = None
    deterministic: bool = True
    compat_b26: bool = False
    compat_b27: bool = False
    placement: str | None = None
    strict: bool = False
    class_agnostic: bool = False
    precise_bn: bool | None = None
    eval_max_images: int | None = None
    pretrained: bool | None = None
    coco_backend: str = "pycocotools"
    visualize_images: int = 4
    checkpoints: bool = True  # off for throwaway runs (the pipeline's smoke profile), which then cannot resume
    stop_after_epochs: int | None = None
    progress: bool | None = None

    def __post_init__(self) -> None:
        if not self.arch:
            raise TrainConfigError("arch is required (e.g. 'resnet18-skip-1222')")
        if isinstance(self.image_size, list):
            self.image_size = tuple(self.image_size)
        for name in ("epochs", "batch_size", "max_steps_per_epoch", "stop_after_epochs", "num_classes"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise TrainConfigError(f"{name} must be >= 1, got {value}")
        if self.eval_max_images is not None and self.eval_max_images < 1:
            raise TrainConfigError(f"eval_max_images must be >= 1, got {self.eval_max_images}")
        if self.lr is not None and self.lr <= 0:
            raise TrainConfigError(f"lr must be > 0, got {self.lr}")
        if self.num_workers < 0 or self.visualize_images < 0:
            raise TrainConfigError("num_workers and visualize_images must be >= 0")

    def resolved_recipe(self) -> DetectionRecipe:
        """The named recipe (default ``<detector>-smoke``) with this config's overrides applied."""
        try:
            recipe = get_detection_recipe(self.recipe or detection_recipe_name(self.detector, "smoke"))
            return recipe.replace(
                epochs=self.epochs,
                batch_size=self.batch_size,
                image_size=self.image_size,
                lr=self.lr,
                max_steps_per_epoch=self.max_steps_per_epoch,
                dataset=self.dataset,
                precise_bn=self.precise_bn,
                eval_max_images=self.eval_max_images,
                pretrained=self.pretrained,
            )
        except ValueError as exc:
            raise TrainConfigError(str(exc)) from None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _to_device(targets: list[dict], device: torch.device) -> list[dict]:
    return [{k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in t.items()} for t in targets]


def _train_forward(model: nn.Module, batch: tuple[list, list]) -> None:
    """One training-mode forward of a batch (for BatchNorm re-estimation)."""
    images, targets = batch
    device = next(model.parameters()).device
    model([image.to(device) for image in images], _to_device(targets, device))


class _DetectionRun(DetectionRun):
    """One detection training invocation (one process) on the shared loop."""

    task = "detection"
    resume_keys = RESUME_KEYS
    eval_keys = COCO_KEYS

    def __init__(self, config: DetectionTrainConfig, ctx: DistContext):
        recipe = config.resolved_recipe()
        if recipe.detector != {"ssdlite": "ssd"}.get(config.detector, config.detector):
            raise TrainConfigError(
                f"recipe {recipe.name!r} is for {recipe.detector}, not {config.detector}; "
                f"use {detection_recipe_name(config.detector, 'smoke')!r} or another {config.detector} recipe"
            )
        super().__init__(config, ctx, recipe)

    # -- setup ------------------------------------------------------------------------------------------------------

    def setup(self) -> None:
        from repro.data import get_spec
        from repro.data.detection_loader import build_detection_loader, coco_source, evaluated_image_ids
        from repro.detection import build_detector, detector_record
        from repro.detection.backbone import backbone_depth, backbone_family, load_backbone_weights

        config, ctx, recipe = self.config, self.ctx, self.recipe
        set_deterministic(config.deterministic)
        seed_everything(config.seed)
        common = {"root": config.data_root, "seed": config.seed, "num_workers": config.num_workers}
        shard = {"rank": ctx.rank, "world_size": ctx.world_size, "class_agnostic": config.class_agnostic}
        self.train_loader = build_detection_loader(
            recipe.dataset, "train", batch_size=self.batch, train=True, augment=recipe.augment, **common, **shard
        )
        self.bn_loader = build_detection_loader(
            recipe.dataset, "train", batch_size=self.batch, train=True, augment="none", **common, **shard
        )
        self.test_loader = build_detection_loader(
            recipe.dataset,
            "test",
            batch_size=self.eval_batch,
            train=False,
            max_images=recipe.eval_max_images,
            **common,
            **shard,
        )
        source = coco_source(self.test_loader)
        self.test_dataset = source
        self.image_ids = evaluated_image_ids(self.test_loader)
        self.gt = ground_truth(str(source.ann_file), config.class_agnostic)
        if config.class_agnostic:
            self.category_ids, self.class_names = [AGNOSTIC_CATEGORY["id"]], [AGNOSTIC_CATEGORY["name"]]
        else:
            self.category_ids, self.class_names = list(source.cat_ids), list(source.classes)
        spec_classes = 1 if config.class_agnostic else get_spec(recipe.dataset).num_classes
        self.num_classes = config.num_classes or spec_classes
        if self.num_classes != len(self.category_ids):
            raise TrainConfigError(
                f"num_classes {self.num_classes} differs from the {len(self.category_ids)} classes of "
                f"{recipe.dataset!r}; leave num_classes unset"
            )

        seed_everything(config.seed)  # model initialisation does not depend on how the loaders were built
        options = dict(recipe.model_options)
        for key in ("placement",):
            if getattr(config, key) is not None:
                options[key] = getattr(config, key)
        if config.strict:
            options["strict"] = True
        self.core = build_detector(
            config.detector,
            config.arch,
            self.num_classes,
            recipe.image_size,
            compat_b26=config.compat_b26,
            compat_b27=config.compat_b27,
            **options,
        )
        self.pretrained: dict[str, Any] | None = None
        if recipe.pretrained and backbone_family(config.arch) in ("resnet", "resnext"):
            from repro.data import resolve_data_root

            weights = resolve_data_root(config.data_root) / PRETRAINED_DIR / f"{backbone_depth(config.arch)}.pth"
            body = self.core.body if hasattr(self.core, "body") else self.core.backbone.body
            self.pretrained = load_backbone_weights(body, weights)
            self.pretrained["skipped"] = len(self.pretrained["skipped"])
        self.detector = detector_record(self.core)
        self.core.to(ctx.device)
        self.model = wrap_model(self.core, ctx, find_unused_parameters=True)
        self.optimizer = build_optimizer(self.core, recipe)
        self.steps_per_epoch = min(gather_objects(len(self.train_loader), ctx))
        if recipe.max_steps_per_epoch:
            self.steps_per_epoch = min(self.steps_per_epoch, recipe.max_steps_per_epoch)
        if self.steps_per_epoch < 1:
            raise TrainConfigError(f"the training loader of {recipe.dataset!r} is empty")
        seed_everything(config.seed + ctx.rank)  # per-process training stream
        self.last_detections: list[dict] = []
        self.start()

    # -- the loop's hooks -------------------------------------------------------------------------------------------

    def _losses(self, images: list, targets: list) -> dict[str, torch.Tensor]:
        device = self.ctx.device
        images = [image.to(device, non_blocking=True) for image in images]
        targets = _to_device(targets, device)
        with autocast(device, self.amp):
            return self.model(images, targets)

    def _bn_forward(self, model: nn.Module, batch: tuple[list, list]) -> None:
        _train_forward(model, batch)

    def _evaluate_model(self, epoch: int) -> dict[str, Any]:
        """COCO metrics on the test split; keeps the detections for the outputs."""
        broadcast_buffers(self.core, self.ctx)
        metrics, detections = evaluate_detector(
            self.core,
            self.test_loader,
            gt=self.gt,
            category_ids=self.category_ids,
            ctx=self.ctx,
            amp=self.amp,
            backend=self.config.coco_backend,
        )
        self.last_eval, self.last_detections = metrics, detections
        return {k: metrics[k] for k in COCO_KEYS if metrics[k] is not None}

    def _eval_text(self, row: dict[str, Any]) -> str:
        return f"  AP {row['AP']:.4f}  AP50 {row['AP50']:.4f}" if "AP50" in row else ""

    # -- results ----------------------------------------------------------------------------------------------------

    def _result_fields(self) -> dict[str, Any]:
        evaluation = self.last_eval or {}
        fields: dict[str, Any] = {
            k: evaluation.get(k) for k in (*COCO_KEYS, "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
        }
        # the RunRecord's block: COCO's -1 (no ground truth of that size) is left out, as is a run never evaluated
        fields["detection"] = {
            k: float(evaluation[k]) for k in COCO_KEYS if evaluation.get(k) is not None and evaluation[k] >= 0
        }
        fields["per_class"] = evaluation.get("per_class", {})
        fields.update(
            evaluated_images=evaluation.get("num_images"),
            num_detections=evaluation.get("num_detections"),
            arch=self.config.arch,
            detector=self.detector["detector"],
            anchor_strides=self.detector["anchor_strides"],
            dataset=self.recipe.dataset,
            classes=self.class_names,
            class_agnostic=self.config.class_agnostic,
            recipe=self.recipe.name,
            image_size=self.recipe.image_size,
            num_classes=self.num_classes,
            num_params=self.detector["num_params"],
            compat=dict(self.detector["compat"]),
            pretrained_backbone=self.pretrained,
            coco_backend=self.config.coco_backend,
        )
        return fields

    def _write_outputs(self, metrics: dict[str, Any]) -> None:
        write_json_atomic(self.out / DETECTIONS_NAME, self.last_detections)
        if self.last_eval is not None:
            metrics["pr_plots"] = log_pr_curves(self.logger, self.last_eval)
        names = dict(zip(self.category_ids, self.class_names))
        png = save_prediction_grid(
            self.out / PREDICTIONS_PNG,
            self.test_dataset,
            self.last_detections,
            num_images=self.config.visualize_images,
            category_names=names,
        )
        metrics["outputs"] = {
            "checkpoint": CHECKPOINT_NAME if self.config.checkpoints else None,
            "detections": DETECTIONS_NAME,
            "predictions_png": png.name if png else None,
            "dvclive": "dvclive",
        }
        write_json_atomic(self.out / METRICS_NAME, RunRecord.from_dict(metrics, str(self.out)).to_dict())


def parse_image_size(text: str | None) -> int | tuple[int, int] | None:
    """``'128'`` -> 128, ``'800x1333'`` -> (800, 1333) (Faster R-CNN's short side and long-side cap)."""
    if text is None or text == "":
        return None
    parts = text.lower().split("x")
    try:
        sizes = [int(p) for p in parts]
    except ValueError:
        raise TrainConfigError(f"image size {text!r} is not N or SHORTxLONG (e.g. 128 or 800x1333)") from None
    if len(sizes) not in (1, 2):
        raise TrainConfigError(f"image size {text!r} is not N or SHORTxLONG (e.g. 128 or 800x1333)")
    return sizes[0] if len(sizes) == 1 else (sizes[0], sizes[1])


def cli_train_detection(**options: Any) -> int:
    """``repro train-detection``: run :func:`train_detection`; one line per error and the exit code (0 on success)."""
    import sys

    from repro.data import DatasetError
    from repro.engine.errors import TrainingError

    try:
        options["image_size"] = parse_image_size(options.get("image_size"))
        metrics = train_detection(DetectionTrainConfig(**options))
    except (TrainingError, CheckpointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return getattr(exc, "exit_code", 1)
    except (DatasetError, ValueError) as exc:  # bad arch, detector, dataset, recipe, input size
        print(f"error: {exc}", file=sys.stderr)
        return 2
    status = "done" if metrics["complete"] else "stopped (resume with --resume)"
    ap = ", ".join(f"{k} {metrics[k]:.4f}" for k in ("AP", "AP50") if metrics.get(k) is not None)
    print(
        f"{status}: {metrics['detector']} on {metrics['arch']}, {metrics['dataset']}, {metrics['epochs']} epochs: "
        f"{ap or 'not evaluated'} -> {Path(options.get('out_dir', 'runs/detection')) / METRICS_NAME}"
    )
    return 0


def train_detection(config: DetectionTrainConfig) -> dict[str, Any]:
    """Train ``config.detector`` on ``config.arch`` under its recipe; returns the metrics (also ``metrics.json``).

    Raises :class:`~repro.engine.errors.NonFiniteLossError`, :class:`~repro.engine.errors.TrainingOOMError`,
    :class:`~repro.engine.errors.TrainingInterruptedError`, :class:`~repro.engine.errors.TrainConfigError` or
    :class:`~repro.engine.checkpoint.CheckpointError`; bad arch/detector/data raise ``ValueError`` subclasses.
    """
    ctx = setup_distributed(config.device)
    try:
        with run_directory_lock(config.out_dir, ctx, "`repro train-detection`"):
            run = _DetectionRun(config, ctx)
            try:
                run.setup()
                return run.run()
            finally:
                run.close()
    finally:
        cleanup_distributed(ctx)


__all__ = ["DetectionTrainConfig", "cli_train_detection", "parse_image_size", "train_detection"]
