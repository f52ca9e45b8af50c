"""`curate report`: structure, coverage and drift of a training set against production samples."""

from __future__ import annotations

from curate.lazy import lazy

_WHERE = {
    "METRICS": "curate.report.gates",
    "Gate": "curate.report.gates",
    "parse_gate": "curate.report.gates",
    "SCHEMA_VERSION": "curate.report.stage",
    "Report": "curate.report.stage",
    "report": "curate.report.stage",
}
__getattr__, __dir__ = lazy(__name__, _WHERE)
__all__ = sorted(_WHERE)
