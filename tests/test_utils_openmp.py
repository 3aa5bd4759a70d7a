"""Importing repro first makes OpenMP threads wait passively, unless the user chose a policy or torch came first."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def _policy_after(code: str, **env: str) -> str:
    environ = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    environ.update(env, PYTHONPATH=str(REPO_ROOT))
    out = subprocess.run(
        [sys.executable, "-c", f"{code}; import os; print(os.environ.get('OMP_WAIT_POLICY'))"],
        env=environ,
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def test_repro_sets_passive_waiting_before_torch_loads_openmp():
    assert _policy_after("import repro") == "PASSIVE"


def test_the_users_policy_wins():
    assert _policy_after("import repro", OMP_WAIT_POLICY="ACTIVE") == "ACTIVE"


def test_nothing_changes_once_torch_is_imported():
    assert _policy_after("import sys; sys.modules['torch'] = object(); import repro") == "None"
