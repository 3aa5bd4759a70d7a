"""OpenMP's wait policy for the process: idle threads sleep instead of spinning.

PyTorch's intra-op pool and MKL run on GNU OpenMP, whose idle threads spin for a while before they sleep
(``OMP_WAIT_POLICY`` unset). On a machine whose cores are busy with other processes, a spinning thread holds the
core that its descheduled partner needs to finish the same parallel region, and every operation then waits for a
scheduler time slice: on 2 shared cores the fast pool's training step took 4-9 times longer than with passive
waiting (docs/performance.md, "Busy machine"). The policy is read once, when the OpenMP library is loaded, i.e. at
``import torch``, so it must be set before that.
"""

from __future__ import annotations

import os
import sys

__all__ = ["prefer_passive_wait"]


def prefer_passive_wait() -> str | None:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` unless it is set already (the user's choice wins) or torch is already imported
    (too late to take effect); return the policy now in the environment (None when unset)."""
    if "OMP_WAIT_POLICY" not in os.environ and "torch" not in sys.modules:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    return os.environ.get("OMP_WAIT_POLICY")
