"""`curate report`: structure, coverage and drift of a training set against production samples.

    config.py    ReportConfig
    stage.py     report(): the report document, the gap rows, the HTML and gaps outputs
    features.py  per-record structure and token lengths; KS / PSI between two sets
    embed.py     sentence embeddings (all-MiniLM-L6-v2, or TF-IDF + SVD)
    coverage.py  clusters of production and how much of each the training set covers
    drift.py     what moved between two production snapshots
    gates.py     --fail-on gates
    html.py      the self-contained HTML report
    render.py    what the command prints
"""

from __future__ import annotations

from curate.lazy import lazy

_WHERE = {
    "METRICS": "curate.report.gates",
    "Gate": "curate.report.gates",
    "parse_gate": "curate.report.gates",
    "ReportConfig": "curate.report.config",
    "ReportOutcome": "curate.report.stage",
    "SCHEMA_VERSION": "curate.report.stage",
    "report": "curate.report.stage",
}
__getattr__, __dir__ = lazy(__name__, _WHERE)
__all__ = sorted(_WHERE)
