"""The pooling shoot-out: every pool of the zoo in one backbone, at the standard and the aggressive strides, with seeds.

Backbone: :class:`repro.models.stage_pool_net.StagePoolNet` (a stem conv and three conv stages; every
down-sampling is the pool under test, at the same place and stride for every method). Two stride settings: the
standard one (the first stage keeps the resolution) and the aggressive one (the first stage already down-samples by
4). Data: the generated ``compass`` set (the label is the direction between two distant glyphs that differ only in
fine detail) and scikit-learn's real handwritten ``digits``. Every (data, strides, method) is trained for every seed.

Per row: mean ± sample std of the test accuracy over the seeds (last epoch; no test-set selection), params, MACs and
layerwise peak memory (:func:`repro.metrics.profile.profile_model`, batch 1, fp32). Comparisons
(:func:`repro.experiments.stats.paired_comparison`, paired two-sided t-test over seeds): within each (data, strides)
every method against the best one, and every method's accuracy at the standard against the aggressive strides.

A method that cannot be built at a setting (``rnnpool`` needs a map at least twice its stride) is reported as not
applicable there. Outputs in ``out_dir``: ``shootout.{json,md,csv,png,svg}``; runs are cached under ``cache/``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from repro.experiments.datasets import load_classification
from repro.experiments.jobs import JobCache, run_jobs
from repro.experiments.report import write_records, write_table
from repro.experiments.settings import from_mapping, to_plain
from repro.experiments.stats import mean_std, paired_comparison
from repro.experiments.training import FitSettings, fit
from repro.models.stage_pool_net import StagePoolNet
from repro.utils.figures import pyplot, save_figure

__all__ = ["DEFAULT_METHODS", "ShootoutSettings", "run_shootout"]

NAME = "shootout"
_SAP = {"patch_size": 1, "heads": 2, "win_norm": False}  # the ``_headfix2_nowin`` configuration of the grammar
DEFAULT_METHODS: dict[str, dict[str, Any]] = {
    "skip": {},
    "maxp": {},
    "avgp": {},
    "lip": {},
    "lip_orig": {},
    "gaussian_pool": {},
    "softpool": {},
    "nlp_headfix2_nowin": {"pool": "nlp", **_SAP},
    "dfmnlp_headfix2_nowin": {"pool": "dfmnlp", **_SAP},
    "mixp_headfix2_nowin": {"pool": "mixp", **_SAP},
    "rnnpool": {},
}
"""Method label -> ``{"pool": <create_pool name, default the label>, **create_pool options}``."""
_EXPENSIVE = ("nlp", "dfmnlp", "mixp", "rnnpool")


@dataclass(frozen=True)
class ShootoutSettings:
    """Settings of :func:`run_shootout` (``params.yaml`` ``shootout:``); the defaults are the default run's.

    ``datasets``: name -> options of :func:`repro.experiments.datasets.load_classification`. ``strides``: setting
    name -> one stride per stage. ``channels``: the stem's width, then one per stage. ``epochs``: data set ->
    epochs, overriding ``fit.epochs`` for that set.
    """

    methods: dict[str, Any] = field(default_factory=lambda: {k: dict(v) for k, v in DEFAULT_METHODS.items()})
    strides: dict[str, Any] = field(default_factory=lambda: {"standard": [1, 2, 2], "aggressive": [4, 2, 2]})
    channels: tuple[int, ...] = (8, 16, 32, 64)
    datasets: dict[str, Any] = field(
        default_factory=lambda: {
            "compass": {"n_train": 800, "n_test": 500, "image_size": 16, "glyph": 3, "seed": 0},
            "digits": {"image_size": 16},
        }
    )
    data_root: str | None = None
    seeds: tuple[int, ...] = (0, 1, 2)
    fit: FitSettings = field(default_factory=lambda: FitSettings(epochs=5, batch_size=64, lr=0.003))
    epochs: dict[str, Any] = field(default_factory=lambda: {"digits": 2})
    reference_setting: str = "standard"
    workers: int = 2
    threads: int = 1

    def __post_init__(self) -> None:
        for label, spec in self.methods.items():
            if not isinstance(spec, Mapping):
                raise ValueError(f"methods.{label} must be a mapping of create_pool options, got {spec!r}")
        for setting, strides in self.strides.items():
            if not isinstance(strides, (list, tuple)) or len(strides) != len(self.channels) - 1:
                raise ValueError(f"strides.{setting} must list one stride per stage ({len(self.channels) - 1})")
        if self.reference_setting not in self.strides:
            raise ValueError(f"reference_setting {self.reference_setting!r} is not one of {sorted(self.strides)}")
        if len(self.seeds) < 2:
            raise ValueError("the comparisons need at least 2 seeds")
        unknown = sorted(set(self.epochs) - set(self.datasets))
        if unknown or any(not isinstance(e, int) or e < 1 for e in self.epochs.values()):
            raise ValueError(f"epochs must map data sets of 'datasets' to epochs >= 1, got {self.epochs}")

    def fit_for(self, dataset: str) -> FitSettings:
        """The training of ``dataset``: ``fit`` with its ``epochs`` override."""
        if dataset not in self.epochs:
            return self.fit
        return FitSettings(**{**to_plain(self.fit), "epochs": self.epochs[dataset]})

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None) -> ShootoutSettings:
        return from_mapping(cls, data, where="shootout")


def _model(settings: ShootoutSettings, method: str, setting: str, num_classes: int) -> StagePoolNet:
    spec = dict(settings.methods[method])
    pool = spec.pop("pool", method)
    return StagePoolNet(pool, settings.strides[setting], settings.channels, num_classes=num_classes, pool_options=spec)


def _train_job(job: Mapping[str, Any]) -> dict[str, Any]:
    """Train one (data, strides, method, seed)."""
    settings = ShootoutSettings.from_mapping(job["settings"])
    train, test, info = load_classification(job["dataset"], settings.datasets[job["dataset"]], settings.data_root)
    result = fit(
        lambda: _model(settings, job["method"], job["setting"], len(info["classes"])),
        train,
        test,
        settings.fit_for(job["dataset"]),
        seed=int(job["seed"]),
    )
    return {**result.as_dict(), "data": {k: info[k] for k in ("n_train", "n_test", "train_digest", "test_digest")}}


def train_one(settings: Mapping[str, Any], dataset: str, setting: str, method: str, seed: int) -> dict[str, Any]:
    """The result of one shoot-out run, computed afresh (no cache): what a row of :func:`run_shootout` is made of."""
    config = ShootoutSettings.from_mapping(settings)
    return _train_job(
        {"dataset": dataset, "setting": setting, "method": method, "seed": seed, "settings": to_plain(config)}
    )


def _profile_job(job: Mapping[str, Any]) -> dict[str, Any]:
    """Params, MACs and layerwise peak memory of one (data, strides, method), or why it cannot be built."""
    from repro.metrics.profile import profile_model

    settings = ShootoutSettings.from_mapping(job["settings"])
    size, classes = int(job["image_size"]), int(job["num_classes"])
    try:
        model = _model(settings, job["method"], job["setting"], classes)
        profile = profile_model(model, size, num_classes=classes, conventions=("layerwise",))
    except ValueError as exc:
        return {"applicable": False, "reason": str(exc)}
    return {
        "applicable": True,
        "params": profile.params,
        "macs": profile.macs,
        "peak_memory_bytes": profile.peak_bytes("layerwise"),
        "peak_memory_step": profile.memory["layerwise"].where,
    }


def run_shootout(settings: Mapping[str, Any], out_dir: Path, *, progress: bool = False) -> dict[str, Any]:
    """Run the shoot-out with ``settings`` (see :class:`ShootoutSettings`) into ``out_dir``; returns the records."""
    config = ShootoutSettings.from_mapping(settings)
    out_dir = Path(out_dir)
    plain = to_plain(config)
    cache = JobCache(out_dir / "cache" / NAME)
    started = time.perf_counter()
    infos = {name: load_classification(name, opts, config.data_root)[2] for name, opts in config.datasets.items()}
    cells = [(d, s, m) for d in config.datasets for s in config.strides for m in config.methods]
    profile_jobs = [
        {
            "id": f"profile-{d}-{s}-{m}",
            "dataset": d,
            "setting": s,
            "method": m,
            "settings": plain,
            "image_size": infos[d]["image_size"],
            "num_classes": len(infos[d]["classes"]),
        }
        for d, s, m in cells
    ]
    profiles = dict(zip(cells, run_jobs(profile_jobs, _profile_job, cache=cache, threads=config.threads)))
    train_jobs = [
        {"id": f"{d}-{s}-{m}-seed{seed}", "dataset": d, "setting": s, "method": m, "seed": seed, "settings": plain}
        for d, s, m in cells
        if profiles[(d, s, m)]["applicable"]
        for seed in config.seeds
    ]

    def cost(job: Mapping[str, Any]) -> int:
        pool = config.methods[job["method"]].get("pool", job["method"])
        return 0 if pool in _EXPENSIVE else 1

    train_jobs.sort(key=cost)
    results = run_jobs(
        train_jobs,
        _train_job,
        cache=cache,
        workers=config.workers,
        threads=config.threads,
        progress=progress,
        desc="shoot-out runs",
    )
    runs = [{k: j[k] for k in ("dataset", "setting", "method", "seed")} | r for j, r in zip(train_jobs, results)]
    rows = _rows(config, cells, profiles, runs)
    comparisons, drops = _comparisons(config, rows)
    wall = round(time.perf_counter() - started, 1)
    records = write_records(
        out_dir,
        NAME,
        plain,
        rows,
        runs=runs,
        comparisons=comparisons,
        drops=drops,
        data={d: {k: v for k, v in i.items() if k != "classes"} for d, i in infos.items()},
        wall_seconds=wall,
        test="paired two-sided t-test over seeds, alpha 0.05",
    )
    _write_outputs(out_dir, config, rows, comparisons, drops, wall)
    return json.loads(records.read_text())


def _rows(config: ShootoutSettings, cells, profiles, runs) -> list[dict[str, Any]]:
    rows = []
    for d, s, m in cells:
        profile = profiles[(d, s, m)]
        mine = [r for r in runs if (r["dataset"], r["setting"], r["method"]) == (d, s, m)]
        row: dict[str, Any] = {
            "dataset": d,
            "setting": s,
            "strides": "".join(str(x) for x in config.strides[s]),
            "method": m,
            "pool": config.methods[m].get("pool", m),
            "applicable": profile["applicable"],
        }
        if not profile["applicable"]:
            rows.append({**row, "reason": profile["reason"]})
            continue
        mean, std = mean_std([r["final_accuracy"] for r in mine])
        rows.append(
            {
                **row,
                "params": profile["params"],
                "macs": profile["macs"],
                "peak_memory_bytes": profile["peak_memory_bytes"],
                "peak_memory_step": profile["peak_memory_step"],
                "accuracy_mean": mean,
                "accuracy_std": std,
                "accuracy": {str(r["seed"]): r["final_accuracy"] for r in mine},
                "param_digest": {str(r["seed"]): r["param_digest"] for r in mine},
                "train_seconds_mean": round(sum(r["train_seconds"] for r in mine) / len(mine), 2),
            }
        )
    return rows


def _comparisons(config: ShootoutSettings, rows) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every method against the best of its (data, strides); every method's standard against aggressive strides."""
    ok = [r for r in rows if r["applicable"]]
    comparisons = []
    for d in config.datasets:
        for s in config.strides:
            group = [r for r in ok if (r["dataset"], r["setting"]) == (d, s)]
            if not group:
                continue
            best = max(group, key=lambda r: r["accuracy_mean"])
            for r in group:
                if r is not best:
                    comparisons.append(
                        {
                            "dataset": d,
                            "setting": s,
                            "best": best["method"],
                            "method": r["method"],
                            **paired_comparison(best["accuracy"], r["accuracy"]),
                        }
                    )
    drops = []
    others = [s for s in config.strides if s != config.reference_setting]
    for d in config.datasets:
        for m in config.methods:
            ref = next(
                (r for r in ok if (r["dataset"], r["setting"], r["method"]) == (d, config.reference_setting, m)), None
            )
            for s in others:
                row = next((r for r in ok if (r["dataset"], r["setting"], r["method"]) == (d, s, m)), None)
                if ref is not None and row is not None:
                    drops.append(
                        {
                            "dataset": d,
                            "method": m,
                            "from": config.reference_setting,
                            "to": s,
                            **paired_comparison(ref["accuracy"], row["accuracy"]),
                        }
                    )
    return comparisons, drops


