"""paper_tables/ through repro.records: every file validates, malformed files give one clear PaperTableError, the
printed text of a number survives loading, and the one tolerance rule (rounded / truncated printing, slack)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from repro.records.reported import PaperTable, PaperTableError, load_table, load_tables
from repro.records.tolerance import Tolerance, printed_decimals, tolerance_for

REPO = Path(__file__).resolve().parents[1]


def _table(**cell) -> dict:
    base = {
        "id": "c1",
        "row": "r",
        "column": "c",
        "entry": "e1",
        "metric": "accuracy",
        "value": 90.0,
        "unit": "%",
        "kind": "paper_table",
        "source": "paper p.1",
    }
    base.update(cell)
    return {"paper": "rnnpool", "table": "t", "title": "T", "source": "URL", "cells": [base]}


def test_repo_paper_tables_all_valid():
    tables, problems = load_tables(REPO / "paper_tables")
    assert not problems, [p.message for p in problems]
    keys = {t.key for t in tables}
    assert {"sap/abstract_claims", "rnnpool/table4", "rnnpool/table18", "condensation/abstract_claims"} <= keys
    assert sum(len(t.cells) for t in tables if t.table.startswith("stl10_logs")) == 292


def test_valid_cell_parses_with_defaults():
    table = PaperTable.from_dict(_table(), path="x.yaml")
    cell = table.cells[0]
    assert cell.selection == "best" and cell.value == 90.0 and table.by_id["c1"] is cell


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"metric": "acc"}, "metric 'acc' is not one of"),
        ({"unit": "MiB"}, "unit 'MiB' is not one of"),
        ({"kind": "blog"}, "kind 'blog'"),
        ({"value": "high"}, "value must be a number or null"),
        ({"selection": "median"}, "selection 'median'"),
        ({"tolerance": {"abs": -1}}, "tolerance.abs must be a finite number >= 0"),
        ({"printing": "sometimes"}, "printing 'sometimes' is not one of"),
        ({"tolerance": {"pct": 1}}, "tolerance must be a mapping with keys"),
        ({"entry": None}, "needs 'entry'"),
        ({"colour": "red"}, "unknown field(s) ['colour']"),
        ({"metric": "claim", "entry": None}, "needs 'claim'"),
    ],
)
def test_malformed_cell_names_file_cell_and_field(change, needle):
    with pytest.raises(PaperTableError) as info:
        PaperTable.from_dict(_table(**change), path="paper_tables/x.yaml")
    msg = str(info.value)
    assert msg.startswith("paper_tables/x.yaml: cell 'c1'") and needle in msg


def test_missing_value_key_is_explained():
    data = _table()
    del data["cells"][0]["value"]
    with pytest.raises(PaperTableError, match=r"missing field 'value' .*value: null"):
        PaperTable.from_dict(data, path="x.yaml")


def test_duplicate_ids_and_top_level_errors():
    data = _table()
    data["cells"].append(dict(data["cells"][0]))
    with pytest.raises(PaperTableError, match="'c1' appears twice"):
        PaperTable.from_dict(data)
    with pytest.raises(PaperTableError, match="paper 'other' is not one of"):
        PaperTable.from_dict({**_table(), "paper": "other"})
    with pytest.raises(PaperTableError, match="missing top-level key 'cells'"):
        PaperTable.from_dict({k: v for k, v in _table().items() if k != "cells"})


def test_bad_yaml_and_bad_file_do_not_stop_the_others(tmp_path):
    (tmp_path / "good.yaml").write_text(yaml.safe_dump(_table()))
    (tmp_path / "broken.yaml").write_text("paper: [unclosed\n")
    bad = _table(metric="nope")
    bad["table"] = "t2"
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    tables, problems = load_tables(tmp_path)
    assert [t.key for t in tables] == ["rnnpool/t"]
    assert len(problems) == 2
    assert any("not valid YAML" in p.message for p in problems)
    with pytest.raises(PaperTableError, match="not valid YAML"):
        load_table(tmp_path / "broken.yaml")


def test_the_printed_text_survives_loading(tmp_path):
    """YAML reads ``2.0`` as a number equal to 2; the tolerance needs its printed decimal."""
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump(_table(metric="params", unit="M", value=1.0)).replace("value: 1.0", "value: 2.0"))
    cell = load_table(path).cells[0]
    assert (cell.value, cell.printed) == (2.0, "2.0")
    assert cell.bounds() == pytest.approx((1.95, 2.05))  # rounded at one decimal, not +-0.5 as for a printed "2"
    assert not cell.allows(2.216686) and cell.allows(2.04)
    path.write_text(yaml.safe_dump(_table(metric="params", unit="M", value="2.20")))
    cell = load_table(path).cells[0]
    assert cell.printed == "2.20" and cell.bounds() == pytest.approx((2.195, 2.205))


@pytest.mark.parametrize(
    ("text", "decimals"), [("2.0", 1), ("33.68", 2), ("300", 0), ("4.03", 2), ("1e-3", 3), ("2.5e1", 0)]
)
def test_printed_decimals(text, decimals):
    assert printed_decimals(text) == decimals


def test_rounded_truncated_and_either_printing():
    rounded = Tolerance(printing="rounded", decimals=2)
    truncated = Tolerance(printing="truncated", decimals=2)
    either = Tolerance(printing="rounded_or_truncated", decimals=2)
    assert rounded.bounds(2.29) == pytest.approx((2.285, 2.295))
    assert truncated.bounds(2.29) == pytest.approx((2.29, 2.30))
    assert either.bounds(2.29) == pytest.approx((2.285, 2.30))
    ours = 2.2969  # 2.30 when rounded, 2.29 when truncated
    assert not rounded.allows(ours, 2.29) and truncated.allows(ours, 2.29) and either.allows(ours, 2.29)
    assert not truncated.allows(2.2899, 2.29) and rounded.allows(2.2899, 2.29)
    assert Tolerance(abs=0.5, rel=0.1).bounds(10.0) == pytest.approx((8.5, 11.5))  # abs and rel add up


def test_metric_defaults_and_own_tolerance():
    assert tolerance_for("params", "M", "2.2") == Tolerance(printing="rounded", decimals=1)
    assert tolerance_for("params", "M", "2.2", printing="truncated").bounds(2.2) == pytest.approx((2.2, 2.3))
    assert tolerance_for("macs", "G", "0.20") == Tolerance(rel=0.02)
    assert tolerance_for("accuracy", "%", "93.4") == Tolerance(abs=1.0)
    assert tolerance_for("map", "%", "85.2") == Tolerance(abs=1.0)
    assert tolerance_for("map", "fraction", "0.85") == Tolerance(abs=0.01)
    assert tolerance_for("params", "M", "2.2", own={"abs": 0.05}) == Tolerance(abs=0.05)


def test_a_table_declares_its_printing_and_a_cell_may_override_it():
    data = _table(metric="peak_memory", unit="MB", value=2.29)
    data["printing"] = "truncated"
    data["cells"].append({**data["cells"][0], "id": "c2", "printing": "rounded"})
    table = PaperTable.from_dict(data)
    assert table.by_id["c1"].bounds() == pytest.approx((2.29, 2.30))
    assert table.by_id["c2"].bounds() == pytest.approx((2.285, 2.295))
