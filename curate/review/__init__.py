"""`curate review`: people decide the edge cases.

    export_review(sources, "tasks.json", to="label-studio")   rows that need a person, as review tasks
    import_review("annotated.json", "dataset.parquet", "reviewed.parquet")   their decisions, applied

    sources.py   which rows need a person (fact flags, near-threshold duplicates, warnings, eval failures)
    formats.py   Label Studio tasks and labeling config, Argilla records; their annotated exports read back
    stage.py     the two stage functions; decisions and their semantics in its docstring
"""

from __future__ import annotations

from curate.review.config import ReviewExportConfig, ReviewImportConfig
from curate.review.stage import REVIEW_COLUMNS, export_review, import_review

__all__ = ["REVIEW_COLUMNS", "ReviewExportConfig", "ReviewImportConfig", "export_review", "import_review"]
