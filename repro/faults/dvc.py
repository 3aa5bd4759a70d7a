"""Two ``dvc repro`` at once, in a clone of this checkout: DVC's own locks must refuse the second.

The pipeline's orchestration is not under test here (that is ``dvc.yaml``'s), only what a user sees when two
``dvc repro`` start in one repository: the second must stop at once with DVC's lock message, the first must finish,
and the pipeline must be up to date afterwards. The trials alternate between starting the second one at once (it
meets the repository lock) and a moment later (it meets the lock of the running stage's outputs).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from repro.faults.registry import FaultContext, TrialRecord, register_family

STAGE = "prepare@shapes"
REFUSALS = ("Unable to acquire lock", "is busy, it is being blocked by")


def checkout_root() -> Path | None:
    """The git checkout holding this package, if it has a DVC pipeline."""
    import repro

    root = Path(repro.__file__).resolve().parents[1]
    return root if (root / "dvc.yaml").is_file() and (root / ".git").exists() else None


def _env(clone: Path) -> dict[str, str]:
    bin_dir = str(Path(sys.executable).parent)  # the stage commands call `repro`
    return {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""), "PYTHONPATH": str(clone),
            "DVC_NO_ANALYTICS": "1"}  # fmt: skip


def _dvc(*args: str) -> list[str]:
    return [sys.executable, "-m", "dvc", *args]


@register_family(
    "concurrent-dvc",
    default_count=2,
    description=f"two `dvc repro {STAGE}` at once in a clone of the repository (DVC's repository and output locks)",
)
def concurrent_dvc(ctx: FaultContext, count: int) -> list[TrialRecord]:
    """Survived: the second ``dvc repro`` exits non-zero with DVC's lock message, the first exits 0, and
    ``dvc status`` reports the stage up to date."""
    root = checkout_root()
    if root is None or shutil.which("git") is None:
        ctx.notes.append("concurrent-dvc: skipped, the package is not in a git checkout with dvc.yaml")
        return []
    clone = ctx.work_dir / "clone"
    shutil.rmtree(clone, ignore_errors=True)
    subprocess.run(["git", "clone", "--quiet", str(root), str(clone)], check=True, capture_output=True)
    ctx.notes.append(f"concurrent-dvc: `git clone` of the committed checkout, stage {STAGE}")
    env = _env(clone)
    records = []
    for trial in range(1, count + 1):
        started = time.perf_counter()
        (clone / "results" / "prepared" / "shapes.json").unlink(missing_ok=True)  # the stage must run again
        gap = 0.2 if trial % 2 else 1.5
        first = subprocess.Popen(_dvc("repro", STAGE), cwd=clone, env=env, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True)  # fmt: skip
        time.sleep(gap)
        second = subprocess.run(_dvc("repro", STAGE), cwd=clone, env=env, capture_output=True, text=True, timeout=600)
        first.communicate(timeout=600)
        status = subprocess.run(_dvc("status", STAGE), cwd=clone, env=env, capture_output=True, text=True)
        said = " ".join((second.stdout + second.stderr).split())
        refused = second.returncode != 0 and any(r in said for r in REFUSALS)
        up_to_date = "up to date" in status.stdout
        survived = refused and first.returncode == 0 and up_to_date
        detail = f"second exit {second.returncode}: {said[:300]}"
        if first.returncode or not up_to_date:
            detail += f"; first exit {first.returncode}; status: {' '.join(status.stdout.split())[:200]}"
        what = f"a second `dvc repro` {gap} s after the first"
        lost = "nothing" if survived else "see detail"
        records.append(
            TrialRecord("concurrent-dvc", trial, what, survived, lost, detail[:500], time.perf_counter() - started)
        )
        ctx.log(f"[concurrent-dvc] trial {trial}: {'ok' if survived else 'FAILED'}: {said[:120]}")
    return records
