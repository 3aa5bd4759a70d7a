"""Parts shared by the Self-Attentive-Pooling backbones: pool construction, feature info and input-size planning.

* :func:`build_stage_pool` turns a :class:`repro.arch.StagePool` into a pooling module (``None`` for ``skip``).
* :class:`FeatureInfo` describes the outputs of a ``features_only`` backbone (channels and reduction), as timm does.
* :class:`SpatialPlan` propagates an input side length through the stem and the stages with the exact rounding of
  each layer (strided convs round up, pools round down; reference_spec §2.0). It yields the per-stage map sizes, the
  smallest valid input and, for pools with a learned position table, the largest one (B11).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from repro.layers import create_pool
from repro.layers.create_pool import PoolLayer

if TYPE_CHECKING:
    from repro.arch import StagePool

#: Placements of the pooling layer inside a stage, per backbone family (the default one first).
PLACEMENTS: dict[str, tuple[str, ...]] = {
    "resnet": ("stage_end", "block_end"),
    "resnext": ("block_end", "stage_end"),
    "mobilenetv2": ("stage_start", "after_projection"),
    "mobilenetv3": ("after_projection",),
}

PLACEMENT_HELP: dict[str, str] = {
    "stage_end": "after the last block of the stage; the whole stage runs at the input resolution "
    "(official resnet18/50)",
    "block_end": "after the first block (after its residual add and ReLU); later blocks run at the reduced "
    "resolution (official resnet*_v2, resnext)",
    "stage_start": "before the first block of the stage, on the previous stage's channels (official mobilenet)",
    "after_projection": "inside the first block, after its linear projection (official mobilenet_v2, mobilenetv3_*)",
}

#: Pools whose learned position table holds 256 positions per axis, with the patch size that sets their token grid
#: (``None``: the stage's ``patch_size``; ``1``: every pixel is a token). ``nlpnope`` has no table.
TOKEN_GRID_POOLS: dict[str, int | None] = {
    "nlp": None,
    "nlpnoexp": None,
    "nlpnosigmoid": None,
    "nlpnobn1": None,
    "nlpnobn2": None,
    "dfmnlp": None,
    "mixp": None,
    "dfmixp": None,
    "attnpool": 1,
}
MAX_POSITIONS = 256


def resolve_conv_layer(dynamic: bool) -> type[nn.Module]:
    """``DynamicConv2d`` for the ``dy`` architectures, else ``nn.Conv2d``."""
    if not dynamic:
        return nn.Conv2d
    from repro.layers.dynamic_conv import DynamicConv2d

    return DynamicConv2d


def build_stage_pool(stage: StagePool, channels: int, pool_layer: PoolLayer | None = None) -> nn.Module | None:
    """The pooling module of one stage (``None`` for ``skip``), kernel = stride = ``stage.stride``.

    ``pool_layer`` (a registered pool name, an ``nn.Module`` class or a callable ``fn(channels, stride, **cfg)``)
    replaces the pool the architecture names, with the stage's settings: a user's experimental pool in a SAP backbone.

    As in the official code, only the self-attentive pools of a ``dy`` architecture get dynamic convolutions
    (``stage.conv == 'dynamic'``); the baseline pools keep ``nn.Conv2d``.
    """
    if stage.is_skip:
        return None
    if stage.patch_size == 0:
        raise ValueError(
            f"pool {stage.type!r} with stride {stage.stride} has patch size 0: the 'reduced0211'/'reduced0842' "
            "modifiers only define the first stage's patch size as a placeholder, so that stage's digit must be 1 "
            "(reference_spec B13)"
        )
    conv_layer = resolve_conv_layer(True) if stage.conv == "dynamic" else None
    if pool_layer is not None:
        return create_pool(pool_layer, channels, stage.stride)
    return create_pool(stage.type, channels, stage.stride, **stage.pool_kwargs(), conv_layer=conv_layer)


# ----------------------------------------------------------------------------------------------------------------
# feature info


@dataclass(frozen=True)
class FeatureSpec:
    """One output of a feature backbone: channels, total stride w.r.t. the input, and the producing module."""

    num_chs: int
    reduction: int
    module: str


class FeatureInfo(Sequence[FeatureSpec]):
    """The selected outputs of a ``features_only`` backbone (timm-style ``channels()`` / ``reduction()``)."""

    def __init__(self, specs: Sequence[FeatureSpec], out_indices: Sequence[int]) -> None:
        self.all = tuple(specs)
        self.out_indices = tuple(out_indices)
        self._selected = tuple(self.all[i] for i in self.out_indices)

    def __getitem__(self, index):  # type: ignore[override]
        return self._selected[index]

    def __len__(self) -> int:
        return len(self._selected)

    def __iter__(self) -> Iterator[FeatureSpec]:
        return iter(self._selected)

    def channels(self) -> list[int]:
        return [s.num_chs for s in self._selected]

    def reduction(self) -> list[int]:
        return [s.reduction for s in self._selected]

    def module_name(self) -> list[str]:
        return [s.module for s in self._selected]

    def __repr__(self) -> str:
        return f"FeatureInfo({list(self._selected)})"


def resolve_out_indices(out_indices: Sequence[int] | int | None, num_outputs: int, arch_name: str) -> tuple[int, ...]:
    """Normalise ``out_indices`` (None = all, negative = from the end) or raise a ValueError naming the valid range."""
    if out_indices is None:
        return tuple(range(num_outputs))
    if isinstance(out_indices, int):
        out_indices = (out_indices,)
    resolved = []
    for index in out_indices:
        if isinstance(index, bool) or not isinstance(index, int) or not -num_outputs <= index < num_outputs:
            raise ValueError(
                f"{arch_name}: out_indices entry {index!r} is out of range; this backbone has {num_outputs} feature "
                f"outputs (valid indices 0..{num_outputs - 1}, or negative from the end)"
            )
        resolved.append(index % num_outputs)
    return tuple(resolved)


# ----------------------------------------------------------------------------------------------------------------
# input-size planning


class InputSizeError(ValueError):
    """An input whose spatial size the architecture cannot process."""


@dataclass(frozen=True)
class SizeOp:
    """One spatial layer along one axis: ``out = ⌊(n + 2·padding − kernel) / stride⌋ + 1``, valid when ``out ≥ 1``.

    ``token_patch``: the layer embeds ``⌊n / token_patch⌋`` tokens per axis into a learned position table that holds
    at most :data:`MAX_POSITIONS` positions (and at least one token is needed).
    """

    kernel: int
    stride: int
    padding: int = 0
    token_patch: int | None = None
    label: str = ""

    def out(self, n: int) -> int:
        return (n + 2 * self.padding - self.kernel) // self.stride + 1

    @classmethod
    def conv(cls, kernel: int, stride: int, padding: int, label: str = "conv") -> SizeOp:
        return cls(kernel, stride, padding, None, label)

    @classmethod
    def pool(cls, stage: StagePool) -> SizeOp:
        """A pool with kernel = stride = s and no padding, i.e. ``⌊n / s⌋``."""
        token_patch = None
        if stage.type in TOKEN_GRID_POOLS:
            token_patch = TOKEN_GRID_POOLS[stage.type] or stage.patch_size or 1
        return cls(stage.stride, stage.stride, 0, token_patch, f"{stage.type} pool")


@dataclass(frozen=True)
class SpatialPlan:
    """Per-stage spatial layers of a backbone; answers map sizes and the valid input range along one axis."""

    stages: tuple[tuple[str, tuple[SizeOp, ...]], ...]
    arch_name: str = ""
    _cache: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def _trace(self, n: int) -> tuple[list[int], str | None, str | None]:
        """Sizes after each stage, plus the first 'too small' and 'too large' violations (or None)."""
        sizes: list[int] = []
        small = large = None
        for name, ops in self.stages:
            for op in ops:
                if op.token_patch is not None:
                    grid = n // op.token_patch
                    if grid < 1 and small is None:
                        small = (
                            f"the {op.label} in {name} gets a {n}-pixel map, smaller than its patch size "
                            f"{op.token_patch}"
                        )
                    if grid > MAX_POSITIONS and large is None:
                        large = (
                            f"the {op.label} in {name} would embed {grid} tokens per axis but its learned position "
                            f"table holds {MAX_POSITIONS} (reference_spec B11)"
                        )
                out = op.out(n)
                if out < 1:
                    if small is None:
                        small = f"the {op.label} in {name} gets a {n}-pixel map and would output nothing"
                    out = max(out, 0)
                n = out
            sizes.append(n)
        return sizes, small, large

    def sizes(self, n: int) -> dict[str, int]:
        """Map side length after each stage for an input of side ``n``; raises :class:`InputSizeError`."""
        self.check(n)
        return dict(zip([name for name, _ in self.stages], self._trace(n)[0]))

    def min_size(self) -> int:
        """The smallest input side for which every layer has a non-empty output."""
        if "min" not in self._cache:
            n = 1
            while self._trace(n)[1] is not None:
                n += 1
            self._cache["min"] = n
        return self._cache["min"]

    def max_size(self) -> int | None:
        """The largest input side accepted by the position tables, or None when unbounded."""
        if "max" not in self._cache:
            lo = self.min_size()
            if self._trace(lo)[2] is not None:
                self._cache["max"] = lo - 1  # no valid size at all
            elif self._trace(1 << 24)[2] is None:
                self._cache["max"] = None
            else:
                hi = 1 << 24  # invalid
                while hi - lo > 1:
                    mid = (lo + hi) // 2
                    lo, hi = (mid, hi) if self._trace(mid)[2] is None else (lo, mid)
                self._cache["max"] = lo
        return self._cache["max"]

    def check(self, *sides: int) -> None:
        """Raise :class:`InputSizeError` naming the architecture, the size and the valid range, if any side is bad."""
        for n in sides:
            _, small, large = self._trace(int(n))
            if small is None and large is None:
                continue
            lo, hi = self.min_size(), self.max_size()
            valid = f"at least {lo}" if hi is None else f"between {lo} and {hi}"
            if hi is not None and hi < lo:
                valid = "none: no input size satisfies every layer"
            shape = "x".join(str(int(s)) for s in sides)
            if small is not None:
                problem, fix = f"too small ({small})", "use a larger input or smaller stride digits"
            else:
                problem, fix = f"too large ({large})", "use a smaller input or a larger patch size ('_reduced')"
            raise InputSizeError(
                f"{self.arch_name or 'this model'}: input size {shape} is {problem}; valid input sides are {valid} "
                f"pixels: {fix}"
            )


def check_input(plan: SpatialPlan, x: torch.Tensor) -> None:
    """Validate the spatial size of an input batch against ``plan`` (cheap: a few integer operations when valid).

    Skipped while tracing (TorchScript, FX), where the sizes are not concrete.
    """
    if not isinstance(x, torch.Tensor) or torch.jit.is_tracing() or torch.jit.is_scripting():
        return
    h, w = int(x.shape[-2]), int(x.shape[-1])
    lo = plan.min_size()
    hi = plan.max_size()
    if lo <= h and lo <= w and (hi is None or (h <= hi and w <= hi)):
        return
    plan.check(h, w)


# ----------------------------------------------------------------------------------------------------------------
# common backbone behaviour


class SapBackbone(nn.Module, ABC):
    """Base of the SAP backbones: classification or ``features_only`` forward, input-size check, feature info.

    Subclasses build their layers, then call :meth:`_finish` with the per-output :class:`FeatureSpec` list and the
    :class:`SpatialPlan`, and implement :meth:`forward_stem`, :meth:`feature_stages` and :meth:`forward_head`.
    """

    #: state-dict prefixes of the classification head (absent in ``features_only`` mode)
    head_prefixes: tuple[str, ...] = ()

    features_only: bool
    feature_info: FeatureInfo
    spatial_plan: SpatialPlan
    pretty_name: str

    def _finish(
        self,
        specs: Sequence[FeatureSpec],
        plan: SpatialPlan,
        *,
        features_only: bool,
        out_indices: Sequence[int] | int | None,
        name: str,
    ) -> None:
        self.features_only = bool(features_only)
        self.pretty_name = name
        self.spatial_plan = plan
        self.feature_info = FeatureInfo(specs, resolve_out_indices(out_indices, len(specs), name))

    @property
    def num_features(self) -> int:
        """Channels of the last feature map (the classifier's input width for ResNet/MobileNetV2)."""
        return self.feature_info.all[-1].num_chs

    @abstractmethod
    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        """The stem: input image to the first stage's input."""

    @abstractmethod
    def feature_stages(self) -> list[Callable[[torch.Tensor], torch.Tensor]]:
        """The modules (or callables) whose outputs are the feature outputs, in forward order (after the stem)."""

    @abstractmethod
    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        """The classifier: last feature map to logits."""

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last feature map (without keeping the intermediate ones)."""
        x = self.forward_stem(x)
        for stage in self.feature_stages():
            x = stage(x)
        return x

    def forward_feature_list(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The outputs selected by ``out_indices`` (stages after the last selected one are not run)."""
        wanted = self.feature_info.out_indices
        x = self.forward_stem(x)
        outs: list[torch.Tensor] = []
        for stage in self.feature_stages()[: max(wanted) + 1]:
            x = stage(x)
            outs.append(x)
        return [outs[i] for i in wanted]

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        check_input(self.spatial_plan, x)
        if self.features_only:
            return self.forward_feature_list(x)
        return self.forward_head(self.forward_features(x))

    def _map_official_keys(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Official checkpoints always hold the classification head; a ``features_only`` model drops it."""
        if not self.features_only:
            return state_dict
        return {k: v for k, v in state_dict.items() if not k.startswith(self.head_prefixes)}
