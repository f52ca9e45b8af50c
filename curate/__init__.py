"""curate: turn raw examples into a fine-tuning dataset you can trust.

The public Python API; every CLI command is a thin wrapper over one of these.
"""

from __future__ import annotations

__version__ = "0.1.0"

from curate.dataset import SCHEMA, load_any, make_row, read_dataset, write_table
from curate.errors import CurateError, InputError, MissingDependency, RecipeError, UsageError
from curate.ingest import IngestSummary, export, ingest, ingest_table
from curate.dedupe import DedupeResult, dedupe
from curate.validate import CODES, ValidationResult
from curate.validate import validate as validate_dataset
from curate.report import Report, report
from curate.synth import SynthSummary, start_local_teacher, synthesize
from curate.train import TrainConfig, evaluate, merge, train
from curate.pipeline import run_recipe

__all__ = [
    "__version__",
    "CODES",
    "SCHEMA",
    "CurateError",
    "DedupeResult",
    "Report",
    "SynthSummary",
    "TrainConfig",
    "ValidationResult",
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
    "dedupe",
    "evaluate",
    "merge",
    "report",
    "run_recipe",
    "start_local_teacher",
    "synthesize",
    "train",
    "validate_dataset",
]
