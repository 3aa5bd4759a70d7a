"""Efficiency metrics: parameters, MACs (attention included), analytic and measured peak activation memory.

``trace`` records one forward pass (module calls, free ops, storages, MACs); ``memory`` turns a trace into the peak
memory of a convention (rules in ``memory_rules``, ``patch-recompute`` in ``recompute``); ``profile`` profiles models
and pipeline entries; ``cells`` computes the values of reported cells; see docs/profiling.md.
"""

from repro.metrics.macs import attention_macs
from repro.metrics.measured_memory import MeasuredMemory, measure_peak_memory
from repro.metrics.memory import CONVENTIONS, MemoryReport, peak_memory
from repro.metrics.memory_rules import register_memory_rule
from repro.metrics.params import ParamCount, count_params
from repro.metrics.recompute import patch_recompute_memory
from repro.metrics.trace import MacReport, ModelTrace, count_macs, trace_model

__all__ = [
    "CONVENTIONS",
    "MacReport",
    "MeasuredMemory",
    "MemoryReport",
    "ModelTrace",
    "ParamCount",
    "attention_macs",
    "count_macs",
    "count_params",
    "measure_peak_memory",
    "patch_recompute_memory",
    "peak_memory",
    "register_memory_rule",
    "trace_model",
]
