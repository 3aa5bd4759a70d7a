"""RNNPool App. C.2: one operator reduces the 32x32 image to 1x1 in one step, one FC layer classifies.

The paper's operators (RNNPool with h1 = h2 = 32, a strided conv of 128 filters, max and average pooling followed by
a 1x1 conv of 128 filters) and, as the same single operator, the SAP pools (``nlp``, ``lip``, ``gaussian_pool``,
``softpool``), a comparison the papers never made; see :func:`repro.models.probes.single_operator_probe`.

* ``mode: train`` (default): train every operator for every seed on ``dataset``: the generated ``compass`` set by
  default (not comparable with the paper's CIFAR-10 numbers), or ``cifar10`` read from ``data_root`` (the full
  setting). Writes ``c2_probes.{json,md,csv,png,svg}``; runs are cached under ``cache/``.
* ``mode: timing``: the CPU time of the full setting, measured on a generated set of CIFAR-10's size
  (``timing.n_train`` / ``timing.n_test`` images at 32x32): every operator trains ``timing.steps`` steps and
  evaluates the whole test set once; the time of ``fit.epochs`` epochs is extrapolated from these.
  Writes ``c2_timing.{json,md,csv}``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from repro.experiments.datasets import GENERATED, SOURCES, load_classification
from repro.experiments.jobs import JobCache, run_jobs
from repro.experiments.report import write_records, write_table
from repro.experiments.settings import from_mapping, to_plain
from repro.experiments.training import FitSettings, evaluate, fit, progress_enabled
from repro.models.probes import C2_PAPER_OPERATORS, single_operator_probe
from repro.utils.figures import pyplot, save_figure

__all__ = ["C2Settings", "C2Timing", "run_c2_probes"]

NAME = "c2_probes"
TIMING_NAME = "c2_timing"
MODES = ("train", "timing")
DEFAULT_OPERATORS = (*C2_PAPER_OPERATORS, "nlp", "lip", "gaussian_pool", "softpool")


@dataclass(frozen=True)
class C2Timing:
    """The CIFAR-10-sized generated set of ``mode: timing`` and how many training steps are timed."""

    n_train: int = 50_000
    n_test: int = 10_000
    steps: int = 20
    warmup_steps: int = 2


@dataclass(frozen=True)
class C2Settings:
    """Settings of :func:`run_c2_probes` (``params.yaml`` ``probes: c2:``); the defaults are the default run's.

    ``data``: options of the dataset (``compass``: ``n_train``, ``n_test``, ``seed``, generator options; ``cifar10``:
    none). ``pool_options``: keyword arguments of :func:`repro.layers.create_pool` per SAP pool.
    """

    mode: str = "train"
    dataset: str = "compass"
    data: dict[str, Any] = field(
        default_factory=lambda: {"n_train": 1500, "n_test": 500, "image_size": 32, "glyph": 5, "seed": 0}
    )
    data_root: str | None = None
    operators: tuple[str, ...] = DEFAULT_OPERATORS
    pool_options: dict[str, Any] = field(
        default_factory=lambda: {"nlp": {"patch_size": 4, "heads": 2, "win_norm": False}}
    )
    width: int = 128
    seeds: tuple[int, ...] = (0,)
    fit: FitSettings = field(default_factory=lambda: FitSettings(epochs=6, batch_size=64, lr=0.01))
    timing: C2Timing = field(default_factory=C2Timing)
    workers: int = 2
    threads: int = 1

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.dataset not in SOURCES:
            raise ValueError(f"dataset must be one of {SOURCES}, got {self.dataset!r}")
        unknown = sorted(set(self.pool_options) - set(self.operators))
        if unknown:
            raise ValueError(f"pool_options for operators that are not run: {unknown}")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None) -> C2Settings:
        return from_mapping(cls, data, where="c2")


def _build(settings: C2Settings, operator: str, image_size: int, num_classes: int):
    return lambda: single_operator_probe(
        operator,
        in_channels=3,
        image_size=image_size,
        num_classes=num_classes,
        width=settings.width,
        pool_options=settings.pool_options.get(operator),
    )


def _train_job(job: Mapping[str, Any]) -> dict[str, Any]:
    settings = C2Settings.from_mapping(job["settings"])
    train, test, info = load_classification(settings.dataset, settings.data, settings.data_root)
    build = _build(settings, job["operator"], info["image_size"], len(info["classes"]))
    result = fit(
        build,
        train,
        test,
        settings.fit,
        seed=int(job["seed"]),
        progress=bool(job.get("_progress")),
        desc=f"c2 {job['operator']} seed {job['seed']}",
    )
    return {**result.as_dict(), "data": {k: info[k] for k in ("n_train", "n_test", "train_digest", "test_digest")}}


def _timing_job(job: Mapping[str, Any]) -> dict[str, Any]:
    """Time ``timing.steps`` training steps and one full evaluation of one operator on the CIFAR-sized set."""
    import torch

    settings = C2Settings.from_mapping(job["settings"])
    own = settings.data if settings.dataset == "compass" else {}
    options = {**own, "image_size": 32, "n_train": settings.timing.n_train, "n_test": settings.timing.n_test}
    started = time.perf_counter()
    train, test, info = load_classification("compass", options)
    generate_seconds = time.perf_counter() - started
    model = _build(settings, job["operator"], info["image_size"], len(info["classes"]))()
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.fit.lr)
    batch = settings.fit.batch_size
    step_seconds = []
    for step in range(settings.timing.warmup_steps + settings.timing.steps):
        index = torch.arange(step * batch, (step + 1) * batch) % len(train)
        start = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(train.images[index]), train.targets[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step >= settings.timing.warmup_steps:
            step_seconds.append(time.perf_counter() - start)
    start = time.perf_counter()
    evaluate(model, test, settings.fit.eval_batch_size)
    eval_seconds = time.perf_counter() - start
    per_step = float(np.median(step_seconds))
    epoch_seconds = per_step * (len(train) // batch) + eval_seconds
    return {
        "operator": job["operator"],
        "n_train": len(train),
        "n_test": len(test),
        "batch_size": batch,
        "steps_timed": len(step_seconds),
        "seconds_per_step": round(per_step, 5),
        "eval_seconds": round(eval_seconds, 2),
        "epoch_seconds": round(epoch_seconds, 1),
        "epochs": settings.fit.epochs,
        "total_seconds": round(epoch_seconds * settings.fit.epochs, 1),
        "generate_seconds": round(generate_seconds, 1),
        "params": sum(p.numel() for p in model.parameters()),
    }


def run_c2_probes(settings: Mapping[str, Any], out_dir: Path, *, progress: bool = False) -> dict[str, Any]:
    """Run the App. C.2 probes (``mode: train``) or time their full setting (``mode: timing``) into ``out_dir``;
    returns the records written."""
    config = C2Settings.from_mapping(settings)
    out_dir = Path(out_dir)
    plain = to_plain(config)
    if config.mode == "timing":
        return _run_timing(config, plain, out_dir, progress)
    show = progress_enabled(progress) and config.workers <= 1
    jobs = [
        {"id": f"{config.dataset}-{op}-seed{seed}", "operator": op, "seed": seed, "settings": plain, "_progress": show}
        for op in config.operators
        for seed in config.seeds
    ]
    started = time.perf_counter()
    expensive = {"rnnpool": 0, "nlp": 1}  # scheduled first: they take most of the time
    order = sorted(range(len(jobs)), key=lambda i: expensive.get(jobs[i]["operator"], 2))
    results = run_jobs(
        [jobs[i] for i in order],
        _train_job,
        cache=JobCache(out_dir / "cache" / NAME),
        workers=config.workers,
        threads=config.threads,
        progress=progress,
        desc="c2 probes",
    )
    by_id = {jobs[i]["id"]: r for i, r in zip(order, results)}
    wall = round(time.perf_counter() - started, 1)
    runs = [{"operator": j["operator"], "seed": j["seed"], **by_id[j["id"]]} for j in jobs]
    rows = []
    for op in config.operators:
        mine = [r for r in runs if r["operator"] == op]
        accs = [r["final_accuracy"] for r in mine]
        rows.append(
            {
                "operator": op,
                "paper_operator": op in C2_PAPER_OPERATORS,
                "params": mine[0]["params"],
                "accuracy_mean": float(np.mean(accs)),
                "accuracy_std": float(np.std(accs, ddof=1)) if len(accs) > 1 else None,
                "accuracy": {str(r["seed"]): r["final_accuracy"] for r in mine},
                "train_seconds": round(sum(r["train_seconds"] for r in mine), 1),
            }
        )
    comparable = config.dataset not in GENERATED
    records = write_records(out_dir, NAME, plain, rows, runs=runs, wall_seconds=wall, comparable=comparable)
    _write_train_outputs(out_dir, rows, config, wall, comparable)
    return json.loads(records.read_text())


def _write_train_outputs(out_dir: Path, rows, config: C2Settings, wall: float, comparable: bool) -> None:
    label = "" if comparable else " (generated set: not comparable with the paper's CIFAR-10 accuracies)"
    shown = [
        {
            "operator": r["operator"] + ("" if r["paper_operator"] else " (SAP pool)"),
            "params": r["params"],
            "accuracy %": f"{100 * r['accuracy_mean']:.2f}"
            + (f" ± {100 * r['accuracy_std']:.2f}" if r["accuracy_std"] is not None else ""),
            "seeds": " ".join(f"{100 * a:.2f}" for a in r["accuracy"].values()),
            "train s": r["train_seconds"],
        }
        for r in rows
    ]
    notes = [
        f"dataset: {config.dataset} {config.data if config.dataset in GENERATED else ''}{label}",
        f"every operator: patch = stride = the image side, {config.width} outputs, then FC; SAP pool options "
        f"{config.pool_options}",
        f"training: {to_plain(config.fit)}; seeds {list(config.seeds)}; accuracy = last epoch, test split",
        f"wall time {wall} s with {config.workers} worker(s) x {config.threads} thread(s)",
    ]
    write_table(
        out_dir, NAME, shown, list(shown[0]), title=f"RNNPool App. C.2: 32x32 -> 1x1 in one step{label}", notes=notes
    )
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 3.2))
    colours = ["tab:blue" if r["paper_operator"] else "tab:orange" for r in rows]
    ax.bar(
        range(len(rows)),
        [100 * r["accuracy_mean"] for r in rows],
        color=colours,
        yerr=[100 * (r["accuracy_std"] or 0) for r in rows],
        capsize=3,
    )
    ax.set_xticks(range(len(rows)), [r["operator"] for r in rows], rotation=30, ha="right")
    ax.set_ylabel("test accuracy %")
    ax.set_title(f"App. C.2 single operator, {config.dataset}" + ("" if comparable else " (generated)"), fontsize=9)
    save_figure(fig, out_dir / NAME)


def _run_timing(config: C2Settings, plain: dict[str, Any], out_dir: Path, progress: bool) -> dict[str, Any]:
    jobs = [{"id": f"timing-{op}", "operator": op, "settings": plain} for op in config.operators]
    started = time.perf_counter()
    rows = run_jobs(
        jobs, _timing_job, cache=JobCache(None), workers=1, threads=config.threads, progress=progress, desc="c2 timing"
    )  # one process: the time of one run, not of a shared machine
    wall = round(time.perf_counter() - started, 1)
    total = round(sum(r["total_seconds"] for r in rows), 1)
    records = write_records(out_dir, TIMING_NAME, plain, rows, wall_seconds=wall, extrapolated_total_seconds=total)
    notes = [
        f"generated compass set of CIFAR-10's size: {config.timing.n_train} train / {config.timing.n_test} test, "
        f"32x32 RGB, batch {config.fit.batch_size}, {config.threads} thread(s), one process",
        f"seconds per step: median of {config.timing.steps} steps after {config.timing.warmup_steps} warm-up steps; "
        f"epoch = steps per epoch x seconds per step + one evaluation of the test set; total = {config.fit.epochs} "
        "epochs (extrapolated, not run)",
        f"all operators, one seed: {total} s extrapolated ({total / 3600:.2f} h); this measurement took {wall} s",
    ]
    columns = ["operator", "params", "seconds_per_step", "eval_seconds", "epoch_seconds", "epochs", "total_seconds"]
    write_table(
        out_dir,
        TIMING_NAME,
        rows,
        columns,
        title="App. C.2 full setting: CPU time on a CIFAR-10-sized set",
        notes=notes,
    )
    return json.loads(records.read_text())
