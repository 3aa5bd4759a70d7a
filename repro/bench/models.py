"""Whole-model training-step benchmark: forward, cross-entropy, backward and an SGD step on random data.

Every arch is measured in the same process; ``time / baseline`` divides by the baseline arch (by default the first
one) at the same precision, and ``speed-up vs faithful`` compares the two attention implementations of one arch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from repro.bench.timing import autocast, measure

__all__ = ["DEFAULT_ARCHS", "bench_models"]

DEFAULT_ARCHS = ("resnet18-skip-1222", "resnet18-nlp-1222")


def _has_attention_impl(module: nn.Module) -> bool:
    return any(hasattr(m, "active_impl") for m in module.modules())


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
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> list[dict]:
    """Median training-step time and peak memory of each arch; one row per (arch, precision, impl)."""
    from repro.bench.variants import implementation
    from repro.models import build_model

    if not archs:
        raise ValueError("give at least one arch to benchmark")
    baseline = baseline or archs[0]
    names = list(archs) if baseline in archs else [baseline, *archs]
    dev = torch.device(device)
    rows: list[dict] = []
    for amp in amp_modes:
        precision = "amp" if amp else "fp32"
        generator = torch.Generator().manual_seed(seed)
        x = torch.randn(batch_size, 3, image_size, image_size, generator=generator).to(dev)
        y = torch.randint(0, num_classes, (batch_size,), generator=generator).to(dev)
        group: list[dict] = []
        for arch in names:
            base = {"arch": arch, "image_size": image_size, "batch": batch_size, "precision": precision}
            try:
                torch.manual_seed(seed)
                model = build_model(arch, num_classes=num_classes).to(dev).train()
            except Exception as exc:
                group.append({**base, "impl": "-", "error": f"{type(exc).__name__}: {exc}"})
                continue
            for impl in impls if _has_attention_impl(model) else ("-",):
                if progress:
                    progress(f"{arch} {precision} {impl}")
                row = {**base, "impl": impl, "baseline": baseline}
                try:
                    with implementation(impl):
                        result = measure(
                            _train_step(model, x, y, amp), device=dev, warmup=warmup, repeats=repeats, memory=memory
                        )
                    row.update(ms=result.median_ms, iqr_ms=result.iqr_ms, repeats=result.repeats)
                    row["peak_mib"] = result.peak_mib
                except Exception as exc:
                    row["error"] = f"{type(exc).__name__}: {exc}"
                group.append(row)
            del model
        ref = next((r for r in group if r["arch"] == baseline and "ms" in r), None)
        faithful = {r["arch"]: r for r in group if r["impl"] == "faithful" and "ms" in r}
        for row in group:
            if "ms" not in row:
                continue
            if ref is not None:
                row["x_vs_baseline"] = row["ms"] / ref["ms"]
            if row["impl"] not in ("faithful", "-") and row["arch"] in faithful:
                row["speedup_vs_faithful"] = faithful[row["arch"]]["ms"] / row["ms"]
        rows.extend(group)
    return rows
