"""Timing and peak-memory measurement shared by the layer and model benchmarks.

* **Time**: ``warmup`` untimed calls, then ``repeats`` timed calls (``time.perf_counter``, with
  ``torch.cuda.synchronize`` around each call on CUDA); the median is reported, with the interquartile range.
  Variants that are compared are timed interleaved (:func:`time_interleaved`: A B A B ..., one call each per
  round), so that the machine's drifts and other processes' load hit them alike.
* **Peak memory** (one extra call, never timed):

  * CPU: the torch profiler's memory view (``torch.profiler.profile(profile_memory=True)``). Every allocation and
    free made by torch's CPU allocator during the call is replayed in order; the peak of the running sum is the most
    memory the call held at once *on top of what was allocated before it* (inputs and parameters excluded; the
    gradients it creates included). Memory outside torch's allocator (e.g. oneDNN scratch space) is not counted.
  * CUDA: ``torch.cuda.max_memory_allocated()`` during the call minus ``torch.cuda.memory_allocated()`` before it.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Hashable, Iterator, Mapping
from dataclasses import dataclass

import torch

from repro.utils import amp

MEMORY_METHODS = {
    "cpu": "torch profiler memory view: peak of live bytes allocated by torch during one call, above the bytes live "
    "before it",
    "cuda": "torch.cuda.max_memory_allocated during one call minus torch.cuda.memory_allocated before it",
}


@dataclass(frozen=True)
class Measurement:
    """Median wall time of one call (ms), its interquartile range, the number of timed calls and the peak memory."""

    median_ms: float
    iqr_ms: float
    repeats: int
    peak_mib: float | None = None


@contextlib.contextmanager
def cpu_load(processes: int) -> Iterator[None]:
    """Keep ``processes`` CPU-bound processes (a Python busy loop each) running for the duration of the block: a
    reproducible busy machine. They are stopped, and waited for, when the block ends, and stop by themselves if
    this process dies first."""
    if processes < 0:
        raise ValueError(f"processes must be >= 0, got {processes}")
    loop = "import os\nparent = os.getppid()\nwhile os.getppid() == parent:\n    pass"  # ends if orphaned
    workers = [subprocess.Popen([sys.executable, "-c", loop]) for _ in range(processes)]
    try:
        if workers:
            time.sleep(0.5)  # let them reach the loop
        yield
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            try:
                worker.wait(timeout=10)
            except subprocess.TimeoutExpired:  # pragma: no cover - terminate is enough for a busy loop
                worker.kill()
                worker.wait()


def set_threads(threads: int | None) -> int:
    """Set torch's intra-op thread count (None keeps the current one); return the count in effect."""
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    """Mixed precision for the benchmarks: float16 on CUDA, bfloat16 on CPU; a no-op when not ``enabled``."""
    return amp.autocast(device, enabled, "fp16")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_iqr(times: list[float]) -> tuple[float, float]:
    if len(times) >= 4:
        q1, _, q3 = statistics.quantiles(times, n=4)
        return statistics.median(times), q3 - q1
    return statistics.median(times), max(times) - min(times)


def time_interleaved(
    fns: Mapping[Hashable, Callable[[], object]],
    *,
    device: torch.device | str = "cpu",
    warmup: int = 2,
    repeats: int = 5,
) -> dict[Hashable, tuple[float, float]]:
    """Median and interquartile range, in milliseconds, of each function of ``fns``, timed in ``repeats`` rounds
    after ``warmup`` untimed ones; every round calls each function once, in order (A B A B ...), so that a drift
    of the machine's speed (other processes, clock changes) affects all of them alike."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    device = torch.device(device)
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    _sync(device)
    times: dict[Hashable, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            _sync(device)
            times[name].append((time.perf_counter() - start) * 1e3)
    return {name: _median_iqr(values) for name, values in times.items()}


class _VariantError(Exception):
    def __init__(self, key: Hashable, exc: Exception) -> None:
        super().__init__(f"{type(exc).__name__}: {exc}")
        self.key = key


def _guarded(key: Hashable, fn: Callable[[], object]) -> Callable[[], None]:
    def run() -> None:
        try:
            fn()
        except Exception as exc:
            raise _VariantError(key, exc) from exc

    return run


def time_variants(
    fns: Mapping[Hashable, Callable[[], object]],
    *,
    device: torch.device | str = "cpu",
    warmup: int = 2,
    repeats: int = 5,
) -> tuple[dict[Hashable, tuple[float, float]], dict[Hashable, str]]:
    """:func:`time_interleaved`, where a function that raises is left out (its error message is returned) and the
    others are timed again without it: ``(timings, errors)``."""
    remaining = {key: _guarded(key, fn) for key, fn in fns.items()}
    errors: dict[Hashable, str] = {}
    while remaining:
        try:
            return time_interleaved(remaining, device=device, warmup=warmup, repeats=repeats), errors
        except _VariantError as failure:
            errors[failure.key] = str(failure)
            del remaining[failure.key]
    return {}, errors


def time_call(
    fn: Callable[[], object], *, device: torch.device | str = "cpu", warmup: int = 2, repeats: int = 5
) -> tuple[float, float]:
    """Median and interquartile range, in milliseconds, of ``repeats`` calls of ``fn`` after ``warmup`` calls."""
    return time_interleaved({"fn": fn}, device=device, warmup=warmup, repeats=repeats)["fn"]


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence the profiler's native start/stop lines written straight to file descriptor 2."""
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # pytest capture or a non-file stderr
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), fd)
            yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)


def _cpu_peak_bytes(fn: Callable[[], object]) -> int:
    from torch.profiler import ProfilerActivity, profile

    with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    live = peak = 0
    for event in sorted(events, key=lambda e: e.start_ns()):
        if event.device_type() != torch.autograd.DeviceType.CPU:
            continue
        live += event.nbytes()
        peak = max(peak, live)
    return peak


def peak_memory_bytes(fn: Callable[[], object], device: torch.device | str = "cpu") -> int:
    """Peak memory of one call of ``fn`` above what was allocated before it (see the module docstring)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    if device.type != "cpu":
        raise ValueError(f"peak memory is measured on 'cpu' or 'cuda' devices, got {device.type!r}")
    return _cpu_peak_bytes(fn)


def measure(
    fn: Callable[[], object],
    *,
    device: torch.device | str = "cpu",
    warmup: int = 2,
    repeats: int = 5,
    memory: bool = True,
) -> Measurement:
    """Time ``fn`` (median of ``repeats`` after ``warmup``) and, if ``memory``, measure its peak memory once."""
    median, iqr = time_call(fn, device=device, warmup=warmup, repeats=repeats)
    peak = peak_memory_bytes(fn, device) / 2**20 if memory else None
    return Measurement(median, iqr, repeats, peak)
