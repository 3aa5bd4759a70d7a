"""Faults in training runs: SIGKILL at any moment, a full disk, two runs in one directory.

Each family runs the workload of :mod:`repro.faults.workload` as real ``repro train`` processes (forked children)
and compares the finished run directory with an uninterrupted reference run of the same options and seed.
"""

from __future__ import annotations

import contextlib
import random
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from repro.faults.registry import FaultContext, TrialRecord, register_family
from repro.faults.workload import (
    Child,
    TrainWorkload,
    fingerprint_differences,
    invoke,
    run,
    run_fingerprint,
    wait_for_lock,
)

# Kill points: after a random delay into training, or at the first moment after that delay when the temporary
# file of a given write exists (the write is in progress: the kill lands inside it).
KILL_POINTS = ("random", "checkpoint.pt", "best.pt", "random", "dvclive", "metrics.json")
_WRITING = {
    "checkpoint.pt": re.compile(r"^\.checkpoint\.pt\..*\.tmp$"),
    "best.pt": re.compile(r"^\.best\.pt\..*\.tmp$"),
    "metrics.json": re.compile(r"^\.metrics\.json\..*\.tmp$"),
}
_DVCLIVE_WRITING = re.compile(r"^\..*\.tmp$")
KILLS_PER_CHAIN = 4


@dataclass
class Reference:
    """The uninterrupted run every trial is compared with."""

    workload: TrainWorkload
    out: Path
    fingerprint: dict
    train_seconds: float  # from the run lock appearing to metrics.json appearing (the training proper)


_REFERENCES: dict[Path, Reference] = {}


def reference_run(ctx: FaultContext) -> Reference:
    """The workload run once without faults (a subprocess, like the trials), in ``ctx.shared_dir``; one per folder
    and process, shared by the families."""
    base = ctx.shared_dir / "train-reference"
    if base in _REFERENCES:
        return _REFERENCES[base]
    base.mkdir(parents=True, exist_ok=True)
    workload = TrainWorkload(base / "data")
    workload.prepare()
    out = base / "run"
    shutil.rmtree(out, ignore_errors=True)
    proc = Child(workload.argv(out, resume=False), base / "run.log")
    wait_for_lock(proc, out)
    began = time.monotonic()
    while proc.poll() is None and not (out / "metrics.json").exists():
        time.sleep(0.002)
    seconds = time.monotonic() - began
    code = proc.wait()
    if code != 0:
        raise RuntimeError(f"the reference run failed (exit {code}); see {base / 'run.log'}")
    _REFERENCES[base] = Reference(workload, out, run_fingerprint(out), seconds)
    return _REFERENCES[base]


def _writing(out: Path, point: str) -> bool:
    if point == "dvclive":
        folders = [out / "dvclive", out / "dvclive" / "plots" / "metrics"]
        return any(_DVCLIVE_WRITING.match(p.name) for d in folders if d.is_dir() for p in d.iterdir())
    pattern = _WRITING[point]
    with contextlib.suppress(FileNotFoundError):
        return any(pattern.match(name) for name in (p.name for p in out.iterdir()))
    return False


@dataclass
class KillOutcome:
    killed: bool
    seconds: float  # into training when the kill was sent (or when the process ended by itself)
    note: str


def launch_and_kill(argv: list[str], out: Path, log: Path, point: str, delay: float) -> KillOutcome:
    """Start ``repro train``; ``delay`` seconds after it holds the run lock, SIGKILL it (for a write point: as soon
    after that as the write is seen in progress). No handler of the process runs."""
    proc = Child(argv, log)
    if not wait_for_lock(proc, out):
        proc.wait()
        return KillOutcome(False, 0.0, "ended before training began")
    began = time.monotonic()
    time.sleep(delay)
    while proc.poll() is None and point != "random" and not _writing(out, point):
        time.sleep(0.0005)
    at = time.monotonic() - began
    if proc.poll() is not None:
        proc.wait()
        return KillOutcome(False, at, "finished before the kill point")
    proc.kill()
    proc.wait()
    return KillOutcome(True, at, f"during a {point} write" if point != "random" else "at a random moment")


def _checkpoint_epoch(out: Path) -> int | None:
    """The epoch of ``out/checkpoint.pt`` (0 when there is none), or None when it cannot be read."""
    from repro.engine.checkpoint import CheckpointError, load_checkpoint

    if not (out / "checkpoint.pt").exists():
        return 0
    try:
        return int(load_checkpoint(out / "checkpoint.pt")["epoch"])
    except CheckpointError:
        return None


def _state_after_kill(out: Path) -> str:
    """What a killed run left: the epoch of its checkpoint and the writes it interrupted."""
    epoch = _checkpoint_epoch(out)
    temporaries = sorted(p.name[1:].rsplit(".", 2)[0] for p in out.rglob(".*.tmp*"))
    state = {None: "an unreadable checkpoint", 0: "no checkpoint"}.get(epoch, f"the checkpoint of epoch {epoch}")
    return state + (f" and an interrupted write of {temporaries[0]}" if temporaries else "")


