"""Training under faults: SIGKILL at any moment, a full disk, two runs in one directory, the directory lock.

The kill trials run real ``repro train`` processes (forked from the test process) of the probe network of
:mod:`repro.faults.workload` and compare them with an uninterrupted run; ``python -m repro.faults`` runs more of them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from repro.engine import train as train_module
from repro.engine.checkpoint import load_checkpoint
from repro.engine.errors import RunDirectoryLockedError
from repro.engine.train import TrainConfig, train
from repro.faults import FaultContext
from repro.faults.inject import FullDisk
from repro.faults.training import concurrent_train, sigkill_train
from repro.faults.workload import (
    Child,
    TrainWorkload,
    fingerprint_differences,
    invoke,
    register_probe,
    run_fingerprint,
    single_thread,
    wait_for_lock,
)
from repro.utils.atomic import remove_stale_temporaries
from repro.utils.locks import LOCK_NAME, DirectoryLockedError, directory_lock


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> Path:
    """Where the fault families keep the uninterrupted reference run they share."""
    return tmp_path_factory.mktemp("faults-shared")


@pytest.fixture(scope="module")
def workload(tmp_path_factory) -> TrainWorkload:
    register_probe()
    work = TrainWorkload(tmp_path_factory.mktemp("data"), epochs=3)
    work.prepare()
    return work


def _config(workload: TrainWorkload, out: Path, **overrides) -> TrainConfig:
    values = dict(
        arch="faults-probe", recipe="smoke", dataset="shapes", out_dir=str(out), epochs=workload.epochs,
        max_steps_per_epoch=workload.steps, batch_size=workload.batch_size, image_size=workload.image_size,
        data_root=str(workload.data_root), device="cpu", progress=False,
    )  # fmt: skip
    values.update(overrides)
    return TrainConfig(**values)


def _one_error_line(stderr: str) -> str:
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in stderr, stderr
    return errors[0]


# -- the directory lock -----------------------------------------------------------------------------------------------


def test_directory_lock_refuses_a_second_holder_and_is_released(tmp_path):
    busy = rf"run is in use by pid {os.getpid()} \(lock .*\.lock\): another `repro train` is writing it"
    with directory_lock(tmp_path / "run") as lock, pytest.raises(DirectoryLockedError, match=busy):
        assert lock.read_text().strip() == str(os.getpid())
        with directory_lock(tmp_path / "run", what="`repro train`"):
            pass
    assert not (tmp_path / "run" / LOCK_NAME).exists()  # removed on a clean exit
    (tmp_path / "run" / LOCK_NAME).write_text("12345\n")  # left by a killed holder: nobody holds it
    with directory_lock(tmp_path / "run"):
        pass


def test_a_lock_left_by_a_killed_process_is_free(tmp_path, workload):
    out = tmp_path / "run"
    child = Child(workload.argv(out, resume=False), tmp_path / "run.log")
    assert wait_for_lock(child, out)
    child.kill()
    assert child.wait() == -9
    assert (out / LOCK_NAME).exists()  # no handler ran: the file stays, the kernel released the lock
    with directory_lock(out):
        pass


# -- SIGKILL at any moment --------------------------------------------------------------------------------------------


def test_sigkill_at_random_moments_then_resume_is_bit_identical(tmp_path, shared):
    """Three kill points (a random moment, inside a checkpoint write, inside a best.pt write) on one run, each
    resumed with --resume; the end must equal an uninterrupted run: weights, metrics, best.pt, dvclive files."""
    records = sigkill_train(FaultContext(tmp_path, seed=1, log=lambda m: None, shared_dir=shared), 3)
    assert len(records) == 3
    assert all(r.survived for r in records), [(r.what, r.detail) for r in records]


def test_a_kill_between_the_checkpoint_and_best_pt_is_repaired_on_resume(tmp_path, workload, monkeypatch):
    accuracy = {1: 0.1, 2: 0.9, 3: 0.5}  # epoch 2 is the best one
    monkeypatch.setattr(train_module._Run, "_evaluate", lambda self, loader: accuracy[len(self.history) + 1])
    with single_thread():
        train(_config(workload, tmp_path / "ref"))
        out = tmp_path / "run"
        train(_config(workload, out, stop_after_epochs=1))
        best_of_epoch_1 = (out / "best.pt").read_bytes()
        train(_config(workload, out, stop_after_epochs=2, resume=True))
        assert load_checkpoint(out / "best.pt")["epoch"] == 2
        (out / "best.pt").write_bytes(best_of_epoch_1)  # as if killed after checkpoint.pt of epoch 2, before best.pt
        train(_config(workload, out, resume=True))
    assert load_checkpoint(out / "best.pt")["epoch"] == 2
    assert fingerprint_differences(run_fingerprint(out), run_fingerprint(tmp_path / "ref")) == []


def test_a_new_run_removes_the_results_of_an_earlier_one_and_stale_temporaries(tmp_path, workload):
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.json").write_text('{"test_acc_best": 0.99}')  # an earlier run whose checkpoint was deleted
    (out / "best.pt").write_bytes(b"old")
    (out / ".checkpoint.pt.abcd1234.tmp").write_bytes(b"half")  # left by a killed write
    (out / ".notes.tmp").write_text("not ours")
    with single_thread():
        train(_config(workload, out, stop_after_epochs=1))
    assert not (out / "metrics.json").exists()  # the new run is not complete: no results yet
    assert load_checkpoint(out / "best.pt")["epoch"] == 1
    assert sorted(p.name for p in out.iterdir()) == [".notes.tmp", "best.pt", "checkpoint.pt", "dvclive"]
    (out / ".x.json.abcdefgh.tmp.png").write_bytes(b"")
    assert [p.name for p in remove_stale_temporaries(out)] == [".x.json.abcdefgh.tmp.png"]


# -- a full disk ------------------------------------------------------------------------------------------------------


def test_disk_full_at_a_checkpoint_write_keeps_the_previous_one_then_resume_is_identical(tmp_path, workload):
    assert invoke(workload.argv(tmp_path / "ref", resume=False))[0] == 0
    sizes = {p.name: p.stat().st_size for p in (tmp_path / "ref").rglob("*") if p.is_file()}
    checkpoint = sizes["checkpoint.pt"]
    disk, out = tmp_path / "disk", tmp_path / "disk" / "run"
    with FullDisk(disk, sum(sizes.values()) + checkpoint // 2) as full:  # epoch 2's checkpoint does not fit
        code, stderr = invoke(workload.argv(out, resume=False))
    assert code == 1 and full.failures >= 1
    line = _one_error_line(stderr)
    assert (
        line
        == f"error: could not write {out / 'checkpoint.pt'}: no space left on the device; the previous file is intact"
    )
    assert load_checkpoint(out / "checkpoint.pt")["epoch"] == 1
    assert sorted(p.name for p in out.iterdir()) == ["best.pt", "checkpoint.pt", "dvclive"]  # no temporary, no lock
    assert invoke(workload.argv(out, resume=True))[0] == 0  # space freed
    assert fingerprint_differences(run_fingerprint(out), run_fingerprint(tmp_path / "ref")) == []


def test_disk_full_at_a_results_file_keeps_the_previous_one(tmp_path, workload):
    run = tmp_path / "run"
    assert invoke(workload.argv(run, resume=False))[0] == 0
    result = tmp_path / "results" / "eval.json"
    args = ["evaluate", str(run / "checkpoint.pt"), "--device", "cpu", "--out", str(result)]
    assert invoke(args)[0] == 0
    good = result.read_text()
    with FullDisk(result.parent, result.stat().st_size):
        code, stderr = invoke(args)
    assert code == 1
    assert (
        _one_error_line(stderr)
        == f"error: could not write {result}: no space left on the device; the previous file is intact"
    )
    assert result.read_text() == good and [p.name for p in result.parent.iterdir()] == ["eval.json"]


# -- two runs in one directory ----------------------------------------------------------------------------------------


def test_a_second_run_in_a_busy_directory_is_refused_and_a_killed_ones_is_taken_over(tmp_path, shared):
    records = concurrent_train(FaultContext(tmp_path, seed=0, log=lambda m: None, shared_dir=shared), 2)
    assert [r.survived for r in records] == [True, True], [(r.what, r.detail) for r in records]
    assert "is in use by pid" in records[0].detail


def test_the_trainer_refuses_a_locked_directory_without_touching_it(tmp_path, workload):
    out = tmp_path / "run"
    with single_thread():
        train(_config(workload, out, stop_after_epochs=1))
    before = {p.name: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    with directory_lock(out), pytest.raises(RunDirectoryLockedError, match=r"is in use by pid .*nothing was changed"):
        train(_config(workload, out, resume=True))
    assert {p.name: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == before
    assert json.loads((out / "dvclive" / "metrics.json").read_text())["step"] == 1
