"""Pipeline entries: one per model configuration a paper table needs, read from ``pipelines/*.yaml``.

A pipelines file is ``{entries: {<id>: {task, dataset, arch | model, image_size, num_classes, recipe, ...}}}`` with
optional top-level ``group`` (default: the file stem) and ``defaults`` (merged under every entry). Entries are run
in *groups* (one DVC stage instance per group, one Python process per group): an entry's group is its own ``group``
field, else its ``log_folder`` (the SAP STL10 logs), else the file's group.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from repro.utils.atomic import write_text_atomic

TASKS = ("classification", "detection", "face_detection")
GROUPS_FILE = "groups.yaml"  # generated index of groups read by dvc.yaml (vars); not an entries file


class EntryError(ValueError):
    """A malformed pipelines file or an unknown entry / group (the message names the file and the fix)."""


@dataclass(frozen=True)
class Entry:
    """One configuration to profile (and train, when ``trainable``)."""

    id: str
    file: str
    group: str
    task: str
    dataset: str
    arch: str
    image_size: int | tuple[int, int]
    num_classes: int
    recipe: str | None = None
    epochs: int | None = None
    model_opts: dict[str, Any] = field(default_factory=dict)
    buildable: bool = True
    trainable: bool = True
    reason: str | None = None  # why it is not built / not trained (shown as the "not run" reason)
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def paper_image_size(self) -> int | tuple[int, int]:
        return self.image_size


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text.replace("/", "-")).strip("_-")


def _entry(entry_id: str, raw: dict[str, Any], path: Path, file_group: str) -> Entry:
    where = f"{path}: entry {entry_id!r}"
    if not isinstance(raw, dict):
        raise EntryError(f"{where}: expected a mapping, got {type(raw).__name__}")
    arch = raw.get("arch") or raw.get("model")
    missing = [k for k in ("task", "dataset", "image_size", "num_classes") if raw.get(k) in (None, "")]
    if not arch:
        missing.append("arch (or model)")
    if missing:
        raise EntryError(f"{where}: missing field(s) {missing}")
    if raw["task"] not in TASKS:
        raise EntryError(f"{where}: task {raw['task']!r} is not one of {TASKS}")
    size = raw["image_size"]
    if isinstance(size, list):
        if len(size) != 2:
            raise EntryError(f"{where}: image_size must be an int or [height, width], got {size!r}")
        size = (int(size[0]), int(size[1]))
    else:
        size = int(size)
    buildable = bool(raw.get("buildable", True))
    trainable = bool(raw.get("trainable", True)) and buildable
    reason = raw.get("not_buildable_reason") or raw.get("not_trained_reason")
    if not trainable and not reason:
        raise EntryError(f"{where}: an entry with trainable/buildable false needs a reason (not_trained_reason)")
    group = raw.get("group") or (f"{file_group}-{_slug(raw['log_folder'])}" if raw.get("log_folder") else file_group)
    return Entry(
        id=entry_id,
        file=str(path),
        group=_slug(str(group)),
        task=raw["task"],
        dataset=str(raw["dataset"]),
        arch=str(arch),
        image_size=size,
        num_classes=int(raw["num_classes"]),
        recipe=raw.get("recipe"),
        epochs=raw.get("epochs"),
        model_opts=dict(raw.get("model_opts") or {}),
        buildable=buildable,
        trainable=trainable,
        reason=reason,
        raw=raw,
    )


def load_file(path: str | Path) -> list[Entry]:
    """The entries of one pipelines file (empty for files without an ``entries`` mapping)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise EntryError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict) or "entries" not in data:
        return []
    entries = data["entries"]
    if not isinstance(entries, dict):
        raise EntryError(f"{path}: 'entries' must map entry ids to their settings")
    defaults = data.get("defaults") or {}
    file_group = str(data.get("group") or path.stem)
    return [_entry(str(k), {**defaults, **(v or {})}, path, file_group) for k, v in entries.items()]


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


def group_entries(entries: dict[str, Entry]) -> dict[str, list[Entry]]:
    """Entries by group, groups sorted by name, entries in file order."""
    groups: dict[str, list[Entry]] = {}
    for entry in entries.values():
        groups.setdefault(entry.group, []).append(entry)
    return dict(sorted(groups.items()))


def groups_index(root: str | Path = "pipelines") -> dict[str, Any]:
    """The content of ``pipelines/groups.yaml``: ``{groups: {<group>: {file: ..., entries: N}}}``."""
    groups = group_entries(load_entries(root))
    prefix = Path(root).resolve().name  # paths relative to the repository root, as dvc.yaml needs them
    return {
        "groups": {
            name: {"file": f"{prefix}/{Path(members[0].file).name}", "entries": len(members)}
            for name, members in groups.items()
        }
    }


def write_groups_index(root: str | Path = "pipelines") -> Path:
    """Regenerate ``pipelines/groups.yaml`` (run after adding or regrouping entries)."""
    path = Path(root) / GROUPS_FILE
    header = "# Generated by `repro pipeline-groups --write` from pipelines/*.yaml; read by dvc.yaml (foreach).\n"
    text = header + yaml.safe_dump(groups_index(root), sort_keys=False)
    return write_text_atomic(path, text)
