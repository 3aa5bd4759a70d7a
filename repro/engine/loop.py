"""Pieces shared by the training loops (classification, detection, faces): stop signals, the agreed finite-loss
check, resumable batch replay, optimiser construction, resume checks, OOM advice, parameter digests, progress bars and
the run-directory lock."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from repro.engine.checkpoint import capture_rng_state, check_training_checkpoint, restore_rng_state
from repro.engine.distributed import DistContext, all_reduce_sum, gather_objects
from repro.engine.errors import (
    RunDirectoryLockedError,
    TrainConfigError,
    TrainingInterruptedError,
    TrainingOOMError,
)
from repro.utils.locks import DirectoryLockedError, directory_lock

log = logging.getLogger(__name__)


class StopSignal:
    """Turns the first SIGTERM/SIGINT into a flag checked after every step; a second SIGINT interrupts at once."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def __enter__(self) -> StopSignal:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum  # only a flag here: the training loop reports it (no logging inside a handler)

    def __exit__(self, *exc: Any) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


class NonFiniteStepError(Exception):
    """Internal: the loss of the current step is NaN or infinite."""

    def __init__(self, value: float) -> None:
        super().__init__(value)
        self.value = value


def param_digest(model: nn.Module) -> str:
    """SHA-256 of all parameters (CPU bytes, in ``state_dict`` order): equal digests mean equal weights."""
    sha = hashlib.sha256()
    for name, param in model.named_parameters():
        sha.update(name.encode())
        sha.update(param.detach().float().cpu().contiguous().numpy().tobytes())
    return sha.hexdigest()


def broadcast_buffers(model: nn.Module, ctx: DistContext) -> None:
    """Copy rank 0's buffers (BatchNorm statistics) to every rank, so that all ranks evaluate the saved model."""
    if ctx.distributed:
        for buffer in model.buffers():
            torch.distributed.broadcast(buffer, src=0)


def show_progress(progress: bool | None, ctx: DistContext) -> bool:
    """Whether to draw a progress bar: rank 0 only, never with ``REPRO_NO_PROGRESS=1``, default on a terminal."""
    if not ctx.is_main or os.environ.get("REPRO_NO_PROGRESS") == "1":
        return False
    if progress is not None:
        return progress
    return sys.stderr.isatty()


def build_optimizer(model: nn.Module, recipe: Any) -> torch.optim.Optimizer:
    """SGD (momentum, weight decay, Nesterov) or Adam as the recipe says; the SAP code's Adam is always AMSGrad."""
    params = [p for p in model.parameters() if p.requires_grad]
    if recipe.optimizer == "adam":
        return torch.optim.Adam(params, lr=recipe.lr, weight_decay=recipe.weight_decay, amsgrad=True)
    return torch.optim.SGD(
        params, lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay, nesterov=recipe.nesterov
    )


def per_process(value: int, ctx: DistContext, what: str) -> int:
    """``value`` split evenly over the processes, or a config error naming the divisibility problem."""
    if value % ctx.world_size:
        raise TrainConfigError(
            f"{what} {value} is not divisible by the {ctx.world_size} processes; choose a multiple of {ctx.world_size}"
        )
    return value // ctx.world_size


def check_resume(saved: dict[str, Any], config: Any, keys: Sequence[str], ctx: DistContext, path: Path) -> None:
    """Refuse to resume ``path`` when its format, process count or any of ``keys`` of ``config`` differ."""
    check_training_checkpoint(saved, path)
    old = saved["config"]
    diffs = [f"{k}: {old.get(k)!r} -> {getattr(config, k)!r}" for k in keys if old.get(k) != getattr(config, k)]
    if saved.get("world_size", 1) != ctx.world_size:
        diffs.append(f"processes: {saved.get('world_size', 1)} -> {ctx.world_size}")
    if diffs:
        raise TrainConfigError(
            f"cannot resume {path}: the run was started with different options ({'; '.join(diffs)}). "
            "Use the original options, or a new --out directory to start a new run."
        )


def is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


def oom_error(batch_size: int, per_proc: int, image_size: Any, device: torch.device) -> TrainingOOMError:
    """The out-of-memory error with the advice to halve the batch (or shrink the input)."""
    where = f"out of memory on {device} with batch size {batch_size} ({per_proc} per process) at {image_size} px."
    if batch_size >= 2:
        advice = f"Try --batch-size {batch_size // 2} (the LR is not rescaled automatically; pass --lr to scale it)."
    else:
        advice = "Try a smaller --image-size, more processes (--nproc-per-node) or a larger device."
    return TrainingOOMError(f"{where} {advice}")


