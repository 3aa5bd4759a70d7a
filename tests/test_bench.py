"""The benchmark suite: timing and memory functions, shape discovery and a tiny run of ``python -m repro.bench``."""

from __future__ import annotations

import csv

import pytest
import torch

from repro.bench.__main__ import main
from repro.bench.layers import LayerShape, model_pool_shapes, parse_shape
from repro.bench.report import format_markdown
from repro.bench.timing import peak_memory_bytes, time_call


def test_peak_memory_sees_a_temporary_allocation():
    size = 4 * 2**20  # 4 MiB of float32

    def fn():
        t = torch.empty(size // 4)
        t.fill_(1.0)
        del t

    peak = peak_memory_bytes(fn)
    assert size <= peak < 2 * size


def test_time_call_reports_median_and_validates_repeats():
    median, iqr = time_call(lambda: None, warmup=0, repeats=3)
    assert median >= 0 and iqr >= 0
    with pytest.raises(ValueError, match="repeats must be >= 1"):
        time_call(lambda: None, repeats=0)


def test_parse_shape():
    assert parse_shape("64:32:8") == LayerShape("C64", 64, 32, 32, 2, 8, 1)
    assert parse_shape("32:64x48:4:4:2") == LayerShape("C32", 32, 64, 48, 4, 4, 2)
    with pytest.raises(ValueError, match="expected C:H"):
        parse_shape("64x32")


def test_pool_sites_of_resnet18_at_128px():
    shapes = model_pool_shapes("resnet18-nlp-1222", 128)
    got = [(s.channels, s.height, s.stride, s.heads, s.patch_size, s.win_norm) for s in shapes]
    # Stage-end pools at the pre-downsampling resolution; MINE heads 8, 16, 32 in stages 2-4.
    assert got == [(128, 32, 2, 8, 1, True), (256, 16, 2, 16, 1, True), (512, 8, 2, 32, 1, True)]
    assert shapes[0].site == "resnet18-nlp-1222:layer2.pool"


def test_markdown_skips_empty_columns():
    text = format_markdown([{"a": 1.0, "b": None}, {"a": 0.5}], [("a", "A"), ("b", "B")])
    assert text.splitlines()[0] == "| A |" and "| 0.5 |" in text


def test_layers_cli_smoke(tmp_path, capsys):
    out = tmp_path / "layers"
    argv = ["layers", "--shape", "4:8:2", "--pools", "nlp,maxp", "--batch-size", "2", "--warmup", "0"]
    code = main([*argv, "--repeats", "1", "--out", str(out), "--quiet"])
    assert code == 0
    with open(out.with_suffix(".csv")) as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["pool"], r["impl"]) for r in rows] == [
        ("conv3x3", "-"),
        ("nlp", "fast"),
        ("nlp", "faithful"),
        ("maxp", "-"),
    ]
    assert float(rows[0]["x_vs_conv"]) == 1.0
    fast, faithful = rows[1], rows[2]
    assert float(fast["speedup_vs_faithful"]) == pytest.approx(float(faithful["ms"]) / float(fast["ms"]))
    assert all(float(r["peak_mib"]) > 0 for r in rows)
    md = out.with_suffix(".md").read_text()
    assert "speed-up vs faithful" in md and "torch profiler memory view" in md
    assert "| conv3x3 |" in capsys.readouterr().out


def test_models_cli_smoke(tmp_path):
    out = tmp_path / "models"
    argv = ["models", "--arch", "resnet18-nlp-1222", "--arch", "resnet18-skip-1222", "--image-size", "32"]
    options = ["--batch-size", "2", "--warmup", "0", "--repeats", "1", "--no-memory", "--out", str(out)]
    assert main([*argv, "--baseline", "twin", *options]) == 0
    with open(out.with_suffix(".csv")) as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["arch"], r["impl"]) for r in rows] == [
        ("resnet18-nlp-1222", "fast"),
        ("resnet18-nlp-1222", "faithful"),
        ("resnet18-skip-1222", "-"),
    ]
    assert all(r["baseline"] == "resnet18-skip-1222" for r in rows)
    nlp, skip = rows[0], rows[2]
    assert float(skip["x_vs_baseline"]) == 1.0 and float(skip["macs_vs_baseline"]) == 1.0
    assert float(nlp["x_vs_baseline"]) == pytest.approx(float(nlp["ms"]) / float(skip["ms"]))
    assert float(nlp["macs_vs_baseline"]) == pytest.approx(float(nlp["gmacs"]) / float(skip["gmacs"]))
    ratio = float(nlp["x_vs_baseline"]) / float(nlp["macs_vs_baseline"])
    assert float(nlp["time_per_mac_vs_baseline"]) == pytest.approx(ratio)


def test_cli_rejects_unknown_pool(tmp_path):
    with pytest.raises(SystemExit, match="unknown pools"):
        main(["layers", "--shape", "4:8:2", "--pools", "nlpp", "--out", str(tmp_path / "x")])


