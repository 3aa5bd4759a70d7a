#!/usr/bin/env bash
# The reduced smoke reproduction run by CI (docs/pipeline.md): a few entry groups through DVC, the profile of every
# entry, all tables, and the table checks. Run from the repository root with the virtual environment on PATH.
set -euo pipefail
export DVC_NO_ANALYTICS=1 REPRO_NO_PROGRESS=1
SUBSET=${SMOKE_SUBSET:-"sap_readme rnnpool_t18 condensation sap_det_ssd"}
[ -d .dvc ] || dvc init -q
for group in $SUBSET; do
  dvc repro train@"$group"
done
dvc repro profile
repro tables
repro check-tables
