"""Pipeline entries: one per model configuration a paper table needs, read from ``pipelines/*.yaml``.

This is the one entry loader: the training, profile and tables stages all read entries through :func:`load_entries`.

A pipelines file is ``{entries: {<id>: {...}}}`` with optional top-level ``group`` (default: the file stem) and
``defaults`` (merged under every entry). Entry fields (:data:`ENTRY_FIELDS`): ``task``, ``dataset``, ``arch`` (an SAP
architecture name) or ``model`` (a registered model), ``image_size`` (``224`` or ``[height, width]``) or
``image_sizes`` (a list: one entry per size, ids suffixed ``@<size>``), ``num_classes``, and optionally ``recipe``,
``epochs``, ``model_opts``, ``detector``, ``trainable``/``buildable`` with a reason, ``group``, ``log_folder``,
``stop_epoch``, ``claim_role``, ``smoke_image_size``, ``epochs_compat_299``. An unknown field is an error (it would
otherwise be silently ignored). Entries run in *groups* (one DVC stage instance, one process per group): an entry's
group is its own ``group`` field, else ``<file group>-<log_folder>`` (the SAP STL10 logs), else the file's group.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from repro.utils.yaml_load import safe_load

TASKS = ("classification", "detection", "face_detection")
GROUPS_FILE = "groups.yaml"  # generated index of groups read by dvc.yaml (vars); not an entries file
ENTRY_FIELDS = frozenset(
    {
        "task",
        "dataset",
        "arch",
        "model",
        "image_size",
        "image_sizes",
        "num_classes",
        "recipe",
        "epochs",
        "model_opts",
        "detector",
        "buildable",
        "trainable",
        "not_buildable_reason",
        "not_trained_reason",
        "group",
        "log_folder",
        "stop_epoch",
        "claim_role",
        "smoke_image_size",
        "epochs_compat_299",
    }
)
CLAIM_ROLE_FIELDS = frozenset({"claim", "variant", "method", "baseline"})

ImageSize = int | tuple[int, int]


class EntryError(ValueError):
    """A malformed pipelines file or an unknown entry / group (the message names the file, the entry and the fix)."""


@dataclass(frozen=True)
class ClaimRole:
    """How an entry takes part in an abstract claim (``repro.tables.claims``): e.g. ``{claim: sap_imagenet,
    variant: '2222121', method: nlp}`` or ``{claim: sap_memory, baseline: <entry id>}``."""

    claim: str
    variant: str | None = None
    method: str | None = None
    baseline: str | None = None


@dataclass(frozen=True)
class Entry:
    """One configuration to profile, and to train when ``trainable``."""

    id: str
    file: str
    group: str
    task: str
    dataset: str
    arch: str  # an SAP architecture name or a registered model name
    image_size: ImageSize
    num_classes: int
    recipe: str | None = None
    epochs: int | None = None
    model_opts: Mapping[str, Any] = field(default_factory=dict)
    detector: str | None = None
    buildable: bool = True
    trainable: bool = True
    reason: str | None = None  # why it is not built / not trained (shown as the "not run" reason)
    log_folder: str | None = None
    stop_epoch: int | None = None  # the epoch at which the official log ends (informational)
    claim_roles: tuple[ClaimRole, ...] = ()
    smoke_image_size: int | None = None
    epochs_compat_299: bool = False

    @property
    def image_size_text(self) -> str:
        return size_text(self.image_size)


def size_text(size: ImageSize) -> str:
    """``224`` or ``480x640`` (height x width)."""
    return str(size) if isinstance(size, int) else f"{size[0]}x{size[1]}"


def parse_size(value: Any, where: str = "image_size") -> ImageSize:
    """``224``, ``"224"``, ``[480, 640]`` or ``"480x640"`` (height x width)."""
    if isinstance(value, bool):
        raise EntryError(f"{where}: expected an int or [height, width], got {value!r}")
    if isinstance(value, int) and value > 0:
        return value
    if isinstance(value, str):
        parts = re.split(r"[x, ]+", value.strip())
        if all(p.isdigit() for p in parts) and len(parts) in (1, 2):
            return int(parts[0]) if len(parts) == 1 else (int(parts[0]), int(parts[1]))
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, int) and v > 0 for v in value):
        return int(value[0]), int(value[1])
    raise EntryError(f"{where}: expected a positive int or [height, width], got {value!r}")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text.replace("/", "-")).strip("_-")


def _int(raw: Mapping[str, Any], key: str, where: str, *, optional: bool = True) -> int | None:
    value = raw.get(key)
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise EntryError(f"{where}: {key} must be a non-negative integer, got {value!r}")
    return value


def _claim_roles(value: Any, where: str) -> tuple[ClaimRole, ...]:
    roles = [] if value is None else [value] if isinstance(value, Mapping) else value
    if not isinstance(roles, list):
        raise EntryError(f"{where}: claim_role must be a mapping or a list of mappings, got {value!r}")
    out = []
    for role in roles:
        if not isinstance(role, Mapping) or not role.get("claim"):
            raise EntryError(f"{where}: each claim_role needs a 'claim' name, got {role!r}")
        unknown = set(role) - CLAIM_ROLE_FIELDS
        if unknown:
            raise EntryError(f"{where}: claim_role has unknown field(s) {sorted(unknown)}")
        out.append(ClaimRole(**{k: None if v is None else str(v) for k, v in role.items()}))
    return tuple(out)


def _entries(entry_id: str, raw: Any, path: Path, file_group: str) -> list[Entry]:
    where = f"{path}: entry {entry_id!r}"
    if not isinstance(raw, Mapping):
        raise EntryError(f"{where}: expected a mapping, got {type(raw).__name__}")
    unknown = set(raw) - ENTRY_FIELDS
    if unknown:
        raise EntryError(f"{where}: unknown field(s) {sorted(unknown)}; allowed: {', '.join(sorted(ENTRY_FIELDS))}")
    arch = raw.get("arch") or raw.get("model")
    if raw.get("arch") and raw.get("model"):
        raise EntryError(f"{where}: give 'arch' (SAP grammar) or 'model' (registered model), not both")
    missing = [k for k in ("task", "dataset", "num_classes") if raw.get(k) in (None, "")]
    if not arch:
        missing.append("arch (or model)")
    if raw.get("image_size") is None and raw.get("image_sizes") is None:
        missing.append("image_size (or image_sizes)")
    if missing:
        raise EntryError(f"{where}: missing field(s) {missing}")
    if raw["task"] not in TASKS:
        raise EntryError(f"{where}: task {raw['task']!r} is not one of {TASKS}")
    if raw.get("image_size") is not None and raw.get("image_sizes") is not None:
        raise EntryError(f"{where}: give image_size or image_sizes, not both")
    num_classes = _int(raw, "num_classes", where, optional=False)
    if not num_classes:
        raise EntryError(f"{where}: num_classes must be >= 1")
    buildable = bool(raw.get("buildable", True))
    trainable = bool(raw.get("trainable", True)) and buildable
    reason = raw.get("not_buildable_reason") or raw.get("not_trained_reason")
    if not trainable and not reason:
        raise EntryError(f"{where}: an entry with trainable/buildable false needs a reason (not_trained_reason)")
    opts = raw.get("model_opts") or {}
    if not isinstance(opts, Mapping):
        raise EntryError(f"{where}: model_opts must be a mapping, got {opts!r}")
    log_folder = raw.get("log_folder")
    group = raw.get("group") or (f"{file_group}-{_slug(str(log_folder))}" if log_folder else file_group)
    common = dict(
        file=str(path),
        group=_slug(str(group)),
        task=str(raw["task"]),
        dataset=str(raw["dataset"]),
        arch=str(arch),
        num_classes=num_classes,
        recipe=None if raw.get("recipe") is None else str(raw["recipe"]),
        epochs=_int(raw, "epochs", where),
        model_opts=dict(opts),
        detector=None if raw.get("detector") is None else str(raw["detector"]),
        buildable=buildable,
        trainable=trainable,
        reason=None if reason is None else str(reason),
        log_folder=None if log_folder is None else str(log_folder),
        stop_epoch=_int(raw, "stop_epoch", where),
        claim_roles=_claim_roles(raw.get("claim_role"), where),
        smoke_image_size=_int(raw, "smoke_image_size", where),
        epochs_compat_299=bool(raw.get("epochs_compat_299", False)),
    )
    if raw.get("image_sizes") is None:
        return [Entry(id=entry_id, image_size=parse_size(raw["image_size"], f"{where}: image_size"), **common)]
    sizes = raw["image_sizes"]
    if not isinstance(sizes, list) or not sizes:
        raise EntryError(f"{where}: image_sizes must be a non-empty list, got {sizes!r}")
    parsed = [parse_size(s, f"{where}: image_sizes") for s in sizes]
    return [Entry(id=f"{entry_id}@{size_text(s)}", image_size=s, **common) for s in parsed]


def _read_yaml(path: Path) -> Any:
    try:
        return safe_load(path.read_text())
    except OSError as exc:
        raise EntryError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except yaml.YAMLError as exc:
        raise EntryError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None


def load_file(path: str | Path) -> list[Entry]:
    """The entries of one pipelines file, in file order."""
    path = Path(path)
    data = _read_yaml(path) or {}
    if not isinstance(data, Mapping) or "entries" not in data:
        raise EntryError(f"{path}: expected a mapping with 'entries' (and optionally 'group', 'defaults')")
    unknown = set(data) - {"entries", "group", "defaults"}
    if unknown:
        raise EntryError(f"{path}: unknown top-level key(s) {sorted(unknown)}; allowed: entries, group, defaults")
    entries, defaults = data["entries"], data.get("defaults") or {}
    if not isinstance(entries, Mapping):
        raise EntryError(f"{path}: 'entries' must map entry ids to their settings")
    if not isinstance(defaults, Mapping):
        raise EntryError(f"{path}: 'defaults' must be a mapping")
    file_group = str(data.get("group") or path.stem)
    out: list[Entry] = []
    for key, raw in entries.items():
        merged = {**defaults, **raw} if isinstance(raw, Mapping) else raw if raw is not None else dict(defaults)
        out += _entries(str(key), merged, path, file_group)
    return out


def load_entries(root: str | Path = "pipelines") -> dict[str, Entry]:
    """Every entry under ``root`` keyed by id (ids are unique across files)."""
    root = Path(root)
    if not root.is_dir():
        raise EntryError(f"{root}: no such directory (expected the pipelines/*.yaml entry files)")
    out: dict[str, Entry] = {}
    for path in sorted(root.glob("*.yaml")):
        if path.name == GROUPS_FILE:
            continue
        for entry in load_file(path):
            if entry.id in out:
                raise EntryError(f"entry id {entry.id!r} is defined in both {out[entry.id].file} and {entry.file}")
            out[entry.id] = entry
    return out


def group_entries(entries: Mapping[str, Entry]) -> dict[str, list[Entry]]:
    """Entries by group, groups sorted by name, entries in file order."""
    groups: dict[str, list[Entry]] = {}
    for entry in entries.values():
        groups.setdefault(entry.group, []).append(entry)
    return dict(sorted(groups.items()))


def select_group(entries: Mapping[str, Entry], group: str) -> list[Entry]:
    groups = group_entries(entries)
    if group not in groups:
        raise EntryError(f"unknown group {group!r}; groups: {', '.join(groups)}")
    return groups[group]