def agree(loss: torch.Tensor, stop: StopSignal, ctx: DistContext) -> tuple[bool, bool]:
    """``(loss finite on every process, stop requested on any process)``: one small all-reduce."""
    flags = torch.stack(
        [(~torch.isfinite(loss.detach())).float(), torch.tensor(float(stop.requested), device=loss.device)]
    )
    all_reduce_sum(flags, ctx)
    return bool(flags[0] == 0), bool(flags[1] > 0)


def stop_agreed(stop: StopSignal, ctx: DistContext) -> bool:
    """Whether any process has been asked to stop (all processes must leave the loop together)."""
    flag = torch.tensor([float(stop.requested)], device=ctx.device)
    return bool(all_reduce_sum(flag, ctx)[0] > 0)


class BatchReplay:
    """The batches of one epoch from a given step on, such that a run resumed mid-epoch sees the batches, and the
    random streams, that the uninterrupted run saw.

    At the start of an epoch the RNG states are recorded (``epoch_start_rng``, saved with an interrupted
    checkpoint); resuming at step ``k`` restores them, rebuilds the iterator, skips ``k`` batches and then restores
    the states saved at the interruption.
    """

    def __init__(self) -> None:
        self.epoch_start_rng: dict[str, Any] | None = None

    def batches(
        self,
        loader: Iterable,
        epoch: int,
        start_step: int,
        steps_per_epoch: int,
        rng_resume: dict[str, Any] | None,
    ) -> Iterator[tuple[int, Any]]:
        """``(step, batch)`` of ``epoch`` for steps ``start_step .. steps_per_epoch - 1``."""
        if start_step:  # interrupted mid-epoch: rebuild the iterator as it was, skip the steps already done
            restore_rng_state(self.epoch_start_rng)
        else:
            self.epoch_start_rng = capture_rng_state()
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch)
        iterator = iter(loader)
        for _ in range(start_step):
            next(iterator)
        if start_step:
            restore_rng_state(rng_resume)
        for step in range(start_step, steps_per_epoch):
            yield step, next(iterator)


@contextlib.contextmanager
def run_directory_lock(out_dir: str | Path, ctx: DistContext, what: str) -> Iterator[None]:
    """The main process locks ``out_dir`` for the whole run (:func:`repro.utils.locks.directory_lock`); every process
    fails together, with :class:`RunDirectoryLockedError`, when another ``what`` holds it."""
    with contextlib.ExitStack() as stack:
        refusal = None
        if ctx.is_main:
            try:
                stack.enter_context(directory_lock(out_dir, what=what))
            except DirectoryLockedError as exc:
                refusal = str(exc)
        refusal = next((r for r in gather_objects(refusal, ctx) if r), None)
        if refusal:
            raise RunDirectoryLockedError(f"{refusal}; nothing was changed")
        yield


def stop_mid_epoch(run: Any, epoch: int, started: float, signum: int | None) -> TrainingInterruptedError:
    """A stop was requested inside an epoch: account the epoch's time so far, checkpoint ``run`` where it stands
    (with the epoch's starting RNG state, for an exact replay) and return the error to raise. ``run`` is a training
    loop with ``ctx``, ``step``, ``steps_per_epoch``, ``train_time``, ``replay``, ``ckpt_path`` and ``_save``."""
    if run.ctx.is_main:
        log.warning("stop requested: saving a checkpoint at epoch %d, step %d", epoch, run.step)
    run.train_time += time.perf_counter() - started
    run._save(epoch_start_rng=run.replay.epoch_start_rng)
    return TrainingInterruptedError(
        f"interrupted at epoch {epoch}, step {run.step}/{run.steps_per_epoch}; checkpoint saved to "
        f"{run.ckpt_path}. Run again with --resume to continue.",
        signum=signum,
    )


def stopped_after_epoch(epoch: int, ckpt_path: Path, signum: int | None) -> TrainingInterruptedError:
    """The error to raise when a stop was agreed at the end of an epoch (its checkpoint is already written)."""
    return TrainingInterruptedError(
        f"interrupted after epoch {epoch}; checkpoint saved to {ckpt_path}. Run again with --resume to continue.",
        signum=signum,
    )
