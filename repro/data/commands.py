"""Bodies of ``repro prepare`` and ``repro bench-data``: a data error is one line on stderr and exit code 2."""

from __future__ import annotations

import sys

import yaml

from repro.data.errors import DatasetError
from repro.utils.atomic import write_json_atomic

EXIT_DATA_ERROR = 2


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
    print(f"error: {err}", file=sys.stderr)
    return EXIT_DATA_ERROR


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
    except DatasetError as err:
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
    except DatasetError as err:
        return _fail(err)
    print("\n".join(result.lines()))
    if out:
        write_json_atomic(out, result.as_dict())
    return 0
