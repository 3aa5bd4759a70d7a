"""Attention-only benchmark: the compiled small-head kernels against ``F.scaled_dot_product_attention``.

One step is forward + backward (random output gradient) of softmax self-attention on a packed (B, N, 3·h·d)
projection, as the fast NLP pool calls it; the kernels are called directly, whatever the head size, so the sweep
shows where they stop paying off (:data:`repro.layers.small_head_attention.MAX_HEAD_DIM`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from repro.bench.throughput import gflops
from repro.bench.timing import peak_memory_bytes, time_interleaved
from repro.layers.small_head_attention import packed_self_attention

__all__ = ["DEFAULT_SHAPES", "AttentionShape", "bench_attention", "parse_attention_shape"]


@dataclass(frozen=True)
class AttentionShape:
    batch: int
    heads: int
    tokens: int
    head_dim: int


DEFAULT_SHAPES = (
    AttentionShape(8, 8, 1024, 8),  # the pool at C=64, 32x32, 8 heads
    AttentionShape(8, 16, 256, 8),  # C=128, 16x16, 16 heads
    AttentionShape(8, 4, 4096, 8),  # C=32, 64x64, 4 heads
    AttentionShape(8, 16, 1024, 4),
    AttentionShape(8, 4, 1024, 16),
    AttentionShape(8, 2, 1024, 32),
)


def parse_attention_shape(text: str) -> AttentionShape:
    """``B:heads:N:d``, e.g. ``8:8:1024:8``."""
    parts = text.split(":")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        values = []
    if len(values) != 4 or min(values) < 1:
        raise ValueError(f"attention shape {text!r}: expected B:heads:N:d with positive integers, e.g. 8:8:1024:8")
    return AttentionShape(*values)


def _sdpa(qkv: torch.Tensor, heads: int) -> torch.Tensor:
    b, n, three_e = qkv.shape
    q, k, v = qkv.view(b, n, 3, heads, three_e // (3 * heads)).permute(2, 0, 3, 1, 4).unbind(0)
    return F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, three_e // 3)


IMPLEMENTATIONS: dict[str, Callable[[torch.Tensor, int], torch.Tensor]] = {
    "kernels": packed_self_attention,
    "sdpa": _sdpa,
}


def bench_attention(
    shapes: Sequence[AttentionShape],
    *,
    warmup: int = 2,
    repeats: int = 5,
    memory: bool = True,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> list[dict]:
    """One row per (shape, implementation) with ``ms``, ``iqr_ms`` (both timed interleaved), ``gflops``,
    ``peak_mib``, the largest output difference between the two (``max_abs_diff``) and, on the kernel rows,
    ``speedup_vs_sdpa`` (SDPA time / kernel time)."""
    rows: list[dict] = []
    for shape in shapes:
        g = torch.Generator().manual_seed(seed)
        width = shape.heads * shape.head_dim
        qkv = torch.randn(shape.batch, shape.tokens, 3 * width, generator=g).requires_grad_(True)
        grad = torch.randn(shape.batch, shape.tokens, width, generator=g)
        if progress:
            progress(f"B={shape.batch} h={shape.heads} N={shape.tokens} d={shape.head_dim}")
        steps = {}
        outputs = {}
        for name, fn in IMPLEMENTATIONS.items():

            def step(fn=fn, qkv=qkv, heads=shape.heads, grad=grad) -> None:
                qkv.grad = None
                fn(qkv, heads).backward(grad)

            steps[name] = step
            with torch.no_grad():
                outputs[name] = fn(qkv, shape.heads)
        timed = time_interleaved(steps, warmup=warmup, repeats=repeats)
        macs = 6 * shape.batch * shape.heads * shape.tokens**2 * shape.head_dim
        diff = (outputs["kernels"] - outputs["sdpa"]).abs().max().item()
        group = {}
        for name, (median, iqr) in timed.items():
            group[name] = {
                **asdict(shape),
                "impl": name,
                "ms": median,
                "iqr_ms": iqr,
                "gflops": gflops(macs, median),
                "peak_mib": peak_memory_bytes(steps[name]) / 2**20 if memory else None,
                "max_abs_diff": diff,
            }
        group["kernels"]["speedup_vs_sdpa"] = group["sdpa"]["ms"] / group["kernels"]["ms"]
        rows.extend(group.values())
    return rows
