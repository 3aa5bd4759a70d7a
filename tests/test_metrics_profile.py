"""Profiles: one model, pipeline entries (deduplicated, in two processes), renderings, the aggressive-downsampling
ratios and the ``repro profile`` command (which uses each registered model's own defaults)."""

from __future__ import annotations

import io
import json
from dataclasses import replace

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from repro.cli import app
from repro.metrics.profile import profile_entries, profile_model
from repro.metrics.profile_render import render_profiles
from repro.metrics.ratios import aggressive_baselines, downsampling_ratios
from repro.records.entries import Entry
from repro.records.profile import peak_column


def _entry(eid: str, arch: str, size=64, **kw) -> Entry:
    return Entry(
        id=eid,
        file="e.yaml",
        group="g",
        task="classification",
        dataset="d",
        arch=arch,
        image_size=size,
        num_classes=kw.pop("num_classes", 10),
        **kw,
    )


@pytest.fixture(scope="module")
def resnet_profile():
    return profile_model("resnet18-nlp-1222", 64, num_classes=10, conventions=("layerwise", "io-sum"))


def test_profile_record(resnet_profile):
    p = resnet_profile
    assert p.params == p.trainable_params == 13_484_362  # reference_spec §3
    assert p.macs > p.attention_macs > 0
    assert p.peak_bytes("layerwise") == p.memory["layerwise"].peak_bytes > 0
    assert [name for name, _ in p.feature_shapes] == ["layer1", "layer2", "layer3", "layer4"]
    assert p.feature_shapes[0][1] == (64, 16, 16)
    with pytest.raises(KeyError, match="was not profiled"):
        p.peak_bytes("liveness")
    row = p.to_row("e")
    assert row.metric("params", "M") == pytest.approx(13.484362) and row.peak("layerwise") == p.peak_bytes()


def test_renderings(resnet_profile):
    table = render_profiles([resnet_profile], "table")
    assert "layer1 64x16x16" in table and "layerwise" in table and "MB = 2^20 bytes" in table
    frame = pd.read_csv(io.StringIO(render_profiles([resnet_profile], "csv")))
    assert frame.loc[0, "params"] == 13_484_362 and frame.loc[0, "schema"] == "repro.profile/2"
    assert frame.loc[0, peak_column("layerwise")] == resnet_profile.peak_bytes("layerwise")
    data = json.loads(render_profiles([resnet_profile], "json"))
    assert data[0]["memory"]["io-sum"]["peak_bytes"] == resnet_profile.peak_bytes("io-sum")
    with pytest.raises(ValueError, match="unknown format 'xml'"):
        render_profiles([resnet_profile], "xml")


def test_entries_are_profiled_once_per_configuration_errors_recorded_and_workers_agree():
    entries = [
        _entry("a32", "resnet18-skip-1222", 32),
        _entry("a64", "resnet18-skip-1222", 64),
        _entry("again", "resnet18-skip-1222", 64),  # same configuration as a64: traced once, its own id
        _entry("q", "mobilenetv2", 224, model_opts={"width_mult": 0.5}),
        _entry("bad", "resnet18-nosuchpool-1222"),
    ]
    rows = profile_entries(entries, conventions=("layerwise",), dtype=lambda e: "int8" if e.id == "q" else "fp32")
    assert [r.entry for r in rows] == ["a32", "a64", "again", "q", "bad"]
    assert rows[1].peak() == 4 * rows[0].peak()  # maps scale with the area
    assert replace(rows[2], entry="a64") == rows[1]
    assert rows[3].dtype == "int8" and rows[3].peak() == (112 * 112 * 16 + 112 * 112 * 8)
    assert "nosuchpool" in rows[4].error and rows[4].params is None
    assert (
        profile_entries(
            entries, conventions=("layerwise",), workers=2, dtype=lambda e: "int8" if e.id == "q" else "fp32"
        )
        == rows
    )


def test_aggressive_baselines_and_ratios():
    assert aggressive_baselines("resnet18-nlp_headfix2-4222") == ("resnet18-nlp_headfix2-1222", "resnet18-skip-1222")
    assert aggressive_baselines("prepool-nlp-4-resnet18-skip-1222") == ("resnet18-skip-1222", "resnet18-skip-1222")
    assert aggressive_baselines("mobilenetv3_small-skip-22121111211") is None  # its standard strides
    assert aggressive_baselines("resnet18-nlp-1222") is None
    names = ("resnet18-skip-1222", "prepool-skip-8-mobilenet_v2-skip-1222121", "mobilenet_v2-skip-1222121")
    rows = profile_entries([_entry(n, n) for n in names], conventions=("layerwise",))
    (ratio,) = downsampling_ratios(rows)
    base, mine = rows[2].peak(), rows[1].peak()
    assert ratio.arch == names[1] and ratio.ratio_vs_standard == pytest.approx(base / mine) and base > 4 * mine


