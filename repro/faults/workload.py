"""The training run the faults are injected into, and how two finished runs are compared.

The run is a real ``repro train`` (the command line, the trainer, checkpoints, dvclive files) of a small probe
network (registered as ``faults-probe``) on the generated ``shapes`` set, so that a trial costs seconds; a
:class:`Child` runs the command line in a forked process, so that SIGKILL hits a real process without paying the
seconds of importing torch again. :func:`run_fingerprint` reduces a run directory to what must be identical between an
interrupted-and-resumed run and an uninterrupted one; :func:`fingerprint_differences` lists what is not.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

PROBE_ARCH = "faults-probe"
TIMING_KEYS = frozenset({"wall_time_s", "train_time_s", "images_per_s", "epoch_time_s", "provenance"})
"""Fields that measure time: they differ between any two runs, interrupted or not."""
RUN_SPECIFIC_CONFIG = frozenset({"out_dir", "resume"})


class ProbeNet(nn.Module):
    """Convolutions with BatchNorm, Dropout and a 1 M-parameter head: state the trainer must restore exactly, and
    checkpoints large enough (about 9 MB with the optimizer) that a kill can land inside their writes."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, stride=2, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.Conv2d(16, 64, 3, stride=2, padding=1),
            nn.BatchNorm2d(64),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(4),
            nn.Flatten(),
        )
        self.head = nn.Sequential(nn.Linear(1024, 1024), nn.ReLU(), nn.Dropout(0.2), nn.Linear(1024, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def register_probe() -> None:
    """Register :class:`ProbeNet` as ``faults-probe`` in this process (once)."""
    from repro.models.registry import is_registered, register_model

    if not is_registered(PROBE_ARCH):
        register_model(PROBE_ARCH, family="faults")(lambda num_classes=10, **opts: ProbeNet(num_classes))


@dataclass(frozen=True)
class TrainWorkload:
    """One small training run: ``epochs`` epochs of ``steps`` steps on ``shapes`` under ``data_root``, on CPU."""

    data_root: Path
    epochs: int = 5
    steps: int = 2
    batch_size: int = 8
    image_size: int = 32
    seed: int = 0

    def prepare(self) -> None:
        from repro.data import prepare

        prepare("shapes", self.data_root, n_train=4 * self.batch_size, n_test=2 * self.batch_size, image_size=32)

    def argv(self, out: Path, *, resume: bool) -> list[str]:
        """``repro train ...`` arguments of this run into ``out``."""
        return [
            "train", "--arch", PROBE_ARCH, "--recipe", "smoke", "--dataset", "shapes", "--seed", str(self.seed),
            "--out", str(out), "--resume" if resume else "--no-resume", "--data-root", str(self.data_root),
            "--epochs", str(self.epochs), "--max-steps-per-epoch", str(self.steps),
            "--batch-size", str(self.batch_size), "--image-size", str(self.image_size), "--device", "cpu",
        ]  # fmt: skip


CHILD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "REPRO_NO_PROGRESS": "1"}


def _child_main(args: list[str], log: str, full_disk: tuple[str, int] | None) -> None:
    """The body of a :class:`Child`: output to ``log``, one torch thread, then ``repro ARGS`` (exits with its code)."""
    import logging

    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115 - the process's own streams
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
    logging.root.handlers.clear()  # the parent's handlers write to its streams
    os.environ.update(CHILD_ENV)
    torch.set_num_threads(1)
    register_probe()
    from repro.cli import app

    with contextlib.ExitStack() as stack:
        if full_disk is not None:
            from repro.faults.inject import FullDisk

            stack.enter_context(FullDisk(*full_disk))
        app(args=args, prog_name="repro")


def _preload() -> None:
    """Import what ``repro train`` / ``repro evaluate`` import, in this process, so that forked children start at
    once (a child that has to import the model zoo first takes seconds to reach the run lock)."""
    register_probe()
    import repro.cli
    import repro.data
    import repro.engine.evaluate
    import repro.engine.train  # noqa: F401


class Child:
    """``repro ARGS`` in a process forked from this one: a real process (SIGKILL kills it, no handler runs) that
    starts in milliseconds because torch and the package are already imported. ``full_disk=(root, bytes)`` makes
    its writes under ``root`` fail with ENOSPC beyond ``bytes`` (:class:`repro.faults.inject.FullDisk`)."""

    def __init__(self, args: Sequence[str], log: Path, *, full_disk: tuple[Path, int] | None = None) -> None:
        import multiprocessing

        _preload()
        self.log = Path(log)
        disk = (str(full_disk[0]), int(full_disk[1])) if full_disk else None
        self._process = multiprocessing.get_context("fork").Process(
            target=_child_main, args=(list(args), str(self.log), disk), daemon=True
        )
        sys.stdout.flush()
        sys.stderr.flush()
        self._process.start()

    @property
    def pid(self) -> int:
        return int(self._process.pid)

    def poll(self) -> int | None:
        """The exit code (negative: killed by that signal), or None while it runs."""
        return self._process.exitcode

    def kill(self) -> None:
        """SIGKILL."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)

    def wait(self, timeout: float = 300) -> int:
        """Wait for the end (SIGKILL after ``timeout`` seconds); the exit code."""
        self._process.join(timeout)
        if self._process.exitcode is None:
            self.kill()
            self._process.join()
        return int(self._process.exitcode)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.is_file() else ""


def run(args: Sequence[str], log: Path, *, full_disk: tuple[Path, int] | None = None) -> tuple[int, str]:
    """``repro ARGS`` in a :class:`Child` to its end: the exit code and the output of this run."""
    log = Path(log)
    log.unlink(missing_ok=True)
    child = Child(args, log, full_disk=full_disk)
    return child.wait(), child.output()


def wait_for_lock(proc: Child, out: Path, timeout: float = 120) -> bool:
    """Wait until ``proc`` holds the run directory's lock (its pid is in ``<out>/.lock``): training has begun.
    False when the process ended first."""
    from repro.utils.locks import LOCK_NAME

    lock = out / LOCK_NAME
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        with contextlib.suppress(OSError):
            if lock.read_text().strip() == str(proc.pid):
                return True
        time.sleep(0.002)
    return False


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """One torch thread for an in-process run (the subprocesses run with one)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


# -- comparing runs ---------------------------------------------------------------------------------------------------


def _comparable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _comparable(v) for k, v in value.items() if k not in TIMING_KEYS}
    return value


