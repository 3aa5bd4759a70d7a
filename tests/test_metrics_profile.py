"""Profile records, renderings, entries files, the aggressive-downsampling ratios and the ``repro profile`` command."""

from __future__ import annotations

import io
import json

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from repro.cli import app
from repro.metrics.profile import (
    aggressive_baselines,
    default_tolerance,
    downsampling_ratios,
    load_entries,
    profile_entries,
    profile_model,
    render_profiles,
)


@pytest.fixture(scope="module")
def resnet_profile():
    return profile_model("resnet18-nlp-1222", 64, conventions=("layerwise", "io-sum"))


def test_profile_record(resnet_profile):
    p = resnet_profile
    assert p.params == p.trainable_params == 13_484_362  # reference_spec §3
    assert p.macs > p.attention_macs > 0
    assert p.peak_bytes("layerwise") == p.memory["layerwise"].peak_bytes > 0
    assert [name for name, _ in p.feature_shapes] == ["layer1", "layer2", "layer3", "layer4"]
    assert p.feature_shapes[0][1] == (64, 16, 16)
    with pytest.raises(KeyError, match="was not profiled"):
        p.peak_bytes("liveness")


def test_renderings(resnet_profile):
    table = render_profiles([resnet_profile], "table")
    assert "layer1 64x16x16" in table and "layerwise" in table and "MB = 2^20 bytes" in table
    frame = pd.read_csv(io.StringIO(render_profiles([resnet_profile], "csv")))
    assert frame.loc[0, "params"] == 13_484_362
    assert frame.loc[0, "peak_layerwise_bytes"] == resnet_profile.peak_bytes("layerwise")
    data = json.loads(render_profiles([resnet_profile], "json"))
    assert data[0]["memory"]["io-sum"]["peak_bytes"] == resnet_profile.peak_bytes("io-sum")
    with pytest.raises(ValueError, match="unknown format 'xml'"):
        render_profiles([resnet_profile], "xml")


def test_profile_entries_sizes_dtype_and_errors(tmp_path):
    path = tmp_path / "entries.yaml"
    path.write_text(
        yaml.safe_dump(
            [
                {"id": "a", "arch": "resnet18-skip-1222", "image_sizes": [32, 64]},
                {"id": "q", "model": "mobilenetv2", "model_opts": {"width_mult": 0.5}, "dtype": "int8"},
                {"id": "bad", "arch": "resnet18-nosuchpool-1222", "image_size": 64},
            ]
        )
    )
    frame = profile_entries(load_entries(path), errors="record")
    assert list(frame["id"]) == ["a@32", "a@64", "q", "bad"]
    a32, a64 = frame.iloc[0], frame.iloc[1]
    assert a64["peak_layerwise_bytes"] == 4 * a32["peak_layerwise_bytes"]  # maps scale with the area
    q = frame.iloc[2]
    assert q["dtype"] == "int8" and q["peak_layerwise_bytes"] == (112 * 112 * 16 + 112 * 112 * 8)
    assert "nosuchpool" in frame.iloc[3]["error"]
    with pytest.raises(ValueError):
        profile_entries([{"id": "bad", "arch": "resnet18-nosuchpool-1222"}])


def test_pipeline_entries_layout(tmp_path):
    path = tmp_path / "pipe.yaml"
    path.write_text(yaml.safe_dump({"entries": {"e1": {"arch": "resnet18-skip-1222", "image_size": 96}}}))
    assert load_entries(path) == [{"id": "e1", "arch": "resnet18-skip-1222", "image_size": 96}]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_entries(tmp_path / "missing.yaml")


def test_aggressive_baselines_and_ratios():
    assert aggressive_baselines("resnet18-nlp_headfix2-4222") == ("resnet18-nlp_headfix2-1222", "resnet18-skip-1222")
    assert aggressive_baselines("prepool-nlp-4-resnet18-skip-1222") == ("resnet18-skip-1222", "resnet18-skip-1222")
    assert aggressive_baselines("mobilenetv3_small-skip-22121111211") is None  # its standard strides
    assert aggressive_baselines("resnet18-nlp-1222") is None
    entries = [
        {"id": n, "arch": n, "image_size": 64}
        for n in ("resnet18-skip-1222", "prepool-skip-8-mobilenet_v2-skip-1222121", "mobilenet_v2-skip-1222121")
    ]
    frame = profile_entries(entries, conventions=("layerwise",))
    ratios = downsampling_ratios(frame)
    row = ratios.set_index("arch").loc["prepool-skip-8-mobilenet_v2-skip-1222121"]
    base = frame.set_index("model").loc["mobilenet_v2-skip-1222121", "peak_layerwise_bytes"]
    mine = frame.set_index("model").loc["prepool-skip-8-mobilenet_v2-skip-1222121", "peak_layerwise_bytes"]
    assert row["ratio_vs_standard"] == pytest.approx(base / mine) and row["ratio_vs_standard"] > 4


def test_default_tolerances():
    assert default_tolerance("peak_memory", 2.29, "MB") == {"abs": 0.01}
    assert default_tolerance("peak_memory", 33.68, "KB") == {"abs": 0.01}
    assert default_tolerance("macs", 0.3, "G") == {"rel": 0.02}
    assert default_tolerance("params", 4.03, "M") == pytest.approx({"abs": 0.005})
    assert default_tolerance("accuracy", 90.0, "%") is None


def test_cli_profile_arch_and_entries(tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["profile", "resnet18-skip-4222", "--image-size", "64", "--convention", "io-sum"])
    assert result.exit_code == 0, result.output
    assert "layer1 64x4x4" in result.output and "io-sum" in result.output
    entries = tmp_path / "e.yaml"
    entries.write_text(yaml.safe_dump([{"id": "m", "arch": "mobilenet_v2-skip-1222121", "image_size": 32}]))
    out = tmp_path / "results" / "profile.csv"
    result = runner.invoke(app, ["profile", "--entries", str(entries), "--format", "csv", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert pd.read_csv(out).loc[0, "id"] == "m"
    result = runner.invoke(app, ["profile", "resnet18-skip-1222", "--convention", "bogus"])
    assert result.exit_code != 0 and "bogus" in result.output


def test_patch_recompute_columns_from_an_entry():
    entry = {"id": "m", "model": "mobilenetv2", "image_size": 224}
    entry["recompute"] = {"budget_from": "mobilenetv2_rnnpool", "until": "features.6"}
    row = profile_entries([entry], conventions=("layerwise",)).iloc[0]
    assert row["peak_patch-recompute_bytes"] == (56 * 56 * 24 + 28 * 28 * 32) * 4
    assert row["macs_patch-recompute"] > 3 * row["macs"]
    with pytest.raises(ValueError, match="budget_from"):
        profile_model("mobilenetv2", 64, recompute={"until": "features.6"})
