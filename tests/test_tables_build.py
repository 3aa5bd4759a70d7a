"""repro tables end to end on a small tree: verdicts, rendering, traceability, strict mode, broken inputs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from repro.pipeline.cli import tables_command
from repro.tables.build import make_tables
from repro.tables.verdict import Verdict


def _tree(tmp_path: Path, *, profile: str = "smoke", accuracy: float = 50.0) -> Path:
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"profile": profile}))
    (tmp_path / "pipelines").mkdir()
    entries = {
        "e1": {"task": "classification", "dataset": "imagenet10", "model": "m", "image_size": 224, "num_classes": 10}
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
    (pt / "t1.yaml").write_text(
        yaml.safe_dump({"paper": "rnnpool", "table": "t1", "title": "Table 1", "source": "URL", "cells": cells})
    )
    other = {
        "paper": "rnnpool",
        "table": "t2",
        "title": "Table 2",
        "source": "URL",
        "cells": [{**common, "id": "p2", "column": "Params", "metric": "params", "value": 2.1, "unit": "M"}],
    }
    (pt / "t2.yaml").write_text(yaml.safe_dump(other))
    res = tmp_path / "results"
    (res / "metrics" / "g").mkdir(parents=True)
    record = {"entry": "e1", "status": "ok", "profile": profile, "accuracy": {"best": accuracy, "last": accuracy - 1}}
    (res / "metrics" / "g" / "e1.json").write_text(json.dumps(record))
    with (res / "profile.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["entry", "params", "macs", "peak_memory_layerwise_bytes"])
        w.writerow(["e1", 2_236_682, 300_774_272, 112 * 112 * 48 * 4])
    return tmp_path


def _run(root: Path, **kw):
    return make_tables(
        paper_tables=root / "paper_tables",
        results_dir=root / "results",
        pipelines=root / "pipelines",
        params_file=root / "params.yaml",
        **kw,
    )


def _verdicts(report) -> dict[str, Verdict]:
    return {j.cell.id: j.verdict for _, joined in report.tables for j in joined}


def test_smoke_verdicts_and_outputs(tmp_path):
    root = _tree(tmp_path)
    report = _run(root)
    v = _verdicts(report)
    assert v["params"] is Verdict.WITHIN  # 2.237 M vs 2.2 M (5 %)
    assert v["mem"] is Verdict.WITHIN  # 2.297 MB vs 2.29 MB
    assert v["macs"] is Verdict.OUTSIDE  # 0.301 G vs 0.20 G
    assert v["acc"] is Verdict.SMOKE and v["other"] is Verdict.NOT_RUN and v["nothing"] is Verdict.NO_REPORTED
    out = root / "results" / "tables" / "rnnpool"
    for suffix in ("md", "tex", "csv"):
        assert (out / f"t1.{suffix}").is_file()
    md = (out / "t1.md").read_text()
    assert "smoke — not comparable" in md and "| MobileNetV2 |" in md and "Profile: **smoke**" in md
    rows = {r["cell"]: r for r in csv.DictReader((out / "t1.csv").open())}
    # traceability: cell -> entry -> results file -> reported source
    assert rows["acc"]["entry"] == "e1" and rows["acc"]["result_file"].endswith("metrics/g/e1.json")
    assert rows["acc"]["source"] == "RNNPool.pdf p.5, Table 1" and rows["mem"]["result_file"].endswith("profile.csv")
    assert float(rows["params"]["reproduced"]) == pytest.approx(2.236682)
    index = (root / "results" / "README.md").read_text()
    assert (
        "profile: **smoke**" in index
        and "within tolerance: 2, outside tolerance: 2" in index
        and "git revision" in index
    )
    assert (root / "results" / "plots" / "reported_vs_reproduced.svg").is_file()
    assert (root / "results" / "plots" / "accuracy_vs_memory.png").is_file()


def test_full_profile_judges_accuracy_and_strict_exit(tmp_path, capsys):
    root = _tree(tmp_path, profile="full", accuracy=94.0)
    v = _verdicts(_run(root, plots=False))
    assert v["acc"] is Verdict.WITHIN
    args = (str(root / "paper_tables"), str(root / "results"), str(root / "pipelines"), str(root / "params.yaml"))
    assert tables_command(*args, plots=False, strict=False) == 0
    assert tables_command(*args, plots=False, strict=True) == 1  # the MACs cell is outside
    assert "outside tolerance: rnnpool/t1 macs" in capsys.readouterr().err


def test_corrupt_results_and_removed_value_give_messages_and_other_tables(tmp_path, capsys):
    root = _tree(tmp_path)
    (root / "results" / "metrics" / "g" / "e1.json").write_text("{not json")
    t2 = root / "paper_tables" / "rnnpool" / "t2.yaml"
    data = yaml.safe_load(t2.read_text())
    del data["cells"][0]["value"]
    t2.write_text(yaml.safe_dump(data))
    args = (str(root / "paper_tables"), str(root / "results"), str(root / "pipelines"), str(root / "params.yaml"))
    assert tables_command(*args, plots=False, strict=False) == 0
    err = capsys.readouterr().err
    assert "e1.json: corrupt results file" in err and "t2.yaml: cell 'p2': missing field 'value'" in err
    assert "Traceback" not in err
    assert (root / "results" / "tables" / "rnnpool" / "t1.md").is_file()
    assert not (root / "results" / "tables" / "rnnpool" / "t2.md").exists()
    index = (root / "results" / "README.md").read_text()
    assert "corrupt results file" in index and "missing field 'value'" in index
    v = _verdicts(_run(root, plots=False))
    assert v["acc"] is Verdict.NOT_RUN and v["params"] is Verdict.WITHIN


def test_missing_profile_and_unknown_entry_are_reported(tmp_path):
    root = _tree(tmp_path)
    (root / "results" / "profile.csv").unlink()
    t1 = root / "paper_tables" / "rnnpool" / "t1.yaml"
    data = yaml.safe_load(t1.read_text())
    data["cells"][3]["entry"] = "typo"
    t1.write_text(yaml.safe_dump(data))
    report = _run(root, plots=False)
    assert _verdicts(report)["params"] is Verdict.NOT_RUN
    assert any("profile.csv: missing" in p for p in report.problems)
    assert any("'typo'" in p for p in report.problems)
