"""How the analytic memory conventions account for a module: block rules, the layers through which on-the-fly
computation and virtual maps propagate, and bytes per element (docs/profiling.md)."""

from __future__ import annotations

from torch import nn

__all__ = [
    "BYTES_PER_ELEMENT",
    "ELEMENTWISE_LAYERS",
    "LOCAL_LAYERS",
    "MEMORY_RULES",
    "POOL_LAYERS",
    "bytes_per_element",
    "format_bytes",
    "memory_rule_for",
    "register_memory_rule",
]

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
LOCAL_LAYERS: tuple[type, ...] = (
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
ELEMENTWISE_LAYERS: tuple[type, ...] = tuple(
    t for t in LOCAL_LAYERS if t not in (nn.modules.conv._ConvNd, nn.MaxPool2d, nn.AvgPool2d, nn.ZeroPad2d)
)
POOL_LAYERS: tuple[type, ...] = (
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
