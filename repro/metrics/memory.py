"""Analytic peak activation memory of a model, from a trace of the real ``nn.Module`` graph.

:func:`trace_model` runs one forward pass (on the ``meta`` device when the model lives there: shapes only, no memory)
and records every module call, every free tensor operation executed between module calls (residual adds,
concatenations, reshapes, ...), which tensor storage each of them reads and writes, and the multiply-accumulates of
every ATen operation (:mod:`repro.metrics.macs`). :func:`peak_memory` turns the trace into the peak memory of a
*convention* (docs/profiling.md defines them precisely):

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

import contextlib
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

__all__ = [
    "BYTES_PER_ELEMENT",
    "CONVENTIONS",
    "MEMORY_RULES",
    "MemoryEvent",
    "MemoryReport",
    "ModelTrace",
    "bytes_per_element",
    "format_bytes",
    "memory_rule_for",
    "patch_recompute_memory",
    "peak_memory",
    "register_memory_rule",
    "trace_model",
]

CONVENTIONS: tuple[str, ...] = (
    "layerwise",
    "largest-map",
    "io-sum",
    "liveness",
    "patch-recompute",
    "layerwise-streamed-pools",
)
BYTES_PER_ELEMENT: dict[str, int] = {"fp32": 4, "fp16": 2, "bf16": 2, "int8": 1}
#: Block rules. ``plain``: max(in, out); ``mbconv``: in + out; ``residual``: max(in, out); ``inception``: in + the 3
#: smallest branch outputs; ``dense``: out; ``stream``: its stored input + out (the layers feeding it are computed
#: on the fly, so the maps between are never stored); ``channel_pool``: out (the
#: k·C input map is virtual); ``decompose``: not a block, look inside.
MEMORY_RULES: tuple[str, ...] = (
    "plain",
    "mbconv",
    "residual",
    "inception",
    "dense",
    "stream",
    "channel_pool",
    "decompose",
)

_CLASS_RULES: dict[type, str] = {}
# Block classes of torchvision, timm and this package, recognised by name so that no import is needed.
_NAME_RULES: dict[str, str] = {
    "InvertedResidual": "mbconv",  # torchvision / repro MobileNetV2, EdgeML
    "MBConv": "mbconv",  # torchvision EfficientNet
    "MobileNetV3Block": "mbconv",  # repro MobileNetV3
    "DepthwiseSeparableConv": "mbconv",  # timm
    "BasicBlock": "residual",
    "Bottleneck": "residual",
    "Inception": "inception",  # torchvision GoogLeNet
    "_DenseBlock": "dense",  # torchvision DenseNet
    "DenseBlock": "dense",
    # ReNet: the column sweep reads non-overlapping patches computed on the fly, the row sweep overwrites the
    # column-sweep map row by row, so only an output-sized map is held (RNNPool Table 3 gives ReNet the RNNPool RAM).
    "ReNet2d": "stream",
}
# Layers through which "computed on the fly" propagates backwards from a streaming consumer (spatially local ops).
_LOCAL_LAYERS: tuple[type, ...] = (
    nn.modules.conv._ConvNd,
    nn.modules.batchnorm._BatchNorm,
    nn.GroupNorm,
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.ELU,
    nn.SiLU,
    nn.GELU,
    nn.Sigmoid,
    nn.Tanh,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Hardtanh,
    nn.Identity,
    nn.Dropout,
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.ZeroPad2d,
    nn.ReplicationPad2d,
    nn.ConstantPad2d,
)
# Same-shape element-wise layers through which a virtual (cross-channel pooled) map propagates backwards.
_ELEMENTWISE_LAYERS: tuple[type, ...] = tuple(
    t for t in _LOCAL_LAYERS if t not in (nn.modules.conv._ConvNd, nn.MaxPool2d, nn.AvgPool2d, nn.ZeroPad2d)
)
_POOL_LAYERS: tuple[type, ...] = (
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.LPPool2d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
    nn.FractionalMaxPool2d,
)


def register_memory_rule(cls: type, rule: str) -> type:
    """Declare how a block class is accounted for (one of :data:`MEMORY_RULES`); returns ``cls`` (decorator-friendly).

    Example: ``register_memory_rule(MyMBConv, "mbconv")``. A class can also set ``memory_rule = "mbconv"``.
    """
    _check_rule(rule, f"register_memory_rule({cls.__name__})")
    _CLASS_RULES[cls] = rule
    return cls


def _check_rule(rule: str, where: str) -> str:
    if rule not in MEMORY_RULES:
        raise ValueError(f"{where}: unknown memory rule {rule!r}; valid rules: {', '.join(MEMORY_RULES)}")
    return rule


def memory_rule_for(module: nn.Module) -> str | None:
    """The block rule of ``module`` under ``layerwise``, or None for an ordinary layer/container."""
    mro = type(module).__mro__
    for klass in mro:
        if klass in _CLASS_RULES:
            return _CLASS_RULES[klass]
    declared = getattr(module, "memory_rule", None)
    if isinstance(declared, str):
        return _check_rule(declared, f"{type(module).__name__}.memory_rule")
    if getattr(module, "streams_patches", False):
        return "stream"
    if getattr(module, "virtual_input_channels_factor", None):
        return "channel_pool"
    for klass in mro:
        if klass.__name__ in _NAME_RULES:
            return _NAME_RULES[klass.__name__]
    return None


def bytes_per_element(dtype: str | int) -> int:
    """4 for ``'fp32'``, 1 for ``'int8'`` (2 for fp16/bf16); an int is taken as is."""
    if isinstance(dtype, int) and dtype > 0:
        return dtype
    if dtype not in BYTES_PER_ELEMENT:
        raise ValueError(f"unknown dtype {dtype!r}; valid choices: {', '.join(BYTES_PER_ELEMENT)}")
    return BYTES_PER_ELEMENT[dtype]


def format_bytes(num_bytes: float, unit: str = "MB", digits: int = 2) -> str:
    """``num_bytes`` in binary units as the RNNPool paper prints them: MB = 2^20 bytes, KB = 2^10 bytes."""
    scale = {"B": 1, "KB": 2**10, "MB": 2**20, "GB": 2**30}
    if unit not in scale:
        raise ValueError(f"unknown unit {unit!r}; valid: {', '.join(scale)}")
    return f"{num_bytes / scale[unit]:.{digits}f} {unit}"


# --------------------------------------------------------------------------------------------------------------------
# Tracing
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class Storage:
    """One tensor storage seen during the trace (views and in-place results share it)."""

    key: int
    numel: int
    shape: tuple[int, ...]
    is_float: bool


@dataclass
class Call:
    """One module call: its storages read/written and, in order, the child calls and free ops run directly inside."""

    index: int
    name: str
    module: nn.Module
    parent: int | None
    inputs: tuple[int, ...] = ()
    outputs: tuple[int, ...] = ()
    items: list[tuple[str, int]] = field(default_factory=list)  # ("call" | "op", index)
    macs: int = 0  # MACs of the ATen ops executed while this call was the innermost one


@dataclass
class Op:
    """A tensor operation executed inside a module's forward but outside any child module (e.g. a residual add)."""

    index: int
    name: str
    parent: int
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]


