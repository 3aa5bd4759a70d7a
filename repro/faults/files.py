"""Hostile and damaged files: crafted pickles that try to run code, and corrupt checkpoints.

The commands run in-process through typer's ``CliRunner`` (no process needs to die here), except one trial that runs
the issue's scenario — ``repro prepare cifar10`` on a crafted batch — as a real subprocess. Every payload, if it
ran, would create a marker file; a trial survives when the command refuses with one ``error:`` line (exit 1) naming
the file, no marker exists and nothing on disk changed.
"""

from __future__ import annotations

import builtins
import contextlib
import io
import logging
import os
import pickle
import random
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from repro.faults.registry import FaultContext, TrialRecord, register_family
from repro.faults.workload import TrainWorkload, invoke, register_probe, single_thread


class Reduce:
    """Pickles as ``fn(*args)``: what a crafted file's ``__reduce__`` makes the unpickler call."""

    def __init__(self, fn: Any, args: tuple) -> None:
        self.fn, self.args = fn, args

    def __reduce__(self) -> tuple:
        return self.fn, self.args

    def __call__(self, *args: Any) -> None:  # the pickler only requires the callable of a reduce to be callable
        raise AssertionError("never called while pickling")


def payloads(marker: Path) -> dict[str, tuple[Any, int]]:
    """``{name: (object, pickle protocol)}``: objects whose unpickling would create ``marker``."""
    from numpy.testing._private.utils import runstring

    touch_code = f"open({str(marker)!r}, 'w').close()"
    system = Reduce(os.system, (f"touch {marker}",))
    batch = {"data": np.zeros((2, 3072), np.uint8), "labels": [0, 1], "batch_label": "x", "filenames": ["a", "b"]}
    return {
        "os.system via __reduce__ (protocol 2)": (system, 2),
        "builtins.exec (protocol 4, STACK_GLOBAL)": (Reduce(builtins.exec, (touch_code,)), 4),
        "builtins.eval (protocol 0, text)": (Reduce(builtins.eval, (f"__import__('os').system('touch {marker}')",)), 0),
        "subprocess.Popen": (Reduce(subprocess.Popen, (["touch", str(marker)],)), 2),
        "numpy gadget numpy.testing runstring": (Reduce(runstring, (touch_code, {})), 2),
        "getattr chain Path(marker).touch()": (Reduce(Reduce(getattr, (marker, "touch")), ()), 2),
        "payload hidden in a valid batch": ({**batch, "extra": system}, 2),
        "payload inside an object-dtype array": ({**batch, "data": np.array([system], dtype=object)}, 2),
    }


def _write_cifar(root: Path, crafted: bytes) -> Path:
    """A CIFAR-10 layout whose first batch is ``crafted`` and whose other files are valid; the crafted file."""
    directory = root / "cifar10" / "cifar-10-batches-py"
    directory.mkdir(parents=True, exist_ok=True)
    batch = {"data": np.zeros((2, 3072), np.uint8), "labels": [0, 1]}
    for name in (*(f"data_batch_{i}" for i in range(2, 6)), "test_batch"):
        (directory / name).write_bytes(pickle.dumps(batch, protocol=2))
    (directory / "batches.meta").write_bytes(pickle.dumps({"label_names": [f"c{i}" for i in range(10)]}, protocol=2))
    (directory / "data_batch_1").write_bytes(crafted)
    return directory / "data_batch_1"


def _error_line(stderr: str) -> str | None:
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    return errors[0] if len(errors) == 1 and "Traceback" not in stderr else None


def _probe_checkpoint(ctx: FaultContext) -> tuple[TrainWorkload, Path]:
    """A real ``checkpoint.pt`` of one short probe run (in-process), to be crafted or damaged."""
    from repro.engine.train import TrainConfig, train

    register_probe()
    workload = TrainWorkload(ctx.work_dir / "data", epochs=1)
    workload.prepare()
    out = ctx.work_dir / "probe-run"
    if not (out / "metrics.json").is_file():
        config = TrainConfig(
            arch="faults-probe", recipe="smoke", dataset="shapes", seed=0, out_dir=str(out), epochs=1,
            max_steps_per_epoch=workload.steps, batch_size=workload.batch_size, image_size=workload.image_size,
            data_root=str(workload.data_root), device="cpu", progress=False,
        )  # fmt: skip
        with single_thread():
            train(config)
    return workload, out / "checkpoint.pt"


