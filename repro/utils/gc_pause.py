"""Python's cyclic garbage collector paused over a piece of work that allocates many short-lived objects.

Tracing a model allocates hundreds of thousands of small objects (calls, storages, tensors, frames); the collector's
automatic passes over them, while they are still in use, are a clear share of the profile stage's time. With
:func:`collected_once` the work runs with the collector paused and its leftovers are collected once at the end:
every object allocated meanwhile is in the youngest generation, so a generation-0 pass finds all of them (and does
not scan the older objects of the process).
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["collected_once"]


@contextmanager
def collected_once() -> Iterator[None]:
    """Pause automatic garbage collection for the block, then collect generation 0 once (nested use is fine)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
            gc.collect(0)
