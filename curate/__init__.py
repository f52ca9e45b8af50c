"""curate: turn raw examples into a fine-tuning dataset you can trust.

The public Python API; every CLI command is a thin wrapper over one of these.
"""

from __future__ import annotations

__version__ = "0.1.0"

from curate.dataset import SCHEMA, load_any, make_row, read_dataset, write_table
from curate.errors import CurateError, InputError, MissingDependency, RecipeError, UsageError
from curate.ingest import IngestSummary, export, ingest, ingest_table

__all__ = [
    "__version__",
    "SCHEMA",
    "CurateError",
    "IngestSummary",
    "InputError",
    "MissingDependency",
    "RecipeError",
    "UsageError",
    "export",
    "ingest",
    "ingest_table",
    "load_any",
    "make_row",
    "read_dataset",
    "write_table",
]
