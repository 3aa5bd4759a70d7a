"""Per-layer benchmark: forward + backward time and peak memory of every pool at the shapes where models use them.

Each pool is compared with the **strided-conv baseline** of its stage (``skip``: the stage's 3×3 conv takes the
stride instead, ``Conv2d(C, C, 3, stride, padding=1, bias=False)``) and, for pools with attention, the ``fast``
implementation with the ``faithful`` one (:mod:`repro.layers.nlp`; ``fast-sdpa`` is the fast path without the
compiled small-head kernels, :mod:`repro.bench.variants`), all in the same process and timed interleaved. Each
row's achieved GFLOP/s (the exact MACs of its forward + backward) is compared with that of a dense fp32 matmul of
the same MAC count, timed in the same rounds (:mod:`repro.bench.throughput`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass

import torch
from torch import nn

from repro.bench.timing import autocast, peak_memory_bytes, time_variants

__all__ = [
    "CONV_BASELINE",
    "DEFAULT_MODELS",
    "SELF_ATTENTIVE_OPTIONS",
    "LayerShape",
    "bench_layers",
    "model_pool_shapes",
    "parse_shape",
]

CONV_BASELINE = "conv3x3"
DEFAULT_MODELS = ("resnet18-nlp-1222", "mobilenet_v2-nlp-1222121")
SELF_ATTENTIVE_OPTIONS = ("heads", "patch_size", "win_norm")


@dataclass(frozen=True)
class LayerShape:
    """One pooling site: where it is (``site``), its input (C, H, W), stride and self-attentive options."""

    site: str
    channels: int
    height: int
    width: int
    stride: int = 2
    heads: int = 2
    patch_size: int = 1
    win_norm: bool = True

    @property
    def label(self) -> str:
        return f"{self.site} C={self.channels} {self.height}x{self.width} s={self.stride} h={self.heads}"


def parse_shape(text: str) -> LayerShape:
    """``C:H[xW]:heads[:stride[:patch]]``, e.g. ``64:32:8`` (C=64, 32×32, 8 heads, stride 2, patch 1)."""
    parts = text.split(":")
    try:
        if not 3 <= len(parts) <= 5:
            raise ValueError
        channels = int(parts[0])
        height, _, width = parts[1].partition("x")
        height, width = int(height), int(width or height)
        heads = int(parts[2])
        stride = int(parts[3]) if len(parts) > 3 else 2
        patch = int(parts[4]) if len(parts) > 4 else 1
    except ValueError:
        raise ValueError(
            f"bad layer shape {text!r}: expected C:H[xW]:heads[:stride[:patch]] with integers, e.g. 64:32:8"
        ) from None
    return LayerShape(f"C{channels}", channels, height, width, stride, heads, patch)


def model_pool_shapes(arch: str, image_size: int = 128) -> list[LayerShape]:
    """The input shape and options of every weighted pool in ``arch`` at ``image_size`` px (one forward pass)."""
    from repro.layers import WeightedPool2d
    from repro.models import build_model

    model = build_model(arch, num_classes=10).eval()
    found: list[LayerShape] = []
    hooks = []
    for name, module in model.named_modules():
        if not isinstance(module, WeightedPool2d):
            continue
        net = module.weight_net

        def hook(mod, args, name=name, net=net) -> None:
            _, c, h, w = args[0].shape
            found.append(
                LayerShape(
                    f"{arch}:{name}",
                    c,
                    h,
                    w,
                    mod.stride,
                    getattr(net, "heads", 2),
                    getattr(net, "patch_size", 1),
                    mod.win_norm,
                )
            )

        hooks.append(module.register_forward_pre_hook(hook))
    with torch.no_grad():
        model(torch.zeros(1, 3, image_size, image_size))
    for handle in hooks:
        handle.remove()
    if not found:
        raise ValueError(f"{arch} has no weighted pool to take shapes from; use a self-attentive arch (e.g. *-nlp-*)")
    return found


def _build_pool(name: str, shape: LayerShape) -> nn.Module:
    from repro.layers import create_pool

    if name == CONV_BASELINE:
        return nn.Conv2d(shape.channels, shape.channels, 3, shape.stride, padding=1, bias=False)
    options = {key: getattr(shape, key) for key in SELF_ATTENTIVE_OPTIONS}
    try:
        pool = create_pool(name, shape.channels, shape.stride, **options)
    except (TypeError, ValueError):  # a pool without self-attentive options (maxp, lip, attnpool, ...)
        pool = create_pool(name, shape.channels, shape.stride)
    if pool is None:
        raise ValueError(f"pool {name!r} has no module (it is the strided conv, benchmarked as {CONV_BASELINE!r})")
    return pool


def _step(module: nn.Module, x: torch.Tensor, amp: bool) -> Callable[[], None]:
    """One forward + backward with a fixed random output gradient; gradients are freed before each call."""
    from repro.layers.nlp import architecture_ops

    device = x.device
    with torch.no_grad(), autocast(device, amp), architecture_ops():  # only the output's shape is needed
        grad = torch.randn_like(module(x)).float()

    def step() -> None:
        module.zero_grad(set_to_none=True)
        x.grad = None
        with autocast(device, amp):
            out = module(x)
        out.float().backward(grad)

    return step


def bench_layers(
    shapes: Sequence[LayerShape],
    pools: Iterable[str],
    *,
    batch_size: int = 8,
    device: str = "cpu",
    impls: Sequence[str] = ("fast", "faithful"),
    amp_modes: Sequence[bool] = (False,),
    warmup: int = 2,
    repeats: int = 5,
    memory: bool = True,
    matmul: bool = True,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> list[dict]:
    """Benchmark each pool (and the strided-conv baseline) at each shape; return one row dict per measurement.

    All variants of one shape (pools, implementations and, with ``matmul``, a dense fp32 matmul of each pool's MAC
    count) are timed interleaved (:func:`repro.bench.timing.time_variants`). Rows carry ``ms`` (median fwd+bwd),
    ``iqr_ms``, ``peak_mib``, ``gmacs`` (MACs of the forward + backward,
    :func:`repro.bench.throughput.training_step_macs`), ``gflops`` and, with ``matmul``, ``matmul_gflops`` and
    ``of_matmul`` (the row's GFLOP/s over the matmul's), and the ratios ``x_vs_conv`` (time / the conv baseline's
    time at the same shape and precision), ``mem_vs_conv`` and, for the ``fast`` rows of attention pools,
    ``speedup_vs_faithful`` (faithful time / fast time). Failures are recorded in ``error`` instead of raising.
    """
    from repro.bench.throughput import gflops, matmul_step, training_step_macs
    from repro.bench.variants import has_attention_impl, with_impl

    dev = torch.device(device)
    names = [CONV_BASELINE, *[p for p in pools if p not in ("skip", CONV_BASELINE)]]
    rows: list[dict] = []
    for shape in shapes:
        for amp in amp_modes:
            precision = "amp" if amp else "fp32"
            torch.manual_seed(seed)
            x = torch.randn(batch_size, shape.channels, shape.height, shape.width, device=dev, requires_grad=True)
            group: list[dict] = []
            steps: dict[int, Callable[[], None]] = {}  # row index in ``group`` -> timed step
            matmuls: dict[str, tuple[Callable[[], None], int]] = {}
            for name in names:
                base = {**asdict(shape), "batch": batch_size, "pool": name, "precision": precision}
                try:
                    torch.manual_seed(seed)
                    module = _build_pool(name, shape).to(dev).train()
                    step = _step(module, x, amp)
                except Exception as exc:  # recorded in the table: a pool that cannot run at this shape
                    group.append({**base, "impl": "-", "error": f"{type(exc).__name__}: {exc}"})
                    continue
                try:
                    macs = training_step_macs(step)
                except Exception:  # not countable (e.g. an op the counter cannot run): no GFLOP/s for this pool
                    macs = None
                if macs and matmul:
                    matmuls[name] = matmul_step(macs, dev)
                for impl in impls if has_attention_impl(module) else ("-",):
                    row = {**base, "impl": impl}
                    if macs:
                        row["gmacs"] = macs / 1e9
                    steps[len(group)] = with_impl(step, impl)
                    group.append(row)
            if progress:
                progress(f"{shape.label} {precision}: timing {len(steps)} variants and {len(matmuls)} matmuls")
            fns: dict = dict(steps)
            fns.update({("matmul", name): fn for name, (fn, _) in matmuls.items()})
            timed, errors = time_variants(fns, device=dev, warmup=warmup, repeats=repeats)
            for key, message in errors.items():
                if isinstance(key, int):
                    group[key]["error"] = message
                else:
                    matmuls.pop(key[1])
            for index, (median, iqr) in timed.items():
                if not isinstance(index, int):
                    continue
                group[index].update(ms=median, iqr_ms=iqr, repeats=repeats)
                row = group[index]
                if "gmacs" in row:
                    row["gflops"] = gflops(row["gmacs"] * 1e9, median)
                    if row["pool"] in matmuls:
                        row["matmul_gflops"] = gflops(matmuls[row["pool"]][1], timed[("matmul", row["pool"])][0])
                        row["of_matmul"] = row["gflops"] / row["matmul_gflops"]
            if memory:
                for index, step in steps.items():
                    if "error" in group[index]:
                        continue
                    try:
                        group[index]["peak_mib"] = peak_memory_bytes(step, dev) / 2**20
                    except Exception as exc:
                        group[index]["error"] = f"{type(exc).__name__}: {exc}"
            _add_ratios(group)
            rows.extend(group)
    return rows


def _add_ratios(group: list[dict]) -> None:
    conv = next((r for r in group if r["pool"] == CONV_BASELINE and "ms" in r), None)
    faithful = {r["pool"]: r for r in group if r["impl"] == "faithful" and "ms" in r}
    for row in group:
        if "ms" not in row:
            continue
        if conv is not None:
            row["x_vs_conv"] = row["ms"] / conv["ms"]
            if row.get("peak_mib") is not None and conv.get("peak_mib"):
                row["mem_vs_conv"] = row["peak_mib"] / conv["peak_mib"]
        if row["impl"] not in ("faithful", "-") and row["pool"] in faithful:
            ref = faithful[row["pool"]]
            row["speedup_vs_faithful"] = ref["ms"] / row["ms"]
            if row.get("peak_mib") and ref.get("peak_mib") is not None:
                row["mem_vs_faithful"] = row["peak_mib"] / ref["peak_mib"]


def geometric_mean(values: Iterable[float]) -> float:
    values = list(values)
    if not values:
        return math.nan
    return math.exp(sum(math.log(v) for v in values) / len(values))
