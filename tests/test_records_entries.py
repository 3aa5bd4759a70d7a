"""pipelines/*.yaml through the one entry loader: counts, defaults, image_sizes, unknown fields, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from repro.records.entries import EntryError, load_entries, load_file
from repro.records.reported import load_tables

REPO = Path(__file__).resolve().parents[1]
BASE = {"task": "classification", "dataset": "d", "arch": "m", "image_size": 8, "num_classes": 2}


@pytest.fixture(scope="module")
def entries():
    return load_entries(REPO / "pipelines")


def test_entry_counts(entries):
    by_file: dict[str, int] = {}
    for e in entries.values():
        by_file[Path(e.file).name] = by_file.get(Path(e.file).name, 0) + 1
    assert by_file["sap_stl10.yaml"] == 146
    assert by_file["sap_zoo_profile.yaml"] == 116 * 3  # every zoo architecture at 96, 128 and 224 px
    assert by_file["sap_detection.yaml"] >= 70  # Faster R-CNN, SSD, YOLOv3 backbones of reference_spec §4.2


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


def _write(path: Path, data) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def test_defaults_are_merged_under_every_entry_and_image_sizes_expand(tmp_path):
    path = _write(
        tmp_path / "z.yaml",
        {
            "defaults": {"task": "classification", "dataset": "stl10", "num_classes": 10, "image_size": 96},
            "entries": {
                "a": {"arch": "resnet18-skip-1222"},
                "b": {"arch": "resnet18-lip-1222", "image_sizes": None, "image_size": 128},
            },
        },
    )
    a, b = load_file(path)
    assert (a.image_size, b.image_size, a.group) == (96, 128, "z")
    path = _write(tmp_path / "z.yaml", {"entries": {"c": {**BASE, "image_size": None, "image_sizes": [96, [48, 64]]}}})
    assert [(e.id, e.image_size) for e in load_file(path)] == [("c@96", 96), ("c@48x64", (48, 64))]


def test_malformed_entries_file_is_a_clear_error(tmp_path):
    path = _write(tmp_path / "x.yaml", {"entries": {"a": {"task": "classification", "dataset": "stl10"}}})
    with pytest.raises(EntryError, match=r"x.yaml: entry 'a': missing field\(s\) \['num_classes', 'arch"):
        load_file(path)
    _write(path, {"entries": {"a": {**BASE, "task": "segmentation"}}})
    with pytest.raises(EntryError, match="task 'segmentation' is not one of"):
        load_file(path)
    _write(path, {"entries": {"a": {**BASE, "epocs": 3}}})
    with pytest.raises(EntryError, match=r"entry 'a': unknown field\(s\) \['epocs'\]"):
        load_file(path)
    _write(path, {"entries": {"a": {**BASE, "image_size": [1, 2, 3]}}})
    with pytest.raises(EntryError, match="image_size: expected a positive int or"):
        load_file(path)
    _write(path, {"entries": {"a": {**BASE, "claim_role": {"variant": "x"}}}})
    with pytest.raises(EntryError, match="needs a 'claim' name"):
        load_file(path)
    _write(tmp_path / "y.yaml", {"entries": {"a": BASE}})
    _write(path, {"entries": {"a": BASE}})
    with pytest.raises(EntryError, match="'a' is defined in both"):
        load_entries(tmp_path)
