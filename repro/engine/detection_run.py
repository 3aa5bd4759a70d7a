"""The loop every detection trainer shares (:mod:`repro.engine.train_detection`, :mod:`repro.engine.train_faces`).

:class:`DetectionRun` holds one invocation's state and runs epochs of optimisation steps with the engine's guarantees:
the learning rate is a pure function of the position (:func:`repro.engine.schedule.scheduled_lr`), a non-finite loss
never reaches the weights, SIGTERM/SIGINT saves a mid-epoch checkpoint that :class:`~repro.engine.loop.BatchReplay`
resumes exactly, ``checkpoint.pt`` is written atomically after every epoch, dvclive rows are rebuilt from the history,
and BatchNorm statistics can be re-estimated before an evaluation (:func:`repro.engine.precise_bn.recompute_bn_stats`).

A trainer subclasses it and provides what differs: ``setup`` (loaders, model, optimizer, then :meth:`start`),
``_losses`` (one batch's loss terms), ``_bn_forward``, ``_evaluate_model`` (metrics of one evaluation),
``_eval_text`` (for the epoch log line), ``_result_fields`` (its part of the summary) and ``_write_outputs``.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import torch
from torch import nn

from repro.engine.checkpoint import (
    CHECKPOINT_FORMAT,
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from repro.engine.distributed import DistContext, all_reduce_sum, barrier, gather_objects
from repro.engine.errors import NonFiniteLossError, TrainConfigError
from repro.engine.loop import (
    BatchReplay,
    NonFiniteStepError,
    StopSignal,
    agree,
    check_resume,
    is_oom,
    oom_error,
    param_digest,
    per_process,
    show_progress,
    stop_agreed,
    stop_mid_epoch,
    stopped_after_epoch,
)
from repro.engine.metrics_io import EpochLogger
from repro.engine.precise_bn import recompute_bn_stats
from repro.engine.schedule import scheduled_lr, set_lr
from repro.utils.provenance import provenance

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "checkpoint.pt"
METRICS_NAME = "metrics.json"
#: Row keys of the history that are not loss terms.
ROW_KEYS = ("epoch", "lr", "epoch_time_s", "images_per_s")


class DetectionRun(ABC):
    """State of one training invocation (one process). ``task`` names the checkpoint's task; ``resume_keys`` the
    config fields that must equal the checkpoint's for ``resume``; ``eval_keys`` the row keys of an evaluation."""

    task = "detection"
    resume_keys: tuple[str, ...] = ()
    eval_keys: tuple[str, ...] = ()

    # set by the subclass's setup before start()
    core: nn.Module
    model: nn.Module
    optimizer: torch.optim.Optimizer
    train_loader: Any
    bn_loader: Any
    steps_per_epoch: int
    num_classes: int

    def __init__(self, config: Any, ctx: DistContext, recipe: Any) -> None:
        self.config, self.ctx, self.recipe = config, ctx, recipe
        self.out = Path(config.out_dir)
        self.ckpt_path = self.out / CHECKPOINT_NAME
        cuda = ctx.device.type == "cuda"
        self.amp = cuda if config.amp is None else (config.amp and cuda)
        self.batch = per_process(recipe.batch_size, ctx, "batch_size")
        self.eval_batch = max(1, (recipe.eval_batch_size or recipe.batch_size) // ctx.world_size)

    # -- what a trainer provides ---------------------------------------------------------------------------------

    @abstractmethod
    def setup(self) -> None:
        """Build loaders, model and optimizer, then call :meth:`start`."""

    @abstractmethod
    def _losses(self, images: Any, targets: Any) -> dict[str, torch.Tensor]:
        """The loss terms of one training batch (their sum is optimised)."""

    @abstractmethod
    def _bn_forward(self, model: nn.Module, batch: Any) -> None:
        """One training-mode forward of a batch, for BatchNorm re-estimation."""

    @abstractmethod
    def _evaluate_model(self, epoch: int) -> dict[str, Any]:
        """Evaluate the current weights (BN statistics already re-estimated); the row's metric values."""

    @abstractmethod
    def _eval_text(self, row: dict[str, Any]) -> str:
        """The metrics of an evaluated row for the epoch log line (``''`` when the row has none)."""

    @abstractmethod
    def _result_fields(self) -> dict[str, Any]:
        """The trainer's own part of the summary (metrics, model and data facts)."""

    @abstractmethod
    def _write_outputs(self, metrics: dict[str, Any]) -> None:
        """Write the end-of-run files (main process only), ``metrics.json`` last."""

    # -- state -----------------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Fresh state, or the checkpoint's when resuming; refuses to start over an existing run."""
        self.history: list[dict[str, Any]] = []
        self.epoch, self.step = 0, 0
        self.partial: dict[str, float] = {}
        self.train_images = 0
        self.train_time = 0.0
        self.elapsed_before = 0.0
        self.rng_resume: dict[str, Any] | None = None
        self.replay = BatchReplay()
        self.last_eval: dict[str, Any] | None = None
        if not self.config.resume and self.ckpt_path.exists():
            raise TrainConfigError(
                f"{self.out} already holds a run ({CHECKPOINT_NAME}); pass --resume to continue it, or choose another "
                "--out (or delete the directory) to start afresh"
            )
        if self.config.resume and self.ckpt_path.is_file():
            self._load()
        self.logger = EpochLogger(self.out / "dvclive", self.history, enabled=self.ctx.is_main)

    def _load(self) -> None:
        saved = load_checkpoint(self.ckpt_path, map_location="cpu")
        check_resume(saved, self.config, self.resume_keys, self.ctx, self.ckpt_path)
        self._check_saved(saved)
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

    def _check_saved(self, saved: dict[str, Any]) -> None:
        """Further checks of a checkpoint about to be resumed (after those of ``resume_keys``); none by default."""
        return None

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
                    "task": self.task,
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

    # -- training --------------------------------------------------------------------------------------------------

    def _lr(self, epoch: int, step: int) -> float:
        return scheduled_lr(self.recipe, epoch, step, self.steps_per_epoch)

    def _train_step(self, images: Any, targets: Any, stop: StopSignal) -> tuple[dict[str, float], bool]:
        """One optimisation step; ``(loss terms, stop requested)``. A non-finite loss never reaches the weights."""
        losses = self._losses(images, targets)
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

    def _oom(self) -> Exception:
        return oom_error(self.recipe.batch_size, self.batch, self.recipe.image_size, self.ctx.device)

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
                        raise self._oom() from exc
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
                    raise stop_mid_epoch(self, epoch, started, stop.signum)
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
                    raise self._oom() from exc
                raise
        row["epoch_time_s"] = time.perf_counter() - started
        row["images_per_s"] = (self.train_images - images_before) / max(row["epoch_time_s"], 1e-9)
        return row

    def _evaluate(self, epoch: int) -> dict[str, Any]:
        """Precise BN (when the recipe says so), then the trainer's evaluation."""
        if self.recipe.precise_bn:
            self.bn_loader.set_epoch(epoch)
            recompute_bn_stats(self.core, self.bn_loader, self.recipe.precise_bn_batches, self._bn_forward)
        return self._evaluate_model(epoch)

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
                if config.checkpoints:
                    self._save()
                self.logger.log(row)
                if self.ctx.is_main:
                    log.info(
                        "epoch %d/%d  lr %.3g  train_loss %.4f%s  (%.1f s)",
                        epoch,
                        last,
                        row["lr"],
                        row["train_loss"],
                        self._eval_text(row),
                        row["epoch_time_s"],
                    )
                if stop_agreed(stop, self.ctx):
                    raise stopped_after_epoch(epoch, self.ckpt_path, stop.signum)
                if config.stop_after_epochs is not None and config.stop_after_epochs <= epoch < last:
                    return self._summary(complete=False)
        if self.last_eval is None:  # resumed after the last epoch's checkpoint: evaluate the final weights again
            self._evaluate(last)
        metrics = self._summary(complete=True)
        if self.ctx.is_main:
            self._write_outputs(metrics)
        return metrics

    # -- results ---------------------------------------------------------------------------------------------------

    def _summary(self, *, complete: bool) -> dict[str, Any]:
        """The run's summary: the trainer's fields and the loop's (losses, timings, processes, provenance)."""
        last = self.history[-1]
        digests = gather_objects(param_digest(self.core), self.ctx)
        wall = self.elapsed_before + (time.perf_counter() - self.started)
        not_losses = {*ROW_KEYS, *self.eval_keys}
        metrics: dict[str, Any] = {"task": self.task, "complete": complete, **self._result_fields()}
        metrics.update(
            losses={k: v for k, v in last.items() if k not in not_losses},
            epochs=last["epoch"],
            epochs_planned=self.recipe.epochs,
            steps_per_epoch=self.steps_per_epoch,
            train_images=self.train_images,
            wall_time_s=wall,
            train_time_s=self.train_time,
            images_per_s=self.train_images / max(self.train_time, 1e-9),
            precise_bn={"enabled": self.recipe.precise_bn, "batches": self.recipe.precise_bn_batches},
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

    def close(self) -> None:
        logger = getattr(self, "logger", None)
        if logger is not None:
            logger.close()


__all__ = ["CHECKPOINT_NAME", "METRICS_NAME", "DetectionRun"]
