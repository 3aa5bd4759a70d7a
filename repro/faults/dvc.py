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

import yaml

from repro.faults.registry import FaultContext, TrialRecord, register_family

STAGE = "prepare"
REFUSALS = ("Unable to acquire lock", "is busy, it is being blocked by")


def checkout_root() -> Path | None:
    """The git checkout holding this package, if it has a DVC pipeline."""
    import repro

    root = Path(repro.__file__).resolve().parents[1]
    return root if (root / "dvc.yaml").is_file() and (root / ".git").exists() else None


def _env(clone: Path) -> dict[str, str]:
    bin_dir = str(Path(sys.executable).parent)  # the stage commands call `repro`
    return {
        **os.environ,
        "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
        "PYTHONPATH": str(clone),
        "DVC_NO_ANALYTICS": "1",
    }


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
        first = subprocess.Popen(
            _dvc("repro", STAGE), cwd=clone, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
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


# -- SIGKILL in the middle of `dvc repro` ------------------------------------------------------------------------------

KILL_PIPELINE = "sap_readme.yaml"  # a reduced pipeline: the SAP README entries (6 trained), their table
KILL_TABLES = ("sap/readme_examples.yaml", "rnnpool/table18.yaml")
KILL_SKIPPED_STAGES = ("rnnpool_probes", "shootout")
KILL_SKIPPED_OUTPUTS = ("results/probes/", "results/shootout/")


def _reduced_clone(ctx: FaultContext, root: Path, name: str) -> Path:
    """A clone of the committed checkout whose pipeline holds one entries file and two tables, without the CPU
    experiments' stages (so that a whole `dvc repro` takes a minute or two), with its dvc.yaml regenerated."""
    clone = ctx.work_dir / name
    shutil.rmtree(clone, ignore_errors=True)
    subprocess.run(["git", "clone", "--quiet", str(root), str(clone)], check=True, capture_output=True)
    for path in (clone / "pipelines").iterdir():  # keep one entries file (groups.yaml is written again below)
        if path.suffix == ".yaml" and path.name != KILL_PIPELINE:
            path.unlink()
    for folder in (clone / "paper_tables").iterdir():
        for path in folder.iterdir():
            if path.suffix == ".yaml" and f"{folder.name}/{path.name}" not in KILL_TABLES:
                path.unlink()
    subprocess.run(
        [sys.executable, "-m", "repro.cli", "pipeline", "write"],
        cwd=clone,
        env=_env(clone),
        check=True,
        capture_output=True,
    )
    dvc_file = clone / "dvc.yaml"  # without the CPU experiments, which take minutes and read no entries file kept
    pipeline = yaml.safe_load(dvc_file.read_text())
    for stage in KILL_SKIPPED_STAGES:
        pipeline["stages"].pop(stage, None)
    pipeline["plots"] = [p for p in pipeline.get("plots", []) if not p.startswith(KILL_SKIPPED_OUTPUTS)]
    dvc_file.write_text(yaml.safe_dump(pipeline, sort_keys=False))
    return clone


def _results_fingerprint(clone: Path) -> dict[str, str]:
    """What a later reader sees: every table CSV and the summary, byte for byte, and every metrics record without
    its timings and revision (a re-run trains again and takes another time)."""
    import json

    out: dict[str, str] = {}
    results = clone / "results"
    for path in sorted([*results.glob("tables/**/*.csv"), results / "summary.json"]):
        if path.is_file():
            out[str(path.relative_to(clone))] = path.read_text()
    for path in sorted(results.glob("metrics/**/*.json")):
        record = json.loads(path.read_text())
        for key in ("wall_time_s", "git_revision"):
            record.pop(key, None)
        out[str(path.relative_to(clone))] = json.dumps(record, sort_keys=True)
    return out


def _readable_or_absent(clone: Path) -> list[str]:
    """Files a later stage would read that exist but do not load as their record (must be none after a kill)."""
    from repro.records.profile import read_cell_values, read_profile
    from repro.records.runs import MetricsRecord
    from repro.records.schema import RecordError

    bad = []
    results = clone / "results"
    checks = [(p, MetricsRecord.read) for p in results.glob("metrics/**/*.json")]
    checks += [(results / "profile.csv", read_profile), (results / "profile_cells.csv", read_cell_values)]
    for path, read in checks:
        if path.is_file():
            try:
                read(path)
            except RecordError as exc:
                bad.append(f"{path.relative_to(clone)}: {exc}")
    return bad


def _repro(clone: Path, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(_dvc("repro"), cwd=clone, env=_env(clone), capture_output=True, text=True, timeout=timeout)


@register_family(
    "dvc-repro-kill",
    default_count=8,
    description="SIGKILL of `dvc repro` (and its stage's process) at a random moment, then `dvc repro` again, in a "
    "reduced clone of the pipeline; the tables must equal an uninterrupted run's",
)
def dvc_repro_kill(ctx: FaultContext, count: int) -> list[TrialRecord]:
    """Survived: after the kill no file a later stage reads is half-written (each loads as its record or is absent),
    the second `dvc repro` exits 0, and the tables, summary and metrics records equal the uninterrupted run's."""
    import random
    import signal

    root = checkout_root()
    if root is None or shutil.which("git") is None:
        ctx.notes.append("dvc-repro-kill: skipped, the package is not in a git checkout with dvc.yaml")
        return []
    reference = _reduced_clone(ctx, root, "reference")
    started = time.perf_counter()
    first = _repro(reference, timeout=900)
    reference_seconds = time.perf_counter() - started
    if first.returncode:
        raise RuntimeError(f"the uninterrupted `dvc repro` failed: {(first.stdout + first.stderr)[-400:]}")
    expected = _results_fingerprint(reference)
    ctx.notes.append(
        f"dvc-repro-kill: pipelines/{KILL_PIPELINE} and {len(KILL_TABLES)} tables in a clone of the committed "
        f"checkout; an uninterrupted `dvc repro` took {reference_seconds:.0f} s; kills at uniform random moments of it"
    )
    rng = random.Random(ctx.seed)
    records = []
    for trial in range(1, count + 1):
        t0 = time.perf_counter()
        clone = _reduced_clone(ctx, root, "killed")
        delay = rng.uniform(0.05, 0.8) * reference_seconds  # the run may be faster than the reference
        process = subprocess.Popen(
            _dvc("repro"),
            cwd=clone,
            env=_env(clone),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        time.sleep(delay)
        finished_first = process.poll() is not None
        if not finished_first:
            os.killpg(process.pid, signal.SIGKILL)  # `dvc repro` and the stage command it runs: no handler runs
        process.wait()
        broken = _readable_or_absent(clone)
        second = _repro(clone, timeout=900)
        differences = sorted(set(expected) ^ set(got := _results_fingerprint(clone)))
        differences += [k for k in expected if k in got and got[k] != expected[k]]
        survived = not broken and second.returncode == 0 and not differences
        if survived:
            detail = "tables, summary and metrics equal to the uninterrupted run's"
        else:
            said = " ".join((second.stdout + second.stderr).split())[-200:]
            detail = f"half-written: {broken[:2]}; re-run exit {second.returncode} {said}; differ: {differences[:3]}"
        what = f"SIGKILL {delay:.1f} s into `dvc repro`" + (" (it had already finished)" if finished_first else "")
        lost = "the stage that was running (re-run)" if survived else "see detail"
        records.append(
            TrialRecord("dvc-repro-kill", trial, what, survived, lost, detail[:500], time.perf_counter() - t0)
        )
        ctx.log(f"[dvc-repro-kill] trial {trial}: {'ok' if survived else 'FAILED'} ({what})")
    return records
