"""RNNPool Table 7 (App. C.1) for real: the smallest RNNPool operator that fits each synthetic set to 100 %.

For every row (probe set, image size, with or without the 3x3/s2 conv of 8 filters) the probe
:class:`repro.models.probes.RNNPoolProbe` is trained for hidden sizes ``h1, h2`` from ``hidden`` (powers of two).

* **Pass rule.** A configuration *passes* when its test accuracy (multi-label: exact match) reaches
  ``target_accuracy`` for at least ``seeds_required`` of ``seeds``. The accuracy of a run is the best test accuracy
  over its epochs (RNNPool App. G reports the best top-1), and training stops at the epoch that reaches the target.
  Default: 1 of 2 seeds, because Table 7 states which configurations *can* fit the set; a seed that does not
  converge within the epoch budget says little about capacity. Every seed of a tried configuration is trained (in
  parallel on the workers) and recorded.
* **Smallest.** Passing configurations are ordered by the probe's parameter count, then by ``h1``.
* **Search.** ``grid`` trains every ``(h1, h2)``. ``staircase`` assumes that passing is monotone (a configuration
  with ``h1' >= h1`` and ``h2' >= h2`` passes whenever ``(h1, h2)`` does) and walks the frontier: start at the
  smallest ``h1`` and the largest ``h2``; pass -> halve ``h2``, fail -> double ``h1``. It visits at most
  ``2 len(hidden) - 1`` configurations and finds every minimal passing one, so the smallest by parameters too.

Outputs in ``out_dir``: ``table7.json`` (schema ``repro.table7/1``: ``rows`` one per table row, ``sweep`` every
trained configuration with its accuracies), ``table7.md``, ``table7.csv``, ``table7.png``/``.svg`` and per-run
results under ``cache/`` (a re-run skips configurations already trained with the same settings).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from repro.data.probe_sets import SETS, make_probe_set
from repro.experiments.jobs import JobCache, run_jobs
from repro.experiments.report import write_records, write_table
from repro.experiments.settings import SettingsError, from_mapping, to_plain
from repro.experiments.training import FitSettings, TensorSplit, channel_stats, fit, progress_enabled
from repro.models.probes import RNNPoolProbe, probe_num_params
from repro.utils.figures import pyplot, save_figure

__all__ = ["DATA_LABELS", "FULL_TABLE", "Table7Settings", "run_table7", "search_order"]

NAME = "table7"
SEARCHES = ("staircase", "grid")
DATA_LABELS = {"lines": "(1)", "multi_lines": "(2)", "polygons": "(3)"}
"""The set numbers of App. C.1."""
FULL_TABLE: dict[str, Any] = {
    "rows": ["lines@32", "multi_lines@32", "multi_lines@64", "polygons@64"],
    "conv": [True, False],
}
"""The rows of the paper's Table 7 (its eight cells): ``run_table7({**FULL_TABLE, ...}, out)``."""
RUN_KEYS = ("n_train", "n_test", "data_seed", "data", "fit", "target_accuracy", "conv_channels", "rnn_cell", "threads")
"""The settings one training run depends on (its cache key); the others only choose which runs are made."""


