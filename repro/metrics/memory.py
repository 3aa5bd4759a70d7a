"""Analytic peak activation memory of a model under a convention, from a trace of its real ``nn.Module`` graph.

:func:`repro.metrics.trace.trace_model` runs one forward pass (on the ``meta`` device when the model lives there:
shapes only, no memory) and records every module call, every free tensor operation executed between module calls
(residual adds, concatenations, reshapes, ...), which tensor storage each of them reads and writes, and the
multiply-accumulates of every ATen operation (:mod:`repro.metrics.macs`). :func:`peak_memory` turns the trace into
the peak memory of a *convention* (docs/profiling.md defines them precisely):

``layerwise``
    RNNPool App. E.2 / Chowdhery et al.: blocks run one after another; an MBConv holds its input + output (the
    expansion is built channel by channel), a residual block max(input, output), an inception block its input + its
    3 smallest branch outputs, a dense block its output; any other layer writes its output over its input
    (max(input, output)); RNNPool patches (and the layers feeding them) are computed on the fly; cross-channel
    pooling stores only the pooled map. Tensors kept alive across a step (skip connections outside a recognised
    block) are added. The network input is not counted. Peak = max over steps.
``largest-map``
    the largest single activation map (face-detection convention, App. E.2.3), over the same steps.
``io-sum``
    input + output of every leaf layer and free operation (what a naive runtime holds while running it); no block
    rules, no streaming, virtual maps counted in full.
``liveness``
    every tensor that is still needed, layer by layer at leaf granularity (an eager runtime that frees dead tensors).
``layerwise-streamed-pools``
    ``layerwise`` with every (non-global) pooling layer treated like RNNPool: the layers and blocks that produce its
    input at that resolution are computed patch by patch on the fly, so the pre-pool map is never stored. An
    assumption (not a paper convention) under which aggressive down-sampling saves memory; see docs/profiling.md.
``patch-recompute``
    Table 1 "Memory Optimised" (App. E.3): the early part of the network is recomputed patch by patch so that the
    peak is the smallest ``layerwise`` step peak of the remaining network that is still at least a given budget
    (the RNNPool model's peak). See :func:`patch_recompute_memory`.

Blocks are recognised by :func:`register_memory_rule`, by a ``memory_rule`` class attribute, by the attributes
``streams_patches`` (RNNPool) and ``virtual_input_channels_factor`` (cross-channel pools), or by the class names of
torchvision/timm-style blocks (``InvertedResidual``, ``MBConv``, ``BasicBlock``, ``Bottleneck``, ``Inception``,
``_DenseBlock``, ...). Bytes = elements x bytes per element of ``dtype`` (fp32 4, int8 1); MB/KB are 2^20/2^10 bytes.
"""

from __future__ import annotations

import functools
import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from torch import nn

from repro.metrics.memory_rules import (
    ELEMENTWISE_LAYERS,
    LOCAL_LAYERS,
    POOL_LAYERS,
    bytes_per_element,
    memory_rule_for,
)
from repro.metrics.trace import Call, ModelTrace, Storage, trace_model
from repro.records.profile import MEMORY_CONVENTIONS as CONVENTIONS

__all__ = ["CONVENTIONS", "MemoryEvent", "MemoryReport", "peak_memory"]


@dataclass
class _Unit:
    name: str
    rule: str  # a MEMORY_RULES entry ("plain" for leaves and free ops)
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    module: nn.Module | None = None
    branches: tuple[int, ...] = ()  # inception: the storages of the branch outputs
    op: str | None = None  # name of a free operation
    stream: str | None = None  # "patch" (RNNPool-like) or "pixel" (global pooling) for streaming consumers


