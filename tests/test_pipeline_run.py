"""train@group / evaluate@group: one process per group, every entry recorded (ok, failed with reason, not run)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from repro.pipeline.run import evaluate_group, train_group

REPO = Path(__file__).resolve().parents[1]


def _tree(tmp_path: Path) -> Path:
    entries = {
        "tiny": {
            "task": "classification",
            "dataset": "stl10",
            "arch": "resnet18-skip-1222",
            "image_size": 128,
            "num_classes": 10,
            "recipe": "sap-stl10",
        },
        "bad": {
            "task": "classification",
            "dataset": "stl10",
            "arch": "resnet18-nosuchpool-1222",
            "image_size": 128,
            "num_classes": 10,
        },
        "det": {
            "task": "detection",
            "dataset": "coco8",
            "arch": "resnet18-skip-1222",
            "image_size": 320,
            "num_classes": 8,
            "trainable": False,
            "not_trained_reason": "detection training comes later",
        },
    }
    (tmp_path / "pipelines").mkdir()
    (tmp_path / "pipelines" / "p.yaml").write_text(yaml.safe_dump({"group": "g", "entries": entries}))
    params = {
        "profile": "smoke",
        "seed": 0,
        "device": "cpu",
        "data_root": str(tmp_path / "data"),
        "smoke": {
            "data_root": str(tmp_path / "data"),
            "dataset": "shapes",
            "image_size": 32,
            "epochs": 1,
            "max_steps_per_epoch": 1,
            "batch_size": 2,
            "prepare": {"shapes": {"n_train": 16, "n_test": 8, "image_size": 32}},
        },
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    return tmp_path


def test_group_trains_records_and_evaluates(tmp_path, monkeypatch):
    root = _tree(tmp_path)
    monkeypatch.setenv("REPRO_NO_PROGRESS", "1")
    from repro.data import prepare

    prepare("shapes", root / "data", n_train=16, n_test=8, image_size=32)
    kw = {"pipelines": root / "pipelines", "params_file": root / "params.yaml", "runs": root / "runs"}
    statuses = train_group("g", **kw)
    assert statuses == {"tiny": "ok", "bad": "failed", "det": "not_run"}
    bad = json.loads((root / "runs" / "g" / "bad" / "result.json").read_text())
    assert "nosuchpool" in bad["reason"]
    assert not (root / "runs" / "g" / "tiny" / "checkpoint.pt").exists()  # smoke runs keep metrics only
    evaluate_group("g", results=root / "results" / "metrics", **kw)
    tiny = json.loads((root / "results" / "metrics" / "g" / "tiny.json").read_text())
    assert tiny["status"] == "ok" and tiny["profile"] == "smoke" and 0.0 <= tiny["accuracy"]["best"] <= 100.0
    assert tiny["trained_on"]["dataset"] == "shapes" and tiny["pipeline_file"].endswith("p.yaml")
    det = json.loads((root / "results" / "metrics" / "g" / "det.json").read_text())
    assert det["status"] == "not_run" and det["reason"] == "detection training comes later"
    # a corrupt run record becomes a 'failed' result with the file named, not a crash
    (root / "runs" / "g" / "tiny" / "result.json").write_text("{oops")
    evaluate_group("g", results=root / "results" / "metrics", **kw)
    tiny = json.loads((root / "results" / "metrics" / "g" / "tiny.json").read_text())
    assert tiny["status"] == "failed" and "unreadable run record" in tiny["reason"]


def test_unknown_group_is_a_clear_error(tmp_path):
    from repro.pipeline.cli import run_entries_command

    root = _tree(tmp_path)
    code = run_entries_command(
        "nope",
        only=[],
        pipelines=str(root / "pipelines"),
        params=str(root / "params.yaml"),
        runs=str(root / "runs"),
        strict=False,
    )
    assert code == 2


@pytest.mark.slow
def test_dvc_repro_reduced_smoke_pipeline(tmp_path):
    """The CI subset (docs/pipeline.md) on a fresh git copy: dvc repro, tables, then a no-op second repro."""
    dst = tmp_path / "repo"
    top_level = {".venv", ".git", "runs", "results", "data", ".pytest_cache", ".ruff_cache", ".hypothesis"}

    def ignore(directory: str, names: list[str]) -> set[str]:
        skip = {n for n in names if n == "__pycache__" or n.endswith(".egg-info")}
        return skip | (top_level & set(names) if Path(directory) == REPO else set())

    shutil.copytree(REPO, dst, ignore=ignore)
    bin_dir = Path(sys.executable).parent
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "DVC_NO_ANALYTICS": "1", "REPRO_NO_PROGRESS": "1", "HOME": str(tmp_path)}
    for cmd in (
        ["git", "init", "-q"],
        ["git", "add", "-A"],
        ["git", "-c", "user.email=ci@example.org", "-c", "user.name=ci", "commit", "-qm", "snapshot"],
    ):
        subprocess.run(cmd, cwd=dst, check=True, env=env)
    run = subprocess.run(["bash", "scripts/smoke_subset.sh"], cwd=dst, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert (dst / "results" / "tables" / "rnnpool" / "table1.md").is_file()
