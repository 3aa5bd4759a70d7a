"""Where datasets live: ``--data-root`` > ``$REPRO_DATA_ROOT`` > ``params.yaml`` ``data.root`` > ``data/``."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from typing import Any

from repro.data.errors import DatasetError

ENV_VAR = "REPRO_DATA_ROOT"
DEFAULT_ROOT = "data"
PARAMS_FILE = "params.yaml"


def _root_from_params(params_file: Path) -> Path | None:
    """``data.root`` of a params file (relative paths are relative to the file), or None if unset."""
    if not params_file.is_file():
        return None
    import yaml

    try:
        params = yaml.safe_load(params_file.read_text()) or {}
    except yaml.YAMLError as err:
        raise DatasetError(f"cannot read {params_file}: {err}; fix the YAML or pass --data-root") from None
    data = params.get("data") if isinstance(params, dict) else None
    root = data.get("root") if isinstance(data, dict) else None
    if root is None:
        return None
    root = Path(str(root)).expanduser()
    return root if root.is_absolute() else params_file.parent / root


def resolve_data_root(data_root: str | os.PathLike | None = None, params_file: str | os.PathLike = PARAMS_FILE) -> Path:
    """The data root: the argument, else ``$REPRO_DATA_ROOT``, else ``data.root`` of ``params.yaml``, else ``data/``."""
    if data_root is not None and str(data_root) != "":
        return Path(data_root).expanduser()
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    from_params = _root_from_params(Path(params_file))
    return from_params if from_params is not None else Path(DEFAULT_ROOT)


def require_root(root: Path, name: str) -> Path:
    """Fail at once, naming the three ways to set it, when the data root of a real dataset does not exist."""
    if not root.is_dir():
        raise DatasetError(
            f"{name}: data root {root} does not exist; pass --data-root, set ${ENV_VAR}, "
            f"or set data.root in {PARAMS_FILE}"
        )
    return root


def safe_relative_path(value: Any) -> bool:
    """Whether ``value`` (a path read from an annotation file) is a non-empty relative POSIX path that stays inside
    its folder: not absolute, no ``..``, no backslash or NUL."""
    if not isinstance(value, str) or not value or "\\" in value or "\0" in value:
        return False
    path = PurePosixPath(value)
    return not path.is_absolute() and ".." not in path.parts
