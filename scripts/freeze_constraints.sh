#!/usr/bin/env bash
# Pin every package of .venv (after a change of pyproject.toml's dependencies) into constraints.txt, which
# scripts/setup.sh installs with. Run from the repository root.
set -euo pipefail
cd "$(dirname "$0")/.."
{
  echo "# Every package scripts/setup.sh installs, pinned. Regenerate with scripts/freeze_constraints.sh."
  .venv/bin/python -m pip freeze --all --exclude-editable | grep -v '^repro\b'
} > constraints.txt
echo "wrote constraints.txt ($(grep -vc '^#' constraints.txt) packages)"