@dataclass(frozen=True)
class Table7Settings:
    """Settings of :func:`run_table7` (``params.yaml`` ``probes: table7:``); the defaults are the default run's.

    ``rows``: ``"<set>@<image size>"`` data rows, each run with and/or without the conv (``conv``). The default run
    has the budget of one table cell, set (1) at 32x32 with the conv; :data:`FULL_TABLE` lists all eight. ``data``:
    options of :func:`repro.data.probe_sets.make_probe_set` for every set (noise, lengths, radii, ...);
    ``n_train``/``n_test`` images per split, generated from ``data_seed``. ``fit``: the training of one run
    (``epochs`` is the maximum: a run stops when it reaches ``target_accuracy``). ``workers`` processes of ``threads``
    threads train the seeds and rows of one search round in parallel.
    """

    rows: tuple[str, ...] = ("lines@32",)
    conv: tuple[bool, ...] = (True,)
    hidden: tuple[int, ...] = (4, 8, 16, 32)
    search: str = "staircase"
    seeds: tuple[int, ...] = (0, 1)
    seeds_required: int = 1
    target_accuracy: float = 1.0
    n_train: int = 2000
    n_test: int = 500
    data_seed: int = 0
    data: dict[str, Any] = field(default_factory=dict)
    fit: FitSettings = field(default_factory=lambda: FitSettings(epochs=25, batch_size=50, lr=0.01))
    conv_channels: int = 8
    rnn_cell: str = "fastgrnn"
    workers: int = 2
    threads: int = 1

    def __post_init__(self) -> None:
        if self.search not in SEARCHES:
            raise ValueError(f"search must be one of {SEARCHES}, got {self.search!r}")
        if not 1 <= self.seeds_required <= len(self.seeds):
            raise ValueError(f"seeds_required must be in 1..{len(self.seeds)} (the number of seeds)")
        if not self.hidden or any(h < 1 or h & (h - 1) for h in self.hidden):
            raise ValueError(f"hidden must be powers of two, got {list(self.hidden)}")
        if not 0 < self.target_accuracy <= 1:
            raise ValueError(f"target_accuracy must be in (0, 1], got {self.target_accuracy}")
        for row in self.rows:
            parse_row(row)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None) -> Table7Settings:
        settings = from_mapping(cls, data, where="table7")
        if settings.fit.stop_at is not None:
            raise SettingsError("table7.fit.stop_at is set from table7.target_accuracy; leave it out")
        return settings


def parse_row(row: str) -> tuple[str, int]:
    """``"multi_lines@64"`` -> ``("multi_lines", 64)``."""
    name, _, size = row.partition("@")
    if name not in SETS or not size.isdigit():
        raise ValueError(f"row {row!r} must be '<set>@<image size>' with a set of {', '.join(SETS)}")
    return name, int(size)


class Search:
    """The configurations one row tries, proposed round by round: :meth:`propose` gives the next ones (all of them
    at once for ``grid``, one for ``staircase``), :meth:`report` takes whether each passed."""

    def __init__(self, hidden: tuple[int, ...], search: str) -> None:
        self.values, self.search = sorted(hidden), search
        self.i, self.j = 0, len(self.values) - 1
        self.visited: list[tuple[int, int]] = []
        self._grid_done = False

    def propose(self) -> list[tuple[int, int]]:
        if self.search == "grid":
            return [] if self._grid_done else [(a, b) for a in self.values for b in self.values]
        if self.i < len(self.values) and self.j >= 0:
            return [(self.values[self.i], self.values[self.j])]
        return []

    def report(self, outcomes: Mapping[tuple[int, int], bool]) -> None:
        self.visited.extend(outcomes)
        if self.search == "grid":
            self._grid_done = True
            return
        (passed,) = outcomes.values()
        if passed:
            self.j -= 1  # pass: try a smaller h2
        else:
            self.i += 1  # fail: try a larger h1


def search_order(hidden: tuple[int, ...], passes, search: str) -> list[tuple[int, int]]:
    """The configurations ``search`` visits when ``passes(h1, h2) -> bool`` decides each (see the module doc)."""
    state = Search(hidden, search)
    while proposed := state.propose():
        state.report({c: passes(*c) for c in proposed})
    return state.visited


@lru_cache(maxsize=4)
def _splits(name: str, size: int, n_train: int, n_test: int, seed: int, options: str):
    opts = json.loads(options)
    train = make_probe_set(name, "train", n=n_train, image_size=size, seed=seed, **opts)
    test = make_probe_set(name, "test", n=n_test, image_size=size, seed=seed, **opts)
    mean, std = channel_stats(train.images)
    return (
        TensorSplit.from_arrays(train.images, train.targets, mean, std),
        TensorSplit.from_arrays(test.images, test.targets, mean, std),
        {
            "train_digest": train.digest(),
            "test_digest": test.digest(),
            "mean": mean,
            "std": std,
            "classes": list(train.classes),
            "options": train.options,
        },
    )


