"""repro tables end to end on a small tree whose results come from the real producers (the profile stage writes
profile.csv, MetricsRecord the metrics): verdicts, rendering, traceability, strict mode, broken inputs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from repro.cli import app
from repro.pipeline.stages import profile as profile_stage
from repro.records.entries import load_entries
from repro.records.reported import load_tables
from repro.records.runs import MetricsRecord
from repro.records.verdict import Verdict
from repro.tables.build import make_tables
from repro.utils.atomic import write_json_atomic

MNV2_PARAMS = 2_236_682  # torchvision MobileNetV2 with 10 classes
MNV2_PEAK_MB = 112 * 112 * 48 * 4 / 2**20  # 2.297: layerwise, first MBConv in + out


def _tree(tmp_path: Path, *, profile: str = "smoke", accuracy: float = 50.0) -> Path:
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"profile": profile}))
    (tmp_path / "pipelines").mkdir()
    entries = {
        "e1": {
            "task": "classification",
            "dataset": "imagenet10",
            "model": "mobilenetv2",
            "image_size": 224,
            "num_classes": 10,
        }
    }
    (tmp_path / "pipelines" / "p.yaml").write_text(yaml.safe_dump({"group": "g", "entries": entries}))
    pt = tmp_path / "paper_tables" / "rnnpool"
    pt.mkdir(parents=True)
    common = {"entry": "e1", "kind": "paper_table", "source": "RNNPool.pdf p.5, Table 1", "row": "MobileNetV2"}
    cells = [
        {**common, "id": "params", "column": "Params", "metric": "params", "value": 2.2, "unit": "M"},
        {
            **common,
            "id": "mem",
            "column": "Peak RAM",
            "metric": "peak_memory",
            "value": 2.29,
            "unit": "MB",
            "convention": "layerwise",
        },
        {
            **common,
            "id": "mem-rounded",
            "column": "Peak RAM",
            "metric": "peak_memory",
            "value": 2.29,
            "unit": "MB",
            "printing": "rounded",
        },
        {**common, "id": "macs", "column": "MAdds", "metric": "macs", "value": 0.20, "unit": "G"},
        {**common, "id": "acc", "column": "Acc", "metric": "accuracy", "value": 94.2, "unit": "%"},
        {
            "id": "other",
            "row": "EXTD",
            "column": "Acc",
            "metric": "accuracy",
            "value": 90.0,
            "unit": "%",
            "kind": "paper_table",
            "source": "p.8",
            "notes": "competitor method",
        },
        {**common, "id": "nothing", "column": "Extra", "metric": "params", "value": None, "unit": "M"},
    ]
    table = {
        "paper": "rnnpool",
        "table": "t1",
        "title": "Table 1",
        "source": "URL",
        "printing": "truncated",
        "cells": cells,
    }
    (pt / "t1.yaml").write_text(yaml.safe_dump(table))
    other = {
        "paper": "rnnpool",
        "table": "t2",
        "title": "Table 2",
        "source": "URL",
        "cells": [{**common, "id": "p2", "column": "Params", "metric": "params", "value": 2.1, "unit": "M"}],
    }
    (pt / "t2.yaml").write_text(yaml.safe_dump(other))
    res = tmp_path / "results"
    tables, _ = load_tables(tmp_path / "paper_tables")
    profile_stage.run(
        load_entries(tmp_path / "pipelines"),
        tables,
        out=res / "profile.csv",
        cells_out=res / "profile_cells.csv",
        workers=1,
    )
    record = MetricsRecord(
        entry="e1",
        group="g",
        task="classification",
        arch="mobilenetv2",
        pipeline_file="pipelines/p.yaml",
        profile=profile,
        status="ok",
        values={"accuracy": {"best": accuracy, "last": accuracy - 1}},
    )
    write_json_atomic(res / "metrics" / "g" / "e1.json", record.to_dict())
    return tmp_path


def _run(root: Path, profile: str = "smoke", **kw):
    return make_tables(
        entries=load_entries(root / "pipelines"),
        profile=profile,
        paper_tables=root / "paper_tables",
        results_dir=root / "results",
        **kw,
    )


def _verdicts(report) -> dict[str, Verdict]:
    return {j.cell.id: j.verdict for j in report.cells()}


def _cli(root: Path, *extra: str):
    args = ["tables", "--no-plots", "--paper-tables", str(root / "paper_tables"), "--results", str(root / "results")]
    args += ["--pipelines", str(root / "pipelines"), "--params", str(root / "params.yaml"), *extra]
    return CliRunner().invoke(app, args)


def test_smoke_verdicts_and_outputs(tmp_path):
    root = _tree(tmp_path)
    report = _run(root)
    v = _verdicts(report)
    assert v["params"] is Verdict.WITHIN  # 2.237 M rounds... the table says truncated: 2.2 <= 2.237 < 2.3
    assert v["mem"] is Verdict.WITHIN  # 2.297 MB truncates to 2.29
    assert v["mem-rounded"] is Verdict.OUTSIDE  # but rounds to 2.30
    assert v["macs"] is Verdict.OUTSIDE  # 0.301 G vs 0.20 G
    assert v["acc"] is Verdict.SMOKE and v["other"] is Verdict.NOT_RUN and v["nothing"] is Verdict.NO_REPORTED
    out = root / "results" / "tables" / "rnnpool"
    for suffix in ("md", "tex", "csv"):
        assert (out / f"t1.{suffix}").is_file()
    md = (out / "t1.md").read_text()
    assert "smoke — not comparable" in md and "| MobileNetV2 |" in md and "Profile: **smoke**" in md
    assert "truncated at 2 decimals" in md
    rows = {r["cell"]: r for r in csv.DictReader((out / "t1.csv").open())}
    # traceability: cell -> entry -> results file -> reported source
    assert rows["acc"]["entry"] == "e1" and rows["acc"]["result_file"].endswith("metrics/g/e1.json")
    assert rows["acc"]["source"] == "RNNPool.pdf p.5, Table 1" and rows["mem"]["result_file"].endswith("profile.csv")
    assert float(rows["params"]["reproduced"]) == pytest.approx(MNV2_PARAMS / 1e6)
    assert float(rows["mem"]["reproduced"]) == pytest.approx(MNV2_PEAK_MB)
    assert (rows["mem"]["lower"], rows["mem"]["upper"], rows["mem"]["printed"]) == ("2.29", "2.3", "2.29")
    index = (root / "results" / "README.md").read_text()
    assert "profile: **smoke**" in index and "within tolerance: 2, outside tolerance: 3" in index
    summary = json.loads((root / "results" / "summary.json").read_text())
    assert summary["verdicts"]["within"] == 2 and summary["tables"]["rnnpool/t1"]["outside"] == 2
    assert (root / "results" / "plots" / "reported_vs_reproduced.svg").is_file()
    assert (root / "results" / "plots" / "reported_vs_reproduced.csv").is_file()
    assert (root / "results" / "plots" / "accuracy_vs_memory.png").is_file()


def test_full_profile_judges_accuracy_and_strict_exit(tmp_path):
    root = _tree(tmp_path, profile="full", accuracy=94.0)
    assert _verdicts(_run(root, "full", plots=False))["acc"] is Verdict.WITHIN
    assert _cli(root).exit_code == 0
    strict = _cli(root, "--strict")
    assert strict.exit_code == 1 and "outside tolerance: rnnpool/t1 macs" in strict.output


def test_corrupt_results_and_removed_value_give_messages_and_other_tables(tmp_path):
    root = _tree(tmp_path)
    (root / "results" / "metrics" / "g" / "e1.json").write_text("{not json")
    t2 = root / "paper_tables" / "rnnpool" / "t2.yaml"
    data = yaml.safe_load(t2.read_text())
    del data["cells"][0]["value"]
    t2.write_text(yaml.safe_dump(data))
    result = _cli(root)
    assert result.exit_code == 0, result.output
    assert "e1.json: not valid JSON" in result.output and "t2.yaml: cell 'p2': missing field 'value'" in result.output
    assert "Traceback" not in result.output
    assert (root / "results" / "tables" / "rnnpool" / "t1.md").is_file()
    assert not (root / "results" / "tables" / "rnnpool" / "t2.md").exists()
    index = (root / "results" / "README.md").read_text()
    assert "not valid JSON" in index and "missing field 'value'" in index
    v = _verdicts(_run(root, plots=False))
    assert v["acc"] is Verdict.NOT_RUN and v["params"] is Verdict.WITHIN


def test_a_profile_of_another_schema_is_refused_not_misread(tmp_path):
    root = _tree(tmp_path)
    path = root / "results" / "profile.csv"
    path.write_text(path.read_text().replace("repro.profile/2", "repro.profile/1"))
    report = _run(root, plots=False)
    assert _verdicts(report)["params"] is Verdict.NOT_RUN
    assert any("schema 'repro.profile/1'" in p and "dvc repro -f profile" in p for p in report.problems)


def test_missing_profile_and_unknown_entry_are_reported(tmp_path):
    root = _tree(tmp_path)
    (root / "results" / "profile.csv").unlink()
    t1 = root / "paper_tables" / "rnnpool" / "t1.yaml"
    data = yaml.safe_load(t1.read_text())
    data["cells"][4]["entry"] = "typo"
    t1.write_text(yaml.safe_dump(data))
    report = _run(root, plots=False)
    assert _verdicts(report)["params"] is Verdict.NOT_RUN
    assert any("profile.csv: missing" in p for p in report.problems)
    assert any("'typo'" in p for p in report.problems)