@contextlib.contextmanager
def _quiet() -> Any:
    logger = logging.getLogger("repro")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


@register_family(
    "crafted-pickles",
    default_count=8,
    description="pickles that run code when loaded (os.system, exec, eval, subprocess, a NumPy gadget, getattr "
    "chains, payloads hidden in valid data): as a CIFAR batch (`repro prepare`) and as a checkpoint "
    "(`repro evaluate`, `repro train --resume`)",
)
def crafted_pickles(ctx: FaultContext, count: int) -> list[TrialRecord]:
    """``count`` payloads (cycling through :func:`payloads`) against three readers, plus the issue's scenario as a
    real ``repro prepare`` subprocess."""
    workload, _ = _probe_checkpoint(ctx)
    markers = ctx.work_dir / "markers"
    markers.mkdir(exist_ok=True)
    records: list[TrialRecord] = []

    def record(what: str, code: int, stderr: str, marker: Path, file: Path, needle: str, unchanged: bool) -> None:
        line = _error_line(stderr)
        ran = marker.exists()
        survived = code == 1 and line is not None and str(file) in line and needle in line and not ran and unchanged
        lost = "nothing" if survived else ("THE PAYLOAD RAN" if ran else "see detail")
        detail = (line or stderr.strip()[-300:] or "(no output)") + ("" if unchanged else "; the file was changed")
        records.append(TrialRecord("crafted-pickles", len(records) + 1, what, survived, lost, detail[:400]))

    names = list(payloads(markers / "x"))
    with _quiet():
        for k in range(count):
            name = names[k % len(names)]
            for target in ("cifar", "evaluate", "train --resume"):
                marker = markers / f"{k}-{target.split()[0]}"
                obj, protocol = payloads(marker)[name]
                started = time.perf_counter()
                if target == "cifar":
                    root = ctx.work_dir / f"cifar{k}"
                    crafted = pickle.dumps(obj, protocol=protocol)
                    file = _write_cifar(root, crafted)
                    code, err = invoke(["prepare", "cifar10", "--data-root", str(root)])
                    needle = "refused: it references the global"
                else:
                    buffer = io.BytesIO()
                    torch.save({"model": {}, "format": 1, "payload": obj}, buffer, pickle_protocol=max(2, protocol))
                    crafted = buffer.getvalue()
                    if target == "evaluate":
                        file = ctx.work_dir / f"crafted{k}.pt"
                        file.write_bytes(crafted)
                        code, err = invoke(["evaluate", str(file), "--device", "cpu"])
                    else:
                        out = ctx.work_dir / f"crafted-run{k}"
                        out.mkdir(exist_ok=True)
                        file = out / "checkpoint.pt"
                        file.write_bytes(crafted)
                        code, err = invoke(workload.argv(out, resume=True))
                    needle = "refused checkpoint"
                unchanged = file.read_bytes() == crafted
                record(f"{name} as {target}", code, err, marker, file, needle, unchanged)
                records[-1].seconds = time.perf_counter() - started
        # the scenario, as a new user runs it
        started = time.perf_counter()
        marker = markers / "subprocess"
        root = ctx.work_dir / "cifar-subprocess"
        file = _write_cifar(root, pickle.dumps(Reduce(os.system, (f"touch {marker}",)), protocol=2))
        command = [sys.executable, "-m", "repro.cli", "prepare", "cifar10", "--data-root", str(root)]
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
        proc = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
        record(
            "os.system payload in data_batch_1, `python -m repro.cli prepare cifar10` (a new process)",
            proc.returncode, proc.stderr, marker, file, "'posix.system'", True,
        )  # fmt: skip
        records[-1].seconds = time.perf_counter() - started
    ctx.log(f"[crafted-pickles] {sum(r.survived for r in records)}/{len(records)} refused without running code")
    return records


