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

The loop shares the classification trainer's pieces (:mod:`repro.engine.loop`, checkpoints, DDP, dvclive, the OOM and
non-finite-loss errors); ``torchrun`` runs it distributed, rank 0 writing. Recipes: ``repro.engine.detection_recipes``.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from repro.engine.checkpoint import (
    CHECKPOINT_FORMAT,
    CheckpointError,
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from repro.engine.detection_outputs import log_pr_curves, save_prediction_grid
from repro.engine.detection_recipes import DetectionRecipe, detection_recipe_name, get_detection_recipe
from repro.engine.distributed import (
    DistContext,
    all_reduce_sum,
    barrier,
    cleanup_distributed,
    gather_objects,
    setup_distributed,
    wrap_model,
)
from repro.engine.errors import NonFiniteLossError, TrainConfigError, TrainingInterruptedError
from repro.engine.evaluate_detection import AGNOSTIC_CATEGORY, evaluate_detector, ground_truth
from repro.engine.loop import (
    BatchReplay,
    NonFiniteStepError,
    StopSignal,
    agree,
    broadcast_buffers,
    build_optimizer,
    check_resume,
    is_oom,
    oom_error,
    param_digest,
    per_process,
    show_progress,
    stop_agreed,
)
from repro.engine.metrics_io import EpochLogger
from repro.engine.precise_bn import recompute_bn_stats
from repro.engine.schedule import scheduled_lr, set_lr
from repro.engine.seed import seed_everything, set_deterministic
from repro.records.runs import RunRecord
from repro.utils.amp import autocast
from repro.utils.atomic import write_json_atomic
from repro.utils.provenance import provenance

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "checkpoint.pt"
METRICS_NAME = "metrics.json"
DETECTIONS_NAME = "detections.json"
PREDICTIONS_PNG = "predictions.png"
PRETRAINED_DIR = "pretrained"
COCO_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
NOT_LOSSES = {"epoch", "lr", "epoch_time_s", "images_per_s", *COCO_KEYS}

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


class _DetectionRun:
    """State of one detection training invocation (one process)."""

    def __init__(self, config: DetectionTrainConfig, ctx: DistContext):
        self.config, self.ctx = config, ctx
        self.recipe = config.resolved_recipe()
        if self.recipe.detector != {"ssdlite": "ssd"}.get(config.detector, config.detector):
            raise TrainConfigError(
                f"recipe {self.recipe.name!r} is for {self.recipe.detector}, not {config.detector}; "
                f"use {detection_recipe_name(config.detector, 'smoke')!r} or another {config.detector} recipe"
            )
        self.out = Path(config.out_dir)
        self.ckpt_path = self.out / CHECKPOINT_NAME
        cuda = ctx.device.type == "cuda"
        self.amp = cuda if config.amp is None else (config.amp and cuda)
        self.batch = per_process(self.recipe.batch_size, ctx, "batch_size")
        self.eval_batch = max(1, (self.recipe.eval_batch_size or self.recipe.batch_size) // ctx.world_size)

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

        self.history: list[dict[str, Any]] = []
        self.epoch, self.step = 0, 0
        self.partial: dict[str, float] = {}
        self.train_images = 0
        self.train_time = 0.0
        self.elapsed_before = 0.0
        self.rng_resume: dict[str, Any] | None = None
        self.replay = BatchReplay()
        self.last_eval: dict[str, Any] | None = None
        self.last_detections: list[dict] = []
        if not config.resume and self.ckpt_path.exists():
            raise TrainConfigError(
                f"{self.out} already holds a run ({CHECKPOINT_NAME}); pass --resume to continue it, or choose another "
                "--out (or delete the directory) to start afresh"
            )
        if config.resume and self.ckpt_path.is_file():
            self._load()
        self.logger = EpochLogger(self.out / "dvclive", self.history, enabled=ctx.is_main)

    def _load(self) -> None:
        saved = load_checkpoint(self.ckpt_path, map_location="cpu")
        check_resume(saved, self.config, RESUME_KEYS, self.ctx, self.ckpt_path)
        self.core.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.history = list(saved["history"])
        self.epoch, self.step = int(saved["epoch"]), int(saved["step"])
        self.partial = dict(saved["partial"][self.ctx.rank])
        self.train_images = int(saved["train_images"])
        self.train_time = float(saved["train_time_s"])
        self.elapsed_before = float(saved["wall_time_s"])
        self.rng_resume = saved["rng"][self.ctx.rank]
        if saved.get("epoch_start_rng"):
            self.replay.epoch_start_rng = saved["epoch_start_rng"][self.ctx.rank]
        log.info("resuming %s at epoch %d step %d", self.ckpt_path, self.epoch + 1, self.step)

    def _save(self, *, epoch_start_rng: dict[str, Any] | None = None) -> None:
        """Gather every process's RNG state and write the checkpoint from rank 0. Called by all processes."""
        rng = gather_objects(capture_rng_state(), self.ctx)
        partial = gather_objects(self.partial, self.ctx)
        start = gather_objects(epoch_start_rng, self.ctx) if epoch_start_rng is not None else None
        if self.ctx.is_main:
            save_checkpoint(
                self.ckpt_path,
                {
                    "format": CHECKPOINT_FORMAT,
                    "task": "detection",
                    "config": self.config.to_dict(),
                    "recipe": self.recipe.to_dict(),
                    "num_classes": self.num_classes,
                    "world_size": self.ctx.world_size,
                    "epoch": self.epoch,
                    "step": self.step,
                    "model": self.core.state_dict(),
                    "optimizer": self.optimizer.state_dict(),
                    "history": self.history,
                    "partial": partial,
                    "train_images": self.train_images,
                    "train_time_s": self.train_time,
                    "wall_time_s": self.elapsed_before + (time.perf_counter() - self.started),
                    "rng": rng,
                    "epoch_start_rng": start,
                },
            )
        barrier(self.ctx)

    # -- training ---------------------------------------------------------------------------------------------------

    def _lr(self, epoch: int, step: int) -> float:
        return scheduled_lr(self.recipe, epoch, step, self.steps_per_epoch)

    def _train_step(self, images: list, targets: list, stop: StopSignal) -> tuple[dict[str, float], bool]:
        """One optimisation step; ``(loss terms, stop requested)``. A non-finite loss never reaches the weights."""
        device = self.ctx.device
        images = [image.to(device, non_blocking=True) for image in images]
        targets = _to_device(targets, device)
        with autocast(device, self.amp):
            losses = self.model(images, targets)
        loss = sum(v.float() for v in losses.values())
        finite, stop_requested = agree(loss, stop, self.ctx)
        if not finite:
            raise NonFiniteStepError(float(loss.detach()))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.recipe.grad_clip is not None:
            nn.utils.clip_grad_norm_(self.core.parameters(), self.recipe.grad_clip)
        self.optimizer.step()
        terms = {k: float(v.detach()) for k, v in losses.items()}
        terms["train_loss"] = float(loss.detach())
        return terms, stop_requested

    def _run_epoch(self, epoch: int, stop: StopSignal) -> dict[str, Any]:
        recipe, ctx = self.recipe, self.ctx
        self.model.train()
        started = time.perf_counter()
        images_before = self.train_images
        bar = None
        if show_progress(self.config.progress, ctx):
            from tqdm.auto import tqdm

            bar = tqdm(
                total=self.steps_per_epoch, initial=self.step, desc=f"epoch {epoch}/{recipe.epochs}", leave=False
            )
        try:
            batches = self.replay.batches(self.train_loader, epoch, self.step, self.steps_per_epoch, self.rng_resume)
            for step, (images, targets) in batches:
                lr = self._lr(epoch, step)
                set_lr(self.optimizer, lr)
                try:
                    terms, stop_requested = self._train_step(images, targets, stop)
                except NonFiniteStepError as exc:
                    kept = (
                        f"the last good checkpoint is {self.ckpt_path} (epoch {self.epoch})"
                        if self.epoch
                        else "no checkpoint was written yet"
                    )
                    raise NonFiniteLossError(
                        f"loss is {exc.value} at epoch {epoch}, step {step + 1} (lr {lr:.4g}); training stopped and "
                        f"{kept}. Try a lower learning rate (--lr), a different seed, or turning AMP off (--no-amp)."
                    ) from None
                except RuntimeError as exc:
                    if is_oom(exc):
                        raise oom_error(recipe.batch_size, self.batch, recipe.image_size, ctx.device) from exc
                    raise
                for key, value in terms.items():
                    self.partial[key] = self.partial.get(key, 0.0) + value
                self.partial["steps"] = self.partial.get("steps", 0.0) + 1
                self.train_images += len(images) * ctx.world_size
                self.step = step + 1
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{terms['train_loss']:.4f}", lr=f"{lr:.3g}")
                if stop_requested and self.step < self.steps_per_epoch:
                    if ctx.is_main:
                        log.warning("stop requested: saving a checkpoint at epoch %d, step %d", epoch, self.step)
                    self.train_time += time.perf_counter() - started
                    self._save(epoch_start_rng=self.replay.epoch_start_rng)
                    raise TrainingInterruptedError(
                        f"interrupted at epoch {epoch}, step {self.step}/{self.steps_per_epoch}; checkpoint saved to "
                        f"{self.ckpt_path}. Run again with --resume to continue.",
                        signum=stop.signum,
                    )
        finally:
            if bar is not None:
                bar.close()
        self.train_time += time.perf_counter() - started
        keys = sorted(self.partial)
        sums = torch.tensor([self.partial[k] for k in keys], dtype=torch.float64, device=ctx.device)
        all_reduce_sum(sums, ctx)
        totals = dict(zip(keys, sums.tolist()))
        steps = totals.pop("steps")
        row: dict[str, Any] = {"epoch": epoch, "lr": self._lr(epoch, 0)}
        row.update({k: v / steps for k, v in sorted(totals.items())})
        if epoch % recipe.eval_interval == 0 or epoch == recipe.epochs:
            try:
                row.update(self._evaluate(epoch))
            except RuntimeError as exc:
                if is_oom(exc):
                    raise oom_error(recipe.batch_size, self.batch, recipe.image_size, ctx.device) from exc
                raise
        row["epoch_time_s"] = time.perf_counter() - started
        row["images_per_s"] = (self.train_images - images_before) / max(row["epoch_time_s"], 1e-9)
        return row

    def _evaluate(self, epoch: int) -> dict[str, Any]:
        """Precise BN (when on), then COCO metrics on the test split; keeps the detections for the outputs."""
        recipe = self.recipe
        if recipe.precise_bn:
            self.bn_loader.set_epoch(epoch)
            recompute_bn_stats(self.core, self.bn_loader, recipe.precise_bn_batches, _train_forward)
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

    def run(self) -> dict[str, Any]:
        self.started = time.perf_counter()
        config = self.config
        if self.rng_resume is not None and self.step == 0:  # resumed at an epoch boundary: continue its random streams
            restore_rng_state(self.rng_resume)
        last = self.recipe.epochs
        with StopSignal() as stop:
            for epoch in range(self.epoch + 1, last + 1):
                row = self._run_epoch(epoch, stop)
                self.history.append(row)
                self.epoch, self.step = epoch, 0
                self.partial = {}
                self.replay.epoch_start_rng = None
                if self.config.checkpoints:
                    self._save()
                self.logger.log(row)
                if self.ctx.is_main:
                    log.info(
                        "epoch %d/%d  lr %.3g  train_loss %.4f%s  (%.1f s)",
                        epoch,
                        last,
                        row["lr"],
                        row["train_loss"],
                        f"  AP {row['AP']:.4f}  AP50 {row['AP50']:.4f}" if "AP50" in row else "",
                        row["epoch_time_s"],
                    )
                if stop_agreed(stop, self.ctx):
                    raise TrainingInterruptedError(
                        f"interrupted after epoch {epoch}; checkpoint saved to {self.ckpt_path}. "
                        "Run again with --resume to continue.",
                        signum=stop.signum,
                    )
                if config.stop_after_epochs is not None and config.stop_after_epochs <= epoch < last:
                    return self._summary(complete=False)
        if self.last_eval is None:  # resumed after the last epoch's checkpoint: evaluate the final weights again
            self._evaluate(last)
        metrics = self._summary(complete=True)
        if self.ctx.is_main:
            self._write_outputs(metrics)
        return metrics

    # -- results ----------------------------------------------------------------------------------------------------

    def _summary(self, *, complete: bool) -> dict[str, Any]:
        last = self.history[-1]
        digests = gather_objects(param_digest(self.core), self.ctx)
        wall = self.elapsed_before + (time.perf_counter() - self.started)
        evaluation = self.last_eval or {}
        metrics: dict[str, Any] = {"task": "detection", "complete": complete}
        metrics.update({k: evaluation.get(k) for k in (*COCO_KEYS, "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")})
        # the RunRecord's block: COCO's -1 (no ground truth of that size) is left out, as is a run never evaluated
        metrics["detection"] = {
            k: float(evaluation[k]) for k in COCO_KEYS if evaluation.get(k) is not None and evaluation[k] >= 0
        }
        metrics["per_class"] = evaluation.get("per_class", {})
        metrics.update(
            evaluated_images=evaluation.get("num_images"),
            num_detections=evaluation.get("num_detections"),
            losses={k: v for k, v in last.items() if k not in NOT_LOSSES},
            epochs=last["epoch"],
            epochs_planned=self.recipe.epochs,
            steps_per_epoch=self.steps_per_epoch,
            train_images=self.train_images,
            wall_time_s=wall,
            train_time_s=self.train_time,
            images_per_s=self.train_images / max(self.train_time, 1e-9),
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
            precise_bn={"enabled": self.recipe.precise_bn, "batches": self.recipe.precise_bn_batches},
            pretrained_backbone=self.pretrained,
            coco_backend=self.config.coco_backend,
            device=str(self.ctx.device),
            amp=self.amp,
            distributed={
                "world_size": self.ctx.world_size,
                "backend": ("nccl" if self.ctx.device.type == "cuda" else "gloo") if self.ctx.distributed else None,
                "param_digests": digests,
                "params_identical": len(set(digests)) == 1,
            },
            param_digest=digests[0],
            config=self.config.to_dict(),
            recipe_config=self.recipe.to_dict(),
            provenance=provenance(),
        )
        return metrics

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

    def close(self) -> None:
        logger = getattr(self, "logger", None)
        if logger is not None:
            logger.close()


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
    run = _DetectionRun(config, ctx)
    try:
        run.setup()
        return run.run()
    finally:
        run.close()
        cleanup_distributed(ctx)


__all__ = ["DetectionTrainConfig", "cli_train_detection", "parse_image_size", "train_detection"]
