"""Classification training: :func:`train` (Python API; ``repro train`` on the command line, also under torchrun).

One run writes into ``out_dir``:

* ``checkpoint.pt`` — full state after every epoch (and on SIGTERM/SIGINT), written atomically; ``resume=True``
  continues from it and reproduces an uninterrupted run exactly on CPU;
* ``best.pt`` — the weights of the epoch with the best test accuracy (what the SAP code keeps; quirk B7);
* ``dvclive/`` — per-epoch ``train_loss``, ``train_acc``, ``test_acc`` (``val_acc``), ``lr``;
* ``metrics.json`` — at the end, a :class:`repro.records.RunRecord`: last-epoch and best-epoch test accuracy (and the
  test accuracy of the epoch chosen on validation when ``val_split`` > 0), epochs, wall time, images/s, the full
  configuration, recipe and provenance.

Crash consistency: every file is written atomically, in the order ``checkpoint.pt``, ``best.pt``, ``dvclive/``,
``metrics.json``, and ``checkpoint.pt`` is the truth the others are rebuilt from. A run killed at any moment (SIGKILL
included) and continued with ``resume=True`` ends with the same weights, metrics and dvclive files as an uninterrupted
one: the resumed run repeats the interrupted epoch, rewrites ``best.pt`` when the kill fell between the checkpoint and
it, rebuilds ``dvclive/`` from the checkpoint's history and removes temporary files and a ``metrics.json`` that do
not belong to the checkpoint. One process at a time writes a run directory (:func:`repro.utils.locks.directory_lock`
on ``<out>/.lock``, released by the kernel when the process dies); a second one is refused with
:class:`~repro.engine.errors.RunDirectoryLockedError`.

Distributed: ``torchrun --nproc_per_node N -m repro.cli train ...`` runs DDP (gloo on CPU, NCCL on CUDA); the
recipe's batch size is the global batch, split evenly over the processes; only rank 0 writes.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from repro.engine.checkpoint import (
    CHECKPOINT_FORMAT,
    CheckpointError,
    capture_rng_state,
    load_checkpoint,
    load_model_weights,
    restore_rng_state,
    save_checkpoint,
)
from repro.engine.distributed import (
    DistContext,
    all_reduce_sum,
    barrier,
    cleanup_distributed,
    gather_objects,
    setup_distributed,
    wrap_model,
)
from repro.engine.errors import (
    NonFiniteLossError,
    TrainConfigError,
    TrainingError,
)
from repro.engine.evaluate import evaluate
from repro.engine.loaders import build_loaders, shard_size
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
    run_directory_lock,
    show_progress,
    stop_agreed,
    stop_mid_epoch,
    stopped_after_epoch,
)
from repro.engine.metrics_io import EpochLogger
from repro.engine.recipes import Recipe, get_recipe
from repro.engine.schedule import epochs_to_run, lr_at, set_lr
from repro.engine.seed import seed_everything, set_deterministic
from repro.records.runs import RunRecord
from repro.utils.amp import autocast
from repro.utils.atomic import AtomicWriteError, remove_stale_temporaries, write_json_atomic
from repro.utils.provenance import provenance

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "checkpoint.pt"
BEST_NAME = "best.pt"
METRICS_NAME = "metrics.json"
BACKENDS = ("torch", "ffcv")

# Options that must be equal for ``resume`` to continue a run (the others may change between the two invocations).
RESUME_KEYS = (
    "arch",
    "dataset",
    "recipe",
    "image_size",
    "seed",
    "epochs",
    "batch_size",
    "lr",
    "max_steps_per_epoch",
    "val_split",
    "epochs_compat_299",
    "fix_b18",
    "placement",
    "strict",
    "num_classes",
    "model_opts",
)


AUX_LOSS_WEIGHT = 0.3
"""Weight of auxiliary classifier losses (GoogLeNet's two heads), as in torchvision's reference recipe."""


def classification_loss(
    outputs: torch.Tensor | tuple, labels: torch.Tensor, label_smoothing: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(main logits, loss)`` for a classifier's training output.

    Plain models return logits. Models with auxiliary heads (torchvision GoogLeNet in training mode) return a named
    tuple ``(logits, aux_logits2, aux_logits1)``; their auxiliary losses are added with weight
    :data:`AUX_LOSS_WEIGHT`.
    """
    if isinstance(outputs, torch.Tensor):
        return outputs, F.cross_entropy(outputs.float(), labels, label_smoothing=label_smoothing)
    logits, *aux = (o for o in outputs if o is not None)
    loss = F.cross_entropy(logits.float(), labels, label_smoothing=label_smoothing)
    for extra in aux:
        loss = loss + AUX_LOSS_WEIGHT * F.cross_entropy(extra.float(), labels, label_smoothing=label_smoothing)
    return logits, loss


@dataclass
class TrainConfig:
    """Everything that defines a training run. ``None`` means "the recipe's value" (or the device's default).

    ``epochs_compat_299`` reproduces the logged SAP runs, whose loop was ``range(1, epochs)`` (quirk B22): the LR
    schedule is computed for ``epochs`` but the last epoch is not run. ``fix_b18`` corrects the SAP evaluation-resize
    quirk B18 (``sap-imagenet``: Resize(S·256/224) before the centre crop). ``stop_after_epochs`` ends this invocation
    after that many epochs in total (a planned interruption; ``resume`` continues). ``amp`` (bf16 autocast) and
    ``channels_last`` default to on for CUDA, off for CPU.
    """

    arch: str
    recipe: str = "smoke"
    dataset: str | None = None
    image_size: int | None = None
    seed: int = 0
    out_dir: str = "runs/train"
    resume: bool = False
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    max_steps_per_epoch: int | None = None
    data_root: str | None = None
    backend: str = "torch"
    num_workers: int = 0
    device: str = "auto"
    amp: bool | None = None
    channels_last: bool | None = None
    compile: bool = False
    sync_bn: bool = False
    deterministic: bool = True
    val_split: float = 0.0
    epochs_compat_299: bool = False
    fix_b18: bool = False
    placement: str | None = None
    strict: bool = False
    num_classes: int | None = None
    model_opts: dict[str, Any] = dataclasses.field(default_factory=dict)
    checkpoints: bool = True
    stop_after_epochs: int | None = None
    progress: bool | None = None

    def __post_init__(self) -> None:
        if not self.arch:
            raise TrainConfigError("arch is required (e.g. 'resnet18-nlp-1222')")
        if self.backend not in BACKENDS:
            raise TrainConfigError(f"backend {self.backend!r} is not one of {BACKENDS}")
        if not 0.0 <= self.val_split < 1.0:
            raise TrainConfigError(f"val_split must be in [0, 1), got {self.val_split}")
        for name in ("epochs", "batch_size", "image_size", "max_steps_per_epoch", "stop_after_epochs", "num_classes"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise TrainConfigError(f"{name} must be >= 1, got {value}")
        if self.lr is not None and self.lr <= 0:
            raise TrainConfigError(f"lr must be > 0, got {self.lr}")
        if self.num_workers < 0:
            raise TrainConfigError(f"num_workers must be >= 0, got {self.num_workers}")
        if not isinstance(self.model_opts, dict):
            raise TrainConfigError(f"model_opts must be a mapping of build options, got {self.model_opts!r}")

    def resolved_recipe(self) -> Recipe:
        """The named recipe with this config's overrides applied."""
        try:
            recipe = get_recipe(self.recipe)
            return recipe.replace(
                epochs=self.epochs,
                batch_size=self.batch_size,
                image_size=self.image_size,
                lr=self.lr,
                max_steps_per_epoch=self.max_steps_per_epoch,
                dataset=self.dataset,
            )
        except ValueError as exc:
            raise TrainConfigError(str(exc)) from exc

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------------------------------------------------
# helpers


def _build_model(config: TrainConfig, num_classes: int) -> nn.Module:
    from repro.models import build_model

    opts: dict[str, Any] = dict(config.model_opts)
    if config.placement is not None:
        opts["placement"] = config.placement
    if config.strict:
        opts["strict"] = True
    return build_model(config.arch, num_classes=num_classes, **opts)


def _default_placement(arch: str) -> str | None:
    """The placement the architecture name implies (``None`` for names outside the SAP grammar)."""
    try:
        from repro.arch import parse_arch

        return parse_arch(arch).placement
    except (ImportError, ValueError):
        return None


# --------------------------------------------------------------------------------------------------------------------
# the run


class _Run:
    """State of one training invocation (one process)."""

    def __init__(self, config: TrainConfig, ctx: DistContext):
        self.config = config
        self.ctx = ctx
        self.recipe = config.resolved_recipe()
        self.out = Path(config.out_dir)
        self.ckpt_path = self.out / CHECKPOINT_NAME
        cuda = ctx.device.type == "cuda"
        self.amp = cuda if config.amp is None else (config.amp and cuda)
        self.channels_last = cuda if config.channels_last is None else config.channels_last
        self.last_epoch = epochs_to_run(self.recipe, config.epochs_compat_299)
        if self.last_epoch < 1:
            raise TrainConfigError("epochs_compat_299 needs at least 2 epochs")
        if config.sync_bn and ctx.distributed and ctx.device.type == "cpu":
            raise TrainConfigError("--sync-bn needs CUDA devices (SyncBatchNorm does not run on CPU); drop --sync-bn")
        self.batch = per_process(self.recipe.batch_size, ctx, "batch_size")
        eval_batch = self.recipe.eval_batch_size or self.recipe.batch_size
        self.eval_batch = max(1, eval_batch // ctx.world_size)

    # -- setup ------------------------------------------------------------------------------------------------------

    def setup(self) -> None:
        config, ctx, recipe = self.config, self.ctx, self.recipe
        set_deterministic(config.deterministic)
        seed_everything(config.seed)

        self.loaders = build_loaders(
            dataset=recipe.dataset,
            data_root=config.data_root,
            image_size=recipe.image_size,
            batch_size=self.batch,
            eval_batch_size=self.eval_batch,
            augment=recipe.augment,
            backend=config.backend,
            num_workers=config.num_workers,
            seed=config.seed,
            faithful=not config.fix_b18,
            val_split=config.val_split,
            ctx=ctx,
        )
        self.num_classes = config.num_classes or self.loaders.num_classes
        seed_everything(config.seed)  # model initialisation does not depend on how the loaders were built
        self.core = _build_model(config, self.num_classes).to(ctx.device)
        if self.channels_last:
            self.core = self.core.to(memory_format=torch.channels_last)
        model = wrap_model(self.core, ctx, sync_bn=config.sync_bn)
        if ctx.distributed and config.sync_bn:
            self.core = model.module
        self.model = torch.compile(model) if config.compile else model
        self.optimizer = build_optimizer(self.core, recipe)
        # every process must take the same number of steps (DDP all-reduces in each backward)
        self.steps_per_epoch = min(gather_objects(len(self.loaders.train), ctx))
        if recipe.max_steps_per_epoch:
            self.steps_per_epoch = min(self.steps_per_epoch, recipe.max_steps_per_epoch)
        if self.steps_per_epoch < 1:
            raise TrainConfigError(f"the training loader of {recipe.dataset!r} is empty")
        # per-process training stream: ranks draw different augmentations
        seed_everything(config.seed + ctx.rank)

        self.history: list[dict[str, Any]] = []
        self.epoch = 0  # completed epochs
        self.step = 0  # completed steps of epoch self.epoch + 1 (interrupted checkpoints only)
        self.partial = {"loss_sum": 0.0, "correct": 0, "seen": 0}
        self.train_images = 0
        self.train_time = 0.0
        self.elapsed_before = 0.0
        self.rng_resume: dict[str, Any] | None = None
        self.replay = BatchReplay()
        if not config.resume and self.ckpt_path.exists():
            raise TrainConfigError(
                f"{self.out} already holds a run ({CHECKPOINT_NAME}); pass --resume to continue it, or choose another "
                "--out (or delete the directory) to start afresh"
            )
        resumed = config.resume and self.ckpt_path.is_file()
        if resumed:
            self._load()
        elif config.resume:
            log.info("no checkpoint at %s: starting a new run", self.ckpt_path)
        if ctx.is_main:
            self._tidy(resumed)
        self.logger = EpochLogger(self.out / "dvclive", self.history, enabled=ctx.is_main)

    def _load(self) -> None:
        saved = load_checkpoint(self.ckpt_path, map_location="cpu")
        check_resume(saved, self.config, RESUME_KEYS, self.ctx, self.ckpt_path)
        if saved["num_classes"] != self.num_classes:
            raise CheckpointError(
                f"checkpoint {str(self.ckpt_path)!r}: field 'num_classes' is {saved['num_classes']}, but this run "
                f"has {self.num_classes} classes"
            )
        load_model_weights(self.core, saved["model"], self.ckpt_path)
        try:
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
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
            raise CheckpointError(
                f"checkpoint {str(self.ckpt_path)!r} cannot be resumed: field {type(exc).__name__}: "
                f"{' '.join(str(exc).split())[:200]}; it was not written by this version of `repro train`"
            ) from None
        log.info("resuming %s at epoch %d step %d", self.ckpt_path, self.epoch + 1, self.step)

    def _tidy(self, resumed: bool) -> None:
        """Bring the run directory in line with the checkpoint before training (main process only).

        Removes temporary files of writes that a kill interrupted, a ``metrics.json`` that does not describe the
        checkpoint (a finished run's results stay until they are rewritten) and, for a new run, the ``best.pt`` of an
        earlier one; rewrites ``best.pt`` when the run was killed after the checkpoint of its best epoch but
        before ``best.pt``.
        """
        for path in remove_stale_temporaries(self.out):
            log.info("removed %s, left by an interrupted write", path)
        if not resumed or self.epoch < self.last_epoch:
            (self.out / METRICS_NAME).unlink(missing_ok=True)
        if not resumed:
            (self.out / BEST_NAME).unlink(missing_ok=True)
        elif self.history and self.step == 0:
            self._reconcile_best()

    def _reconcile_best(self) -> None:
        best = max(self.history, key=lambda r: r["test_acc"])
        path = self.out / BEST_NAME
        try:
            recorded = load_checkpoint(path).get("epoch") if path.is_file() else None
        except CheckpointError:
            recorded = None
        if recorded == best["epoch"]:
            return
        if best["epoch"] == self.epoch:  # the checkpoint holds the best epoch's weights
            log.info("rewriting %s for epoch %d (the run was interrupted before it was written)", path, self.epoch)
            self._write_best(best)
        else:
            log.warning(
                "%s holds epoch %s but the best epoch is %d; it cannot be rebuilt", path, recorded, best["epoch"]
            )

    # -- checkpoints ------------------------------------------------------------------------------------------------

    def _save(self, *, epoch_start_rng: dict[str, Any] | None = None) -> None:
        """Gather every process's RNG state and write the checkpoint from rank 0. Called by all processes."""
        rng = gather_objects(capture_rng_state(), self.ctx)
        partial = gather_objects(self.partial, self.ctx)  # running sums of the epoch, per process
        start = gather_objects(epoch_start_rng, self.ctx) if epoch_start_rng is not None else None
        if self.ctx.is_main:
            state = {
                "format": CHECKPOINT_FORMAT,
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
            }
            save_checkpoint(self.ckpt_path, state)
        barrier(self.ctx)

    def _save_best(self, row: dict[str, Any]) -> None:
        """Keep the weights of the first epoch that reaches the best test accuracy (the SAP ``best`` rule)."""
        previous = max((r["test_acc"] for r in self.history[:-1]), default=-1.0)
        if self.ctx.is_main and row["test_acc"] > previous:
            self._write_best(row)

    def _write_best(self, row: dict[str, Any]) -> None:
        state = {
            "format": CHECKPOINT_FORMAT,
            "config": self.config.to_dict(),
            "recipe": self.recipe.to_dict(),
            "num_classes": self.num_classes,
            "epoch": row["epoch"],
            "test_acc": row["test_acc"],
            "model": self.core.state_dict(),
        }
        save_checkpoint(self.out / BEST_NAME, state)

    # -- training ---------------------------------------------------------------------------------------------------

    def _batches(self, epoch: int) -> Iterator[tuple[int, Any, Any]]:
        """``(step, images, labels)`` of ``epoch`` from ``self.step`` on; a resumed epoch replays its data order."""
        batches = self.replay.batches(self.loaders.train, epoch, self.step, self.steps_per_epoch, self.rng_resume)
        for step, (images, labels) in batches:
            yield step, images, labels

    def _train_step(
        self, images: torch.Tensor, labels: torch.Tensor, stop: StopSignal
    ) -> tuple[torch.Tensor, torch.Tensor, bool]:
        """One optimisation step; ``(loss, correct predictions, stop requested)``.

        The loss is checked before the backward pass, so a non-finite loss never reaches the weights.
        """
        device = self.ctx.device
        images = images.to(device, non_blocking=True)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        labels = labels.to(device, non_blocking=True)
        with autocast(device, self.amp):
            logits, loss = classification_loss(self.model(images), labels, self.recipe.label_smoothing)
        finite, stop_requested = agree(loss, stop, self.ctx)
        if not finite:
            raise NonFiniteStepError(float(loss.detach()))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        correct = (logits.detach().argmax(dim=1) == labels).sum()
        return loss.detach(), correct, stop_requested

    def _run_epoch(self, epoch: int, stop: StopSignal) -> dict[str, Any]:
        recipe, ctx = self.recipe, self.ctx
        self.model.train()
        started = time.perf_counter()
        images_before = self.train_images
        lr0 = lr_at(recipe, epoch, 0, self.steps_per_epoch)
        bar = None
        if show_progress(self.config.progress, ctx):
            from tqdm.auto import tqdm

            bar = tqdm(
                total=self.steps_per_epoch, initial=self.step, desc=f"epoch {epoch}/{self.last_epoch}", leave=False
            )
        try:
            for step, images, labels in self._batches(epoch):
                lr = lr_at(recipe, epoch, step, self.steps_per_epoch)
                set_lr(self.optimizer, lr)
                try:
                    loss, correct, stop_requested = self._train_step(images, labels, stop)
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
                n = int(labels.numel())
                self.partial["loss_sum"] += float(loss.item()) * n
                self.partial["correct"] += int(correct.item())
                self.partial["seen"] += n
                self.train_images += n * ctx.world_size
                self.step = step + 1
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss.item():.4f}", lr=f"{lr:.3g}")
                if stop_requested and self.step < self.steps_per_epoch:
                    raise stop_mid_epoch(self, epoch, started, stop.signum)
        finally:
            if bar is not None:
                bar.close()
        self.train_time += time.perf_counter() - started
        sums = torch.tensor(
            [self.partial["loss_sum"], self.partial["correct"], self.partial["seen"]],
            dtype=torch.float64,
            device=ctx.device,
        )
        all_reduce_sum(sums, ctx)
        row: dict[str, Any] = {
            "epoch": epoch,
            "lr": lr0,
            "train_loss": float(sums[0] / sums[2]),
            "train_acc": float(sums[1] / sums[2]),
        }
        broadcast_buffers(self.core, ctx)
        try:
            if self.loaders.val is not None:
                row["val_acc"] = self._evaluate(self.loaders.val)
            row["test_acc"] = self._evaluate(self.loaders.test)
        except RuntimeError as exc:
            if is_oom(exc):
                raise oom_error(recipe.batch_size, self.batch, recipe.image_size, ctx.device) from exc
            raise
        row["epoch_time_s"] = time.perf_counter() - started
        row["images_per_s"] = (self.train_images - images_before) / max(row["epoch_time_s"], 1e-9)
        return row

    def _evaluate(self, loader: Any) -> float:
        """Top-1 of the unwrapped model (a DDP forward would broadcast buffers and needs equal shard lengths),
        counting every sample once although the loaders pad the last shards."""
        max_samples = None
        if self.ctx.distributed and hasattr(loader, "dataset"):
            max_samples = shard_size(len(loader.dataset), self.ctx)
        return evaluate(
            self.core,
            loader,
            device=self.ctx.device,
            amp=self.amp,
            channels_last=self.channels_last,
            ctx=self.ctx,
            max_samples=max_samples,
        )

    def run(self) -> dict[str, Any]:
        self.started = time.perf_counter()
        config = self.config
        if self.rng_resume is not None and self.step == 0:  # resumed at an epoch boundary: continue its random streams
            restore_rng_state(self.rng_resume)
        stop_after = config.stop_after_epochs
        with StopSignal() as stop:
            for epoch in range(self.epoch + 1, self.last_epoch + 1):
                row = self._run_epoch(epoch, stop)
                self.history.append(row)
                self.epoch, self.step = epoch, 0
                self.partial = {"loss_sum": 0.0, "correct": 0, "seen": 0}
                self.replay.epoch_start_rng = None
                if self.config.checkpoints:
                    self._save()
                    self._save_best(row)
                self.logger.log(row)
                if self.ctx.is_main:
                    log.info(
                        "epoch %d/%d  lr %.3g  train_loss %.4f  train_acc %.4f  test_acc %.4f%s  (%.1f s)",
                        epoch,
                        self.last_epoch,
                        row["lr"],
                        row["train_loss"],
                        row["train_acc"],
                        row["test_acc"],
                        f"  val_acc {row['val_acc']:.4f}" if "val_acc" in row else "",
                        row["epoch_time_s"],
                    )
                if stop_agreed(stop, self.ctx):
                    raise stopped_after_epoch(epoch, self.ckpt_path, stop.signum)
                if stop_after is not None and epoch >= stop_after and epoch < self.last_epoch:
                    return self._summary(complete=False)
        metrics = self._summary(complete=True)
        if self.ctx.is_main:
            write_json_atomic(self.out / METRICS_NAME, RunRecord.from_dict(metrics, str(self.out)).to_dict())
        return metrics

    # -- results ----------------------------------------------------------------------------------------------------

    def _summary(self, *, complete: bool) -> dict[str, Any]:
        history = self.history
        last = history[-1]
        best = max(history, key=lambda r: r["test_acc"])  # first epoch reaching the maximum, as the SAP log's `best`
        digests = gather_objects(param_digest(self.core), self.ctx)
        wall = self.elapsed_before + (time.perf_counter() - self.started)
        metrics: dict[str, Any] = {
            "task": "classification",
            "complete": complete,
            "accuracy": {"best": best["test_acc"], "last": last["test_acc"]},
            "best_epoch": best["epoch"],
            "test_acc_last": last["test_acc"],
            "test_acc_best": best["test_acc"],
            "train_loss_last": last["train_loss"],
            "train_acc_last": last["train_acc"],
        }
        if self.loaders.val is not None:
            chosen = max(history, key=lambda r: r["val_acc"])
            metrics.update(
                val_acc_best=chosen["val_acc"], val_epoch=chosen["epoch"], test_acc_at_val=chosen["test_acc"]
            )
        metrics.update(
            epochs=last["epoch"],
            epochs_planned=self.last_epoch,
            steps_per_epoch=self.steps_per_epoch,
            train_images=self.train_images,
            wall_time_s=wall,
            train_time_s=self.train_time,
            images_per_s=self.train_images / max(self.train_time, 1e-9),
            arch=self.config.arch,
            dataset=self.recipe.dataset,
            recipe=self.recipe.name,
            image_size=self.recipe.image_size,
            num_classes=self.num_classes,
            num_params=sum(p.numel() for p in self.core.parameters()),
            placement=self.config.placement or _default_placement(self.config.arch),
            compat={
                "epochs_compat_299": self.config.epochs_compat_299,
                "fix_b18": self.config.fix_b18,
                "reported_accuracy": "test_acc_best (test-set model selection, as the official logs; quirk B7)",
            },
            device=str(self.ctx.device),
            amp=self.amp,
            channels_last=self.channels_last,
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

    def close(self) -> None:
        logger = getattr(self, "logger", None)
        if logger is not None:
            logger.close()


def train(config: TrainConfig) -> dict[str, Any]:
    """Train ``config.arch`` under ``config.recipe``; returns the metrics (also written to ``out_dir/metrics.json``).

    Raises :class:`~repro.engine.errors.NonFiniteLossError`, :class:`~repro.engine.errors.TrainingOOMError`,
    :class:`~repro.engine.errors.TrainingInterruptedError` or :class:`~repro.engine.errors.TrainConfigError`.
    """
    ctx = setup_distributed(config.device)
    try:
        with run_directory_lock(config.out_dir, ctx, "`repro train`"):
            run = _Run(config, ctx)
            try:
                run.setup()
                return run.run()
            finally:
                run.close()
    finally:
        cleanup_distributed(ctx)


# --------------------------------------------------------------------------------------------------------------------
# command line (python -m repro.engine.train, torchrun)

#: Help text of the :class:`TrainConfig` fields on the command line (``repro train --help``).
FIELD_HELP = {
    "arch": "architecture name (SAP grammar such as resnet18-nlp-1222, or a registered model)",
    "recipe": "named recipe (see docs/training.md)",
    "dataset": "dataset name (default: the recipe's)",
    "image_size": "input side length in pixels (default: the recipe's)",
    "out_dir": "run directory (checkpoint.pt, best.pt, dvclive/, metrics.json)",
    "resume": "continue from <out>/checkpoint.pt if present",
    "epochs_compat_299": "run epochs 1..E-1 like the logged SAP runs (quirk B22)",
    "fix_b18": "correct the SAP evaluation-resize quirk B18 (default: faithful)",
    "stop_after_epochs": "stop this invocation after N epochs in total (resume later)",
    "val_split": "fraction of the training set held out for validation-based model selection",
    "model_opts": 'model build options as JSON, e.g. \'{"rnn_cell": "lstm"}\'',
    "checkpoints": "write checkpoint.pt and best.pt (off for throwaway runs, which then cannot resume)",
}
#: Flag of a field whose name differs from ``--<field-name>``.
FLAG_NAMES = {"out_dir": "--out"}


def flag_for(name: str) -> str:
    return FLAG_NAMES.get(name, "--" + name.replace("_", "-"))


def config_to_argv(config: TrainConfig) -> list[str]:
    """The ``repro train`` arguments that give back ``config`` (used to relaunch a run under torchrun)."""
    argv: list[str] = []
    for field in dataclasses.fields(TrainConfig):
        value = getattr(config, field.name)
        if value is None or (field.default is not dataclasses.MISSING and value == field.default):
            continue
        flag = flag_for(field.name)
        if isinstance(value, bool):
            argv.append(flag if value else "--no-" + flag[2:])
        elif isinstance(value, dict):
            if value:
                argv += [flag, json.dumps(value, sort_keys=True)]
        else:
            argv += [flag, str(value)]
    return argv


def launch(config: TrainConfig, nproc_per_node: int) -> int:
    """Run ``config`` on ``nproc_per_node`` processes of this machine via ``torch.distributed.run``; the exit code."""
    if nproc_per_node <= 1:
        return run_and_report(config)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc_per_node}"]
    cmd += ["-m", "repro.cli", "train", *config_to_argv(config)]
    return subprocess.call(cmd)


def _print_error(exc: BaseException) -> None:
    if int(os.environ.get("RANK", "0")) == 0:
        print("error: " + " ".join(str(exc).split()), file=sys.stderr)


def run_and_report(config: TrainConfig) -> int:
    """Run :func:`train` and turn its errors into one line on stderr and an exit code (0 on success)."""
    try:
        metrics = train(config)
    except (TrainingError, CheckpointError) as exc:
        _print_error(exc)
        return getattr(exc, "exit_code", 1)
    except AtomicWriteError as exc:  # disk full, read-only run directory: the message names the file
        _print_error(exc)
        return 1
    except Exception as exc:
        from repro.data import DatasetError

        if isinstance(exc, DatasetError | ValueError):  # bad arch, dataset, device: the messages name the fix
            _print_error(exc)
            return getattr(exc, "exit_code", 2)
        raise
    if int(os.environ.get("RANK", "0")) == 0:
        status = "done" if metrics["complete"] else "stopped (resume with --resume)"
        print(
            f"{status}: {metrics['arch']} on {metrics['dataset']}, {metrics['epochs']} epochs: "
            f"test_acc_last {metrics['test_acc_last']:.4f}, test_acc_best {metrics['test_acc_best']:.4f} "
            f"(epoch {metrics['best_epoch']}) -> {Path(config.out_dir) / METRICS_NAME}"
        )
    return 0


__all__ = [
    "FIELD_HELP",
    "TrainConfig",
    "config_to_argv",
    "flag_for",
    "launch",
    "param_digest",
    "run_and_report",
    "train",
]
