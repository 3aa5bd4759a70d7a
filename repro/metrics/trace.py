"""One forward pass of a model, recorded: every module call, every free tensor operation between module calls
(residual adds, concatenations, reshapes, ...), which tensor storage each reads and writes, and the multiply-accumulates
of every ATen operation (:mod:`repro.metrics.macs`). On the ``meta`` device the pass computes shapes only.

:func:`trace_model` records a :class:`ModelTrace`; :func:`mac_report` / :func:`count_macs` give MACs per image (total,
attention part, per module); the memory conventions (:mod:`repro.metrics.memory`) read the same trace.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from repro.metrics.macs import MacCounter

__all__ = [
    "Call",
    "FastMeta",
    "MacReport",
    "ModelTrace",
    "Op",
    "Storage",
    "count_macs",
    "mac_report",
    "model_device",
    "trace_model",
]


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
    derived: dict[Any, Any] = field(default_factory=dict, repr=False, compare=False)
    """Results computed from this trace, kept for reuse (e.g. the step sequence that several memory conventions
    share); a trace is never modified after :func:`trace_model` returns it."""

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


_NO_OUTPUT = object()


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

    def pre_hook(self, module: nn.Module, args: tuple) -> None:
        name = self.names.get(module)
        if name is None:  # a module outside the traced model: its ops count as the enclosing call's free ops
            return
        self.busy = True
        try:
            parent = self.stack[-1] if self.stack else None
            call = Call(len(self.calls), name, module, parent)
            call.inputs = self.keys(args)
            if parent is not None:
                self.calls[parent].items.append(("call", call.index))
            self.calls.append(call)
            self.stack.append(call.index)
        finally:
            self.busy = False

    def post_hook(self, module: nn.Module, args: tuple, kwargs: Any, output: Any = _NO_OUTPUT) -> None:
        if module not in self.names:
            return
        if output is _NO_OUTPUT:  # torch calls always-called global hooks without kwargs when forward raised
            kwargs, output = {}, kwargs
        self.busy = True
        try:
            call = self.calls[self.stack.pop()]
            if kwargs:  # global pre-hooks see no keyword arguments: their tensors join the inputs here
                call.inputs = tuple(dict.fromkeys((*call.inputs, *self.keys(kwargs))))
            call.outputs = self.keys(output)
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


class FastMeta(TorchDispatchMode):
    """Shape-only shortcuts on the meta device for in-place ops (weight initialisation included), point-wise ops,
    convolutions, matrix products and batch norm, whose meta kernels are slow Python decompositions. Results have the
    shapes and dtypes the kernels would give, so a trace is unchanged (point-wise ops carry no MACs) and a model built
    under this mode has the same structure (its meta weights hold no values either way)."""

    def __init__(self, counter: MacCounter | None = None) -> None:
        super().__init__()
        self.counter = counter  # count MACs here too: one dispatch mode instead of two on the trace's hot path

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        return False  # nothing is compiled under this mode: spare every ATen call torch's dynamo-disabling wrapper

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = self._run(func, args, kwargs)
        if self.counter is not None:
            self.counter.count(func, args, kwargs, out)
        return out

    def _run(self, func, args, kwargs):
        first = args[0] if args else None
        if not (isinstance(first, torch.Tensor) and first.device.type == "meta"):
            return func(*args, **kwargs)
        kind = _KINDS.get(func)
        if kind is None:
            kind = _KINDS[func] = _shortcut_kind(func)
        if kind == "inplace":
            return first  # in-place ops keep the shape: weight initialisation (normal_, uniform_, ...), fills, ReLU_
        if kind == "pointwise":
            tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
            if (
                "out" not in kwargs
                and first.is_floating_point()
                and all(t.dtype == first.dtype and t.device.type == "meta" for t in tensors)
            ):
                shapes = [t.shape for t in tensors]
                shape = shapes[0] if all(s == shapes[0] for s in shapes) else torch.broadcast_shapes(*shapes)
                return torch.empty(shape, dtype=first.dtype, device="meta")
        elif kind == "convolution":
            if not args[6] and first.dim() == 4:
                return _conv_meta(*args)
        elif kind == "matmul":
            shape = _matmul_like_shape(func, args)
            if shape is not None and not kwargs:
                return first.new_empty(shape)
        elif kind == "batch_norm":
            stats = first.new_empty((first.shape[1] if first.dim() > 1 else first.shape[0],))
            out = first.new_empty(first.shape) if first.is_contiguous() else torch.empty_like(first)  # same strides
            return out, stats, stats.clone()
        return func(*args, **kwargs)


_aten = torch.ops.aten
_SAME_SHAPE_OPS = (_aten._safe_softmax.default, _aten._softmax.default, _aten._log_softmax.default)
_MATMUL_OPS = (*_SAME_SHAPE_OPS, _aten.mm.default, _aten.addmm.default, _aten.bmm.default, _aten.baddbmm.default)
_KINDS: dict[Any, str] = {}  # ATen overload -> its FastMeta shortcut ("" for none)


def _shortcut_kind(func) -> str:
    """Which shortcut :class:`FastMeta` takes for ``func`` on meta tensors ("" for none: run its meta kernel)."""
    tags = func.tags
    if torch.Tag.inplace in tags and torch.Tag.inplace_view not in tags:
        return "inplace"
    if (
        torch.Tag.pointwise in tags
        and len(func._schema.returns) == 1
        and func._schema.name.split("::")[-1] not in _NON_FLOAT_RESULTS
    ):
        return "pointwise"
    if func is _aten.convolution.default:
        return "convolution"
    if func in _MATMUL_OPS:
        return "matmul"
    if func is _aten.native_batch_norm.default:
        return "batch_norm"
    return ""


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

    device = model_device(model)
    shape = _input_shape(model, image_size, batch_size, in_channels)
    x = torch.zeros(shape, device=device) if device.type != "meta" else torch.empty(shape, device=device)
    recorder = _Recorder(model)
    handles = [  # global hooks (one registration, not two per module); the recorder ignores other models' modules
        register_module_forward_pre_hook(recorder.pre_hook),
        register_module_forward_hook(recorder.post_hook, with_kwargs=True, always_call=True),
    ]
    was_training = model.training
    fastpath = torch.backends.mha.get_fastpath_enabled()
    model.eval()
    torch.backends.mha.set_fastpath_enabled(False)  # the fused MHA kernel has no MAC formula; the unfused path has
    counter = MacCounter(scope=recorder.current)
    dispatch = FastMeta(counter) if device.type == "meta" else counter  # meta: shape shortcuts and MACs in one mode
    try:
        with torch.no_grad(), architecture_ops(), dispatch, _OpMode(recorder):
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


@dataclass(frozen=True)
class MacReport:
    """MACs of one forward pass at batch 1."""

    total: int
    attention: int  # part of ``total`` spent in self-attention (projections, scores, weighted sum)
    by_module: dict[str, int]  # inclusive MACs per module name

    @property
    def gmacs(self) -> float:
        return self.total / 1e9


def _is_attention(module: nn.Module) -> bool:
    return isinstance(module, nn.MultiheadAttention) or hasattr(module, "multihead_attn")


def mac_report(trace: ModelTrace) -> MacReport:
    """:class:`MacReport` of a :class:`ModelTrace` (batch 1)."""
    batch = trace.input_shape[0]
    attention = sum(c.macs for c in trace.calls if _is_attention(c.module))
    by_module = {name: macs // batch for name, macs in trace.inclusive_macs().items()}
    return MacReport(trace.macs // batch, attention // batch, by_module)


def count_macs(model: nn.Module, image_size: int | Sequence[int], *, in_channels: int | None = None) -> MacReport:
    """MACs of ``model`` on one ``image_size`` image (meta-device models are counted without computing)."""
    return mac_report(trace_model(model, image_size, in_channels=in_channels))
