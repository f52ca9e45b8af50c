"""`curate repair`: safe, named fixes, opt-in, each counted, the original of every changed row kept.

    repair("train.parquet", "repaired.parquet")                       every fix
    repair("train.jsonl", "repaired.parquet", fixes=["mojibake"])     only those named

    config.py   RepairConfig and FIXES, the fixes in the order they run
    fixes.py    the fixes, one function per text, and what each leaves for a person
    stage.py    repair(): streamed batches, the repair_* columns, the counts
    render.py   what the command prints for people
"""

from __future__ import annotations

from curate.lazy import lazy

_WHERE = {
    "FIXES": "curate.repair.config",
    "RepairConfig": "curate.repair.config",
    "REPAIR_COLUMNS": "curate.repair.stage",
    "repair": "curate.repair.stage",
}
__getattr__, __dir__ = lazy(__name__, _WHERE)
__all__ = ["FIXES", "REPAIR_COLUMNS", "RepairConfig", "repair"]
