"""Per-epoch logs in dvclive's layout, written whole and atomically (inside a DVC repository or not), and metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from repro.engine.metrics_io import EpochLogger
from repro.utils.atomic import write_json_atomic
from repro.utils.provenance import git_revision, provenance

ROWS = [
    {"epoch": 1, "lr": 0.01, "train_loss": 2.5, "test_acc": 0.125, "note": "text is skipped"},
    {"epoch": 2, "lr": 0.002, "train_loss": 1.75, "test_acc": 0.5},
]


def _files(directory: Path) -> dict[str, str]:
    return {str(p.relative_to(directory)): p.read_text() for p in sorted(directory.rglob("*")) if p.is_file()}


def _log(directory: Path, rows, history=()) -> None:
    logger = EpochLogger(directory, history)
    for row in rows:
        logger.log(row)
    logger.close()


def test_writer_uses_the_dvclive_layout(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _log(tmp_path / "dvclive", ROWS)
    files = _files(tmp_path / "dvclive")
    assert files["plots/metrics/test_acc.tsv"] == "step\ttest_acc\n1\t0.125\n2\t0.5\n"
    assert json.loads(files["metrics.json"]) == {"lr": 0.002, "train_loss": 1.75, "test_acc": 0.5, "step": 2}
    assert sorted(files) == ["metrics.json", *(f"plots/metrics/{k}.tsv" for k in ("lr", "test_acc", "train_loss"))]
    assert not (tmp_path / ".dvc").exists()  # nothing initialised a DVC repository here


def test_inside_a_dvc_repository_the_same_files_are_written(tmp_path, monkeypatch):
    from dvc.repo import Repo

    direct, repo = tmp_path / "direct", tmp_path / "repo"
    repo.mkdir()
    monkeypatch.chdir(tmp_path)
    _log(direct / "dvclive", ROWS)
    Repo.init(str(repo), no_scm=True).close()
    monkeypatch.chdir(repo)
    _log(repo / "dvclive", ROWS)
    assert _files(repo / "dvclive") == _files(direct / "dvclive")


def test_a_restart_removes_files_of_metrics_no_longer_in_the_history(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _log(tmp_path / "run", [*ROWS, {"epoch": 3, "lr": 0.001, "extra": 1.0}])
    _log(tmp_path / "run", [], history=ROWS)  # e.g. resumed from the checkpoint of epoch 2
    _log(tmp_path / "ref", ROWS)
    assert _files(tmp_path / "run") == _files(tmp_path / "ref")
    _log(tmp_path / "run", [])  # a fresh run in the same directory starts with no files
    assert _files(tmp_path / "run") == {}


def test_rebuilding_from_history_gives_the_same_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _log(tmp_path / "once", ROWS)
    _log(tmp_path / "twice", ROWS[:1])
    _log(tmp_path / "twice", ROWS[1:], history=ROWS[:1])  # a resumed run replays its history
    assert _files(tmp_path / "once") == _files(tmp_path / "twice")


def test_write_json_atomic_replaces_whole_files(tmp_path):
    path = write_json_atomic(tmp_path / "out" / "metrics.json", {"a": 1})
    write_json_atomic(path, {"b": 2})
    assert json.loads(path.read_text()) == {"b": 2}
    assert [p.name for p in path.parent.iterdir()] == ["metrics.json"]
    with pytest.raises(TypeError):
        write_json_atomic(path, {"c": object()})
    assert json.loads(path.read_text()) == {"b": 2}
    assert [p.name for p in path.parent.iterdir()] == ["metrics.json"]


def test_provenance_tolerates_a_missing_git_checkout(tmp_path):
    assert git_revision(tmp_path) is None
    info = provenance()
    assert {"python", "repro", "torch", "torchvision"} <= set(info["versions"])
