"""``repro prepare``: verify a real dataset's layout or write a generated one; optionally write ``.beton`` files."""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Any

from repro.data.errors import DatasetError
from repro.data.paths import resolve_data_root
from repro.data.registry import DatasetSpec, get_spec


def _reader_options(spec: DatasetSpec, opts: dict[str, Any]) -> dict[str, Any]:
    """``opts`` if the reader accepts them all, else a clear error naming the accepted ones."""
    if not opts:
        return opts
    params = inspect.signature(spec.build).parameters
    accepted = [n for n, p in params.items() if p.kind == p.KEYWORD_ONLY and n != "transform"]
    unknown = sorted(set(opts) - set(accepted))
    if unknown and not any(p.kind == p.VAR_KEYWORD for p in params.values()):
        raise DatasetError(f"{spec.name}: unknown option(s) {unknown}; accepted: {accepted or 'none'}")
    return opts


def prepare(
    name: str,
    root: str | os.PathLike | None = None,
    *,
    backend: str = "torch",
    ffcv_mode: str = "raw",
    ffcv_max_resolution: int | None = None,
    ffcv_workers: int = 1,
    splits: tuple[str, ...] | None = None,
    **opts: Any,
) -> Path:
    """Make ``name`` ready under the data root and return its directory.

    Generated datasets are written (deterministic from ``seed``; a re-run with the same options does nothing);
    real ones are checked (a missing or incomplete dataset fails at once with the expected layout and where to
    get it). With ``backend='ffcv'`` the classification splits are also written to ``.beton`` files.
    """
    from repro.data.ffcv_io import beton_path, write_beton
    from repro.data.loaders import BACKENDS, dataset_fingerprint

    spec = get_spec(name)
    if backend not in BACKENDS:
        raise DatasetError(f"unknown backend {backend!r}; valid: {', '.join(BACKENDS)}")
    data_root = resolve_data_root(root)
    if spec.generated:
        directory = spec.generate(data_root, **opts)
        reader_opts: dict[str, Any] = {}
    else:
        reader_opts = _reader_options(spec, opts)
        directory = spec.check(data_root)
    if backend == "ffcv":
        if spec.task != "classification":
            raise DatasetError(f"{spec.name} is a detection dataset: ffcv has no box fields, use backend 'torch'")
        for split in splits or spec.splits:
            split = spec.resolve_split(split)
            dataset = spec.build(data_root, split, transform=None, **reader_opts)
            write_beton(
                dataset,
                beton_path(data_root, spec.name, split, ffcv_mode, ffcv_max_resolution),
                mode=ffcv_mode,
                max_resolution=ffcv_max_resolution,
                num_workers=ffcv_workers,
                fingerprint=dataset_fingerprint(spec, data_root, dataset),
            )
    return Path(directory)
