"""Efficiency metrics: parameters, MACs (attention included), analytic and measured peak activation memory.

See docs/profiling.md for the memory conventions and what each number means.
"""

from repro.metrics.macs import MacReport, attention_macs, count_macs
from repro.metrics.measured_memory import MeasuredMemory, measure_peak_memory
from repro.metrics.memory import (
    CONVENTIONS,
    MemoryReport,
    ModelTrace,
    patch_recompute_memory,
    peak_memory,
    register_memory_rule,
    trace_model,
)
from repro.metrics.params import ParamCount, count_params
from repro.metrics.profile import ModelProfile, profile_entries, profile_model, render_profiles

__all__ = [
    "CONVENTIONS",
    "MacReport",
    "MeasuredMemory",
    "MemoryReport",
    "ModelProfile",
    "ModelTrace",
    "ParamCount",
    "attention_macs",
    "count_macs",
    "count_params",
    "measure_peak_memory",
    "patch_recompute_memory",
    "peak_memory",
    "profile_entries",
    "profile_model",
    "register_memory_rule",
    "render_profiles",
    "trace_model",
]
