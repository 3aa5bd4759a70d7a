#!/usr/bin/env bash
# Set up a fresh machine for repro: system libraries for ffcv, a virtual environment in .venv, the package with
# its dev and ffcv extras. Idempotent: re-running skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! pkg-config --exists libturbojpeg 2>/dev/null || ! pkg-config --exists opencv4 2>/dev/null; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "[setup] installing system libraries for ffcv (libturbojpeg0-dev, libopencv-dev)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      libturbojpeg0-dev libopencv-dev pkg-config >/dev/null
  else
    echo "[setup] warning: libturbojpeg/opencv development files missing and apt-get unavailable;" \
         "ffcv will not build (the torchvision loaders still work)" >&2
  fi
fi

PYTHON=${PYTHON:-python3}
# torch's wheel alone unpacks to about 5.5 GB: say so before pip fails half-way with "No space left on device".
free_kb=$(df -Pk . | awk 'NR == 2 {print $4}')
if [ ! -x .venv/bin/python ] && [ "${free_kb:-0}" -lt $((8 * 1024 * 1024)) ]; then
  echo "[setup] warning: $((free_kb / 1024 / 1024)) GB free here; the environment needs about 7 GB" >&2
fi
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
# constraints.txt pins every package the environment holds (regenerate: scripts/freeze_constraints.sh), so that a
# fresh machine gets the environment the results and the lint were produced with.
.venv/bin/python -m pip install -q --upgrade pip -c constraints.txt
if ! .venv/bin/python -m pip install -q -c constraints.txt -e '.[dev,ffcv]'; then
  echo "[setup] warning: installing the ffcv extra failed; installing without it" >&2
  .venv/bin/python -m pip install -q -c constraints.txt -e '.[dev]'
fi
echo "[setup] done: $(.venv/bin/python -c 'import torch, repro; print("torch", torch.__version__, "repro", repro.__version__)')"
