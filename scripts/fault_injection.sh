#!/usr/bin/env bash
# The fault-injection suite (docs/reliability.md): SIGKILL in training, full disks, concurrent runs, crafted pickles
# and corrupt checkpoints, with counts; rewrites the generated figures section of docs/reliability.md. Run from the
# repository root with the virtual environment on PATH; extra arguments go to `python -m repro.faults` (e.g.
# `--scale 2`, `--families sigkill-train`, `--count sigkill-train=40`, `--no-doc`). Exit status 1 if any trial failed.
set -euo pipefail
export DVC_NO_ANALYTICS=1 REPRO_NO_PROGRESS=1 OMP_NUM_THREADS=1
exec python -m repro.faults --doc docs/reliability.md "$@"
