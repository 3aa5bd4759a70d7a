"""Per-epoch logs in dvclive's layout (through dvclive inside a DVC repository, directly elsewhere) and metrics.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from repro.engine.metrics_io import EpochLogger, inside_dvc_repo
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


def test_direct_writer_uses_the_dvclive_layout(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    assert not inside_dvc_repo()
    _log(tmp_path / "dvclive", ROWS)
    files = _files(tmp_path / "dvclive")
    assert files["plots/metrics/test_acc.tsv"] == "step\ttest_acc\n1\t0.125\n2\t0.5\n"
    assert json.loads(files["metrics.json"]) == {"lr": 0.002, "train_loss": 1.75, "test_acc": 0.5, "step": 2}
    assert not (tmp_path / ".dvc").exists()  # nothing initialised a DVC repository here


def test_dvclive_inside_a_dvc_repository_writes_the_same_values(tmp_path, monkeypatch):
    from dvc.repo import Repo

    direct, live = tmp_path / "direct", tmp_path / "repo"
    live.mkdir()
    monkeypatch.delenv("DVC_ROOT", raising=False)
    monkeypatch.chdir(tmp_path)
    _log(direct / "dvclive", ROWS)
    Repo.init(str(live), no_scm=True).close()
    monkeypatch.chdir(live)
    assert inside_dvc_repo()
    _log(live / "dvclive", ROWS)
    for name in ("lr", "train_loss", "test_acc"):
        path = f"plots/metrics/{name}.tsv"
        assert (live / "dvclive" / path).read_text() == (direct / "dvclive" / path).read_text()
    summary = json.loads((live / "dvclive" / "metrics.json").read_text())
    assert summary["test_acc"] == 0.5 and summary["step"] == 2


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
