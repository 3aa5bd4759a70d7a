"""Benchmarks: per-layer forward+backward time and peak memory, and whole-model training steps.

Run ``python -m repro.bench layers`` or ``python -m repro.bench models`` (see ``benchmarks/README.md``).
"""

from repro.bench.layers import LayerShape, bench_layers, model_pool_shapes
from repro.bench.models import bench_models
from repro.bench.timing import Measurement, measure, peak_memory_bytes

__all__ = [
    "LayerShape",
    "Measurement",
    "bench_layers",
    "bench_models",
    "measure",
    "model_pool_shapes",
    "peak_memory_bytes",
]
