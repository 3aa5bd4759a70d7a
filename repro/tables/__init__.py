"""Reported numbers (``paper_tables/``, read through :mod:`repro.records`) joined with our results: tolerance verdicts,
rendered tables, plots, claims, the index and the summary metrics."""

from repro.tables.build import TablesReport, make_tables

__all__ = ["TablesReport", "make_tables"]