def _pct(value: float | None, digits: int = 1) -> str:
    return "" if value is None else f"{100 * value:.{digits}f}"


def _verdict(c: Mapping[str, Any]) -> str:
    if c["significant"] is None:
        return "n/a"
    return "yes" if c["significant"] else "no"


def _write_outputs(out_dir: Path, config: ShootoutSettings, rows, comparisons, drops, wall: float) -> None:
    shown = []
    for r in rows:
        base = {"dataset": r["dataset"], "strides": f"{r['setting']} ({r['strides']})", "method": r["method"]}
        if not r["applicable"]:
            shown.append({**base, "accuracy %": "not applicable", "seeds": r["reason"]})
            continue
        shown.append(
            {
                **base,
                "accuracy %": f"{_pct(r['accuracy_mean'])} ± {_pct(r['accuracy_std'])}",
                "seeds": " ".join(_pct(a) for a in r["accuracy"].values()),
                "params": r["params"],
                "MMACs": f"{r['macs'] / 1e6:.2f}",
                "peak KB": f"{r['peak_memory_bytes'] / 1024:.1f}",
                "train s/run": r["train_seconds_mean"],
            }
        )
    columns = ["dataset", "strides", "method", "accuracy %", "seeds", "params", "MMACs", "peak KB", "train s/run"]
    versus = [
        {
            "dataset": c["dataset"],
            "strides": c["setting"],
            "best": c["best"],
            "method": c["method"],
            "best - method (pp)": f"{_pct(c['mean_difference'])} ± {_pct(c['std_difference'])}",
            "t": "" if c["t"] is None else f"{c['t']:.2f}",
            "p": "" if c["p_value"] is None else f"{c['p_value']:.3f}",
            "larger than seed spread": _verdict(c),
        }
        for c in comparisons
    ]
    drop_rows = [
        {
            "dataset": c["dataset"],
            "method": c["method"],
            f"{c['from']} - {c['to']} (pp)": f"{_pct(c['mean_difference'])} ± {_pct(c['std_difference'])}",
            "p": "" if c["p_value"] is None else f"{c['p_value']:.3f}",
            "significant": _verdict(c),
        }
        for c in drops
    ]
    seeds = list(config.seeds)
    notes = [
        f"backbone StagePoolNet, channels {list(config.channels)}; strides {config.strides}; seeds {seeds}",
        f"data: {config.datasets} (compass is generated: not comparable with any paper number)",
        f"training: {to_plain(config.fit)}, epochs per data set {config.epochs}; accuracy = last epoch on the test "
        "split, mean ± sample std over seeds",
        "params, MACs and peak memory (layerwise convention, fp32, batch 1) from repro.metrics.profile.profile_model",
        "comparisons: paired two-sided t-test over the seeds (alpha 0.05); 'larger than seed spread' = significant",
        f"wall time {wall} s with {config.workers} worker(s) x {config.threads} thread(s)",
    ]
    sections = [
        ("Each method against the best of its data set and strides", versus, list(versus[0]) if versus else []),
        ("Accuracy lost by aggressive down-sampling", drop_rows, list(drop_rows[0]) if drop_rows else []),
    ]
    write_table(
        out_dir, NAME, shown, columns, title="Pooling shoot-out (seeds: mean ± std)", notes=notes, sections=sections
    )
    _plot(out_dir, config, rows)