def test_attention_cli_compares_kernels_with_sdpa(tmp_path):
    out = tmp_path / "attention"
    argv = ["attention", "--shape", "2:2:20:8", "--shape", "1:1:9:16", "--warmup", "0", "--repeats", "1"]
    assert main([*argv, "--out", str(out), "--quiet"]) == 0
    with open(out.with_suffix(".csv")) as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["head_dim"], r["impl"]) for r in rows] == [
        ("8", "kernels"),
        ("8", "sdpa"),
        ("16", "kernels"),
        ("16", "sdpa"),
    ]
    for kernels, sdpa in (rows[0:2], rows[2:4]):
        assert float(kernels["speedup_vs_sdpa"]) == pytest.approx(float(sdpa["ms"]) / float(kernels["ms"]))
        assert float(kernels["max_abs_diff"]) < 1e-5
    with pytest.raises(SystemExit, match="B:heads:N:d"):
        main(["attention", "--shape", "2:2:20", "--out", str(out)])


def test_layers_cli_times_the_fast_path_without_kernels(tmp_path, monkeypatch):
    from repro.layers import small_head_attention as sha

    calls = []
    original = sha._SmallHeadAttention.apply
    monkeypatch.setattr(sha._SmallHeadAttention, "apply", lambda *a: calls.append(1) or original(*a))
    out = tmp_path / "layers"

    def run(impls: str) -> int:
        argv = ["layers", "--shape", "16:8:2", "--pools", "nlp", "--impls", impls, "--batch-size", "2"]
        return main([*argv, "--warmup", "0", "--repeats", "1", "--no-memory", "--out", str(out), "--quiet"])

    assert run("fast-sdpa") == 0 and calls == []  # d = 16/2 = 8: the fast path would use the kernels
    assert run("fast") == 0 and calls
    with pytest.raises(SystemExit, match="unknown impls"):
        run("fastest")


def test_detection_cli_times_a_training_step_per_detector(tmp_path):
    out = tmp_path / "det"
    argv = ["detection", "--detector", "ssd:mobilenet-skip-1222121", "--detector", "yolov3:mobilenet-skip-1222121"]
    code = main([*argv, "--image-size", "64", "--warmup", "0", "--repeats", "1", "--no-memory", "--out", str(out)])
    assert code == 0
    rows = list(csv.DictReader((tmp_path / "det.csv").open()))
    assert [(r["detector"], r["recipe"]) for r in rows] == [("ssd", "ssd-smoke"), ("yolov3", "yolov3-smoke")]
    assert all(float(r["ms"]) > 0 for r in rows) and float(rows[0]["x_vs_baseline"]) == 1.0
    assert "python -m repro.bench detection" in (tmp_path / "det.md").read_text()
    with pytest.raises(SystemExit, match="DETECTOR:ARCH"):
        main(["detection", "--detector", "ssd", "--out", str(out)])


def test_cpu_load_runs_busy_processes_only_inside_the_block():
    import os
    import time

    from repro.bench.timing import cpu_load

    start = os.times()
    with cpu_load(1):
        time.sleep(1.0)
    spent = os.times()
    children = (spent.children_user + spent.children_system) - (start.children_user + start.children_system)
    assert children > 0.2  # the busy loop used a CPU while the block ran, and was waited for
    with pytest.raises(ValueError, match="processes"), cpu_load(-1):
        pass


def test_training_step_macs_counts_every_backward_product():
    """Forward + backward MACs: a conv and a depthwise conv (whose backward PyTorch's formula overcounts) cost three
    times their forward, the self-attentive pool's attention backward twice its forward (dQ, dK, dV, dP)."""
    from torch import nn

    from repro.bench.throughput import matmul_size, training_step_macs
    from repro.layers import create_pool
    from repro.metrics.macs import attention_macs
    from repro.metrics.trace import count_macs

    x = torch.randn(2, 8, 10, 10, requires_grad=True)
    for conv in (nn.Conv2d(8, 16, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1, groups=8)):
        forward = 2 * 100 * conv.out_channels * (conv.in_channels // conv.groups) * 9
        assert training_step_macs(lambda conv=conv: conv(x).sum().backward()) == 3 * forward
    pool = create_pool("nlp", 8, 2, heads=2)
    forward = 2 * count_macs(pool, 10).total
    assert 2 * attention_macs(100, 8, projections=False) > 0  # so the next line needs the attention backward
    assert training_step_macs(lambda: pool(x).sum().backward()) == 3 * forward
    assert matmul_size(10**9) == 1000 and matmul_size(1) == 16


def test_strided_twin_matches_backbone_and_strides():
    from repro.bench.models import strided_twin

    names = ["resnet18-skip-1222", "mobilenet_v2-skip-1222121", "resnet18-nlp-1222"]
    names.append("mobilenet_v2-nlp_headfix2-1222121")
    assert strided_twin("resnet18-nlp-1222", names) == "resnet18-skip-1222"
    assert strided_twin("mobilenet_v2-nlp_headfix2-1222121", names) == "mobilenet_v2-skip-1222121"
    assert strided_twin("resnet18-skip-1222", names) == "resnet18-skip-1222"
    assert strided_twin("resnet18-nlp-2222", names) is None
