"""curate: turn raw examples into a fine-tuning dataset you can trust.

The public Python API; every CLI command is a thin wrapper over one of these.
"""

from __future__ import annotations

__version__ = "0.1.0"

from curate.dataset import SCHEMA, load_any, make_row, read_dataset, write_table
from curate.dedupe import DedupeResult, dedupe
from curate.errors import CurateError, InputError, MissingDependency, RecipeError, UsageError
from curate.ingest import IngestSummary, export, ingest, ingest_table
from curate.pipeline import run_recipe
from curate.report import Report, report
from curate.synth import SynthSummary, start_local_teacher, synthesize
from curate.train import TrainConfig, evaluate, merge, train
from curate.validate import CODES, ValidationResult
from curate.validate import validate as validate_dataset

__all__ = [
    "CODES",
    "SCHEMA",
    "CurateError",
    "DedupeResult",
    "IngestSummary",
    "InputError",
    "MissingDependency",
    "RecipeError",
    "Report",
    "SynthSummary",
    "TrainConfig",
    "UsageError",
    "ValidationResult",
    "__version__",
    "dedupe",
    "evaluate",
    "export",
    "ingest",
    "ingest_table",
    "load_any",
    "make_row",
    "merge",
    "read_dataset",
    "report",
    "run_recipe",
    "start_local_teacher",
    "synthesize",
    "train",
    "validate_dataset",
    "write_table",
]