@register_family(
    "sigkill-train",
    default_count=20,
    description="SIGKILL a `repro train` run (no handler runs) at random moments and inside each kind of write, "
    "resume it with --resume, compare with an uninterrupted run",
)
def sigkill_train(ctx: FaultContext, count: int) -> list[TrialRecord]:
    """``count`` kill points in chains of up to :data:`KILLS_PER_CHAIN`: kill, resume and kill again (each delay
    drawn within the work left), then resume to the end (in-process, ``repro train --resume``). Every kill of a chain
    that ends identical to the reference (weights, metrics, best.pt, dvclive files) survived; the state each kill
    left is recorded. A launch that finishes before its kill point ends the chain and is not counted."""
    rng = random.Random(ctx.seed)
    reference = reference_run(ctx)
    epochs = reference.workload.epochs
    ctx.log(f"[sigkill-train] reference run: {reference.train_seconds:.1f} s of training")
    records: list[TrialRecord] = []
    chain = launches = 0
    while len(records) < count and launches < 3 * count:
        chain += 1
        out = ctx.work_dir / f"chain{chain}"
        shutil.rmtree(out, ignore_errors=True)
        kills: list[TrialRecord] = []
        while len(kills) < KILLS_PER_CHAIN and len(records) + len(kills) < count:
            point = KILL_POINTS[launches % len(KILL_POINTS)]  # by launch: a point that did not come is not retried
            left = reference.train_seconds * max(0.2, (epochs - (_checkpoint_epoch(out) or 0)) / epochs)
            delay = rng.uniform(0, left * (0.95 if point == "random" else 0.7))
            started = time.perf_counter()
            argv = reference.workload.argv(out, resume=bool(kills))
            outcome = launch_and_kill(argv, out, ctx.work_dir / f"chain{chain}.log", point, delay)
            launches += 1
            if not outcome.killed:
                break
            what = f"chain {chain}, kill {len(kills) + 1}: {outcome.note}, {outcome.seconds:.2f} s into training"
            kills.append(
                TrialRecord("sigkill-train", len(records) + len(kills) + 1, what, False, _state_after_kill(out),
                            seconds=time.perf_counter() - started)
            )  # fmt: skip
        code, stderr = invoke(reference.workload.argv(out, resume=True))
        differences = fingerprint_differences(run_fingerprint(out), reference.fingerprint)
        survived = code == 0 and not differences
        for record in kills:
            record.survived = survived
            if survived:
                record.lost = f"nothing: it left {record.lost}; the resumed run redid the rest"
            else:
                record.detail = f"final resume exit {code} ({stderr.strip()[-200:]}); differs: {differences}"[:500]
        ctx.log(f"[sigkill-train] chain {chain}: {len(kills)} kills, {'identical' if survived else 'DIFFERENT'}")
        records.extend(kills)
    return records


# -- full disk ------------------------------------------------------------------------------------------------------


def tmpfs_available(folder: Path) -> bool:
    """Whether this process may mount a tmpfs (root, or a user namespace that allows it)."""
    probe = folder / "tmpfs-probe"
    probe.mkdir(parents=True, exist_ok=True)
    try:
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(probe)], capture_output=True)
    except OSError:
        return False
    if mounted.returncode != 0:
        return False
    subprocess.run(["umount", str(probe)], capture_output=True)
    return True


@contextlib.contextmanager
def small_disk(path: Path, size_bytes: int):
    """A tmpfs of ``size_bytes`` mounted at ``path`` for the block."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_bytes}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill_disk(folder: Path) -> Path:
    """Take all the free space of ``folder``'s filesystem with one file (what another job on a shared disk does)."""
    filler = folder / "filler.bin"
    block = b"\0" * (1 << 16)
    with contextlib.suppress(OSError), open(filler, "wb", buffering=0) as handle:
        while True:
            handle.write(block)
    with contextlib.suppress(OSError), open(filler, "ab", buffering=0) as handle:
        while True:  # the last partial block
            handle.write(b"\0" * 512)
    return filler


def one_error_line(stderr: str) -> str | None:
    """The single ``error: ...`` line of a command's stderr, or None (several, none, or a traceback)."""
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    if len(errors) != 1 or "Traceback" in stderr:
        return None
    return errors[0]


def _all_readable(out: Path) -> str | None:
    """None when every file of a run directory reads back (checkpoints with their digest, JSON, no temporaries)."""
    import json

    from repro.engine.checkpoint import CheckpointError, load_checkpoint

    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        if path.name.startswith(".") and ".tmp" in path.name:
            return f"temporary file {path.name} left"
        try:
            if path.suffix == ".pt":
                load_checkpoint(path)
            elif path.suffix == ".json":
                json.loads(path.read_text())
        except (CheckpointError, ValueError) as exc:
            return f"{path.name}: {exc}"
    return None


