"""``python -m repro.faults ...`` is ``repro faults ...``."""

import sys

from repro.cli import app

if __name__ == "__main__":
    sys.exit(app(["faults", *sys.argv[1:]]))