def _run_job(job: Mapping[str, Any]) -> dict[str, Any]:
    """Train one (row, h1, h2, seed) (a job of :func:`repro.experiments.jobs.run_jobs`)."""
    settings = Table7Settings.from_mapping(job["settings"])
    name, size, conv = job["set"], int(job["image_size"]), bool(job["conv"])
    train, test, data = _splits(
        name, size, settings.n_train, settings.n_test, settings.data_seed, json.dumps(settings.data, sort_keys=True)
    )
    fit_settings = FitSettings(**{**to_plain(settings.fit), "stop_at": settings.target_accuracy})
    h1, h2 = int(job["h1"]), int(job["h2"])
    result = fit(
        lambda: RNNPoolProbe(
            1,
            len(data["classes"]),
            (h1, h2),
            conv=conv,
            conv_channels=settings.conv_channels,
            rnn_cell=settings.rnn_cell,
        ),
        train,
        test,
        fit_settings,
        seed=int(job["seed"]),
        desc=f"{job['row']} h=({h1},{h2}) seed {job['seed']}",
        progress=bool(job.get("_progress")),
    )
    return {
        **result.as_dict(),
        "data": {k: data[k] for k in ("train_digest", "test_digest", "mean", "std")},
        "outputs": len(data["classes"]),
    }


@dataclass
class _Row:
    """The search state and the tried configurations of one table row."""

    id: str
    set: str
    image_size: int
    conv: bool
    search: Search
    tried: dict[tuple[int, int], dict[str, Any]] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


def _config_record(settings: Table7Settings, row: _Row, h1: int, h2: int, runs: dict[str, dict]) -> dict[str, Any]:
    passed = sum(r["best_accuracy"] >= settings.target_accuracy for r in runs.values())
    outputs = next(iter(runs.values()))["outputs"]
    return {
        "h1": h1,
        "h2": h2,
        "params": probe_num_params(1, outputs, h1, h2, conv=row.conv, conv_channels=settings.conv_channels),
        "passed": passed >= settings.seeds_required,
        "seeds_passed": passed,
        "seeds_run": len(runs),
        "test_accuracy": {s: r["best_accuracy"] for s, r in runs.items()},
        "epochs": {s: r["epochs_run"] for s, r in runs.items()},
        "train_seconds": round(sum(r["train_seconds"] for r in runs.values()), 2),
    }


def _row_record(settings: Table7Settings, row: _Row) -> dict[str, Any]:
    tried = [row.tried[c] for c in row.search.visited]
    passing = sorted((c for c in tried if c["passed"]), key=lambda c: (c["params"], c["h1"]))
    best = passing[0] if passing else max(tried, key=lambda c: (max(c["test_accuracy"].values()), -c["params"]))
    return {
        "data": DATA_LABELS[row.set],
        "set": row.set,
        "image_size": row.image_size,
        "conv": row.conv,
        "reached": bool(passing),
        "h1": best["h1"] if passing else None,
        "h2": best["h2"] if passing else None,
        "params": best["params"] if passing else None,
        "seeds_passed": best["seeds_passed"] if passing else 0,
        "seeds_run": best["seeds_run"],
        "test_accuracy": best["test_accuracy"],
        "closest": None if passing else {"h1": best["h1"], "h2": best["h2"], "params": best["params"]},
        "configs_tried": len(tried),
        "monotone": _monotone(tried) if settings.search == "grid" else None,
        "train_seconds": round(sum(c["train_seconds"] for c in tried), 1),
        "data_digest": {"train": row.data.get("train_digest"), "test": row.data.get("test_digest")},
        "normalisation": {"mean": row.data.get("mean"), "std": row.data.get("std")},
    }


