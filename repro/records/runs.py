"""Records of training and evaluation: :class:`RunRecord` (what a trainer writes, ``runs/.../metrics.json``),
:class:`MetricsRecord` (what the train stage hands to the tables, ``results/metrics/<group>/<entry>.json``) and
:class:`PreparedRecord` (``results/prepared/<dataset>.json``)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from repro.records.schema import SCHEMA_KEY, RecordError, read_json_record, require, schema_id

RUN_SCHEMA = ("run", 1)
METRICS_SCHEMA = ("metrics", 2)
PREPARED_SCHEMA = ("prepared", 1)
STATUSES = ("ok", "failed", "not_run")
#: The values a trained entry reports, per metric, and the key a cell selects by default.
SELECTIONS: dict[str, tuple[str, ...]] = {
    "accuracy": ("best", "last"),
    # COCO (AP...), WIDER FACE settings (easy...; *_le3: images with at most 3 faces), SCUT-HEAD (all),
    # Condensation-Net's true-positive rate at 0.1 false positives per image
    "map": (
        "AP",
        "AP50",
        "AP75",
        "APs",
        "APm",
        "APl",
        "easy",
        "medium",
        "hard",
        "easy_le3",
        "medium_le3",
        "hard_le3",
        "all",
        "tpr_at_fpr",
    ),
    "hidden_size": ("h1", "h2"),
}
DEFAULT_SELECTION = {"accuracy": "best", "map": "AP", "hidden_size": "h1"}


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class RunRecord:
    """The summary a trainer writes at the end of a run (``metrics.json``); the typed fields every stage reads, the
    rest (configuration, recipe, timings, distributed details) in ``extra``.

    ``accuracy`` holds fractions 0-1 (``best`` = the best test epoch, the SAP logs' selection, quirk B7; ``last``);
    ``detection`` the COCO / WIDER metrics as fractions 0-1.
    """

    task: str
    arch: str
    dataset: str
    recipe: str
    image_size: int | list[int]  # a side, or [short, long] for detection recipes
    num_classes: int
    epochs: int
    complete: bool
    steps_per_epoch: int | None = None
    accuracy: Mapping[str, float] | None = None
    detection: Mapping[str, float] | None = None
    best_epoch: int | None = None
    param_digest: str | None = None
    compat: Mapping[str, Any] = field(default_factory=dict)
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = {SCHEMA_KEY: schema_id(*RUN_SCHEMA), **asdict(self)}
        extra = data.pop("extra")
        return {**data, **extra}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str) -> RunRecord:
        typed = {f for f in cls.__dataclass_fields__ if f != "extra"}
        for key in ("task", "arch", "dataset", "recipe"):
            require(data, key, str, where)
        for key in ("num_classes", "epochs"):
            require(data, key, int, where)
        size = require(data, "image_size", (int, list, tuple), where)
        if not isinstance(size, int) and not (len(size) == 2 and all(isinstance(v, int) for v in size)):
            raise RecordError(f"{where}: field 'image_size' must be an int or [short, long], got {size!r}")
        require(data, "complete", bool, where)
        for key in ("accuracy", "detection"):
            block = require(data, key, dict, where, optional=True)
            if block is not None and not all(_finite(v) for v in block.values()):
                raise RecordError(f"{where}: field {key!r} must map names to finite numbers, got {block!r}")
        if data.get("accuracy") is None and data.get("detection") is None:
            raise RecordError(f"{where}: a run record needs 'accuracy' or 'detection'")
        values = {k: data[k] for k in typed if k in data}
        extra = {k: v for k, v in data.items() if k not in typed and k != SCHEMA_KEY}
        return cls(**values, extra=extra)

    @classmethod
    def read(cls, path: str | Path) -> RunRecord:
        return cls.from_dict(read_json_record(path, *RUN_SCHEMA, rerun="train the entry again"), str(path))


@dataclass(frozen=True)
class MetricsRecord:
    """One entry's result, the file its table cells point to.

    ``values`` maps a metric to its selectable numbers: ``{"accuracy": {"best": 93.1, "last": 92.8}}`` (percent),
    ``{"map": {"AP": 0.31, "AP50": 0.52, ...}}`` (fractions), as :data:`SELECTIONS` lists. ``profile`` says where they
    come from: ``smoke`` values are never judged against a paper. ``comparable`` overrides that for results that do
    not depend on the profile (the Table 7 probes train on the paper's synthetic tasks in every profile).
    """

    entry: str
    group: str
    task: str
    arch: str
    pipeline_file: str
    profile: str
    status: str
    reason: str | None = None
    values: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    trained_on: Mapping[str, Any] | None = None
    compat: Mapping[str, Any] = field(default_factory=dict)
    run_dir: str | None = None
    wall_time_s: float | None = None
    git_revision: str | None = None
    comparable: bool | None = None

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise RecordError(f"entry {self.entry!r}: status {self.status!r} is not one of {STATUSES}")

    @property
    def is_comparable(self) -> bool:
        """Whether our values may be judged against a paper's: learned in the full profile, or said so."""
        return self.profile == "full" if self.comparable is None else self.comparable

    def value(self, metric: str, selection: str | None = None) -> float | None:
        """Our number for ``metric`` (``selection`` picks best/last, AP50, ...); ``None`` unless the run is ok."""
        if self.status != "ok":
            return None
        block = self.values.get(metric) or {}
        value = block.get(selection or DEFAULT_SELECTION.get(metric, ""))
        return float(value) if _finite(value) else None

    def to_dict(self) -> dict[str, Any]:
        return {SCHEMA_KEY: schema_id(*METRICS_SCHEMA), **asdict(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str) -> MetricsRecord:
        for key in ("entry", "group", "task", "arch", "pipeline_file", "profile", "status"):
            require(data, key, str, where)
        values = require(data, "values", dict, where)
        for metric, block in values.items():
            if metric not in SELECTIONS or not isinstance(block, dict):
                raise RecordError(f"{where}: values.{metric} is not a known metric block")
            bad = [k for k, v in block.items() if k not in SELECTIONS[metric] or not _finite(v)]
            if bad:
                raise RecordError(f"{where}: values.{metric} has unknown or non-numeric key(s) {bad}")
        if data["status"] == "ok" and not values:
            raise RecordError(f"{where}: status 'ok' but no values")
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def read(cls, path: str | Path) -> MetricsRecord:
        data = read_json_record(path, *METRICS_SCHEMA, rerun=f"dvc repro -f train@{Path(path).parent.name}")
        return cls.from_dict(data, str(path))


@dataclass(frozen=True)
class PreparedRecord:
    """What the prepare stage did for one dataset: generated it, found it under the data root, or skipped it."""

    dataset: str
    profile: str
    prepared: bool
    path: str | None = None
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {SCHEMA_KEY: schema_id(*PREPARED_SCHEMA), **asdict(self)}
