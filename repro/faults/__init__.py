"""Fault injection: SIGKILL, full disks, concurrent runs and hostile files against the suite, with counts.

``python -m repro.faults`` (or ``scripts/fault_injection.sh``) runs every registered family of trials and writes the
figures section of ``docs/reliability.md``. A family is a function returning :class:`TrialRecord` s, registered with
:func:`register_family` (see :mod:`repro.faults.registry`); importing this package registers the built-in ones.
Nothing here imports :mod:`repro.pipeline`: faults that need a real process drive the command line as subprocesses.
"""

from repro.faults.registry import FAMILIES, Family, FaultContext, TrialRecord, register_family, run_family

# -- families (one import per module) --
# isort: split
from repro.faults import training as training  # isort: skip - the order of the report
from repro.faults import files as files  # isort: skip
from repro.faults import dvc as dvc  # isort: skip

__all__ = ["FAMILIES", "Family", "FaultContext", "TrialRecord", "register_family", "run_family"]