def trace_steps(trace: ModelTrace, use_rules: bool, stream_pools: bool = False) -> list[_Unit]:
    """Flatten the call tree into the sequence of steps a convention accounts for."""
    units: list[_Unit] = []

    def walk(call: Call) -> None:
        rule = memory_rule_for(call.module) if use_rules else None
        has_children = any(kind == "call" for kind, _ in call.items)
        if rule == "channel_pool" and has_children:  # e.g. conv + pool pair: account for its parts
            rule = None
        if (
            stream_pools
            and rule is None
            and _is_pool_module(call.module, call.name)
            and not _is_global_pool(trace, call.module, None, call.inputs, call.outputs)
        ):
            rule, stream = "stream", "pool"
        else:
            stream = "patch" if rule == "stream" else None
        if rule is not None and rule != "decompose":
            pool = _trailing_pool(trace, call) if rule in ("mbconv", "residual") else None
            if pool is not None:  # a pool placed inside the block: the block ends at the pool's input
                units.append(_Unit(call.name, rule, call.inputs, pool.inputs, call.module))
                walk(pool)
                return
            branches = _branch_outputs(trace, call) if rule == "inception" else ()
            units.append(_Unit(call.name, rule, call.inputs, call.outputs, call.module, branches, stream=stream))
            return
        if not has_children:  # a leaf (or a module without child calls)
            pixel = use_rules and _is_global_pool(trace, call.module, None, call.inputs, call.outputs)
            units.append(
                _Unit(
                    call.name,
                    "stream" if pixel else "plain",
                    call.inputs,
                    call.outputs,
                    call.module,
                    stream="pixel" if pixel else None,
                )
            )
            return
        for kind, index in call.items:
            if kind == "call":
                walk(trace.calls[index])
                continue
            op = trace.ops[index]
            pixel = use_rules and _is_global_pool(trace, None, op.name, op.inputs, op.outputs)
            name = f"{call.name}:{op.name}" if call.name else op.name
            units.append(
                _Unit(
                    name,
                    "stream" if pixel else "plain",
                    op.inputs,
                    op.outputs,
                    op=op.name,
                    stream="pixel" if pixel else None,
                )
            )

    walk(trace.root)
    return units


_GLOBAL_POOL_OPS = frozenset({"adaptive_avg_pool2d", "adaptive_max_pool2d", "mean", "amax"})
# Per-pixel free operations through which "computed on the fly" may propagate.
_POINTWISE_OPS = frozenset(
    [
        "relu",
        "relu_",
        "relu6",
        "hardtanh",
        "hardtanh_",
        "sigmoid",
        "silu",
        "hardswish",
        "gelu",
        "batch_norm",
        "dropout",
        "flatten",
    ]
)


