"""The ``train@<group>`` stage: train and evaluate every entry of a group in one process.

For each entry it runs the trainer (``runs/<group>/<entry>/``: checkpoint, dvclive, the trainer's ``metrics.json``
:class:`~repro.records.RunRecord`) and writes ``results/metrics/<group>/<entry>.json`` (a
:class:`~repro.records.MetricsRecord`: the file every table cell of the entry points to). The test-split evaluation
is part of training (per epoch, and the best epoch is what the official logs report, quirk B7), so there is no
separate evaluate stage. One entry failing (bad arch, too-small input, NaN loss) is recorded as ``failed`` with its
message; the others still run. Importing torch costs seconds per process, hence one process per group.
"""

from __future__ import annotations

import logging
import shutil
import time
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from repro.pipeline.params import PipelineParams
from repro.records.entries import Entry, select_group
from repro.records.runs import MetricsRecord, RunRecord
from repro.utils.atomic import write_json_atomic
from repro.utils.provenance import git_revision

log = logging.getLogger(__name__)

RUNS_DIR = "runs"
METRICS_DIR = "results/metrics"


def smoke_image_size(entry: Entry, base: int) -> int:
    """The smallest side >= ``base`` the architecture accepts (SAP grammar: exact; registered models: the entry's
    ``smoke_image_size`` or ``base``)."""
    from repro.arch import ArchError, parse_arch
    from repro.models.summary import min_input_size

    try:
        parse_arch(entry.arch)
    except ArchError:
        return entry.smoke_image_size or base
    return max(base, min_input_size(entry.arch, **entry.model_opts))


def train_config(entry: Entry, params: PipelineParams, out: Path):
    """The :class:`~repro.engine.train.TrainConfig` of ``entry`` under the pipeline's profile."""
    from repro.engine.train import TrainConfig

    common = dict(
        arch=entry.arch,
        model_opts=dict(entry.model_opts),
        seed=params.seed,
        out_dir=str(out),
        device=params.device,
        progress=False,
    )
    if params.is_smoke:
        s = params.smoke
        return TrainConfig(
            recipe="smoke",
            dataset=s.dataset,
            image_size=smoke_image_size(entry, s.image_size),
            epochs=s.epochs,
            max_steps_per_epoch=s.max_steps_per_epoch,
            batch_size=s.batch_size,
            data_root=s.data_root,
            checkpoints=False,  # a smoke run is never resumed: its checkpoints would be written only to be deleted
            **common,
        )
    size = entry.image_size if isinstance(entry.image_size, int) else max(entry.image_size)
    return TrainConfig(
        recipe=entry.recipe or "sap-stl10",
        dataset=entry.dataset,
        image_size=size,
        epochs=entry.epochs,
        num_classes=entry.num_classes,
        data_root=params.data_root,
        resume=True,
        num_workers=params.full.num_workers,
        backend=params.full.backend,
        epochs_compat_299=entry.epochs_compat_299,
        **common,
    )


def _train_classifier(entry: Entry, params: PipelineParams, out: Path) -> RunRecord:
    from repro.engine.train import train

    return RunRecord.from_dict(train(train_config(entry, params, out)), str(out))


def detection_config(entry: Entry, params: PipelineParams, out: Path):
    """The :class:`~repro.engine.train_detection.DetectionTrainConfig` of a detection entry: the detector's smoke
    recipe on the generated ``shapes_det`` set (its own classes and size), or its paper recipe on the entry's dataset,
    with the official configuration's compat flags (B26/B27) off, as every faithful default."""
    from repro.engine.detection_recipes import detection_recipe_name, get_detection_recipe
    from repro.engine.train_detection import DetectionTrainConfig

    detector = entry.detector or "faster_rcnn"
    common = dict(
        arch=entry.arch,
        detector=detector,
        seed=params.seed,
        out_dir=str(out),
        device=params.device,
        progress=False,
        **{k: v for k, v in entry.model_opts.items() if k in ("placement", "strict")},
    )
    if params.is_smoke:
        s = params.smoke
        recipe = get_detection_recipe(detection_recipe_name(detector, "smoke")).replace(
            image_size=smoke_image_size(entry, s.detection_image_size),
            max_steps_per_epoch=s.max_steps_per_epoch,
            eval_max_images=s.detection_eval_images,
            precise_bn_batches=1,
        )
        return DetectionTrainConfig(
            recipe=recipe, data_root=s.data_root, visualize_images=0, checkpoints=False, **common
        )
    return DetectionTrainConfig(
        recipe=entry.recipe or detection_recipe_name(detector, "full"),  # its size: the entry's is the padded one
        dataset=entry.dataset,
        num_classes=entry.num_classes,
        epochs=entry.epochs,
        data_root=params.data_root,
        resume=True,
        num_workers=params.full.num_workers,
        **common,
    )


def _train_detector(entry: Entry, params: PipelineParams, out: Path) -> RunRecord:
    from repro.engine.train_detection import train_detection

    return RunRecord.from_dict(train_detection(detection_config(entry, params, out)), str(out))


def _train_face_detector(entry: Entry, params: PipelineParams, out: Path) -> RunRecord:
    """A face detector: its family's smoke recipe on ``synth_faces``, or its paper recipe on the entry's dataset."""
    from repro.engine.train_faces import face_config_for, train_faces

    config = face_config_for(
        entry.arch,
        entry.dataset,
        entry.image_size,
        entry.num_classes,
        params.profile,
        out_dir=str(out),
        seed=params.seed,
        device=params.device,
        data_root=params.data_root,
        smoke_data_root=params.smoke.data_root,
        epochs=entry.epochs,
        recipe=entry.recipe,
        model_opts=dict(entry.model_opts),
        num_workers=params.full.num_workers,
    )
    return RunRecord.from_dict(train_faces(config), str(out))


