"""pipelines/*.yaml: entries load, groups index in sync with dvc.yaml, every table cell traceable to an entry."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from repro.pipeline.entries import EntryError, groups_index, load_entries, load_file
from repro.tables.load import load_tables

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def entries():
    return load_entries(REPO / "pipelines")


def test_entry_counts(entries):
    by_file: dict[str, int] = {}
    for e in entries.values():
        by_file[Path(e.file).name] = by_file.get(Path(e.file).name, 0) + 1
    assert by_file["sap_stl10.yaml"] == 146
    assert by_file["sap_detection.yaml"] >= 70  # Faster R-CNN, SSD, YOLOv3 backbones of reference_spec §4.2
    detection = [e for e in entries.values() if e.task != "classification"]
    assert detection and all(not e.trainable and e.reason for e in detection)


def test_groups_index_is_in_sync():
    on_disk = yaml.safe_load((REPO / "pipelines" / "groups.yaml").read_text())
    assert on_disk == groups_index(REPO / "pipelines"), "run: repro pipeline-groups --write"


def test_every_table_cell_points_to_an_existing_entry(entries):
    tables, problems = load_tables(REPO / "paper_tables")
    assert not problems
    missing = sorted({(t.key, c.entry) for t in tables for c in t.cells if c.entry and c.entry not in entries})
    assert not missing, missing


def test_sap_archs_parse(entries):
    from repro.arch import parse_arch

    for e in entries.values():
        if e.buildable and e.id.startswith("sap-"):
            parse_arch(e.arch)


def test_dvc_yaml_matches_params():
    dvc = yaml.safe_load((REPO / "dvc.yaml").read_text())
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    assert params["profile"] == "smoke"
    deps = dvc["stages"]["train"]["do"]["deps"]
    for ds in params["datasets"]:
        assert f"results/prepared/{ds}.json" in deps
    assert set(dvc["stages"]) == {"prepare", "profile", "train", "evaluate", "tables"}


def test_malformed_entries_file_is_a_clear_error(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text(yaml.safe_dump({"entries": {"a": {"task": "classification", "dataset": "stl10"}}}))
    with pytest.raises(EntryError, match=r"x.yaml: entry 'a': missing field\(s\) \['image_size', 'num_classes'"):
        load_file(path)
    path.write_text(
        yaml.safe_dump(
            {"entries": {"a": {"task": "segmentation", "dataset": "d", "arch": "m", "image_size": 8, "num_classes": 2}}}
        )
    )
    with pytest.raises(EntryError, match="task 'segmentation' is not one of"):
        load_file(path)
    (tmp_path / "y.yaml").write_text(
        yaml.safe_dump(
            {
                "entries": {
                    "a": {"task": "classification", "dataset": "d", "arch": "m", "image_size": 8, "num_classes": 2}
                }
            }
        )
    )
    path.write_text(
        yaml.safe_dump(
            {
                "entries": {
                    "a": {"task": "classification", "dataset": "d", "arch": "m", "image_size": 8, "num_classes": 2}
                }
            }
        )
    )
    with pytest.raises(EntryError, match="'a' is defined in both"):
        load_entries(tmp_path)
