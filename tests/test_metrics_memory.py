"""Analytic peak activation memory: conventions, block rules, streaming, virtual maps, dtypes."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from repro.layers.cross_channel import CrossChannelPool
from repro.layers.rnnpool import RNNPool2d
from repro.metrics.memory import CONVENTIONS, peak_memory
from repro.metrics.memory_rules import memory_rule_for, register_memory_rule
from repro.metrics.recompute import patch_recompute_memory
from repro.metrics.trace import trace_model

F32 = 4


def _meta(fn, *args, **kwargs) -> nn.Module:
    with torch.device("meta"):
        return fn(*args, **kwargs)


@pytest.fixture(scope="module")
def mnv2_trace():
    return trace_model(_meta(torchvision.models.mobilenet_v2, num_classes=10), 224)


def test_mobilenetv2_layerwise_is_first_mbconv_input_plus_output(mnv2_trace):
    report = peak_memory(mnv2_trace, convention="layerwise")
    assert report.peak_bytes == (112 * 112 * 32 + 112 * 112 * 16) * F32
    assert report.where == "features.1"
    assert round(report.peak_mb, 2) == 2.30 and abs(report.peak_mb - 2.29) <= 0.01  # printed 2.29 (truncated)


def test_int8_is_a_quarter_of_fp32(mnv2_trace):
    for convention in ("layerwise", "largest-map", "io-sum", "liveness"):
        fp32 = peak_memory(mnv2_trace, convention=convention, dtype="fp32")
        int8 = peak_memory(mnv2_trace, convention=convention, dtype="int8")
        assert int8.peak_elements == fp32.peak_elements
        assert int8.peak_bytes * 4 == fp32.peak_bytes


def test_conventions_on_a_hand_computed_chain():
    # 3x32x32 -> conv(8) -> relu -> conv(4, stride 2): the input image is not counted by layerwise/largest-map.
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 3, stride=2, padding=1))
    trace = trace_model(model, 32)
    img, a, b = 3 * 32 * 32, 8 * 32 * 32, 4 * 16 * 16
    assert peak_memory(trace, convention="layerwise").peak_elements == a  # max(in, out) per layer
    assert peak_memory(trace, convention="largest-map").peak_elements == a
    assert peak_memory(trace, convention="io-sum").peak_elements == a + a  # relu: in + out (not in place)
    assert peak_memory(trace, convention="liveness").peak_elements == max(img + a, a + a, a + b)


def test_residual_rule_and_liveness_of_a_skip_connection():
    trace = trace_model(_meta(torchvision.models.resnet18, num_classes=10), 224)
    layerwise = peak_memory(trace)
    assert layerwise.peak_bytes == 112 * 112 * 64 * F32 == round(3.0625 * 2**20)
    steps = {e.step: e for e in layerwise.events}
    assert steps["layer1.0"].rule == "residual"
    assert steps["layer1.0"].elements == 56 * 56 * 64  # max(in, out), the skip tensor is not added
    assert steps["layer2.0"].elements == max(56 * 56 * 64, 28 * 28 * 128)


def test_inception_and_dense_rules():
    google = trace_model(_meta(torchvision.models.googlenet, num_classes=10, aux_logits=False, init_weights=False), 224)
    steps = {e.step: e for e in peak_memory(google).events}
    assert steps["inception4e"].rule == "inception"
    assert steps["inception4e"].elements == 14 * 14 * (528 + 128 + 128 + 256)  # input + 3 smallest branches
    dense = trace_model(_meta(torchvision.models.densenet121, num_classes=10), 224)
    steps = {e.step: e for e in peak_memory(dense).events}
    assert steps["features.denseblock3"].rule == "dense"
    assert steps["features.denseblock3"].elements == 14 * 14 * 1024  # its output only


class _Stem(nn.Module):
    def __init__(self, pool: nn.Module, pool_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, pool_channels, 3, stride=2, padding=1)
        self.bn = nn.BatchNorm2d(pool_channels)
        self.act = nn.ReLU(inplace=True)
        self.pool = pool
        self.head = nn.Conv2d(getattr(pool, "out_channels", 8), 8, 1)

    def forward(self, x):
        return self.head(self.pool(self.act(self.bn(self.conv(x)))))


def test_rnnpool_streams_its_input_and_the_layers_feeding_it():
    rnnpool = RNNPool2d(8, patch_size=6, stride=4, hidden=4, padding="edgeml")
    assert memory_rule_for(rnnpool) == "stream"
    trace = trace_model(_Stem(rnnpool, 8).eval(), 112)
    report = peak_memory(trace)
    out = 16 * 14 * 14  # RNNPool output: 4 h2 channels at 13+1 = 14
    assert report.peak_elements == out  # the 56x56x8 conv/BN map is computed patch by patch, never stored
    naive = peak_memory(trace, convention="io-sum")
    assert naive.peak_elements >= 2 * 8 * 56 * 56  # a naive runtime holds the conv and BN maps


def test_cross_channel_pool_does_not_count_the_virtual_kc_map():
    model = _Stem(CrossChannelPool(k=4), 32).eval()
    trace = trace_model(model, 64)
    virtual, pooled = 32 * 32 * 32, 8 * 32 * 32
    layerwise = peak_memory(trace)
    assert layerwise.peak_elements == pooled  # not the 32-channel (k·C) map
    assert peak_memory(trace, convention="largest-map").peak_elements == pooled
    assert peak_memory(trace, convention="io-sum").peak_elements >= virtual  # the naive runtime stores it


def test_register_memory_rule_and_declared_rule():
    class Fused(nn.Module):
        def __init__(self):
            super().__init__()
            self.expand = nn.Conv2d(4, 64, 1)
            self.project = nn.Conv2d(64, 4, 1)

        def forward(self, x):
            return self.project(self.expand(x))

    model = nn.Sequential(nn.Conv2d(3, 4, 1), Fused())
    trace = trace_model(model, 16)
    assert peak_memory(trace).peak_elements == 64 * 16 * 16  # the expanded map is stored without a rule
    register_memory_rule(Fused, "mbconv")
    try:
        assert peak_memory(trace_model(model, 16)).peak_elements == 2 * 4 * 16 * 16  # in + out
    finally:
        from repro.metrics import memory_rules

        memory_rules._CLASS_RULES.pop(Fused)

    class Declared(nn.Module):
        memory_rule = "dense"

    assert memory_rule_for(Declared()) == "dense"
    with pytest.raises(ValueError, match="unknown memory rule 'bogus'"):
        register_memory_rule(Fused, "bogus")


def test_meta_and_cpu_traces_agree():
    model = torchvision.models.mobilenet_v3_small(num_classes=10).eval()
    cpu = trace_model(model, 64)
    meta = trace_model(_meta(torchvision.models.mobilenet_v3_small, num_classes=10), 64)
    for convention in ("layerwise", "io-sum", "liveness"):
        assert peak_memory(cpu, convention=convention).peak_bytes == peak_memory(meta, convention=convention).peak_bytes
    assert cpu.macs == meta.macs


def test_patch_recompute_picks_the_smallest_peak_above_the_budget(mnv2_trace):
    budget = (28 * 28 * 64 + 14 * 14 * 64) * F32  # MobileNetV2-RNNPool's layerwise peak
    result = patch_recompute_memory(mnv2_trace, budget, recompute_until="features.6")
    assert result.report.peak_bytes == (56 * 56 * 24 + 28 * 28 * 32) * F32  # features.4: 0.38 MB
    assert result.cut_after == "features.3"
    assert result.macs > mnv2_trace.macs
    with pytest.raises(ValueError, match="names no step"):
        patch_recompute_memory(mnv2_trace, budget, recompute_until="nowhere")


def test_bad_arguments_have_clear_messages(mnv2_trace):
    with pytest.raises(ValueError, match="unknown memory convention 'naive'; valid choices"):
        peak_memory(mnv2_trace, convention="naive")
    with pytest.raises(ValueError, match="unknown dtype 'int4'"):
        peak_memory(mnv2_trace, dtype="int4")
    with pytest.raises(ValueError, match="needs a budget"):
        peak_memory(mnv2_trace, convention="patch-recompute")
    with pytest.raises(ValueError, match="needs image_size"):
        peak_memory(nn.Conv2d(3, 3, 1))
    assert "patch-recompute" in CONVENTIONS


def _liveness_by_definition(trace):
    """``liveness`` recomputed from its definition at every step: the maps produced and not yet last used (the
    step's inputs included) plus the step's new maps, and the number of live maps."""
    from repro.metrics.memory import _leaf_accounting

    acc = _leaf_accounting(trace)
    size = trace.activation_numel
    alive, out = set(trace.input_keys), []
    for i, unit in enumerate(acc.units):
        new = acc.new_outputs(i)
        live = alive | {k for k in unit.inputs if size(k) > 0}
        out.append(
            (
                unit.name,
                sum(size(k) for k in live) + sum(size(k) for k in new),
                f"{len(live)} live + {len(new)} new maps",
            )
        )
        alive = {k for k in alive | set(new) if acc.last_use.get(k, -1) > i}
    return out


@pytest.mark.parametrize("name", ["resnet18", "googlenet", "densenet121_rnnpool", "mobilenetv2_035_rnnpool_vww"])
def test_liveness_kept_step_by_step_equals_its_definition(name):
    from repro.metrics.model_cache import build_profile_model

    trace = trace_model(build_profile_model(name, 10 if "vww" not in name else 2), 224)
    events = peak_memory(trace, convention="liveness").events
    assert [(e.step, e.elements, e.detail) for e in events] == _liveness_by_definition(trace)
