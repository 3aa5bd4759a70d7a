"""Timing and peak-memory measurement shared by the layer and model benchmarks.

* **Time**: ``warmup`` untimed calls, then ``repeats`` timed calls (``time.perf_counter``, with
  ``torch.cuda.synchronize`` around each call on CUDA); the median is reported, with the interquartile range.
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
import sys
import time
from collections.abc import Callable, Iterator
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


def time_call(
    fn: Callable[[], object], *, device: torch.device | str = "cpu", warmup: int = 2, repeats: int = 5
) -> tuple[float, float]:
    """Median and interquartile range, in milliseconds, of ``repeats`` calls of ``fn`` after ``warmup`` calls."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    device = torch.device(device)
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append((time.perf_counter() - start) * 1e3)
    if len(times) >= 4:
        q1, _, q3 = statistics.quantiles(times, n=4)
        iqr = q3 - q1
    else:
        iqr = max(times) - min(times)
    return statistics.median(times), iqr


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