def test_cli_profile_arch_entries_and_model_defaults(tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["profile", "resnet18-skip-4222", "--image-size", "64", "--convention", "io-sum"])
    assert result.exit_code == 0, result.output
    assert "layer1 64x4x4" in result.output and "io-sum" in result.output
    face = runner.invoke(app, ["profile", "rnnpool_face_c"])  # 2 classes at 480x640: the model's own defaults
    assert face.exit_code == 0, face.output
    assert "480x640" in face.output and "|         2 |" in face.output
    entries = tmp_path / "e.yaml"
    data = {
        "entries": {
            "m": {
                "task": "classification",
                "dataset": "d",
                "arch": "mobilenet_v2-skip-1222121",
                "image_size": 32,
                "num_classes": 10,
            }
        }
    }
    entries.write_text(yaml.safe_dump(data))
    out = tmp_path / "results" / "profile.csv"
    result = runner.invoke(app, ["profile", "--entries", str(entries), "--format", "csv", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert pd.read_csv(out).loc[0, "entry"] == "m"
    result = runner.invoke(app, ["profile", "resnet18-skip-1222", "--convention", "bogus"])
    assert result.exit_code == 2 and "bogus" in result.output


def test_patch_recompute():
    p = profile_model(
        "mobilenetv2",
        224,
        conventions=("layerwise",),
        recompute={"budget_from": "mobilenetv2_rnnpool", "until": "features.6"},
    )
    assert p.peak_bytes("patch-recompute") == (56 * 56 * 24 + 28 * 28 * 32) * 4
    assert p.recompute_macs > 3 * p.macs
    with pytest.raises(ValueError, match="budget_from"):
        profile_model("mobilenetv2", 64, recompute={"until": "features.6"})


def test_cells_are_computed_beside_the_entries_that_build_their_model():
    from repro.metrics.cells import CellEvaluator, cell_values, model_cells
    from repro.metrics.profile import profile_entries_and_cells
    from repro.records.reported import load_tables

    tables, _ = load_tables("paper_tables")
    table_keys = {"rnnpool/table1", "rnnpool/vww_text"}
    picked = [t for t in tables if t.key in table_keys]
    cells = [
        (key, cell)
        for key, cell in model_cells(picked)
        if cell.model["name"].startswith(("mobilenetv2_035", "mobilenetv2"))
        and cell.model["name"] != "mobilenetv2_rnnpool"
    ]
    assert {c.convention for _, c in cells} >= {"patch-recompute", "layerwise"}  # a budget model of its own too
    # one entry builds the same model as two vww cells (at another size: traced for the cells); none the others
    entries = [_entry("vww", "mobilenetv2_035_rnnpool_vww", 96, num_classes=2, model_opts={"last_layer_rnnpool": True})]
    expected = [v for v in cell_values(picked, CellEvaluator()) if (v.table, v.cell) in {(k, c.id) for k, c in cells}]
    for workers in (1, 2):
        rows, values = profile_entries_and_cells(entries, cells, conventions=("layerwise",), workers=workers)
        assert [r.entry for r in rows] == ["vww"] and rows[0].error is None
        assert values == expected and all(v.value is not None for v in values)


def test_the_model_cache_builds_and_traces_once_and_does_not_keep_failures():
    from repro.metrics.model_cache import ModelCache

    cache = ModelCache()
    model = cache.model("resnet18-skip-1222", 10, {})
    assert cache.model("resnet18-skip-1222", 10, None) is model
    assert cache.trace("resnet18-skip-1222", 10, {}, 32) is cache.trace("resnet18-skip-1222", 10, None, "32")
    assert cache.trace("resnet18-skip-1222", 10, {}, 64) is not cache.trace("resnet18-skip-1222", 10, {}, 32)
    for _ in range(2):  # asking again raises again
        with pytest.raises(ValueError, match="nosuchpool"):
            cache.model("resnet18-nosuchpool-1222", 10, {})


def test_meta_builds_skip_the_initialisers_and_restore_them():
    import torch
    from torch import nn

    from repro.metrics.model_cache import build_profile_model
    from repro.models import build_model

    originals = {name: getattr(nn.init, name) for name in ("kaiming_normal_", "uniform_", "zeros_")}
    fast = build_profile_model("mobilenet_v2-nlp_headfix2-1222121", 10)
    assert {name: getattr(nn.init, name) for name in originals} == originals
    with torch.device("meta"):
        plain = build_model("mobilenet_v2-nlp_headfix2-1222121", 10)
    assert repr(fast) == repr(plain)
    assert {k: (v.shape, v.dtype) for k, v in fast.state_dict().items()} == {
        k: (v.shape, v.dtype) for k, v in plain.state_dict().items()
    }
    with pytest.raises(ValueError):
        build_profile_model("resnet18-nosuchpool-1222", 10)
    assert {name: getattr(nn.init, name) for name in originals} == originals
