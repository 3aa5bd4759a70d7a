"""The pipeline stages: train@group (one process per group, every entry recorded), the record contract between stages,
the generated dvc.yaml and its import-graph dependencies, and the reduced DVC run (slow)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

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


def _run_group(root: Path):
    from repro.pipeline.params import load_params
    from repro.pipeline.stages import train
    from repro.records.entries import load_entries

    return train.run(
        "g",
        load_entries(root / "pipelines"),
        load_params(root / "params.yaml"),
        runs=root / "runs",
        results=root / "results" / "metrics",
    )


def test_group_trains_and_writes_one_metrics_record_per_entry(tmp_path, monkeypatch):
    from repro.records.runs import MetricsRecord, RunRecord

    root = _tree(tmp_path)
    monkeypatch.setenv("REPRO_NO_PROGRESS", "1")
    from repro.data import prepare

    prepare("shapes", root / "data", n_train=16, n_test=8, image_size=32)
    records = _run_group(root)
    assert {k: r.status for k, r in records.items()} == {"tiny": "ok", "bad": "failed", "det": "not_run"}
    assert "nosuchpool" in records["bad"].reason
    assert not (root / "runs" / "g" / "tiny" / "checkpoint.pt").exists()  # smoke runs keep metrics only
    run = RunRecord.read(root / "runs" / "g" / "tiny" / "metrics.json")  # the trainer's record
    tiny = MetricsRecord.read(root / "results" / "metrics" / "g" / "tiny.json")
    assert tiny.status == "ok" and tiny.profile == "smoke" and 0.0 <= tiny.value("accuracy") <= 100.0
    assert tiny.value("accuracy", "best") == pytest.approx(100.0 * run.accuracy["best"])
    assert tiny.trained_on["dataset"] == "shapes" and tiny.pipeline_file.endswith("p.yaml")
    det = MetricsRecord.read(root / "results" / "metrics" / "g" / "det.json")
    assert det.status == "not_run" and det.reason == "detection training comes later" and det.value("accuracy") is None


def _two_entry_tree(tmp_path: Path, workers: int) -> Path:
    tmp_path.mkdir(exist_ok=True)
    root = _tree(tmp_path)
    data = yaml.safe_load((root / "pipelines" / "p.yaml").read_text())
    data["entries"]["tiny2"] = {**data["entries"]["tiny"], "arch": "resnet18-maxp-1222"}
    (root / "pipelines" / "p.yaml").write_text(yaml.safe_dump(data))
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["smoke"]["workers"] = workers
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    from repro.data import prepare

    prepare("shapes", root / "data", n_train=16, n_test=8, image_size=32)
    return root


def test_entries_trained_in_parallel_processes_give_the_serial_records(tmp_path, monkeypatch):
    monkeypatch.setenv("REPRO_NO_PROGRESS", "1")
    serial = _run_group(_two_entry_tree(tmp_path / "serial", workers=1))
    parallel = _run_group(_two_entry_tree(tmp_path / "parallel", workers=2))
    assert list(parallel) == list(serial) == ["bad", "det", "tiny", "tiny2"]  # the group's order
    for key in serial:
        assert (parallel[key].status, parallel[key].reason, parallel[key].values) == (
            serial[key].status,
            serial[key].reason,
            serial[key].values,
        )
    assert serial["tiny2"].status == "ok" and serial["tiny2"].values["accuracy"]


def test_a_training_process_that_dies_is_recorded_as_failed(tmp_path, monkeypatch):
    import os

    from repro.pipeline.stages import train

    monkeypatch.setenv("REPRO_NO_PROGRESS", "1")
    real = train.TRAINERS["classification"]

    def dies_on_tiny(entry, params, out):
        if entry.id == "tiny":
            os._exit(3)  # as a process killed by the kernel: no exception, no record
        return real(entry, params, out)

    monkeypatch.setitem(train.TRAINERS, "classification", dies_on_tiny)
    records = _run_group(_two_entry_tree(tmp_path, workers=2))
    assert records["tiny"].status == "failed" and "died" in records["tiny"].reason
    assert set(records) == {"tiny", "bad", "det", "tiny2"}  # the stage itself ends and writes every record


def test_a_record_of_another_schema_is_refused_with_the_stage_to_rerun(tmp_path):
    from repro.records.runs import MetricsRecord
    from repro.records.schema import RecordError

    path = tmp_path / "g" / "x.json"
    path.parent.mkdir()
    path.write_text(json.dumps({"schema": "repro.metrics/1", "entry": "x"}))
    with pytest.raises(
        RecordError,
        match=r"schema 'repro.metrics/1', but this version of repro reads "
        r"'repro.metrics/2'.*dvc repro -f train@g",
    ):
        MetricsRecord.read(path)
    path.write_text("{oops")
    with pytest.raises(RecordError, match="not valid JSON"):
        MetricsRecord.read(path)


def test_model_options_reach_the_model_through_the_train_config():
    from repro.engine.train import TrainConfig, _build_model
    from repro.models import build_model

    def count(model) -> int:
        return sum(p.numel() for p in model.parameters())

    gru = _build_model(TrainConfig(arch="mobilenetv2_rnnpool", model_opts={"rnn_cell": "gru"}), num_classes=10)
    assert count(gru) == count(build_model("mobilenetv2_rnnpool", 10, rnn_cell="gru"))
    assert count(gru) != count(build_model("mobilenetv2_rnnpool", 10))


def test_unknown_group_and_bad_params_are_one_line_errors(tmp_path):
    from typer.testing import CliRunner

    from repro.cli import app

    root = _tree(tmp_path)
    args = ["--pipelines", str(root / "pipelines"), "--params", str(root / "params.yaml")]
    result = CliRunner().invoke(app, ["stage", "train", "nope", *args])
    assert result.exit_code == 1 and "unknown group 'nope'" in result.output
    (root / "params.yaml").write_text(yaml.safe_dump({"profile": "smoke", "smoke": {"epochz": 1}}))
    result = CliRunner().invoke(app, ["stage", "train", "g", *args])
    assert result.exit_code == 1 and "smoke: unknown key(s) ['epochz']" in result.output


def test_generated_pipeline_files_are_up_to_date():
    from repro.pipeline.dvcfile import stale
    from repro.records.entries import load_entries

    assert not stale(load_entries(REPO / "pipelines"), REPO, REPO / "pipelines"), "run: repro pipeline write"


def test_every_stage_depends_on_every_module_its_command_imports(tmp_path):
    """The contract of dvc.yaml: the code stage depends on the package; every other stage depends on its fingerprint,
    which covers the import closure of its module (plus the CLI and the loaders its command calls); the train stage
    sees the grammar, layers and engine, the tables stage does not. An edit changes exactly the fingerprints of the
    stages that can import the edited module."""
    from repro.pipeline.dvcfile import COMMAND_IMPORTS, STAGES, fingerprint, fingerprint_path
    from repro.utils.import_graph import closure, module_files

    dvc = yaml.safe_load((REPO / "dvc.yaml").read_text())
    assert dvc["stages"]["code"]["deps"] == ["repro"]
    files = module_files()
    listed = {}
    for spec in STAGES:
        if not spec.fingerprinted:
            continue
        body = dvc["stages"][spec.name]
        assert fingerprint_path(spec.name) in (body.get("do") or body)["deps"], spec.name
        text = fingerprint(spec, REPO)
        listed[spec.name] = {line.split("  ", 1)[1] for line in text.splitlines()}
        needed = {str(files[m].relative_to(REPO)) for m in closure([spec.module, *COMMAND_IMPORTS])}
        assert needed <= listed[spec.name], (spec.name, sorted(needed - listed[spec.name]))
    assert {"repro/arch.py", "repro/layers/nlp.py", "repro/engine/train.py", "repro/models/sap.py"} <= listed["train"]
    assert "repro/arch.py" in listed["tables"]
    assert not any(d.startswith(("repro/layers", "repro/engine")) for d in listed["tables"])

    copy = tmp_path / "repo"  # edit a pool in a copy of the package: the train and profile fingerprints change
    shutil.copytree(REPO / "repro", copy / "repro", ignore=shutil.ignore_patterns("__pycache__"))
    before = {spec.name: fingerprint(spec, copy) for spec in STAGES if spec.fingerprinted}
    with (copy / "repro" / "layers" / "nlp.py").open("a") as f:
        f.write("# edited\n")
    after = {spec.name: fingerprint(spec, copy) for spec in STAGES if spec.fingerprinted}
    changed = {name for name in before if before[name] != after[name]}
    assert {"train", "profile"} <= changed and "tables" not in changed and "prepare" not in changed


def test_the_code_stage_writes_one_fingerprint_per_stage(tmp_path):
    from repro.pipeline.dvcfile import STAGES, fingerprint
    from repro.pipeline.stages import code

    copy = tmp_path / "repo"
    shutil.copytree(REPO / "repro", copy / "repro", ignore=shutil.ignore_patterns("__pycache__"))
    written = code.run(copy)
    assert sorted(p.name for p in written) == sorted(f"{s.name}.txt" for s in STAGES if s.fingerprinted)
    train = next(s for s in STAGES if s.name == "train")
    assert (copy / "results" / "code" / "train.txt").read_text() == fingerprint(train, copy)


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


def _train_one_entry(tmp_path: Path, entry_id: str, entry: dict, dataset: str, **prepare_opts):
    """Train the one-entry group ``g`` of a fresh tree in the smoke profile, its ``dataset`` generated; returns
    (tree root, the entry's MetricsRecord as the stage wrote it)."""
    from repro.data import prepare
    from repro.pipeline.params import load_params
    from repro.pipeline.stages import train
    from repro.records.entries import load_entries
    from repro.records.runs import MetricsRecord

    root = _tree(tmp_path)
    (root / "pipelines" / "p.yaml").write_text(yaml.safe_dump({"group": "g", "entries": {entry_id: entry}}))
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["smoke"]["datasets"] = [dataset]
    params["smoke"]["data_root"] = str(root / "data" / "smoke")
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    prepare(dataset, root / "data" / "smoke", **prepare_opts)
    records = train.run(
        "g",
        load_entries(root / "pipelines"),
        load_params(root / "params.yaml"),
        runs=root / "runs",
        results=root / "results" / "metrics",
    )
    assert records[entry_id].status == "ok", records[entry_id].reason
    return root, MetricsRecord.read(root / "results" / "metrics" / "g" / f"{entry_id}.json")


def test_a_detection_entry_trains_in_the_smoke_profile_and_reports_coco_ap(tmp_path, monkeypatch):
    """The train stage runs a detection entry with its detector's smoke recipe; its record holds the COCO metrics
    (an AP of 0.0 is a value, COCO's -1 for an empty size range is left out)."""
    monkeypatch.setenv("REPRO_NO_PROGRESS", "1")
    entry = {
        "task": "detection",
        "dataset": "coco8",
        "arch": "mobilenet-skip-1222121",
        "detector": "ssd",
        "image_size": 320,
        "num_classes": 8,
    }
    root, record = _train_one_entry(tmp_path, "det", entry, "shapes_det", n_train=8, n_val=4, image_size=128)
    assert record.task == "detection" and record.trained_on["dataset"] == "shapes_det"
    assert 0.0 <= record.value("map", "AP50") <= 1.0 and not (root / "runs" / "g" / "det" / "checkpoint.pt").exists()


def test_a_face_detection_entry_trains_in_the_smoke_profile_and_reports_wider_ap(tmp_path, monkeypatch):
    """The train stage runs a face entry with its family's smoke recipe on synth_faces, whatever its paper dataset;
    its record holds the WIDER settings, the <=3-faces settings and the TPR at 0.1 false positives per image."""
    monkeypatch.setenv("REPRO_NO_PROGRESS", "1")
    entry = {
        "task": "face_detection",
        "dataset": "widerface",
        "model": "rnnpool_face_a",
        "image_size": [480, 640],
        "num_classes": 2,
    }
    root, record = _train_one_entry(tmp_path, "face", entry, "synth_faces", n_train=8, n_val=6)
    assert record.task == "face_detection" and record.trained_on["dataset"] == "synth_faces"
    assert {"easy", "medium", "hard", "tpr_at_fpr"} <= set(record.values["map"])
    assert all(0.0 <= v <= 1.0 for v in record.values["map"].values())
    assert not (root / "runs" / "g" / "face" / "checkpoint.pt").exists()


def test_the_repro_command_ends_a_stage_with_its_output_and_exit_status(tmp_path):
    """`repro stage ...` as DVC runs it (a new process through the console entry point, which skips the
    interpreter's teardown after a successful stage): the files, the printed summary and the exit status."""
    root = _tree(tmp_path)
    (root / "paper_tables").mkdir()
    args = ["--pipelines", "pipelines", "--paper-tables", "paper_tables", "--params", "params.yaml"]
    command = [sys.executable, "-c", "import sys; from repro.cli import main; sys.argv[0] = 'repro'; main()"]
    run = subprocess.run([*command, "stage", "profile", *args], cwd=root, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "profiled 3 entries" in run.stdout
    rows = (root / "results" / "profile.csv").read_text().splitlines()
    assert len(rows) == 4 and {r.split(",")[1] for r in rows[1:]} == {"tiny", "bad", "det"}
    failed = subprocess.run(
        [*command, "stage", "train", "nope", *args[:2], *args[4:]], cwd=root, capture_output=True, text=True
    )
    assert failed.returncode == 1 and "unknown group 'nope'" in failed.stderr + failed.stdout