def _monotone(tried: list[dict[str, Any]]) -> bool:
    """True when no configuration passes while one at least as large in both ``h1`` and ``h2`` fails."""
    return not any(
        a["passed"] and not b["passed"] and b["h1"] >= a["h1"] and b["h2"] >= a["h2"] for a in tried for b in tried
    )


def _run_cost(size: int, conv: bool, h1: int) -> float:
    """Relative cost of one run (RNN1 steps x sequences x h1 per image): the most expensive go first."""
    side = size // 2 if conv else size
    return float(side * side * max(h1, 8))


def run_table7(settings: Mapping[str, Any], out_dir: Path, *, progress: bool = False) -> dict[str, Any]:
    """Run the Table 7 search with ``settings`` (see :class:`Table7Settings`) and write its outputs in ``out_dir``.

    The rows advance together, round by round: every row that is not finished proposes its next configuration(s),
    and all their seeds train in parallel on the workers. Returns the records written to ``table7.json``.
    """
    config = Table7Settings.from_mapping(settings)
    out_dir = Path(out_dir)
    plain = to_plain(config)
    run_settings = {k: plain[k] for k in RUN_KEYS}
    rows = [
        _Row(f"{name}-{size}-{'conv' if conv else 'noconv'}", name, size, conv, Search(config.hidden, config.search))
        for name, size in map(parse_row, config.rows)
        for conv in config.conv
    ]
    cache = JobCache(out_dir / "cache" / NAME)
    show = progress_enabled(progress) and config.workers <= 1
    started = time.perf_counter()
    while proposals := [(row, c) for row in rows for c in row.search.propose()]:
        jobs = [
            {
                "id": f"{row.id}-h{h1}-{h2}-seed{seed}",
                "row": row.id,
                "set": row.set,
                "image_size": row.image_size,
                "conv": row.conv,
                "h1": h1,
                "h2": h2,
                "seed": seed,
                "settings": run_settings,
                "_progress": show,
            }
            for row, (h1, h2) in proposals
            for seed in config.seeds
        ]
        jobs.sort(key=lambda j: -_run_cost(j["image_size"], j["conv"], j["h1"]))
        results = dict(
            zip(
                (j["id"] for j in jobs),
                run_jobs(
                    jobs,
                    _run_job,
                    cache=cache,
                    workers=config.workers,
                    threads=config.threads,
                    progress=progress,
                    desc=f"table7 round ({len(proposals)} configurations)",
                ),
            )
        )
        for row in rows:
            outcomes = {}
            for owner, (h1, h2) in proposals:
                if owner is not row:
                    continue
                runs = {str(seed): results[f"{row.id}-h{h1}-{h2}-seed{seed}"] for seed in config.seeds}
                row.data = next(iter(runs.values()))["data"]
                row.tried[(h1, h2)] = _config_record(config, row, h1, h2, runs)
                outcomes[(h1, h2)] = row.tried[(h1, h2)]["passed"]
            if outcomes:
                row.search.report(outcomes)
    wall = round(time.perf_counter() - started, 1)
    records_rows = [_row_record(config, row) for row in rows]
    sweep = [
        {"data": DATA_LABELS[row.set], "set": row.set, "image_size": row.image_size, "conv": row.conv, **row.tried[c]}
        for row in rows
        for c in row.search.visited
    ]
    records = write_records(out_dir, NAME, plain, records_rows, sweep=sweep, wall_seconds=wall, rule=_rule(config))
    _write_outputs(out_dir, records_rows, sweep, config, wall)
    return json.loads(records.read_text())


def _rule(config: Table7Settings) -> dict[str, Any]:
    return {
        "pass": f"best test accuracy over epochs >= {config.target_accuracy} (multi-label: exact match) for at least "
        f"{config.seeds_required} of {len(config.seeds)} seeds {list(config.seeds)}",
        "smallest": "fewest parameters of the whole probe (conv + RNNPool + FC), then smallest h1",
        "search": config.search,
    }


