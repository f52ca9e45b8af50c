"""`curate report`: structure, coverage and drift of a training set against production samples."""

from __future__ import annotations

from curate.report.gates import METRICS, Gate, parse_gate
from curate.report.stage import SCHEMA_VERSION, Report, report

__all__ = ["METRICS", "SCHEMA_VERSION", "Gate", "Report", "parse_gate", "report"]
