"""The ``train@group`` and ``evaluate@group`` stages: every entry of a group in one process.

``train`` writes ``runs/<group>/<entry>/result.json`` (status, reason, the engine's ``metrics.json`` next to it);
``evaluate`` turns those into ``results/metrics/<group>/<entry>.json`` — the file every table cell points to.
One entry failing (bad arch, too-small input, NaN loss) is recorded as ``failed`` with its message; the others still
run. Importing torch costs seconds per process, so a group shares one process.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
import traceback
from pathlib import Path
from typing import Any

from repro.pipeline.entries import Entry, EntryError, group_entries, load_entries
from repro.pipeline.params import PipelineParams, load_params
from repro.utils.atomic import write_json_atomic

log = logging.getLogger(__name__)

RESULT_NAME = "result.json"
STATUSES = ("ok", "failed", "not_run")
SMOKE_DEFAULTS = {"dataset": "shapes", "image_size": 32, "epochs": 1, "max_steps_per_epoch": 1, "batch_size": 2}


def _select(group: str, pipelines: str | Path) -> list[Entry]:
    groups = group_entries(load_entries(pipelines))
    if group not in groups:
        raise EntryError(f"unknown group {group!r}; groups: {', '.join(groups)}")
    return groups[group]


def smoke_image_size(entry: Entry, base: int) -> int:
    """The smallest side >= ``base`` the architecture accepts (SAP grammar: exact; registered models: ``base``)."""
    try:
        from repro.arch import parse_arch
        from repro.models.summary import min_input_size

        parse_arch(entry.arch)
    except (ImportError, ValueError):
        return int(entry.raw.get("smoke_image_size", base))
    return max(base, min_input_size(entry.arch, **entry.model_opts))


def entry_model_name(entry: Entry) -> str:
    """The name the trainer builds: ``entry.arch``, or (with ``model_opts``) ``<arch>@<entry id>`` registered in this
    process as ``build_model(arch, **model_opts)`` so that the options reach the model."""
    if not entry.model_opts:
        return entry.arch
    from repro.models.registry import build_model, is_registered, register_model

    name = f"{entry.arch}@{entry.id}"
    if not is_registered(name):
        register_model(name, family="pipeline-entry")(
            lambda num_classes=entry.num_classes, **opts: build_model(
                entry.arch, num_classes, **{**entry.model_opts, **opts}
            )
        )
    return name


def _train_one(entry: Entry, params: PipelineParams, out: Path) -> dict[str, Any]:
    from repro.engine.train import TrainConfig, train

    s = {**SMOKE_DEFAULTS, **params.smoke} if params.is_smoke else dict(params.full)
    if params.is_smoke:
        config = TrainConfig(
            arch=entry_model_name(entry),
            recipe="smoke",
            dataset=s["dataset"],
            image_size=smoke_image_size(entry, int(s["image_size"])),
            epochs=int(s["epochs"]),
            max_steps_per_epoch=int(s["max_steps_per_epoch"]),
            batch_size=int(s["batch_size"]),
            seed=params.seed,
            out_dir=str(out),
            data_root=str(s.get("data_root", params.data_root)),
            device=params.device,
            progress=False,
        )
    else:
        size = entry.image_size if isinstance(entry.image_size, int) else max(entry.image_size)
        config = TrainConfig(
            arch=entry_model_name(entry),
            recipe=entry.recipe or "sap-stl10",
            dataset=entry.dataset,
            image_size=size,
            epochs=entry.epochs,
            num_classes=entry.num_classes,
            seed=params.seed,
            out_dir=str(out),
            data_root=params.data_root,
            device=params.device,
            resume=True,
            num_workers=int(s.get("num_workers", 0)),
            backend=str(s.get("backend", "torch")),
            epochs_compat_299=bool(entry.raw.get("epochs_compat_299", False)),
            progress=False,
        )
    metrics = train(config)
    if params.is_smoke:  # smoke checkpoints are worthless and large: keep metrics.json and dvclive/ only
        for name in ("checkpoint.pt", "best.pt"):
            (out / name).unlink(missing_ok=True)
    return metrics


def train_group(
    group: str,
    *,
    pipelines: str | Path = "pipelines",
    params_file: str | Path = "params.yaml",
    runs: str | Path = "runs",
    only: list[str] | None = None,
) -> dict[str, str]:
    """Train every trainable entry of ``group``; returns ``{entry: status}``. Never raises for one entry's failure."""
    params = load_params(params_file)
    entries = _select(group, pipelines)
    if only:
        entries = [e for e in entries if e.id in only]
    statuses: dict[str, str] = {}
    group_dir = Path(runs) / group
    threads = (params.smoke if params.is_smoke else params.full).get("threads")
    if threads and any(e.trainable and e.task == "classification" for e in entries):
        import torch

        torch.set_num_threads(int(threads))  # tiny smoke steps: more threads only add synchronisation overhead
    for entry in entries:
        out = group_dir / entry.id
        if out.exists() and not (not params.is_smoke and (out / "checkpoint.pt").exists()):
            shutil.rmtree(out)  # a stale run from another profile would be mistaken for this one
        out.mkdir(parents=True, exist_ok=True)
        record: dict[str, Any] = {
            "entry": entry.id,
            "group": group,
            "profile": params.profile,
            "status": "not_run",
            "reason": None,
        }
        started = time.perf_counter()
        if entry.task != "classification":
            record["reason"] = entry.reason or f"training of task {entry.task!r} is not part of this pipeline yet"
        elif not entry.trainable:
            record["reason"] = entry.reason
        else:
            try:
                metrics = _train_one(entry, params, out)
                record.update(
                    status="ok",
                    metrics_file=str(out / "metrics.json"),
                    test_acc_best=metrics["test_acc_best"],
                    test_acc_last=metrics["test_acc_last"],
                    epochs=metrics["epochs"],
                    dataset=metrics["dataset"],
                    image_size=metrics["image_size"],
                    steps_per_epoch=metrics.get("steps_per_epoch"),
                    complete=metrics.get("complete", True),
                )
            except Exception as exc:
                record.update(status="failed", reason=f"{type(exc).__name__}: {exc}".strip()[:2000])
                log.debug("entry %s failed:\n%s", entry.id, traceback.format_exc())
        record["wall_time_s"] = round(time.perf_counter() - started, 3)
        write_json_atomic(out / RESULT_NAME, record)
        statuses[entry.id] = record["status"]
        print(
            f"[{group}] {entry.id}: {record['status']}" + (f" ({record['reason']})" if record["reason"] else ""),
            flush=True,
        )
    return statuses


