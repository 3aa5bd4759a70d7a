"""Errors the trainer raises; each message names the cause and what to do. ``exit_code`` is the CLI's exit status."""

from __future__ import annotations


class TrainingError(RuntimeError):
    """Base class of the trainer's errors."""

    exit_code = 1


class TrainConfigError(TrainingError, ValueError):
    """An invalid :class:`repro.engine.train.TrainConfig` value, or a resume against a different configuration."""

    exit_code = 2


class NonFiniteLossError(TrainingError):
    """The loss became NaN or infinite; the run stopped and the last good checkpoint was kept."""

    exit_code = 3


class TrainingOOMError(TrainingError):
    """The device ran out of memory; the message suggests a smaller batch size."""

    exit_code = 4


class RunDirectoryLockedError(TrainingError):
    """Another process is writing the run directory (``<out>/.lock`` is held)."""


class TrainingInterruptedError(TrainingError):
    """SIGTERM/SIGINT (or a planned stop) ended the run after saving a checkpoint; ``--resume`` continues it."""

    def __init__(self, message: str, signum: int | None = None):
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + signum if signum else 1
