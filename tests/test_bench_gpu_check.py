"""The GPU readiness check: its table and exit code, its one line without CUDA, and its checks run on the CPU."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from repro.bench import gpu_check
from repro.bench.gpu_check import Check, CheckUnavailableError, Settings, exit_code, format_table, run_checks

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_script_without_cuda_prints_one_line_and_succeeds():
    env = {**os.environ, "PYTHON": sys.executable, "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(
        ["bash", str(REPO_ROOT / "scripts" / "gpu_check.sh")], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [gpu_check.NO_CUDA_MESSAGE]
    assert "no CUDA device" in gpu_check.NO_CUDA_MESSAGE


def _raise(exc: Exception):
    def run(settings: Settings) -> str:
        raise exc

    return run


FAKE = [
    Check("ok", "passes", lambda settings: f"ran on {settings.device}"),
    Check("broken", "fails", _raise(RuntimeError("boom | bad"))),
    Check("optional", "skips", _raise(CheckUnavailableError("ffcv is not installed"))),
]


def test_failures_are_reported_in_the_table_and_the_exit_code():
    messages: list[str] = []
    results = run_checks(FAKE, Settings(device="cpu"), progress=messages.append)
    assert [(r.name, r.status) for r in results] == [("ok", "pass"), ("broken", "fail"), ("optional", "skip")]
    assert results[0].detail == "ran on cpu" and results[1].detail == "RuntimeError: boom | bad"
    assert any("Traceback" in m for m in messages)  # the failure's traceback goes to the progress stream
    table = format_table(results)
    assert "| broken | FAIL |" in table and "boom / bad" in table  # a '|' in a detail cannot break the table
    assert table.rstrip().endswith("skipped in 0 s") and "1 passed, 1 failed, 1 skipped" in table
    assert exit_code(results) == 1
    assert exit_code([r for r in results if r.status != "fail"]) == 0  # skipped checks do not fail the run
    assert exit_code([]) == 1  # nothing ran: not a success


def test_every_check_is_registered_once():
    names = [c.name for c in gpu_check.CHECKS]
    assert names == ["amp-sap", "amp-rnnpool", "channels-last", "compile", "torchrun", "ffcv", "memory", "bench"]


TINY = dict(device="cpu", image_size=32, batch_size=2, steps=1, layer_shapes=("16:8:2",))


@pytest.mark.parametrize("name", ["amp-sap", "amp-rnnpool", "channels-last", "memory", "bench"])
def test_checks_run_on_the_cpu(name, tmp_path):
    """The checks' own logic, on the CPU with tiny sizes (bf16 autocast only; the GPU run adds fp16)."""
    (check,) = [c for c in gpu_check.CHECKS if c.name == name]
    (result,) = run_checks([check], Settings(**TINY, out_dir=str(tmp_path)))
    assert result.status == "pass", result.detail
    if name == "bench":
        assert (tmp_path / "layers.md").is_file() and (tmp_path / "models.md").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["compile", "torchrun", "ffcv"])
def test_slow_checks_run_on_the_cpu(name, tmp_path):
    (check,) = [c for c in gpu_check.CHECKS if c.name == name]
    (result,) = run_checks([check], Settings(**TINY, out_dir=str(tmp_path)))
    assert result.status in ("pass", "skip"), result.detail
