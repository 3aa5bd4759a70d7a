"""paper_tables/ schema: every file in the repo validates; malformed files give one clear PaperTableError."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from repro.tables.load import load_table, load_tables
from repro.tables.schema import PaperTable, PaperTableError

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
        ({"tolerance": {"abs": -1}}, "tolerance.abs must be a number >= 0"),
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