def _fmt_acc(accs: Mapping[str, float]) -> str:
    return ", ".join(f"s{s}: {a:.3f}" for s, a in accs.items())


def _write_outputs(out_dir: Path, rows, sweep, config: Table7Settings, wall: float) -> None:
    shown = []
    for r in rows:
        closest = r["closest"]
        shown.append(
            {
                "data": r["data"],
                "image size": f"{r['image_size']}x{r['image_size']}",
                "conv": "with" if r["conv"] else "without",
                "h1": r["h1"] if r["reached"] else f"not reached (best: {closest['h1']})",
                "h2": r["h2"] if r["reached"] else f"not reached (best: {closest['h2']})",
                "params": r["params"],
                "seeds passed": f"{r['seeds_passed']}/{r['seeds_run']}",
                "test accuracy": _fmt_acc(r["test_accuracy"]),
                "configs tried": r["configs_tried"],
                "train s": r["train_seconds"],
            }
        )
    rule = _rule(config)
    notes = [
        f"pass rule: {rule['pass']}; smallest: {rule['smallest']}; search: {rule['search']} over h in "
        f"{list(config.hidden)}",
        f"data: {config.n_train} train / {config.n_test} test images per set (seed {config.data_seed}), options "
        f"{config.data or 'default'}; training: {to_plain(config.fit)}",
        f"wall time {wall} s with {config.workers} worker(s) x {config.threads} thread(s)",
    ]
    write_table(
        out_dir,
        NAME,
        shown,
        list(shown[0]) if shown else [],
        title="RNNPool Table 7: smallest RNNPool that fits each synthetic set (App. C.1)",
        notes=notes,
    )
    _plot(out_dir, rows, sweep, config)


def _plot(out_dir: Path, rows, sweep, config: Table7Settings) -> None:
    """One heat map per row: best test accuracy (%) over the seeds of every tried (h1, h2), written in its cell; a
    ring marks the passing configurations, a red square the smallest one."""
    import numpy as np

    plt = pyplot()
    values = sorted(config.hidden)
    n = len(rows)
    cols = min(4, n) or 1
    fig, axes = plt.subplots(
        (n + cols - 1) // cols, cols, figsize=(3.0 * cols, 2.8 * ((n + cols - 1) // cols)), squeeze=False
    )
    for ax, row in zip(axes.flat, rows):
        grid = np.full((len(values), len(values)), np.nan)
        for c in sweep:
            if (c["set"], c["image_size"], c["conv"]) == (row["set"], row["image_size"], row["conv"]):
                i, j = values.index(c["h1"]), values.index(c["h2"])
                grid[i, j] = max(c["test_accuracy"].values())
                ax.text(j, i, f"{100 * grid[i, j]:.1f}", ha="center", va="center", fontsize=7, color="black")
                if c["passed"]:
                    ax.scatter(j, i, s=160, facecolors="none", edgecolors="white", linewidths=1.5)
        image = ax.imshow(grid, vmin=0, vmax=1, cmap="viridis", origin="lower")
        if row["reached"]:
            ax.scatter(
                values.index(row["h2"]),
                values.index(row["h1"]),
                marker="s",
                s=420,
                facecolors="none",
                edgecolors="red",
                linewidths=2,
            )
        ax.set_xticks(range(len(values)), values)
        ax.set_yticks(range(len(values)), values)
        ax.set_xlabel("h2")
        ax.set_ylabel("h1")
        ax.set_title(f"{row['data']} {row['image_size']}px {'conv' if row['conv'] else 'no conv'}", fontsize=9)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.colorbar(image, ax=axes, shrink=0.7, label="best test accuracy")
    save_figure(fig, out_dir / NAME)
