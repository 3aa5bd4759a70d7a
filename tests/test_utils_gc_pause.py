"""The garbage collector paused over a block and run once after it."""

from __future__ import annotations

import gc
import weakref

from repro.utils.gc_pause import collected_once


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


def test_the_collector_is_paused_inside_and_collects_cycles_made_there_once_it_ends():
    assert gc.isenabled()
    with collected_once():
        assert not gc.isenabled()
        a, b = _Node(), _Node()
        a.other, b.other = b, a  # a cycle: only the collector frees it
        alive = weakref.ref(a)
        del a, b
        with collected_once():  # nested: still paused after the inner block
            pass
        assert not gc.isenabled() and alive() is not None
    assert gc.isenabled() and alive() is None


def test_a_disabled_collector_stays_disabled():
    gc.disable()
    try:
        with collected_once():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()
