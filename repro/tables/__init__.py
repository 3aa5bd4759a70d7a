"""Reported numbers (``paper_tables/``) joined with our results, tolerance verdicts, rendered tables, plots, claims."""

from repro.tables.schema import PaperTable, PaperTableError, ReportedCell
from repro.tables.verdict import Verdict

__all__ = ["PaperTable", "PaperTableError", "ReportedCell", "Verdict"]