def _disk_full_run(
    ctx: FaultContext, reference: Reference, disk: Path, size: int, fill_after: float | None, tmpfs: bool
) -> tuple[int, str, str | None]:
    """Run the workload into ``disk/run`` on a disk of ``size`` bytes (filled up ``fill_after`` seconds into
    training, if given): ``(exit code, output, the first unreadable file or None)``."""
    out = disk / "run"
    log = disk.parent / f"{disk.name}.log"
    log.unlink(missing_ok=True)
    with small_disk(disk, size) if tmpfs else contextlib.nullcontext():
        proc = Child(reference.workload.argv(out, resume=False), log, full_disk=None if tmpfs else (disk, size))
        filler = None
        if fill_after is not None and wait_for_lock(proc, out):
            time.sleep(fill_after)
            filler = fill_disk(disk)
        code = proc.wait()
        unreadable = _all_readable(out)
        if filler is not None:
            filler.unlink()
        if tmpfs:  # "free space": continue on a disk with room
            shutil.rmtree(disk.parent / f"{disk.name}-freed", ignore_errors=True)
            shutil.copytree(out, disk.parent / f"{disk.name}-freed")
    return code, log.read_text(errors="replace"), unreadable


@register_family(
    "enospc-train",
    default_count=6,
    description="the disk fills while `repro train` writes (a small disk, or one that another job fills mid-run) "
    "and while `repro evaluate --out` writes its results file; then space is freed and the run resumed",
)
def enospc_train(ctx: FaultContext, count: int) -> list[TrialRecord]:
    """Trials cycle through: a disk too small for the run (it fills at a checkpoint or best.pt write), a disk that
    another job fills at a random moment (any write: checkpoint, best.pt, dvclive, metrics.json), and a results
    file (``repro evaluate --out``) on a full disk. Survived: exit 1 with one line naming the file and the full
    disk, every file left readable and the previous results intact, and after space is freed ``--resume`` ends
    identical to the reference."""
    rng = random.Random(ctx.seed + 1)
    reference = reference_run(ctx)
    total = sum(p.stat().st_size for p in reference.out.rglob("*") if p.is_file())
    checkpoint = (reference.out / "checkpoint.pt").stat().st_size
    tmpfs = tmpfs_available(ctx.work_dir)
    ctx.notes.append(
        "enospc-train: each disk is a real tmpfs of the stated size mounted for the trial"
        if tmpfs
        else "enospc-train: no tmpfs could be mounted here, so writes under the trial's folder fail with an injected "
        "ENOSPC beyond the stated size (repro.faults.inject.FullDisk); the disk-filled-mid-run trials are skipped"
    )
    records = []
    modes = ("small disk", "filled mid-run", "results file") if tmpfs else ("small disk", "results file")
    for trial in range(1, count + 1):
        mode = modes[(trial - 1) % len(modes)]
        started = time.perf_counter()
        disk = ctx.work_dir / f"disk{trial}"
        shutil.rmtree(disk, ignore_errors=True)
        if mode == "results file":
            survived, what, detail = _results_file_trial(ctx, reference, disk, tmpfs)
            lost = "nothing (the previous results file is intact)" if survived else "see detail"
        else:
            best = (reference.out / "best.pt").stat().st_size
            for attempt in range(4):  # until the disk is full before the run ends (a later fill may come too late)
                shutil.rmtree(disk, ignore_errors=True)
                if mode == "small disk":  # a new checkpoint is written beside the previous one, then replaces it
                    size, fill_after = int(rng.uniform(1.05 * checkpoint, 2 * checkpoint + 0.9 * best)), None
                    what = f"a {size / 1e6:.1f} MB disk for a run that needs {(2 * checkpoint + best) / 1e6:.1f} MB"
                else:
                    size, fill_after = 4 * total, rng.uniform(0, 0.8 * reference.train_seconds) / 2**attempt
                    what = f"another job fills the disk {fill_after:.2f} s into training"
                code, output, unreadable = _disk_full_run(ctx, reference, disk, size, fill_after, tmpfs)
                if code != 0:
                    break
            line = one_error_line(output)
            out = disk / "run"
            clear = code == 1 and line is not None and "no space left" in line and str(out) in line
            moved = disk.parent / f"{disk.name}-freed" if tmpfs else out
            resumed, _ = run(reference.workload.argv(moved, resume=True), disk.parent / f"{disk.name}-resumed.log")
            differences = fingerprint_differences(run_fingerprint(moved), reference.fingerprint)
            survived = clear and unreadable is None and resumed == 0 and not differences
            if code == 0:
                detail = "the run finished before the disk was full in 4 attempts: no fault was injected"
                survived = False
            else:
                detail = line or f"exit {code}: " + (output.strip().splitlines() or ["(no output)"])[-1]
            if unreadable:
                detail += f"; unreadable after the failure: {unreadable}"
            if differences or resumed:
                detail += f"; after freeing space: exit {resumed}, differs {differences}"
            lost = "nothing (the resumed run repeated the epoch whose write failed)" if survived else "see detail"
        records.append(TrialRecord("enospc-train", trial, f"{mode}: {what}", survived, lost, detail[:500],
                                   time.perf_counter() - started))  # fmt: skip
        ctx.log(f"[enospc-train] trial {trial} ({mode}): {'ok' if survived else 'FAILED'}: {detail[:160]}")
    return records


