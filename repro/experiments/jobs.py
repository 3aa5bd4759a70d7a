"""Independent experiment jobs: cached results (resumable runs) and an optional pool of worker processes.

A *job* is a JSON-ready mapping with an ``id``; its result is cached in ``<cache_dir>/<id>.json`` together with the
job itself, and reused only when the cached job equals the new one (changed settings run again; keys starting with
``_`` are display options and are not compared). Results are written
atomically as each job finishes, so an interrupted experiment continues where it stopped.

With ``workers > 1`` jobs run in spawned processes (each on ``threads`` intra-op threads); with one worker they run
in this process on the same thread count, so a job's result does not depend on how many workers ran it.
"""

from __future__ import annotations

import json
import multiprocessing
import re
import signal
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from repro.experiments.training import progress_enabled, torch_threads
from repro.utils.atomic import write_json_atomic

__all__ = ["JobCache", "run_jobs"]

Job = Mapping[str, Any]
Worker = Callable[[Job], dict[str, Any]]

_SAFE = re.compile(r"[^A-Za-z0-9_.=-]+")


class JobCache:
    """``<directory>/<id>.json`` = ``{"job": job, "result": result}``; ``directory=None`` caches nothing."""

    def __init__(self, directory: Path | None) -> None:
        self.directory = Path(directory) if directory is not None else None

    def path(self, job_id: str) -> Path | None:
        return None if self.directory is None else self.directory / f"{_SAFE.sub('_', job_id)}.json"

    def get(self, job: Job) -> dict[str, Any] | None:
        path = self.path(str(job["id"]))
        if path is None or not path.is_file():
            return None
        try:
            cached = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            return None  # an unreadable cache entry is recomputed, never trusted
        if not isinstance(cached, dict) or cached.get("job") != _plain(job):
            return None
        return cached.get("result")

    def put(self, job: Job, result: Mapping[str, Any]) -> None:
        path = self.path(str(job["id"]))
        if path is not None:
            write_json_atomic(path, {"job": _plain(job), "result": dict(result)})


def _plain(job: Job) -> Any:
    """The job as JSON data, without its ``_``-prefixed keys (display options that do not change the result)."""
    return json.loads(json.dumps({k: v for k, v in job.items() if not str(k).startswith("_")}))


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _run_in_processes(jobs, todo, worker, done, workers: int, threads: int, desc: str) -> None:
    """Run ``jobs[i]`` for ``i`` in ``todo`` on a pool of spawned processes; on an error, an interrupt or SIGTERM the
    workers are terminated (nothing keeps training after this process has stopped)."""
    context = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(
        min(workers, len(todo)), mp_context=context, initializer=_init_worker, initargs=(threads,)
    )
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        pending = {pool.submit(worker, jobs[i]): i for i in todo}
        for future in as_completed(pending):
            done(pending[future], future.result())
    except BrokenProcessPool as exc:
        raise RuntimeError(
            f"{desc}: a worker process died ({exc}); when calling this from a script, guard it with "
            "`if __name__ == '__main__':` (worker processes are spawned), or use workers=1"
        ) from exc
    finally:
        processes = list(getattr(pool, "_processes", {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            if process.is_alive():
                process.terminate()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def run_jobs(
    jobs: Sequence[Job],
    worker: Worker,
    *,
    cache: JobCache,
    workers: int = 1,
    threads: int = 1,
    progress: bool = False,
    desc: str = "jobs",
) -> list[dict[str, Any]]:
    """``worker(job)`` for every job not in ``cache``, results in the order of ``jobs``.

    ``worker`` must be a module-level function (it is sent to the worker processes by reference). Results are
    cached as each job finishes; a failing job stops the run with its error (the finished ones stay cached).
    """
    results: list[dict[str, Any] | None] = [cache.get(job) for job in jobs]
    todo = [i for i, r in enumerate(results) if r is None]
    bar = None
    if progress_enabled(progress) and todo:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(jobs), initial=len(jobs) - len(todo), desc=desc, unit="job")

    def done(i: int, result: dict[str, Any]) -> None:
        results[i] = result
        cache.put(jobs[i], result)
        if bar is not None:
            bar.update(1)

    try:
        if workers <= 1 or len(todo) <= 1:
            with torch_threads(threads):
                for i in todo:
                    done(i, worker(jobs[i]))
        else:
            _run_in_processes(jobs, todo, worker, done, workers, threads, desc)
    finally:
        if bar is not None:
            bar.close()
    return [r for r in results if r is not None]
