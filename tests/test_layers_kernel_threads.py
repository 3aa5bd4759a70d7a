"""run_items: every work item exactly once, on the requested threads, errors raised, usable after fork."""

from __future__ import annotations

import itertools
import multiprocessing
import threading

import numpy as np
import pytest
import torch

from repro.layers.kernel_threads import CHUNKS_PER_THREAD, run_items


def _recording_kernel():
    calls: list[tuple[int, int, str]] = []
    lock = threading.Lock()

    def kernel(first: int, last: int, out: np.ndarray) -> None:
        out[first:last] += 1
        with lock:
            calls.append((first, last, threading.current_thread().name))

    return kernel, calls


@pytest.mark.parametrize("items,threads", [(1, 2), (7, 2), (8, 2), (100, 3), (5, 1), (3, 8)])
def test_every_item_once_in_contiguous_chunks(items, threads):
    kernel, calls = _recording_kernel()
    out = np.zeros(items, np.int64)
    run_items(kernel, items, out, threads=threads)
    assert out.tolist() == [1] * items
    ranges = sorted((first, last) for first, last, _ in calls)
    assert ranges[0][0] == 0 and ranges[-1][1] == items
    assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))
    used = min(threads, items)
    assert len(calls) == (1 if used == 1 else min(items, CHUNKS_PER_THREAD * used))


def test_chunks_run_on_two_threads_at_once():
    barrier = threading.Barrier(2, timeout=10)  # chunks 0 and 1 wait for each other: one thread alone would time out
    names: set[str] = set()

    def kernel(first: int, last: int) -> None:
        names.add(threading.current_thread().name)
        if first < 2:
            barrier.wait()

    run_items(kernel, 8, threads=2)
    assert len(names) == 2


def test_default_threads_follow_torch():
    kernel, calls = _recording_kernel()
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        run_items(kernel, 10, np.zeros(10, np.int64))
    finally:
        torch.set_num_threads(previous)
    assert [(first, last) for first, last, _ in calls] == [(0, 10)]


def test_an_error_in_a_chunk_is_raised():
    def kernel(first: int, last: int) -> None:
        if first <= 5 < last:
            raise ValueError("chunk with item 5")

    with pytest.raises(ValueError, match="item 5"):
        run_items(kernel, 16, threads=2)


def _run_in_child(queue) -> None:
    out = np.zeros(32, np.int64)
    run_items(lambda first, last, o: o.__setitem__(slice(first, last), 1), 32, out, threads=2)
    queue.put(int(out.sum()))


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="needs fork")
def test_a_forked_child_gets_its_own_threads():
    kernel, _ = _recording_kernel()
    run_items(kernel, 8, np.zeros(8, np.int64), threads=2)  # the parent's helper pool exists before the fork
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_run_in_child, args=(queue,))
    child.start()
    child.join(timeout=60)
    assert child.exitcode == 0
    assert queue.get(timeout=5) == 32
