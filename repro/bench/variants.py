"""The attention implementations a benchmark compares, by name.

* ``fast``: the default (``impl='fast'``), with the compiled small-head kernels where they apply;
* ``fast-sdpa``: the fast path with the compiled kernels off (every attention through
  ``F.scaled_dot_product_attention``, the unfused ``exp(sigmoid(·))`` pooling);
* ``faithful``: the official operations (``impl='faithful'``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from torch import nn

from repro.layers.nlp import attention_impl
from repro.layers.small_head_attention import small_head_kernels

__all__ = ["IMPLS", "check_impls", "has_attention_impl", "implementation", "with_impl"]

IMPLS = ("fast", "fast-sdpa", "faithful")


def check_impls(names: list[str]) -> list[str]:
    unknown = [name for name in names if name not in IMPLS]
    if unknown:
        raise ValueError(f"unknown impls {unknown}; valid choices: {', '.join(IMPLS)}")
    return names


@contextlib.contextmanager
def implementation(name: str) -> Iterator[None]:
    """Run the block with attention implementation ``name`` (``'-'``: a module without attention, nothing to set)."""
    if name == "-":
        yield
        return
    check_impls([name])
    with attention_impl("faithful" if name == "faithful" else "fast"), small_head_kernels(name != "fast-sdpa"):
        yield


def has_attention_impl(module: nn.Module) -> bool:
    """Whether ``module`` contains a self-attentive weight network whose implementation can be chosen."""
    return any(hasattr(m, "active_impl") for m in module.modules())


def with_impl(step: Callable[[], object], name: str) -> Callable[[], None]:
    """``step`` run under :func:`implementation` ``name`` at every call."""

    def run() -> None:
        with implementation(name):
            step()

    return run