def _plot(out_dir: Path, config: ShootoutSettings, rows) -> None:
    """Accuracy (mean ± std over seeds) against layerwise peak memory, one panel per data set."""
    plt = pyplot()
    datasets = list(config.datasets)
    fig, axes = plt.subplots(1, len(datasets), figsize=(6.0 * len(datasets), 4.6), squeeze=False)
    from matplotlib.ticker import FuncFormatter, NullFormatter

    markers = dict(zip(config.strides, "o^sDv"))
    colours = {m: plt.get_cmap("tab20")(i % 20) for i, m in enumerate(config.methods)}
    spread = {m: 1.0 + 0.025 * (i - (len(config.methods) - 1) / 2) for i, m in enumerate(config.methods)}
    for ax, d in zip(axes[0], datasets):
        for r in rows:
            if r["dataset"] != d or not r["applicable"]:
                continue
            ax.errorbar(
                r["peak_memory_bytes"] / 1024 * spread[r["method"]],
                100 * r["accuracy_mean"],
                yerr=100 * (r["accuracy_std"] or 0),
                marker=markers[r["setting"]],
                color=colours[r["method"]],
                capsize=3,
                linestyle="none",
                label=f"{r['method']} ({r['setting']})",
            )
        ax.set_xscale("log")
        kb = [r["peak_memory_bytes"] / 1024 for r in rows if r["dataset"] == d and r["applicable"]]
        ax.set_xticks([2.0**k for k in range(-4, 16) if min(kb) / 1.5 <= 2.0**k <= max(kb) * 1.5])
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("peak memory, layerwise (KB, log scale)")
        ax.set_ylabel("test accuracy % (mean ± std over seeds)")
        ax.set_title(d)
        ax.grid(alpha=0.3)
    fig.suptitle("Pooling shoot-out: points of equal memory are spread by a few % per method", fontsize=9)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7)
    save_figure(fig, out_dir / NAME)
