"""Whole-model training-step benchmark: forward, cross-entropy, backward and an SGD step on random data.

Every arch is measured in the same process; ``time / baseline`` divides by the baseline arch (by default the first
one) at the same precision, and ``speed-up vs faithful`` compares the two attention implementations of one arch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from repro.bench.timing import autocast, peak_memory_bytes, time_variants

__all__ = ["DEFAULT_ARCHS", "TWIN", "bench_models", "strided_twin"]

DEFAULT_ARCHS = ("resnet18-skip-1222", "resnet18-nlp-1222")
TWIN = "twin"
"""``baseline=TWIN``: divide each arch by its strided-conv twin (:func:`strided_twin`) measured in the same run."""


def strided_twin(arch: str, candidates: Sequence[str]) -> str | None:
    """The arch among ``candidates`` that is ``arch`` with every stage pool replaced by the strided conv (``skip``):
    same backbone, strides and dynamic flag, no prepool; None if there is none (or ``arch`` has a prepool)."""
    from repro.arch import parse_arch

    own = parse_arch(arch)
    if own.prepool is not None:
        return None
    for name in candidates:
        other = parse_arch(name)
        same = (other.backbone, other.strides, other.dynamic) == (own.backbone, own.strides, own.dynamic)
        if same and other.pool_type == "skip" and other.prepool is None:
            return name
    return None


def _train_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, amp: bool) -> Callable[[], None]:
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    device = x.device
    scaler = torch.amp.GradScaler(device.type, enabled=amp and device.type == "cuda")

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, amp):
            loss = nn.functional.cross_entropy(model(x), y)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    return step


def bench_models(
    archs: Sequence[str],
    *,
    baseline: str | None = None,
    image_size: int = 128,
    batch_size: int = 8,
    num_classes: int = 10,
    device: str = "cpu",
    impls: Sequence[str] = ("fast", "faithful"),
    amp_modes: Sequence[bool] = (False,),
    warmup: int = 2,
    repeats: int = 5,
    memory: bool = True,
    channels_last: bool = False,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> list[dict]:
    """Median training-step time and peak memory of each arch; one row per (arch, precision, impl).

    The steps of one precision are timed interleaved (:func:`repro.bench.timing.time_interleaved`). Rows carry
    ``gmacs`` (MACs of the forward + backward, :func:`repro.bench.throughput.training_step_macs`), ``gflops``,
    ``x_vs_baseline`` (time / the baseline's), ``macs_vs_baseline`` and ``time_per_mac_vs_baseline`` (their
    quotient: at most 1, the arch spends no more time per MAC than the baseline). ``baseline`` is an arch (default
    the first) or :data:`TWIN` (each arch's strided-conv twin); a baseline with attention counts with its ``fast``
    row. ``channels_last`` runs models and
    input in that memory format.
    """
    from repro.bench.throughput import gflops, training_step_macs
    from repro.bench.variants import has_attention_impl, with_impl
    from repro.models import build_model

    if not archs:
        raise ValueError("give at least one arch to benchmark")
    baseline = baseline or archs[0]
    if baseline == TWIN:
        names = list(archs)
        baselines = {arch: strided_twin(arch, names) for arch in names}
    else:
        names = list(archs) if baseline in archs else [baseline, *archs]
        baselines = dict.fromkeys(names, baseline)
    dev = torch.device(device)
    rows: list[dict] = []
    for amp in amp_modes:
        precision = "amp" if amp else "fp32"
        generator = torch.Generator().manual_seed(seed)
        layout = torch.channels_last if channels_last else torch.contiguous_format
        x = torch.randn(batch_size, 3, image_size, image_size, generator=generator).to(dev, memory_format=layout)
        y = torch.randint(0, num_classes, (batch_size,), generator=generator).to(dev)
        group: list[dict] = []
        steps: dict[int, Callable[[], None]] = {}
        for arch in names:
            base = {"arch": arch, "image_size": image_size, "batch": batch_size, "precision": precision}
            base["layout"] = "channels_last" if channels_last else "nchw"
            try:
                torch.manual_seed(seed)
                model = build_model(arch, num_classes=num_classes).to(dev, memory_format=layout).train()
                step = _train_step(model, x, y, amp)
                macs = training_step_macs(step)
            except Exception as exc:
                group.append({**base, "impl": "-", "error": f"{type(exc).__name__}: {exc}"})
                continue
            for impl in impls if has_attention_impl(model) else ("-",):
                steps[len(group)] = with_impl(step, impl)
                group.append({**base, "impl": impl, "baseline": baselines[arch], "gmacs": macs / 1e9})
        if progress:
            progress(f"{precision}: timing {len(steps)} training steps interleaved")
        timed, errors = time_variants(steps, device=dev, warmup=warmup, repeats=repeats)
        for index, message in errors.items():
            group[index]["error"] = message
        for index, (median, iqr) in timed.items():
            row = group[index]
            row.update(ms=median, iqr_ms=iqr, repeats=repeats, gflops=gflops(row["gmacs"] * 1e9, median))
        if memory:
            for index, step in steps.items():
                if "error" not in group[index]:
                    group[index]["peak_mib"] = peak_memory_bytes(step, dev) / 2**20
        refs = {r["arch"]: r for r in group if r["impl"] in ("-", "fast") and "ms" in r}
        faithful = {r["arch"]: r for r in group if r["impl"] == "faithful" and "ms" in r}
        for row in group:
            if "ms" not in row:
                continue
            ref = refs.get(row.get("baseline"))
            if ref is not None:
                row["x_vs_baseline"] = row["ms"] / ref["ms"]
                row["macs_vs_baseline"] = row["gmacs"] / ref["gmacs"]
                row["time_per_mac_vs_baseline"] = row["x_vs_baseline"] / row["macs_vs_baseline"]
            if row["impl"] not in ("faithful", "-") and row["arch"] in faithful:
                row["speedup_vs_faithful"] = faithful[row["arch"]]["ms"] / row["ms"]
        rows.extend(group)
    return rows
