#!/usr/bin/env bash
# GPU readiness check: on one CUDA device, run what the CPU-only test suite cannot (AMP training of a SAP and an
# RNNPool model, channels-last, torch.compile of the fast pool, a 1-GPU torchrun NCCL run, the ffcv pipeline,
# measured vs analytic peak memory, the benchmarks on CUDA) and print a table; exit 1 if any check failed.
# Without a CUDA device: one line, exit 0. Options are passed on (python -m repro.bench.gpu_check --help);
# the table and the benchmark reports go to benchmarks/results/gpu_check/. Takes a few minutes on one GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # this checkout's package
exec "$PYTHON" -m repro.bench.gpu_check "$@"