TRAINERS = {"classification": _train_classifier, "detection": _train_detector, "face_detection": _train_face_detector}


def _metrics_record(entry: Entry, params: PipelineParams, run: RunRecord | None, **fields: Any) -> MetricsRecord:
    values: dict[str, dict[str, float]] = {}
    trained_on = None
    if run is not None:
        if run.accuracy:
            values["accuracy"] = {k: 100.0 * float(v) for k, v in run.accuracy.items() if k in ("best", "last")}
        if run.detection:
            values["map"] = dict(run.detection)
        trained_on = {
            "dataset": run.dataset,
            "image_size": run.image_size,
            "epochs": run.epochs,
            "steps_per_epoch": run.steps_per_epoch,
            "seed": params.seed,
            "complete": run.complete,
        }
    return MetricsRecord(
        entry=entry.id,
        group=entry.group,
        task=entry.task,
        arch=entry.arch,
        pipeline_file=entry.file,
        profile=params.profile,
        values=values,
        trained_on=trained_on,
        compat=dict(run.compat) if run is not None else {},
        git_revision=git_revision(),
        **fields,
    )


def train_entry(entry: Entry, params: PipelineParams, runs: Path) -> MetricsRecord:
    """Train (when the profile and the entry allow it) and evaluate one entry; never raises for the entry's own
    failure."""
    out = runs / entry.group / entry.id
    if out.exists() and not (not params.is_smoke and (out / "checkpoint.pt").exists()):
        shutil.rmtree(out)  # a stale run from another profile would be mistaken for this one
    started = time.perf_counter()
    if entry.task not in TRAINERS:
        reason = entry.reason or f"training of task {entry.task!r} is not part of this pipeline yet"
        return _metrics_record(entry, params, None, status="not_run", reason=reason, wall_time_s=0.0)
    if not entry.trainable:
        return _metrics_record(entry, params, None, status="not_run", reason=entry.reason, wall_time_s=0.0)
    out.mkdir(parents=True, exist_ok=True)
    try:
        run = TRAINERS[entry.task](entry, params, out)
    except Exception as exc:
        log.debug("entry %s failed:\n%s", entry.id, traceback.format_exc())
        reason = f"{type(exc).__name__}: {exc}".strip()[:2000]
        wall = round(time.perf_counter() - started, 3)
        return _metrics_record(entry, params, None, status="failed", reason=reason, run_dir=str(out), wall_time_s=wall)
    wall = round(time.perf_counter() - started, 3)
    return _metrics_record(entry, params, run, status="ok", run_dir=str(out), wall_time_s=wall)


def run(
    group: str,
    entries: Mapping[str, Entry],
    params: PipelineParams,
    *,
    runs: str | Path = RUNS_DIR,
    results: str | Path = METRICS_DIR,
    only: Sequence[str] = (),
) -> dict[str, MetricsRecord]:
    """Train every entry of ``group`` (or only those in ``only``); write one metrics record per entry."""
    members = select_group(entries, group)
    if only:
        members = [e for e in members if e.id in only]
    threads = params.smoke.threads if params.is_smoke else params.full.threads
    if threads and any(e.trainable and e.task in TRAINERS for e in members):
        import torch

        torch.set_num_threads(int(threads))  # tiny smoke steps: more threads only add synchronisation overhead
    out_dir = Path(results) / group
    if not only and out_dir.exists():
        shutil.rmtree(out_dir)  # entries removed from the group must not leave their old records behind
    records = {}
    for entry, record in _train_entries(members, params, Path(runs)):
        write_json_atomic(out_dir / f"{entry.id}.json", record.to_dict())
        records[entry.id] = record
        print(f"[{group}] {entry.id}: {record.status}" + (f" ({record.reason})" if record.reason else ""), flush=True)
    return records


def _train_entries(members: Sequence[Entry], params: PipelineParams, runs: Path):
    """(entry, record) in the group's order. The smoke profile trains ``smoke.workers`` entries at once in forked
    processes (its steps are single-threaded, so one process leaves a core idle); the full profile, one at a time."""
    import multiprocessing

    workers = params.smoke.workers if params.is_smoke else 1
    trainable = [e for e in members if e.trainable and e.task in TRAINERS]
    if workers <= 1 or len(trainable) <= 1 or "fork" not in multiprocessing.get_all_start_methods():
        for entry in members:
            yield entry, train_entry(entry, params, runs)
        return
    from concurrent.futures import ProcessPoolExecutor

    from repro.utils.processes import die_with_parent

    context = multiprocessing.get_context("fork")
    size = min(workers, len(trainable))
    with ProcessPoolExecutor(max_workers=size, mp_context=context, initializer=die_with_parent) as pool:
        futures = [pool.submit(train_entry, entry, params, runs) for entry in members]
        for entry, future in zip(members, futures):
            try:
                record = future.result()
            except Exception as exc:  # the worker process itself died (killed, out of memory)
                reason = f"the training process of this entry died: {type(exc).__name__}: {exc}"
                record = _metrics_record(entry, params, None, status="failed", reason=reason, wall_time_s=0.0)
            yield entry, record