def _results_file_trial(ctx: FaultContext, reference: Reference, disk: Path, tmpfs: bool) -> tuple[bool, str, str]:
    """``repro evaluate --out disk/result.json`` twice: once with room, once on a full disk."""
    result = disk / "result.json"
    size = 1 << 20
    with small_disk(disk, size) if tmpfs else contextlib.nullcontext():
        disk.mkdir(parents=True, exist_ok=True)
        args = ["evaluate", str(reference.out / "checkpoint.pt"), "--device", "cpu", "--out", str(result)]
        log = disk.parent / f"{disk.name}.log"
        first, _ = run(args, log)
        good = result.read_bytes() if result.is_file() else b""
        if tmpfs:
            fill_disk(disk)
            second, output = run(args, log)
        else:
            usage = sum(p.stat().st_size for p in disk.rglob("*") if p.is_file())
            second, output = run(args, log, full_disk=(disk, usage))
        intact = result.is_file() and result.read_bytes() == good and bool(good)
        leftovers = [p.name for p in disk.iterdir() if p.name.startswith(".")]
    line = one_error_line(output)
    clear = second == 1 and line is not None and "no space left" in line and str(result) in line
    survived = first == 0 and clear and intact and not leftovers
    detail = line or f"exit {second}: {output.strip()[-300:]}"
    if not intact:
        detail += "; the previous results file was lost or changed"
    if leftovers:
        detail += f"; temporaries left: {leftovers}"
    return survived, "results file of `repro evaluate --out` on a full disk (a previous result in place)", detail


# -- two runs in one directory ------------------------------------------------------------------------------------


@register_family(
    "concurrent-train",
    default_count=4,
    description="start a second `repro train` (fresh or --resume) in the directory of a running one, and after a "
    "SIGKILL of the first",
)
def concurrent_train(ctx: FaultContext, count: int) -> list[TrialRecord]:
    """Trials alternate: (a) a second run (new, or ``--resume``) while the first trains must be refused at once with
    one line naming the directory and the holder's pid, and the first must end identical to the reference; (b) after
    the first is SIGKILLed, a ``--resume`` must take the directory over (the kernel released the lock) and end
    identical."""
    rng = random.Random(ctx.seed + 2)
    reference = reference_run(ctx)
    records = []
    for trial in range(1, count + 1):
        started = time.perf_counter()
        out = ctx.work_dir / f"shared{trial}"
        shutil.rmtree(out, ignore_errors=True)
        first = Child(reference.workload.argv(out, resume=False), ctx.work_dir / f"first{trial}.log")
        wait_for_lock(first, out)
        time.sleep(rng.uniform(0, 0.3 * reference.train_seconds))
        log = ctx.work_dir / f"second{trial}.log"
        if trial % 2:
            resume = trial % 4 == 3
            second, output = run(reference.workload.argv(out, resume=resume), log)
            first_code = first.wait()
            line = one_error_line(output)
            refused = second == 1 and line is not None and f"is in use by pid {first.pid}" in line
            differences = fingerprint_differences(run_fingerprint(out), reference.fingerprint)
            survived = refused and first_code == 0 and not differences
            what = f"a second run ({'--resume' if resume else 'new'}) while the first trains"
            detail = line or output.strip()[-300:]
            if differences or first_code:
                detail += f"; the first run: exit {first_code}, differs {differences}"
        else:
            first.kill()
            first.wait()
            second, _ = run(reference.workload.argv(out, resume=True), log)
            differences = fingerprint_differences(run_fingerprint(out), reference.fingerprint)
            survived = second == 0 and not differences
            what = "--resume right after the first run was SIGKILLed (its lock file left behind)"
            detail = f"the second run took over: exit {second}" + (f"; differs {differences}" if differences else "")
        lost = "nothing" if survived else "see detail"
        records.append(
            TrialRecord("concurrent-train", trial, what, survived, lost, detail[:500], time.perf_counter() - started)
        )
        ctx.log(f"[concurrent-train] trial {trial}: {'ok' if survived else 'FAILED'}")
    return records