def _weights(path: Path) -> dict[str, Any] | None:
    from repro.engine.checkpoint import CheckpointError, load_checkpoint, state_digest

    if not path.exists():
        return None
    try:
        state = load_checkpoint(path)
    except CheckpointError as exc:
        return {"unreadable": str(exc)}
    return {"epoch": state.get("epoch"), "step": state.get("step"), "model": state_digest(state["model"])}


def run_fingerprint(out: Path) -> dict[str, Any]:
    """What a finished run directory must share with any other run of the same options and seed: ``metrics.json``
    without timings and run-specific options, the epoch and weight digest of ``checkpoint.pt`` and ``best.pt``,
    the dvclive files (timing metrics by their steps only), and the names of all files (no temporaries, no lock)."""
    out = Path(out)
    fingerprint: dict[str, Any] = {"files": sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())}
    metrics_path = out / "metrics.json"
    if metrics_path.is_file():
        metrics = json.loads(metrics_path.read_text())
        config = {k: v for k, v in metrics.get("config", {}).items() if k not in RUN_SPECIFIC_CONFIG}
        fingerprint["metrics"] = {**_comparable(metrics), "config": config}
    fingerprint["checkpoint"] = _weights(out / "checkpoint.pt")
    fingerprint["best"] = _weights(out / "best.pt")
    dvclive = out / "dvclive"
    for tsv in sorted((dvclive / "plots" / "metrics").glob("*.tsv")):
        text = tsv.read_text()
        if tsv.stem in TIMING_KEYS:
            text = "\n".join(line.split("\t")[0] for line in text.splitlines())
        fingerprint[f"dvclive/{tsv.name}"] = text
    if (dvclive / "metrics.json").is_file():
        fingerprint["dvclive/metrics.json"] = _comparable(json.loads((dvclive / "metrics.json").read_text()))
    return fingerprint


def fingerprint_differences(got: dict[str, Any], expected: dict[str, Any]) -> list[str]:
    """The entries of two fingerprints that differ (for metrics, the differing keys)."""
    differences = []
    for key in sorted(set(got) | set(expected)):
        a, b = got.get(key), expected.get(key)
        if a == b:
            continue
        if key == "metrics" and isinstance(a, dict) and isinstance(b, dict):
            keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
            differences.append(f"metrics.json: {', '.join(keys)}")
        elif key == "files":
            extra, missing = sorted(set(a or ()) - set(b or ())), sorted(set(b or ()) - set(a or ()))
            differences.append(f"files: extra {extra}, missing {missing}")
        else:
            differences.append(key)
    return differences


def invoke(args: Sequence[str]) -> tuple[int, str]:
    """``repro ARGS`` in this process (typer's ``CliRunner``, one torch thread, the probe registered): the exit code
    and stderr; an exception that escapes the command counts as exit 99 and is quoted."""
    from typer.testing import CliRunner

    from repro.cli import app

    register_probe()
    with single_thread():
        result = CliRunner().invoke(app, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        return 99, f"Traceback: {type(result.exception).__name__}: {result.exception}"
    return result.exit_code, result.stderr