def _is_global_pool(trace: ModelTrace, module, op_name, inputs, outputs) -> bool:
    """A pooling to 1x1 (global average/max pool): it accumulates pixel by pixel, so its input need not be stored
    ("computed on the fly", RNNPool App. E.2 for the 1x1 convs before the final pool)."""
    if module is not None:
        if not isinstance(module, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
            return False
    elif op_name not in _GLOBAL_POOL_OPS:
        return False
    shapes_in = [trace.storages[k].shape for k in inputs if trace.activation_numel(k)]
    shapes_out = [trace.storages[k].shape for k in outputs if trace.activation_numel(k)]
    if len(shapes_in) != 1 or len(shapes_out) != 1 or len(shapes_in[0]) != 4:
        return False
    b, c = shapes_in[0][:2]
    return math.prod(shapes_out[0]) == b * c


def _is_pointwise_layer(unit: _Unit) -> bool:
    module = unit.module
    if module is None:
        return unit.op in _POINTWISE_OPS
    if isinstance(module, nn.modules.conv._ConvNd):
        return all(k == 1 for k in module.kernel_size) and all(s == 1 for s in module.stride)
    return isinstance(module, ELEMENTWISE_LAYERS)


def _is_local_layer(unit: _Unit) -> bool:
    return _is_pointwise_layer(unit) or isinstance(unit.module, LOCAL_LAYERS)


def _is_pool_module(module: nn.Module, name: str) -> bool:
    if isinstance(module, POOL_LAYERS) or getattr(module, "streams_patches", False):
        return True
    if getattr(module, "virtual_input_channels_factor", None):
        return True
    return "Pool" in type(module).__name__ or name.rsplit(".", 1)[-1].endswith(("pool", "pooling"))


def _trailing_pool(trace: ModelTrace, call: Call) -> Call | None:
    """The pool a block applies last to produce its output (SAP placements 'block_end' and 'after_projection')."""
    if not call.items or call.items[-1][0] != "call":
        return None
    last = trace.calls[call.items[-1][1]]
    if (
        last.outputs == call.outputs
        and _is_pool_module(last.module, last.name)
        and memory_rule_for(last.module) != "mbconv"
    ):
        return last
    return None


def _branch_outputs(trace: ModelTrace, call: Call) -> tuple[int, ...]:
    """Outputs of the child calls that read the block input (the parallel paths of an inception block)."""
    branches = []
    for kind, index in call.items:
        child = trace.calls[index] if kind == "call" else None
        if child is not None and set(child.inputs) & set(call.inputs):
            branches.extend(child.outputs)
    return tuple(branches)


@dataclass(frozen=True)
class MemoryEvent:
    """The memory held while one step runs; ``detail`` (which maps make up ``elements``) is written on first use,
    since a report needs it for its peak step only."""

    step: str
    rule: str
    elements: int
    describe: Callable[[], str] = field(repr=False, compare=False)

    @functools.cached_property
    def detail(self) -> str:
        return self.describe()


@dataclass(frozen=True)
class MemoryReport:
    """Peak activation memory of a model under one convention."""

    convention: str
    bytes_per_element: int
    peak_elements: int
    where: str
    detail: str
    events: tuple[MemoryEvent, ...] = ()

    @property
    def peak_bytes(self) -> int:
        return self.peak_elements * self.bytes_per_element

    @property
    def peak_mb(self) -> float:
        return self.peak_bytes / 2**20

    @property
    def peak_kb(self) -> float:
        return self.peak_bytes / 2**10


def _shape_text(storage: Storage | None, numel: int | None = None) -> str:
    if storage is None:
        return "?"
    shape = storage.shape
    if len(shape) == 4:  # (B, C, H, W) -> HxWxC as the paper prints maps
        b, c, h, w = shape
        text = f"{h}x{w}x{c}" if b == 1 else f"{b}x{h}x{w}x{c}"
    else:
        text = "x".join(str(s) for s in shape)
    if numel is not None and numel != storage.numel:
        text += f" (counted {numel})"
    return text


class _Accounting:
    """Producer/consumer indices of the storages over a unit sequence."""

    def __init__(self, trace: ModelTrace, units: list[_Unit]) -> None:
        self.trace = trace
        self.units = units
        self.produced: dict[int, int] = {}
        self.consumers: dict[int, list[int]] = defaultdict(list)
        self.last_use: dict[int, int] = {}
        for key in trace.input_keys:
            self.produced[key] = -1
            self.last_use[key] = -1
        for i, unit in enumerate(units):
            for key in unit.inputs:
                self.produced.setdefault(key, i)
                self.consumers[key].append(i)
                self.last_use[key] = i
            for key in unit.outputs:
                if key not in self.produced:
                    self.produced[key] = i
                self.last_use[key] = max(self.last_use.get(key, i), i)
        end = len(units)
        for key in trace.output_keys:
            self.last_use[key] = end

    def new_outputs(self, i: int) -> list[int]:
        return [k for k in self.units[i].outputs if self.produced.get(k) == i and k not in self.units[i].inputs]

    def producer(self, key: int) -> int | None:
        index = self.produced.get(key, -1)
        return index if index >= 0 else None


_BLOCK_RULES = frozenset({"mbconv", "residual", "inception", "dense"})


def _virtual_storages(acc: _Accounting) -> tuple[set[int], dict[int, set[int]]]:
    """Storages never materialised because a streaming consumer computes them on the fly.

    From every streaming step, walk backwards through plain layers whose outputs feed only streamed steps: spatially
    local layers (convs, BN, activations, pools) for a patch-wise consumer (RNNPool), per-pixel layers (1x1 convs,
    BN, activations) for a global pool; with ``layerwise-streamed-pools``, layers and blocks at the pool's input
    resolution. The walk stops at tensors with other consumers and at the input. Returns the virtual storages and,
    per streaming step, the steps it computes on the fly.
    """
    units = acc.units
    trace = acc.trace
    virtual: set[int] = set()
    streamed: set[int] = set()
    chains: dict[int, set[int]] = {}  # streaming step -> the steps it computes on the fly
    boundary = set(trace.input_keys) | set(trace.output_keys)

    def spatial(keys) -> set[tuple[int, ...]]:
        return {trace.storages[k].shape[2:] for k in keys if len(trace.storages[k].shape) == 4}

    for s, unit in enumerate(units):
        if unit.rule != "stream":
            continue
        if unit.stream == "pool":  # layerwise-streamed-pools: layers and blocks at the pool's input resolution
            size = spatial(unit.inputs)

            def accepts(i: int, size=size) -> bool:
                u = units[i]
                local = u.rule in _BLOCK_RULES or (u.rule == "plain" and _is_local_layer(u))
                return local and (not acc.new_outputs(i) or spatial(u.outputs) == size)

        elif unit.stream == "patch":

            def accepts(i: int) -> bool:
                return units[i].rule == "plain" and _is_local_layer(units[i])

        else:

            def accepts(i: int) -> bool:
                return units[i].rule == "plain" and _is_pointwise_layer(units[i])

        stack = list(unit.inputs)
        while stack:
            key = stack.pop()
            producer = acc.producer(key)
            if key in virtual or key in boundary or producer is None:
                continue
            if not accepts(producer):
                continue
            consumers_ok = all(
                c == s or c in streamed or (not acc.new_outputs(c) and accepts(c)) for c in acc.consumers[key]
            )
            if not consumers_ok:
                continue
            virtual.add(key)
            chain = chains.setdefault(s, set())
            for c in acc.consumers[key]:
                if c != s and not acc.new_outputs(c):  # in-place / view steps on the streamed map
                    streamed.add(c)
                    chain.add(c)
            if all(k in virtual for k in acc.new_outputs(producer)):
                streamed.add(producer)
                chain.add(producer)
                stack.extend(units[producer].inputs)
    return virtual, chains


def _effective_sizes(acc: _Accounting) -> dict[int, int]:
    """Element counts of virtual feature maps: the k·C map feeding a cross-channel pool counts as the pooled C map."""
    sizes: dict[int, int] = {}
    for i, unit in enumerate(acc.units):
        factor = getattr(unit.module, "virtual_input_channels_factor", None) if unit.rule == "channel_pool" else None
        if not factor:
            continue
        stack = list(unit.inputs)
        while stack:
            key = stack.pop()
            if key in sizes or key in acc.trace.input_keys:
                continue
            # every other consumer must be an element-wise layer working in place on it or writing a reduced map
            others = [j for j in acc.consumers[key] if j != i]
            if any(
                not isinstance(acc.units[j].module, ELEMENTWISE_LAYERS)
                or not all(k == key or k in sizes for k in acc.units[j].outputs)
                for j in others
            ):
                continue
            sizes[key] = acc.trace.activation_numel(key) // int(factor)
            producer = acc.producer(key)
            if producer is not None and isinstance(acc.units[producer].module, ELEMENTWISE_LAYERS):
                prev = acc.units[producer].inputs
                if len(prev) == 1 and acc.consumers[prev[0]] == [producer]:
                    stack.append(prev[0])
    return sizes


def layerwise_events(
    trace: ModelTrace, stream_pools: bool = False
) -> tuple[list[MemoryEvent], dict[int, int], _Accounting]:
    """The ``layerwise`` steps of ``trace``, the counted size of every storage and the accounting; computed once
    per trace and ``stream_pools`` (``layerwise`` and ``largest-map`` share it). Callers must not modify them."""
    key = ("layerwise_events", stream_pools)
    if key not in trace.derived:
        trace.derived[key] = _layerwise_events(trace, stream_pools)
    return trace.derived[key]


def _layerwise_events(trace: ModelTrace, stream_pools: bool) -> tuple[list[MemoryEvent], dict[int, int], _Accounting]:
    units = trace_steps(trace, use_rules=True, stream_pools=stream_pools)
    acc = _Accounting(trace, units)
    virtual, chains = _virtual_storages(acc)
    streamed_steps = set().union(*chains.values()) if chains else set()
    if chains:  # a streaming step reads what its on-the-fly chain reads: those maps stay alive until it runs
        for s, chain in chains.items():
            extra = [k for i in sorted(chain) for k in units[i].inputs if k not in virtual]
            units[s].inputs = tuple(dict.fromkeys([*units[s].inputs, *extra]))
        acc = _Accounting(trace, units)
    effective = _effective_sizes(acc)
    excluded = set(trace.input_keys) | virtual

    def size(key: int) -> int:
        return 0 if key in excluded else effective.get(key, trace.activation_numel(key))

    events: list[MemoryEvent] = []
    alive: set[int] = set()
    for i, unit in enumerate(units):
        new = acc.new_outputs(i)
        streamed = i in streamed_steps
        dying = [k for k in unit.inputs if acc.last_use.get(k) == i and k not in unit.outputs]
        held = [k for k in alive if k not in dying]
        d, o = sum(size(k) for k in dying), sum(size(k) for k in new)
        if unit.rule in ("mbconv",):
            core = d + o
        elif unit.rule == "inception":
            branch_sizes = sorted(size(k) for k in unit.branches)
            core = d + sum(branch_sizes[:3])
        elif unit.rule == "stream":  # the map it reads (after the on-the-fly layers) + its output
            core = d + o
        elif unit.rule in ("dense", "channel_pool"):
            core = o
        else:  # plain, residual
            core = max(d, o)
        total = core + sum(size(k) for k in held)
        if not streamed:
            detail = functools.partial(_event_detail, trace, unit.rule, dying, new, held, size, unit.branches)
            events.append(MemoryEvent(unit.name, unit.rule, total, detail))
        alive = {k for k in (alive | set(new)) if acc.last_use.get(k, -1) > i and size(k) > 0}
    return events, {k: size(k) for k in trace.storages}, acc


def _event_detail(trace, rule, dying, new, held, size, branches) -> str:
    def maps(keys):
        return " + ".join(_shape_text(trace.storages.get(k), size(k)) for k in keys if size(k) > 0) or "0"

    text = {
        "mbconv": f"in {maps(dying)} + out {maps(new)}",
        "inception": f"in {maps(dying)} + 3 smallest of branches [{maps(branches)}]",
        "dense": f"out {maps(new)}",
        "stream": f"in {maps(dying)} + out {maps(new)} (layers in between computed on the fly)",
        "channel_pool": f"out {maps(new)} (k·C input map virtual)",
    }.get(rule, f"max(in {maps(dying)}, out {maps(new)})")
    if any(size(k) > 0 for k in held):
        text += f"; held {maps(held)}"
    return text


def _leaf_accounting(trace: ModelTrace) -> _Accounting:
    """The accounting of the leaf steps (no block rules), shared by ``io-sum`` and ``liveness``."""
    if "leaf_accounting" not in trace.derived:
        trace.derived["leaf_accounting"] = _Accounting(trace, trace_steps(trace, use_rules=False))
    return trace.derived["leaf_accounting"]


def _naive_events(trace: ModelTrace, keep_alive: bool) -> list[MemoryEvent]:
    acc = _leaf_accounting(trace)
    if keep_alive:
        return _live_events(acc)
    size = trace.activation_numel
    events = []
    for i, unit in enumerate(acc.units):
        new = acc.new_outputs(i)
        ins = [k for k in unit.inputs if size(k) > 0]
        total = sum(size(k) for k in ins) + sum(size(k) for k in new)
        events.append(MemoryEvent(unit.name, "plain", total, functools.partial(_io_detail, trace, ins, new)))
    return events


def _live_events(acc: _Accounting) -> list[MemoryEvent]:
    """``liveness``: each ``io-sum`` step's new maps plus every map alive at that step (produced, not yet last used),
    its inputs included. The live set is kept up to date step by step (a map leaves after its last use)."""
    size = acc.trace.activation_numel
    last_use = acc.last_use
    leaving: dict[int, list[int]] = defaultdict(list)  # step -> the maps last used there
    for key, step in last_use.items():
        leaving[step].append(key)
    alive = set(acc.trace.input_keys)
    alive_total = sum(size(k) for k in alive)
    events = []
    for i, unit in enumerate(acc.units):
        new = acc.new_outputs(i)
        joining = {k for k in unit.inputs if size(k) > 0 and k not in alive}
        total = alive_total + sum(size(k) for k in joining) + sum(size(k) for k in new)
        detail = functools.partial(str.format, "{} live + {} new maps", len(alive) + len(joining), len(new))
        events.append(MemoryEvent(unit.name, "plain", total, detail))
        for key in new:
            if key not in alive and last_use.get(key, -1) > i:
                alive.add(key)
                alive_total += size(key)
        gone = leaving[i] if i else [k for k in alive if last_use.get(k, -1) <= 0]  # step 0: unused inputs too
        for key in gone:
            if key in alive:
                alive.remove(key)
                alive_total -= size(key)
    return events


def _io_detail(trace: ModelTrace, ins: list[int], new: list[int]) -> str:
    def maps(keys):
        return " + ".join(_shape_text(trace.storages.get(k)) for k in keys) or "0"

    return f"in {maps(ins)} + out {maps(new)}"


def _largest_map_events(trace: ModelTrace) -> list[MemoryEvent]:
    _, sizes, acc = layerwise_events(trace)
    out = []
    for i, unit in enumerate(acc.units):
        new = [k for k in acc.new_outputs(i) if sizes.get(k, 0) > 0]
        if new:
            key = max(new, key=lambda k: sizes[k])
            detail = functools.partial(_shape_text, trace.storages[key], sizes[key])
            out.append(MemoryEvent(unit.name, unit.rule, sizes[key], detail))
    return out


def events_report(convention: str, events: list[MemoryEvent], bpe: int) -> MemoryReport:
    if not events:
        return MemoryReport(convention, bpe, 0, "-", "no activation", ())
    peak = max(events, key=lambda e: e.elements)
    return MemoryReport(convention, bpe, peak.elements, peak.step, peak.detail, tuple(events))


def peak_memory(
    model_or_trace: nn.Module | ModelTrace,
    image_size: int | Sequence[int] | None = None,
    convention: str = "layerwise",
    dtype: str | int = "fp32",
) -> MemoryReport:
    """Peak activation memory under ``convention`` (see the module docstring) in ``dtype`` elements.

    ``model_or_trace`` is a model (then ``image_size`` is required) or a :class:`ModelTrace`. ``patch-recompute`` needs
    a memory budget: :func:`repro.metrics.recompute.patch_recompute_memory`.
    """
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown memory convention {convention!r}; valid choices: {', '.join(CONVENTIONS)}")
    bpe = bytes_per_element(dtype)
    trace = model_or_trace
    if not isinstance(trace, ModelTrace):
        if image_size is None:
            raise ValueError("peak_memory(model, ...) needs image_size (an int or (height, width))")
        trace = trace_model(model_or_trace, image_size)
    if convention == "layerwise":
        return events_report(convention, layerwise_events(trace)[0], bpe)
    if convention == "layerwise-streamed-pools":
        return events_report(convention, layerwise_events(trace, stream_pools=True)[0], bpe)
    if convention == "largest-map":
        return events_report(convention, _largest_map_events(trace), bpe)
    if convention == "io-sum":
        return events_report(convention, _naive_events(trace, keep_alive=False), bpe)
    if convention == "liveness":
        return events_report(convention, _naive_events(trace, keep_alive=True), bpe)
    raise ValueError(
        "convention 'patch-recompute' needs a budget (the layerwise peak the recomputed base model must reach, e.g. "
        "that of its RNNPool version): use repro.metrics.recompute.patch_recompute_memory(trace, budget_bytes)"
    )