def evaluate_group(
    group: str,
    *,
    pipelines: str | Path = "pipelines",
    params_file: str | Path = "params.yaml",
    runs: str | Path = "runs",
    results: str | Path = "results/metrics",
) -> dict[str, str]:
    """Write ``results/metrics/<group>/<entry>.json`` for every entry of ``group`` from its run record."""
    params = load_params(params_file)
    out_dir = Path(results) / group
    if out_dir.exists():
        shutil.rmtree(out_dir)
    statuses: dict[str, str] = {}
    for entry in _select(group, pipelines):
        run_file = Path(runs) / group / entry.id / RESULT_NAME
        record = _read_run(run_file)
        accuracy = None
        if record.get("status") == "ok":
            accuracy = {"best": 100.0 * float(record["test_acc_best"]), "last": 100.0 * float(record["test_acc_last"])}
        result = {
            "entry": entry.id,
            "group": group,
            "pipeline_file": entry.file,
            "task": entry.task,
            "arch": entry.arch,
            "paper_dataset": entry.dataset,
            "paper_image_size": entry.image_size,
            "profile": record.get("profile", params.profile),
            "status": record.get("status", "failed"),
            "reason": record.get("reason"),
            "accuracy": accuracy,
            "accuracy_unit": "%",
            "map": None,
            "trained_on": {k: record.get(k) for k in ("dataset", "image_size", "epochs", "steps_per_epoch")}
            if accuracy
            else None,
            "run_record": str(run_file),
            "train_metrics": record.get("metrics_file"),
        }
        write_json_atomic(out_dir / f"{entry.id}.json", result)
        statuses[entry.id] = result["status"]
    return statuses


def _read_run(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {"status": "not_run", "reason": f"no run record at {path} (run the train stage first)"}
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        return {"status": "failed", "reason": f"unreadable run record {path}: {exc}"}
    if not isinstance(data, dict) or data.get("status") not in STATUSES:
        return {"status": "failed", "reason": f"malformed run record {path} (no valid 'status')"}
    if data["status"] == "ok" and not all(
        isinstance(data.get(k), (int, float)) for k in ("test_acc_best", "test_acc_last")
    ):
        return {"status": "failed", "reason": f"malformed run record {path} (missing test accuracies)"}
    return data
