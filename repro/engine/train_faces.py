"""Face-detection training: :func:`train_faces` (Python API) for RNNPool-Face-A/B/C/Quant/M4 (S3FD matching and
MultiBoxLoss) and Condensation-Net's Tiny-YOLOv2 pair (YOLOv2 region loss), full precision or int8 fake-quantised.

One run writes into ``out_dir``:

* ``checkpoint.pt`` — full state after every epoch (and on SIGTERM/SIGINT), written atomically; ``resume=True``
  continues it and reproduces an uninterrupted run exactly on CPU (``checkpoints=False`` writes none);
* ``dvclive/`` — per-epoch ``train_loss`` and each loss term, ``lr``, the evaluation's ``easy``/``medium``/``hard``
  AP and ``tpr_at_fpr``, and the precision-recall curves and ROC of the last evaluation (``plots/custom``);
* ``wider_predictions/`` — the last evaluation's detections in the official WIDER FACE layout (``<event>/<image>.txt``,
  ``test_time.json`` naming the test-time protocol), which ``repro eval-widerface`` and the MATLAB tool read;
* ``predictions.png`` — predicted (red) and ground-truth (green) faces on the first evaluated images;
* ``metrics.json`` — a :class:`~repro.records.RunRecord`: ``detection`` holds WIDER ``easy``/``medium``/``hard`` AP
  (fractions; ``all`` for SCUT-HEAD, every head counted) and ``tpr_at_fpr`` (Condensation-Net's TPR at 0.1 false
  positives per image, every face counted, :mod:`repro.metrics.face_roc`), plus the detector, the test-time
  protocol, the quantisation, whether BN statistics were re-estimated, the configuration, recipe and provenance.

Evaluation: BatchNorm statistics are re-estimated on training batches first when the recipe says so (on for the short
recipes: after a few fast steps the running averages lag behind the weights, detection_notes §4.2); the recipe's
test-time protocol then writes the prediction files of the evaluated split, which are scored by
:mod:`repro.metrics.widerface_eval` exactly as the official tool scores them. The main process evaluates; the loop
(checkpoints, exact resume, DDP, errors) is :class:`repro.engine.detection_run.DetectionRun`. Recipes:
:mod:`repro.engine.face_recipes`; :func:`face_config_for` maps a pipeline entry to a configuration.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from repro.engine.checkpoint import CheckpointError, load_checkpoint, load_model_weights
from repro.engine.detection_outputs import SHOW_SCORE, save_box_grid
from repro.engine.detection_run import CHECKPOINT_NAME, METRICS_NAME, DetectionRun
from repro.engine.distributed import DistContext, cleanup_distributed, gather_objects, setup_distributed, wrap_model
from repro.engine.errors import TrainConfigError
from repro.engine.face_recipes import FaceRecipe, face_recipe_name, get_face_recipe
from repro.engine.loop import broadcast_buffers, build_optimizer, run_directory_lock
from repro.engine.seed import seed_everything, set_deterministic
from repro.records.runs import RunRecord
from repro.utils.amp import autocast
from repro.utils.atomic import write_json_atomic

PREDICTIONS_DIR = "wider_predictions"
PREDICTIONS_PNG = "predictions.png"
#: WIDER FACE settings, and SCUT-HEAD's one setting ("all": AP at IoU 0.5 over every head), as the records name them
SETTING_KEYS = ("easy", "medium", "hard", "all")
FEW_FACES_KEYS = ("easy_le3", "medium_le3", "hard_le3")  # the same settings over the images with <= 3 faces
EVAL_KEYS = (*SETTING_KEYS, *FEW_FACES_KEYS, "tpr_at_fpr")
FPPI = 0.1
#: Face-detection pipeline datasets -> the generated set that stands in for them in the smoke profile.
SMOKE_DATASET = "synth_faces"

RESUME_KEYS = (
    "arch",
    "dataset",
    "image_size",
    "num_classes",
    "seed",
    "epochs",
    "batch_size",
    "lr",
    "max_steps_per_epoch",
    "quantization",
    "test_time",
    "model_opts",
    "init_checkpoint",
)


@dataclass
class FaceTrainConfig:
    """Everything that defines a face-detection run. ``None`` means "the recipe's value" (or the device's default).

    ``arch`` is a registered face detector (``rnnpool_face_{a,b,c,quant,m4}``, ``tiny_yolov2_face``,
    ``condensation_tiny_yolov2_face``); ``recipe`` defaults to its family's smoke recipe. ``image_size`` is the (H, W)
    of the training batches (one int: square). ``num_classes`` 1 or 2 (face vs background; the models fix their own
    head). ``test_time`` overrides the recipe's protocol (``vga``, ``qvga``, ``edgeml``); ``quantization`` its
    ``none`` / ``int8``. ``precise_bn`` re-estimates BN statistics before each evaluation (default: the recipe's).
    ``init_checkpoint`` starts from the weights of another face run's ``checkpoint.pt`` (M4's SCUT-HEAD
    fine-tuning). ``eval_max_images`` evaluates the first N images of the evaluated split.
    """

    arch: str
    recipe: str | FaceRecipe | None = None
    dataset: str | None = None
    image_size: int | tuple[int, int] | None = None
    num_classes: int | None = None
    model_opts: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    out_dir: str = "runs/faces"
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
    precise_bn: bool | None = None
    eval_max_images: int | None = None
    test_time: str | None = None
    quantization: str | None = None
    init_checkpoint: str | None = None
    visualize_images: int = 4
    checkpoints: bool = True  # off for throwaway runs (the pipeline's smoke profile), which then cannot resume
    stop_after_epochs: int | None = None
    progress: bool | None = None

    def __post_init__(self) -> None:
        if not self.arch:
            raise TrainConfigError("arch is required (e.g. 'rnnpool_face_a' or 'condensation_tiny_yolov2_face')")
        if isinstance(self.image_size, int):
            self.image_size = (self.image_size, self.image_size)
        elif self.image_size is not None:
            self.image_size = tuple(int(v) for v in self.image_size)
            if len(self.image_size) != 2:
                raise TrainConfigError(f"image_size must be a side or (H, W), got {self.image_size}")
        for name in ("epochs", "batch_size", "max_steps_per_epoch", "stop_after_epochs", "eval_max_images"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise TrainConfigError(f"{name} must be >= 1, got {value}")
        if self.num_classes is not None and self.num_classes not in (1, 2):
            raise TrainConfigError(
                f"face detectors score face vs background: num_classes 1 or 2, got {self.num_classes}"
            )
        if self.lr is not None and self.lr <= 0:
            raise TrainConfigError(f"lr must be > 0, got {self.lr}")
        if self.num_workers < 0 or self.visualize_images < 0:
            raise TrainConfigError("num_workers and visualize_images must be >= 0")

    def resolved_recipe(self, kind: str) -> FaceRecipe:
        """The named recipe (default: the smoke recipe of the model's family) with this config's overrides."""
        try:
            recipe = get_face_recipe(self.recipe or face_recipe_name(self.arch, kind, "smoke"))
            return recipe.replace(
                epochs=self.epochs,
                batch_size=self.batch_size,
                image_size=self.image_size,
                lr=self.lr,
                max_steps_per_epoch=self.max_steps_per_epoch,
                dataset=self.dataset,
                precise_bn=self.precise_bn,
                eval_max_images=self.eval_max_images,
                test_time=self.test_time,
                quantization=self.quantization,
            )
        except ValueError as exc:
            raise TrainConfigError(str(exc)) from None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _float_weights(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict without the fake quantisers' buffers (a quantised run's weights for a float model)."""
    return {k: v for k, v in weights.items() if "fake_quant" not in k and "activation_post_process" not in k}


class _FaceRun(DetectionRun):
    """One face-detection training invocation (one process) on the shared loop."""

    task = "face_detection"
    resume_keys = RESUME_KEYS
    eval_keys = EVAL_KEYS

    def __init__(self, config: FaceTrainConfig, ctx: DistContext):
        from repro.detection.face_detectors import face_detector_kind

        try:
            self.kind = face_detector_kind(config.arch)
        except ValueError as exc:
            raise TrainConfigError(str(exc)) from None
        recipe = config.resolved_recipe(self.kind.name)
        if recipe.detector != self.kind.name:
            raise TrainConfigError(
                f"recipe {recipe.name!r} is for {recipe.detector} face detectors, not {config.arch} "
                f"({self.kind.name}); use {face_recipe_name(config.arch, self.kind.name, 'smoke')!r} or another "
                f"{self.kind.name} recipe"
            )
        super().__init__(config, ctx, recipe)

    # -- setup ------------------------------------------------------------------------------------------------------

    def setup(self) -> None:
        from repro.data.face_loader import build_face_loader, face_eval_set
        from repro.models import build_model
        from repro.models.fake_quant import prepare_fake_quant

        config, ctx, recipe = self.config, self.ctx, self.recipe
        set_deterministic(config.deterministic)
        seed_everything(config.seed)
        size = tuple(recipe.image_size)
        common = {
            "root": config.data_root,
            "seed": config.seed,
            "rank": ctx.rank,
            "world_size": ctx.world_size,
            "num_workers": config.num_workers,
            "image_size": size,
            "min_face": recipe.min_face,
            "crop_side": recipe.crop_side,
            "augment": recipe.augment,
        }
        self.train_loader = build_face_loader(recipe.dataset, "train", batch_size=self.batch, **common)
        # BN statistics of the inputs the network trains on (the training augmentation, the epoch's batches)
        self.bn_loader = build_face_loader(recipe.dataset, "train", batch_size=self.batch, **common)
        self.eval_set = face_eval_set(
            recipe.dataset, recipe.eval_split, root=config.data_root, max_images=recipe.eval_max_images
        )
        self.ground_truth = self._ground_truth() if ctx.is_main else None

        seed_everything(config.seed)  # model initialisation does not depend on how the loaders were built
        options = {**recipe.model_options, **config.model_opts}
        try:
            self.core = build_model(config.arch, num_classes=config.num_classes, **options)
        except (TypeError, ValueError) as exc:
            raise TrainConfigError(f"cannot build {config.arch!r} with {options}: {exc}") from None
        self.num_classes = int(getattr(self.core, "num_classes", 2))
        self.num_params = sum(p.numel() for p in self.core.parameters())
        if config.init_checkpoint:
            weights = load_checkpoint(config.init_checkpoint, map_location="cpu")["model"]
            load_model_weights(self.core, _float_weights(weights), config.init_checkpoint)
        self.quantization = prepare_fake_quant(self.core, recipe.quantization)
        self.detector = self.kind.record(self.core)
        self.core.to(ctx.device)
        self.model = wrap_model(self.core, ctx)
        self.optimizer = build_optimizer(self.core, recipe)
        self.steps_per_epoch = min(gather_objects(len(self.train_loader), ctx))
        if recipe.max_steps_per_epoch:
            self.steps_per_epoch = min(self.steps_per_epoch, recipe.max_steps_per_epoch)
        seed_everything(config.seed + ctx.rank)  # per-process training stream
        self.start()

    def _ground_truth(self):
        from repro.metrics.widerface_eval import (
            load_widerface_ground_truth,
            scut_head_ground_truth,
            subset_ground_truth,
        )

        eval_set = self.eval_set
        if eval_set.protocol == "wider":
            full = load_widerface_ground_truth(eval_set.gt_dir)
        else:
            full = scut_head_ground_truth(eval_set.source)
        return subset_ground_truth(full, eval_set.keys)

    def _check_saved(self, saved: dict[str, Any]) -> None:
        """The resolved recipe must be the checkpoint's (a recipe object or a changed registered recipe too)."""
        old, new = saved.get("recipe") or {}, self.recipe.to_dict()
        changed = [f"{k}: {old.get(k)!r} -> {v!r}" for k, v in new.items() if old.get(k) != v]
        if changed:
            raise TrainConfigError(
                f"cannot resume {self.ckpt_path}: the run was started with a different recipe ({'; '.join(changed)}). "
                "Use the original options, or a new --out directory to start a new run."
            )

    # -- the loop's hooks -------------------------------------------------------------------------------------------

    def _batch(self, images: list[torch.Tensor], targets: list[dict]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        from repro.detection.face_detectors import normalised_targets

        batch = torch.stack(images).to(self.ctx.device, non_blocking=True)
        height, width = batch.shape[-2:]
        return batch, normalised_targets([t["boxes"] for t in targets], height, width)

    def _losses(self, images: list, targets: list) -> dict[str, torch.Tensor]:
        batch, normalised = self._batch(images, targets)
        with autocast(self.ctx.device, self.amp):
            return self.kind.losses(self.model, self.core, batch, normalised)

    def _bn_forward(self, model: nn.Module, batch: tuple[list, list]) -> None:
        images, _ = self._batch(*batch)
        model(self.kind.inputs(self.core, images))

    def _evaluate(self, epoch: int) -> dict[str, Any]:
        from repro.models.fake_quant import frozen_observers

        with frozen_observers(self.core):  # the int8 ranges are learned in training steps only
            return super()._evaluate(epoch)

    def _evaluate_model(self, epoch: int) -> dict[str, Any]:
        broadcast_buffers(self.core, self.ctx)
        evaluation = self._score() if self.ctx.is_main else None
        self.last_eval = gather_objects(evaluation, self.ctx)[0]
        return dict(self.last_eval["row"])

    def _protocol(self):
        from repro.detection.face_test_time import get_protocol

        protocol = get_protocol(self.recipe.test_time)
        if self.recipe.test_area is not None:
            protocol = dataclasses.replace(protocol, area=self.recipe.test_area)
        return protocol

    def _score(self) -> dict[str, Any]:
        """Write the prediction files of the evaluated images with the recipe's test-time protocol, then score them
        with the official protocol (and the ROC at 0.1 false positives per image)."""
        from repro.detection.face_test_time import dataset_samples, write_wider_predictions
        from repro.metrics.face_roc import face_roc_from_wider
        from repro.metrics.widerface_eval import evaluate_faces, read_predictions

        protocol = self._protocol()
        predictor = self.kind.predictor(self.core, tuple(self.recipe.image_size), **self.recipe.decode_options)
        pred_dir = self.out / PREDICTIONS_DIR
        with torch.no_grad(), autocast(self.ctx.device, self.amp):
            write_wider_predictions(predictor, dataset_samples(self.eval_set.dataset), pred_dir, protocol)
        predictions, _ = read_predictions(pred_dir, self.ground_truth.keys)
        wider = self.eval_set.protocol == "wider"
        settings = evaluate_faces(predictions, self.ground_truth, normalise=wider)
        roc = face_roc_from_wider(predictions, self.ground_truth)
        row = {name: result.ap for name, result in settings.items()}
        if wider:
            row.update(self._few_faces_aps(predictions))
        row["tpr_at_fpr"] = roc.tpr_at(FPPI)
        shown = {key: predictions[i] for i, key in enumerate(self.ground_truth.keys)}
        return {
            "row": row,
            "settings": {name: result.to_dict() for name, result in settings.items()},
            "roc": roc.to_dict(),
            "num_images": len(self.ground_truth.keys),
            "num_detections": int(sum(len(p) for p in predictions)),
            "protocol": protocol.to_dict(),
            "shown": [shown[k] for k in self.eval_set.keys[: self.config.visualize_images]],
        }

    def _few_faces_aps(self, predictions: list[np.ndarray]) -> dict[str, float]:
        """``<setting>_le3``: the AP of each setting over the images with at most 3 faces, their scores normalised
        with the whole set's (one scale for both); a setting that counts no face there is left out."""
        from repro.metrics.widerface_eval import (
            FaceGroundTruth,
            GroundTruthError,
            evaluate_faces,
            few_faces_keys,
            normalise_scores,
            subset_ground_truth,
        )

        keys = set(few_faces_keys(self.ground_truth))
        if not keys:
            return {}
        subset = subset_ground_truth(self.ground_truth, sorted(keys))
        normalised = dict(zip(self.ground_truth.keys, normalise_scores(predictions)))
        aps = {}
        for setting in subset.counted:
            one = FaceGroundTruth(subset.keys, subset.boxes, {setting: subset.counted[setting]}, subset.source)
            try:
                result = evaluate_faces([normalised[k] for k in subset.keys], one, normalise=False)
            except GroundTruthError:  # no face of this setting among these images
                continue
            aps[f"{setting}_le3"] = result[setting].ap
        return aps

    def _eval_text(self, row: dict[str, Any]) -> str:
        aps = "  ".join(f"{k} {row[k]:.4f}" for k in SETTING_KEYS if k in row)
        return f"  {aps}  TPR@{FPPI} {row['tpr_at_fpr']:.4f}" if "tpr_at_fpr" in row else ""

    # -- results ----------------------------------------------------------------------------------------------------

    def _result_fields(self) -> dict[str, Any]:
        evaluation = self.last_eval or {}
        detection = {k: float(v) for k, v in evaluation.get("row", {}).items()}
        return {
            **detection,
            "detection": detection,
            "evaluated_images": evaluation.get("num_images"),
            "num_detections": evaluation.get("num_detections"),
            "arch": self.config.arch,
            "detector": self.detector,
            "dataset": self.recipe.dataset,
            "eval_split": self.recipe.eval_split,
            "evaluation": {
                "protocol": self.eval_set.protocol,
                "scores": "WIDER FACE eval_tools: IoU 0.5, 1000 thresholds, VOC AP"
                + (", normalised scores" if self.eval_set.protocol == "wider" else ", raw scores, every head counts"),
                "tpr_at_fpr": f"TPR at {FPPI} false positives per image, every face counted (repro.metrics.face_roc)",
            },
            "test_time": evaluation.get("protocol", self._protocol().to_dict()),
            "quantization": self.quantization,
            "recipe": self.recipe.name,
            "image_size": list(self.recipe.image_size),
            "num_classes": self.num_classes,
            "num_params": self.num_params,
            "model_opts": dict(self.config.model_opts),
            "init_checkpoint": self.config.init_checkpoint,
            "compat": {},
        }

    def _write_outputs(self, metrics: dict[str, Any]) -> None:
        plots = []
        evaluation = self.last_eval or {}
        for name, result in evaluation.get("settings", {}).items():
            rows = [
                {"recall": r, "precision": p} for r, p in zip(result["recall"], result["precision"]) if p is not None
            ]
            if rows:
                self.logger.log_plot(f"pr_{name}", rows, x="recall", y="precision", title=f"WIDER {name}")
                plots.append(f"pr_{name}")
        if evaluation.get("roc"):
            roc = evaluation["roc"]
            rows = [{"fppi": f, "tpr": t} for f, t in zip(roc["false_positives_per_image"], roc["true_positive_rate"])]
            self.logger.log_plot("roc", rows, x="fppi", y="tpr", title="TPR vs false positives per image")
            plots.append("roc")
        metrics["pr_plots"] = plots
        png = self._save_png(evaluation.get("shown", []))
        metrics["outputs"] = {
            "checkpoint": CHECKPOINT_NAME if self.config.checkpoints else None,
            "predictions": PREDICTIONS_DIR,
            "predictions_png": png.name if png else None,
            "dvclive": "dvclive",
        }
        write_json_atomic(self.out / METRICS_NAME, RunRecord.from_dict(metrics, str(self.out)).to_dict())

    def _save_png(self, shown: list[np.ndarray]) -> Path | None:
        samples = []
        for index, rows in enumerate(shown):
            image, target = self.eval_set.dataset[index]
            rows = np.asarray(rows, dtype=np.float64).reshape(-1, 5)
            rows = rows[rows[:, 4] >= SHOW_SCORE]
            boxes = torch.from_numpy(np.concatenate([rows[:, :2], rows[:, :2] + rows[:, 2:4]], axis=1)).float()
            labels = [f"{s:.2f}" for s in rows[:, 4]]
            samples.append((image, target["boxes"], boxes, labels))
        return save_box_grid(self.out / PREDICTIONS_PNG, samples)


def train_faces(config: FaceTrainConfig) -> dict[str, Any]:
    """Train ``config.arch`` under its face recipe; returns the metrics (also ``metrics.json``).

    Raises :class:`~repro.engine.errors.NonFiniteLossError`, :class:`~repro.engine.errors.TrainingOOMError`,
    :class:`~repro.engine.errors.TrainingInterruptedError`, :class:`~repro.engine.errors.TrainConfigError`,
    :class:`~repro.engine.errors.RunDirectoryLockedError` or :class:`~repro.engine.checkpoint.CheckpointError`; a
    missing or malformed dataset raises :class:`~repro.data.DatasetError`.
    """
    ctx = setup_distributed(config.device)
    try:
        with run_directory_lock(config.out_dir, ctx, "`repro train-faces`"):
            run = _FaceRun(config, ctx)
            try:
                run.setup()
                return run.run()
            finally:
                run.close()
    finally:
        cleanup_distributed(ctx)


def face_config_for(
    arch: str,
    dataset: str,
    image_size: int | tuple[int, int] | list[int],
    num_classes: int,
    profile: str,
    *,
    out_dir: str,
    seed: int = 0,
    device: str = "auto",
    data_root: str | None = None,
    smoke_data_root: str | None = None,
    epochs: int | None = None,
    recipe: str | None = None,
    model_opts: dict[str, Any] | None = None,
    num_workers: int = 0,
) -> FaceTrainConfig:
    """The configuration of a pipeline entry (``task: face_detection``) under a profile.

    ``smoke``: the family's smoke recipe on ``synth_faces`` at its own size (160x120; 160x128 for Tiny-YOLOv2), two
    steps, four val images, BN re-estimated, no checkpoints, no PNG — whatever the entry's dataset and size (they
    are profiled at the paper size by the profile stage); only the quantisation of the entry's recipe is kept.
    ``full``: the entry's recipe (default: the paper recipe of the model,
    :func:`~repro.engine.face_recipes.face_recipe_name`) on the entry's dataset under ``data_root``, resumable; the
    entry's ``image_size`` is its *test* size (VGA 480x640, QVGA 240x320, 416) and is not the training crop, which
    the recipe fixes (640x640, M4 320x320, 416x416).
    """
    from repro.detection.face_detectors import face_detector_kind

    kind = face_detector_kind(arch).name
    common = {"arch": arch, "seed": seed, "out_dir": out_dir, "device": device, "progress": False}
    common["model_opts"] = dict(model_opts or {})
    if profile == "smoke":
        return FaceTrainConfig(
            recipe=face_recipe_name(arch, kind, "smoke"),
            quantization=get_face_recipe(recipe).quantization if recipe else None,  # the entry's, in a smoke run too
            data_root=smoke_data_root,
            visualize_images=0,
            checkpoints=False,
            **common,
        )
    if profile != "full":
        raise TrainConfigError(f"unknown pipeline profile {profile!r}; the pipeline has 'smoke' and 'full'")
    del image_size, num_classes  # the test size and the class count are the models' own (see the docstring)
    return FaceTrainConfig(
        recipe=recipe or face_recipe_name(arch, kind, "full"),
        dataset=dataset,
        epochs=epochs,
        data_root=data_root,
        resume=True,
        num_workers=num_workers,
        **common,
    )


def parse_face_size(text: str | None) -> tuple[int, int] | None:
    """``'640'`` -> (640, 640), ``'120x160'`` -> (120, 160) (H x W)."""
    if text is None or text == "":
        return None
    try:
        sizes = [int(p) for p in text.lower().split("x")]
    except ValueError:
        raise TrainConfigError(f"image size {text!r} is not N or HxW (e.g. 640 or 120x160)") from None
    if len(sizes) not in (1, 2) or min(sizes) < 1:
        raise TrainConfigError(f"image size {text!r} is not N or HxW (e.g. 640 or 120x160)")
    return (sizes[0], sizes[0]) if len(sizes) == 1 else (sizes[0], sizes[1])


def cli_train_faces(**options: Any) -> int:
    """``repro train-faces``: run :func:`train_faces`; one line per error and the exit code (0 on success): 2 for
    usage (bad option, model, recipe), 1 for data (missing or malformed dataset), the trainer's own codes else."""
    from repro.data import DatasetError
    from repro.engine.errors import TrainingError

    try:
        options["image_size"] = parse_face_size(options.get("image_size"))
        metrics = train_faces(FaceTrainConfig(**options))
    except DatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (TrainingError, CheckpointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return getattr(exc, "exit_code", 1)
    except ValueError as exc:  # bad model options, recipe fields
        print(f"error: {exc}", file=sys.stderr)
        return 2
    status = "done" if metrics["complete"] else "stopped (resume with --resume)"
    scores = ", ".join(f"{k} {metrics[k]:.4f}" for k in EVAL_KEYS if metrics.get(k) is not None)
    print(
        f"{status}: {metrics['arch']} on {metrics['dataset']}, {metrics['epochs']} epochs: "
        f"{scores or 'not evaluated'} -> {Path(options.get('out_dir', 'runs/faces')) / METRICS_NAME}"
    )
    return 0


__all__ = ["FaceTrainConfig", "cli_train_faces", "face_config_for", "parse_face_size", "train_faces"]
