"""`curate report`: structure, coverage and drift of a training set against production samples."""

from __future__ import annotations

from curate.report.core import SCHEMA_VERSION, Report, report
from curate.report.gates import METRICS, Gate, parse_gate

__all__ = ["METRICS", "SCHEMA_VERSION", "Gate", "Report", "parse_gate", "report"]