def _damaged(original: bytes, rng: random.Random, ctx_dir: Path) -> list[tuple[str, bytes | Callable[[Path], None]]]:
    """``(what, bytes or a writer)`` of damaged variants of a checkpoint."""
    from repro.engine.checkpoint import load_checkpoint, save_checkpoint

    def edited(change: Callable[[dict], None]) -> Callable[[Path], None]:
        def write(path: Path) -> None:
            state = load_checkpoint(ctx_dir / "original.pt")
            change(state)
            save_checkpoint(path, state)

        return write

    def stale_digest(path: Path) -> None:  # weights changed after the digest was taken
        state = load_checkpoint(ctx_dir / "original.pt")
        from repro.engine.checkpoint import state_digest

        digest = state_digest(state)
        first = next(iter(state["model"]))
        state["model"][first] = state["model"][first] + 1
        torch.save({**state, "digest": digest}, path)

    size = len(original)
    variants: list[tuple[str, Any]] = [
        ("empty file", b""),
        ("random bytes", rng.randbytes(4096)),
        ("a foreign pickle (plain pickle.dumps of a dict)", pickle.dumps({"model": {"w": [1.0, 2.0]}})),
        ("torch.save of a list", None),
        ("a torch file without 'model'", None),
        ("format version 99", edited(lambda s: s.update(format=99))),
        (
            "another architecture's name (resnet18-skip-1222)",
            edited(lambda s: s["config"].update(arch="resnet18-skip-1222")),
        ),
        ("an architecture name that does not parse", edited(lambda s: s["config"].update(arch="bogus-arch-x"))),
        ("num_classes 3 for 10-class weights", edited(lambda s: s.update(num_classes=3))),
        ("no optimizer state", edited(lambda s: s.pop("optimizer"))),
        ("weights changed after the digest was written", stale_digest),
    ]
    for _ in range(3):
        cut = rng.randrange(1, size)
        variants.append((f"truncated to {cut} of {size} bytes", original[:cut]))
    for _ in range(3):
        at = rng.randrange(size)
        flipped = bytearray(original)
        flipped[at] ^= 1 << rng.randrange(8)
        variants.append((f"one bit flipped at byte {at} of {size}", bytes(flipped)))
    return variants


@register_family(
    "corrupt-checkpoints",
    default_count=17,
    description="truncated, bit-flipped, random, foreign, wrong-architecture, wrong-version and stale-digest "
    "checkpoints given to `repro evaluate` and `repro train --resume`",
)
def corrupt_checkpoints(ctx: FaultContext, count: int) -> list[TrialRecord]:
    """Survived: one ``error:`` line naming the file (exit 1, or 2 for usage) and the file left as it was — or,
    where the damage left the weights intact (a field the command does not use), a normal result from them."""
    from repro.engine.checkpoint import CheckpointError, load_checkpoint, state_digest

    workload, checkpoint = _probe_checkpoint(ctx)
    original_path = ctx.work_dir / "original.pt"
    original_path.write_bytes(checkpoint.read_bytes())
    original = original_path.read_bytes()
    original_digest = state_digest(load_checkpoint(original_path)["model"])
    rng = random.Random(ctx.seed + 3)
    variants = _damaged(original, rng, ctx.work_dir)
    records: list[TrialRecord] = []
    with _quiet():
        for k in range(count):
            what, content = variants[k % len(variants)]
            for target in ("evaluate", "train --resume"):
                started = time.perf_counter()
                out = ctx.work_dir / f"damaged{k}-{target.split()[0]}"
                out.mkdir(exist_ok=True)
                path = out / "checkpoint.pt"
                if what == "torch.save of a list":
                    torch.save([torch.ones(2)], path)
                elif what == "a torch file without 'model'":
                    torch.save({"weights": torch.ones(2)}, path)
                elif callable(content):
                    content(path)
                else:
                    path.write_bytes(content)
                before = path.read_bytes()
                try:
                    intact = state_digest(load_checkpoint(path)["model"]) == original_digest
                except CheckpointError:
                    intact = False
                if target == "evaluate":
                    code, err = invoke(["evaluate", str(path), "--device", "cpu"])
                else:
                    code, err = invoke(workload.argv(out, resume=True))
                line = _error_line(err)
                unchanged = path.read_bytes() == before
                if code == 0:
                    survived = intact
                    lost = "nothing (the weights were intact and used)" if intact else "USED DAMAGED WEIGHTS"
                    detail = "exit 0"
                else:
                    survived = code in (1, 2) and line is not None and str(path) in line and unchanged
                    lost = "nothing" if survived else "see detail"
                    detail = f"exit {code}: " + (line or err.strip()[-300:] or "(no output)")
                    if not unchanged:
                        detail += "; the file was changed"
                records.append(
                    TrialRecord("corrupt-checkpoints", len(records) + 1, f"{what} -> {target}", survived, lost,
                                detail[:400], time.perf_counter() - started)
                )  # fmt: skip
    ctx.log(f"[corrupt-checkpoints] {sum(r.survived for r in records)}/{len(records)} handled cleanly")
    return records