@dataclass
class ModelTrace:
    """What one forward pass did, at the granularity of module calls and free operations."""

    calls: list[Call]
    ops: list[Op]
    storages: dict[int, Storage]
    input_keys: tuple[int, ...]
    output_keys: tuple[int, ...]
    input_shape: tuple[int, ...]
    device: str

    @property
    def root(self) -> Call:
        return self.calls[0]

    @property
    def macs(self) -> int:
        return sum(c.macs for c in self.calls)

    def inclusive_macs(self) -> dict[str, int]:
        """MACs per module name, children included (a module called twice accumulates)."""
        total = [c.macs for c in self.calls]
        for call in reversed(self.calls):
            if call.parent is not None:
                total[call.parent] += total[call.index]
        out: dict[str, int] = defaultdict(int)
        for call in self.calls:
            out[call.name] += total[call.index]
        return dict(out)

    def activation_numel(self, key: int) -> int:
        storage = self.storages.get(key)
        return storage.numel if storage is not None and storage.is_float else 0


class _Recorder:
    def __init__(self, model: nn.Module) -> None:
        self.names = {m: n for n, m in model.named_modules(remove_duplicate=False)}
        self.param_keys = {_storage_key(t) for t in [*model.parameters(), *model.buffers()]}
        self.calls: list[Call] = []
        self.ops: list[Op] = []
        self.stack: list[int] = []
        self.storages: dict[int, Storage] = {}
        self.keep: list[torch.Tensor] = []  # keeps storages alive so that their keys stay unique
        self.busy = False

    def keys(self, obj: Any) -> tuple[int, ...]:
        out: list[int] = []
        for t in _tensors(obj):
            key = _storage_key(t)
            if key in self.param_keys:
                continue
            if key not in self.storages:
                numel = t.untyped_storage().nbytes() // max(t.element_size(), 1)
                self.storages[key] = Storage(key, numel, tuple(t.shape), t.is_floating_point() or t.is_complex())
                self.keep.append(t)
            if key not in out:
                out.append(key)
        return tuple(out)

    def pre_hook(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        self.busy = True
        try:
            parent = self.stack[-1] if self.stack else None
            call = Call(len(self.calls), self.names.get(module, type(module).__name__), module, parent)
            call.inputs = self.keys((args, kwargs))
            if parent is not None:
                self.calls[parent].items.append(("call", call.index))
            self.calls.append(call)
            self.stack.append(call.index)
        finally:
            self.busy = False

    def post_hook(self, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        self.busy = True
        try:
            index = self.stack.pop()
            self.calls[index].outputs = self.keys(output)
        finally:
            self.busy = False

    def record_op(self, func: Any, args: tuple, kwargs: dict, out: Any) -> None:
        if self.busy or not self.stack:
            return
        self.busy = True
        try:
            outputs = self.keys(out)
            if not outputs:
                return
            op = Op(
                len(self.ops), getattr(func, "__name__", str(func)), self.stack[-1], self.keys((args, kwargs)), outputs
            )
            self.ops.append(op)
            self.calls[op.parent].items.append(("op", op.index))
        finally:
            self.busy = False

    def current(self) -> int | None:
        return self.stack[-1] if self.stack else None


class _OpMode(TorchFunctionMode):
    def __init__(self, recorder: _Recorder) -> None:
        super().__init__()
        self.recorder = recorder

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        self.recorder.record_op(func, args, kwargs, out)
        return out


_NON_FLOAT_RESULTS = frozenset(
    [
        "eq",
        "ne",
        "lt",
        "le",
        "gt",
        "ge",
        "logical_and",
        "logical_or",
        "logical_xor",
        "logical_not",
        "isnan",
        "isinf",
        "isfinite",
        "isposinf",
        "isneginf",
        "signbit",
        "bitwise_and",
        "bitwise_or",
        "bitwise_xor",
        "bitwise_not",
    ]
)


class _FastMeta(TorchDispatchMode):
    """Shape-only shortcuts on the meta device for point-wise ops and batch norm, whose meta kernels are slow Python
    decompositions. Results have the shapes and dtypes the kernels would give, so the trace is unchanged (point-wise
    ops carry no MACs)."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        first = args[0] if args else None
        if isinstance(first, torch.Tensor) and first.device.type == "meta" and torch.Tag.pointwise in func.tags:
            if torch.Tag.inplace in func.tags:
                return first
            tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
            if (
                "out" not in kwargs
                and len(func._schema.returns) == 1
                and func._schema.name.split("::")[-1] not in _NON_FLOAT_RESULTS
                and first.is_floating_point()
                and all(t.dtype == first.dtype and t.device.type == "meta" for t in tensors)
            ):
                return torch.empty(
                    torch.broadcast_shapes(*(t.shape for t in tensors)), dtype=first.dtype, device="meta"
                )
        if func is torch.ops.aten.convolution.default and first.is_meta and not args[6] and first.dim() == 4:
            return _conv_meta(*args)
        shape = _matmul_like_shape(func, args) if isinstance(first, torch.Tensor) and first.is_meta else None
        if shape is not None and not kwargs:
            return first.new_empty(shape)
        if func is torch.ops.aten.native_batch_norm.default and isinstance(first, torch.Tensor) and first.is_meta:
            stats = first.new_empty((first.shape[1] if first.dim() > 1 else first.shape[0],))
            return torch.empty_like(first), stats, stats.clone()
        return func(*args, **kwargs)


_aten = torch.ops.aten
_SAME_SHAPE_OPS = (_aten._safe_softmax.default, _aten._softmax.default, _aten._log_softmax.default)


def _matmul_like_shape(func, args) -> tuple[int, ...] | None:
    """Output shape of 2-d/batched matrix products and softmax (whose meta kernels are slow), else None."""
    if func in _SAME_SHAPE_OPS:
        return tuple(args[0].shape)
    if func is _aten.mm.default and args[0].dim() == 2 and args[1].dim() == 2:
        return args[0].shape[0], args[1].shape[1]
    if func is _aten.addmm.default and args[1].dim() == 2 and args[2].dim() == 2:
        return args[1].shape[0], args[2].shape[1]
    if func is _aten.bmm.default and args[0].dim() == 3 and args[1].dim() == 3:
        return args[0].shape[0], args[0].shape[1], args[1].shape[2]
    if func is _aten.baddbmm.default and args[1].dim() == 3 and args[2].dim() == 3:
        return args[1].shape[0], args[1].shape[1], args[2].shape[2]
    return None


def _conv_meta(x, weight, bias, stride, padding, dilation, transposed, output_padding, groups) -> torch.Tensor:
    """Output of a (non-transposed) 2-d convolution on the meta device, from the shape formula."""
    sides = [
        (size + 2 * pad - dil * (k - 1) - 1) // st + 1
        for size, k, st, pad, dil in zip(x.shape[2:], weight.shape[2:], stride, padding, dilation)
    ]
    return x.new_empty((x.shape[0], weight.shape[0], *sides))


def _tensors(obj: Any) -> Iterable[torch.Tensor]:
    """The tensors inside nested tuples/lists/dicts (a lighter tree_flatten)."""
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (tuple, list)):
        for item in obj:
            yield from _tensors(item)
    elif isinstance(obj, dict):
        for item in obj.values():
            yield from _tensors(item)


def _storage_key(t: torch.Tensor) -> int:
    return t.untyped_storage()._cdata


def _input_shape(model: nn.Module, image_size: int | Sequence[int], batch_size: int, in_channels: int | None):
    if isinstance(image_size, int):
        h = w = image_size
    else:
        h, w = (int(v) for v in image_size)
    if in_channels is None:  # the first layer (in registration order) that declares its input width
        first = next((m for m in model.modules() if isinstance(getattr(m, "in_channels", None), int)), None)
        in_channels = first.in_channels if first is not None else 3
    return (batch_size, in_channels, h, w)


def model_device(model: nn.Module) -> torch.device:
    tensor = next(iter([*model.parameters(), *model.buffers()]), None)
    return tensor.device if tensor is not None else torch.device("cpu")


def trace_model(
    model: nn.Module,
    image_size: int | Sequence[int],
    *,
    batch_size: int = 1,
    in_channels: int | None = None,
) -> ModelTrace:
    """Run ``model`` once in eval mode on a (batch_size, C, H, W) input on the model's device and record the graph.

    Build the model on the ``meta`` device (``with torch.device('meta'): build_model(...)``) to trace without
    computing anything; a model on the CPU is run for real (batch 1). The model's train/eval mode is restored.
    """
    from repro.layers.nlp import architecture_ops
    from repro.metrics.macs import MacCounter

    device = model_device(model)
    shape = _input_shape(model, image_size, batch_size, in_channels)
    x = torch.zeros(shape, device=device) if device.type != "meta" else torch.empty(shape, device=device)
    recorder = _Recorder(model)
    handles = []
    for module in model.modules():
        handles.append(module.register_forward_pre_hook(recorder.pre_hook, with_kwargs=True))
        handles.append(module.register_forward_hook(recorder.post_hook, with_kwargs=True, always_call=True))
    was_training = model.training
    fastpath = torch.backends.mha.get_fastpath_enabled()
    model.eval()
    torch.backends.mha.set_fastpath_enabled(False)  # the fused MHA kernel has no MAC formula; the unfused path has
    counter = MacCounter(scope=recorder.current)
    fast_meta = _FastMeta() if device.type == "meta" else contextlib.nullcontext()
    try:
        with torch.no_grad(), architecture_ops(), fast_meta, counter, _OpMode(recorder):
            out = model(x)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
        torch.backends.mha.set_fastpath_enabled(fastpath)
    for scope, macs in counter.by_scope.items():
        if scope is not None:
            recorder.calls[scope].macs += macs
    input_keys = recorder.keys(x)
    return ModelTrace(
        calls=recorder.calls,
        ops=recorder.ops,
        storages=recorder.storages,
        input_keys=input_keys,
        output_keys=recorder.keys(out),
        input_shape=tuple(shape),
        device=device.type,
    )


# --------------------------------------------------------------------------------------------------------------------
# Steps ("units") of a convention
# --------------------------------------------------------------------------------------------------------------------


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


def _units(trace: ModelTrace, use_rules: bool, stream_pools: bool = False) -> list[_Unit]:
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
    return isinstance(module, _ELEMENTWISE_LAYERS)


def _is_local_layer(unit: _Unit) -> bool:
    return _is_pointwise_layer(unit) or isinstance(unit.module, _LOCAL_LAYERS)


def _is_pool_module(module: nn.Module, name: str) -> bool:
    if isinstance(module, _POOL_LAYERS) or getattr(module, "streams_patches", False):
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


# --------------------------------------------------------------------------------------------------------------------
# Conventions
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MemoryEvent:
    """The memory held while one step runs."""

    step: str
    rule: str
    elements: int
    detail: str


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
                not isinstance(acc.units[j].module, _ELEMENTWISE_LAYERS)
                or not all(k == key or k in sizes for k in acc.units[j].outputs)
                for j in others
            ):
                continue
            sizes[key] = acc.trace.activation_numel(key) // int(factor)
            producer = acc.producer(key)
            if producer is not None and isinstance(acc.units[producer].module, _ELEMENTWISE_LAYERS):
                prev = acc.units[producer].inputs
                if len(prev) == 1 and acc.consumers[prev[0]] == [producer]:
                    stack.append(prev[0])
    return sizes


def _layerwise_events(
    trace: ModelTrace, stream_pools: bool = False
) -> tuple[list[MemoryEvent], dict[int, int], _Accounting]:
    units = _units(trace, use_rules=True, stream_pools=stream_pools)
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
            detail = _event_detail(trace, unit.rule, dying, new, held, size, unit.branches)
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


def _naive_events(trace: ModelTrace, keep_alive: bool) -> list[MemoryEvent]:
    units = _units(trace, use_rules=False)
    acc = _Accounting(trace, units)
    size = trace.activation_numel
    events = []
    alive = {k for k in trace.input_keys}
    for i, unit in enumerate(units):
        new = acc.new_outputs(i)
        ins = [k for k in unit.inputs if size(k) > 0]
        if keep_alive:
            live = alive | set(ins)
            total = sum(size(k) for k in live) + sum(size(k) for k in new)
            detail = f"{len(live)} live + {len(new)} new maps"
        else:
            total = sum(size(k) for k in ins) + sum(size(k) for k in new)
            detail = f"in {' + '.join(_shape_text(trace.storages.get(k)) for k in ins) or '0'} + out " + (
                " + ".join(_shape_text(trace.storages.get(k)) for k in new) or "0"
            )
        events.append(MemoryEvent(unit.name, "plain", total, detail))
        alive = {k for k in (alive | set(new)) if acc.last_use.get(k, -1) > i}
    return events


def _largest_map_events(trace: ModelTrace) -> list[MemoryEvent]:
    _, sizes, acc = _layerwise_events(trace)
    out = []
    for i, unit in enumerate(acc.units):
        new = [k for k in acc.new_outputs(i) if sizes.get(k, 0) > 0]
        if new:
            key = max(new, key=lambda k: sizes[k])
            out.append(MemoryEvent(unit.name, unit.rule, sizes[key], _shape_text(trace.storages[key], sizes[key])))
    return out


def _report(convention: str, events: list[MemoryEvent], bpe: int) -> MemoryReport:
    if not events:
        return MemoryReport(convention, bpe, 0, "-", "no activation", ())
    peak = max(events, key=lambda e: e.elements)
    return MemoryReport(convention, bpe, peak.elements, peak.step, peak.detail, tuple(events))


def peak_memory(
    model_or_trace: nn.Module | ModelTrace,
    image_size: int | Sequence[int] | None = None,
    convention: str = "layerwise",
    dtype: str | int = "fp32",
    *,
    budget_bytes: int | None = None,
) -> MemoryReport:
    """Peak activation memory under ``convention`` (see the module docstring) in ``dtype`` elements.

    ``model_or_trace`` is a model (then ``image_size`` is required) or a :class:`ModelTrace`. ``budget_bytes`` is the
    memory target of ``patch-recompute`` (the RNNPool model's ``layerwise`` peak, in bytes of the same dtype).
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
        return _report(convention, _layerwise_events(trace)[0], bpe)
    if convention == "layerwise-streamed-pools":
        return _report(convention, _layerwise_events(trace, stream_pools=True)[0], bpe)
    if convention == "largest-map":
        return _report(convention, _largest_map_events(trace), bpe)
    if convention == "io-sum":
        return _report(convention, _naive_events(trace, keep_alive=False), bpe)
    if convention == "liveness":
        return _report(convention, _naive_events(trace, keep_alive=True), bpe)
    if budget_bytes is None:
        raise ValueError(
            "convention 'patch-recompute' needs budget_bytes: the layerwise peak (in bytes) that the recomputed "
            "base model must reach, e.g. that of its RNNPool version"
        )
    return patch_recompute_memory(trace, budget_bytes, dtype).report


# --------------------------------------------------------------------------------------------------------------------
# patch-recompute (RNNPool Table 1, "Memory Optimised", App. E.3)
# --------------------------------------------------------------------------------------------------------------------


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
    events = _layerwise_events(trace)[0]
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
        report = _report("patch-recompute", events, bpe)
        return RecomputeResult(report, "-", trace.macs, 0)
    rest = events[best + 1 :]
    report = _report("patch-recompute", rest, bpe)
    extra = _recompute_macs(trace, events[best].step)
    return RecomputeResult(report, events[best].step, trace.macs + extra, extra)


def _recompute_macs(trace: ModelTrace, cut_step: str) -> int:
    """Extra MACs to rebuild the map after ``cut_step`` one pixel at a time: every layer before the cut is evaluated
    over the receptive field of one output pixel, for every output pixel (no reuse between neighbours).

    The layers are taken as a chain in execution order (the receptive field grows through every conv and pool; the
    parallel branches of a block are not told apart), which slightly overestimates the field of branched blocks."""
    leaves = _units(trace, use_rules=False)
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
