"""Bodies of ``repro prepare`` and ``repro bench-data``: an error is one line on stderr and an exit code: 2 for a
usage error (unknown dataset or option, missing data), 1 for a bad file or a failed write (disk full)."""

from __future__ import annotations

import sys

import yaml

from repro.data.errors import DatasetError
from repro.utils.atomic import AtomicWriteError, write_json_atomic

EXIT_WRITE_ERROR = 1


def parse_options(pairs: list[str]) -> dict:
    """``["n_train=500", "format=jpg"]`` -> ``{"n_train": 500, "format": "jpg"}`` (values parsed as YAML scalars)."""
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise DatasetError(f"option {pair!r} is not KEY=VALUE (e.g. --set n_train=500)")
        options[key.strip()] = yaml.safe_load(value) if value else ""
    return options


def _fail(err: Exception) -> int:
    print("error: " + " ".join(str(err).split()), file=sys.stderr)
    return getattr(err, "exit_code", EXIT_WRITE_ERROR) if isinstance(err, DatasetError) else EXIT_WRITE_ERROR


def prepare_command(
    dataset: str,
    *,
    data_root: str | None,
    backend: str,
    ffcv_mode: str,
    ffcv_max_resolution: int | None,
    options: list[str],
) -> int:
    from repro.data.prepare import prepare

    try:
        path = prepare(
            dataset,
            data_root,
            backend=backend,
            ffcv_mode=ffcv_mode,
            ffcv_max_resolution=ffcv_max_resolution,
            **parse_options(options),
        )
    except (DatasetError, AtomicWriteError) as err:
        return _fail(err)
    print(path)
    return 0


def bench_command(
    *,
    data_root: str | None,
    image_size: int,
    num_images: int,
    batch_size: int,
    num_workers: int,
    epochs: int,
    recipe: str,
    ffcv_modes: list[str],
    out: str | None,
) -> int:
    from repro.data.bench import bench_data

    try:
        result = bench_data(
            data_root,
            image_size=image_size,
            num_images=num_images,
            batch_size=batch_size,
            num_workers=num_workers,
            epochs=epochs,
            recipe=recipe,
            ffcv_modes=tuple(ffcv_modes),
        )
        print("\n".join(result.lines()))
        if out:
            write_json_atomic(out, result.as_dict())
    except (DatasetError, AtomicWriteError) as err:
        return _fail(err)
    return 0
