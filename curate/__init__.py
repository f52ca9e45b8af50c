"""curate: turn raw examples into a fine-tuning dataset you can trust.

The public Python API. Each stage is a package named for its command, and its function lives there:

    from curate.ingest import ingest        from curate.dedupe import dedupe
    from curate.validate import validate    from curate.report import report
    from curate.synth import synthesize     from curate.train import train, merge
    from curate.evaluation import evaluate  from curate.pipeline import run_recipe

The names below are importable from `curate` itself. They load their module on first use (PEP 562),
so `import curate` or the CLI does not pay for importing every stage.
"""

from __future__ import annotations

__version__ = "0.1.0"

import importlib
from typing import TYPE_CHECKING

_WHERE = {
    "CurateError": "curate.errors", "InputError": "curate.errors", "MissingDependency": "curate.errors",
    "RecipeError": "curate.errors", "ThresholdExceeded": "curate.errors", "UsageError": "curate.errors",
    "SCHEMA": "curate.dataset", "make_row": "curate.dataset", "read_dataset": "curate.dataset",
    "write_table": "curate.outputs", "load_any": "curate.inputs",
    "IngestSummary": "curate.ingest", "ingest_table": "curate.ingest", "export": "curate.ingest",
    "CODES": "curate.validate", "ValidationResult": "curate.validate",
    "DedupeResult": "curate.dedupe", "Report": "curate.report",
    "SynthSummary": "curate.synth", "start_local_teacher": "curate.synth", "synthesize": "curate.synth",
    "TrainConfig": "curate.train", "merge": "curate.train", "evaluate": "curate.evaluation",
    "run_recipe": "curate.pipeline",
}


def __getattr__(name: str):
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'curate' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


if TYPE_CHECKING:  # for type checkers and editors: the same names, imported eagerly
    from curate.dataset import SCHEMA, make_row, read_dataset
    from curate.dedupe import DedupeResult
    from curate.errors import (
        CurateError,
        InputError,
        MissingDependency,
        RecipeError,
        ThresholdExceeded,
        UsageError,
    )
    from curate.evaluation import evaluate
    from curate.ingest import IngestSummary, export, ingest_table
    from curate.inputs import load_any
    from curate.outputs import write_table
    from curate.pipeline import run_recipe
    from curate.report import Report
    from curate.synth import SynthSummary, start_local_teacher, synthesize
    from curate.train import TrainConfig, merge
    from curate.validate import CODES, ValidationResult

__all__ = [
    "__version__", "CurateError", "InputError", "MissingDependency", "RecipeError", "ThresholdExceeded", "UsageError",
    "SCHEMA", "make_row", "read_dataset", "write_table", "load_any", "IngestSummary", "ingest_table", "export",
    "CODES", "ValidationResult", "DedupeResult", "Report", "SynthSummary", "start_local_teacher", "synthesize",
    "TrainConfig", "merge", "evaluate", "run_recipe",
]
