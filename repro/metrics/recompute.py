"""``patch-recompute`` (RNNPool Table 1, "Memory Optimised", App. E.3): the early part of a network rebuilt patch by
patch so that its peak memory meets a budget, and the MACs that costs (docs/profiling.md)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import nn

from repro.metrics.memory import MemoryReport, events_report, layerwise_events, trace_steps
from repro.metrics.memory_rules import bytes_per_element
from repro.metrics.trace import ModelTrace

__all__ = ["RecomputeResult", "patch_recompute_memory"]


@dataclass(frozen=True)
class RecomputeResult:
    """Peak memory and MACs of the base network with its first steps recomputed patch by patch."""

    report: MemoryReport
    cut_after: str  # the last step whose output (Activation-A) is rebuilt patch by patch
    macs: int  # base MACs + recomputation
    extra_macs: int


def patch_recompute_memory(
    trace: ModelTrace, budget_bytes: int, dtype: str | int = "fp32", *, recompute_until: str | None = None
) -> RecomputeResult:
    """App. E.3 read as an algorithm (docs/profiling.md): choose the cut (Activation-A) after which the ``layerwise``
    peak of the remaining steps is smallest while still >= ``budget_bytes``; everything up to the cut is rebuilt one
    output pixel at a time from its receptive field of the input image, which adds MACs.

    The peak counts only the steps after the cut (the patch buffers are ignored, as in the paper).
    """
    bpe = bytes_per_element(dtype)
    events = layerwise_events(trace)[0]
    if not events:
        raise ValueError("the model has no activation steps to recompute")
    budget = math.ceil(budget_bytes / bpe)
    suffix_max = [0] * (len(events) + 1)
    for i in range(len(events) - 1, -1, -1):
        suffix_max[i] = max(events[i].elements, suffix_max[i + 1])
    limit = len(events) - 1
    if recompute_until is not None:
        matches = [
            i for i, e in enumerate(events) if e.step == recompute_until or e.step.startswith(recompute_until + ".")
        ]
        if not matches:
            raise ValueError(f"recompute_until={recompute_until!r} names no step of the model")
        limit = matches[-1]
    best = None  # the smallest remaining peak >= budget; the earliest such cut (least recomputation) on ties
    for cut in range(limit + 1):  # steps 0..cut are recomputed
        peak = suffix_max[cut + 1]
        if peak >= budget and (best is None or peak < suffix_max[best + 1]):
            best = cut
    if best is None:  # nothing reaches the budget: recompute nothing
        report = events_report("patch-recompute", events, bpe)
        return RecomputeResult(report, "-", trace.macs, 0)
    rest = events[best + 1 :]
    report = events_report("patch-recompute", rest, bpe)
    extra = _recompute_macs(trace, events[best].step)
    return RecomputeResult(report, events[best].step, trace.macs + extra, extra)


def _recompute_macs(trace: ModelTrace, cut_step: str) -> int:
    """Extra MACs to rebuild the map after ``cut_step`` one pixel at a time: every layer before the cut is evaluated
    over the receptive field of one output pixel, for every output pixel (no reuse between neighbours).

    The layers are taken as a chain in execution order (the receptive field grows through every conv and pool; the
    parallel branches of a block are not told apart), which slightly overestimates the field of branched blocks."""
    leaves = trace_steps(trace, use_rules=False)
    names = [u.name for u in leaves]
    # the last leaf that belongs to the cut step (a block or a layer)
    last = max((i for i, n in enumerate(names) if n == cut_step or n.startswith(cut_step + ".")), default=None)
    if last is None:
        return 0
    call_macs = {c.name: c.macs for c in trace.calls}
    out_key = leaves[last].outputs[0] if leaves[last].outputs else None
    out_shape = trace.storages[out_key].shape if out_key is not None else ()
    if len(out_shape) != 4:
        return 0
    pixels = out_shape[2] * out_shape[3]
    region = 1  # side of the region needed at the output of the current layer, per output pixel of Activation-A
    per_pixel = 0.0
    for unit in reversed(leaves[: last + 1]):
        module = unit.module
        key = unit.outputs[0] if unit.outputs else None
        shape = trace.storages[key].shape if key is not None else ()
        macs = call_macs.get(unit.name, 0)
        if len(shape) == 4 and macs:
            per_pixel += macs / (shape[2] * shape[3]) * min(region, shape[2]) * min(region, shape[3])
        kernel, stride = _kernel_stride(module)
        region = (region - 1) * stride + kernel
    base = sum(call_macs.get(u.name, 0) for u in leaves[: last + 1])
    return max(round(per_pixel * pixels) - base, 0)


def _kernel_stride(module: nn.Module | None) -> tuple[int, int]:
    if isinstance(module, nn.modules.conv._ConvNd):
        k = module.kernel_size[0] + (module.kernel_size[0] - 1) * (module.dilation[0] - 1)
        return k, module.stride[0]
    if isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
        k, s = module.kernel_size, module.stride
        return (k if isinstance(k, int) else k[0]), (s if isinstance(s, int) else s[0])
    return 1, 1
