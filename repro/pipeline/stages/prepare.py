"""The ``prepare`` stage: generate the smoke profile's datasets, or check that the full profile's real datasets are in
place under the data root; ``results/prepared/<dataset>.json`` records what was done for each."""

from __future__ import annotations

import sys
from pathlib import Path

from repro.data import DatasetError, prepare
from repro.pipeline.params import PipelineParams
from repro.records.runs import PreparedRecord
from repro.utils.atomic import write_json_atomic

MARKER_DIR = "results/prepared"


def prepare_one(dataset: str, params: PipelineParams) -> PreparedRecord:
    """Prepare ``dataset`` if the profile needs it. A missing real dataset is recorded, not raised (its entries then
    fail with the message that says where to put the files); a generated one that cannot be written raises."""
    needed = dataset in params.smoke.datasets if params.is_smoke else True
    if not needed:
        return PreparedRecord(dataset, params.profile, False, note=f"not needed by the {params.profile} profile")
    root = params.smoke.data_root if params.is_smoke else params.data_root
    opts = dict(params.smoke.prepare.get(dataset, {})) if params.is_smoke else {}
    try:
        path = prepare(dataset, root, **opts)
    except (DatasetError, OSError) as exc:
        if params.is_smoke:
            raise
        print(f"warning: {dataset}: {exc}", file=sys.stderr)
        return PreparedRecord(dataset, params.profile, False, note=f"not available: {exc}")
    return PreparedRecord(dataset, params.profile, True, path=str(path))


def run(params: PipelineParams, marker_dir: str | Path = MARKER_DIR) -> list[PreparedRecord]:
    """Prepare every dataset of ``params.datasets``; write one record per dataset."""
    records = []
    for dataset in params.datasets:
        record = prepare_one(dataset, params)
        write_json_atomic(Path(marker_dir) / f"{dataset}.json", record.to_dict())
        records.append(record)
    return records
