"""curate: turn raw examples into a fine-tuning dataset you can trust.

The public Python API; every CLI command is a thin wrapper over one of these.
"""

from __future__ import annotations

__version__ = "0.1.0"

import sys
import types
from typing import TYPE_CHECKING

# Each name is imported from its module on first use (PEP 562), so `from curate.dedupe import dedupe` or the
# CLI does not pay for importing every stage: the synth, report, train and validate modules together cost
# about 0.3 s of start-up.
_WHERE = {
    "SCHEMA": "curate.dataset", "load_any": "curate.dataset", "make_row": "curate.dataset",
    "read_dataset": "curate.dataset", "write_table": "curate.outputs",
    "DedupeResult": "curate.dedupe", "dedupe": "curate.dedupe",
    "CurateError": "curate.errors", "InputError": "curate.errors", "MissingDependency": "curate.errors",
    "RecipeError": "curate.errors", "UsageError": "curate.errors",
    "IngestSummary": "curate.ingest", "export": "curate.ingest", "ingest": "curate.ingest",
    "ingest_table": "curate.ingest",
    "run_recipe": "curate.pipeline",
    "Report": "curate.report", "report": "curate.report",
    "SynthSummary": "curate.synth", "start_local_teacher": "curate.synth", "synthesize": "curate.synth",
    "TrainConfig": "curate.train", "evaluate": "curate.train", "merge": "curate.train", "train": "curate.train",
    "CODES": "curate.validate", "ValidationResult": "curate.validate",
    "validate_dataset": ("curate.validate", "validate"),
}


def __getattr__(name: str):
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module 'curate' has no attribute {name!r}")
    import importlib

    module, attr = where if isinstance(where, tuple) else (where, name)
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value  # later lookups skip __getattr__
    return value


class _Package(types.ModuleType):
    """Keeps `curate.dedupe`, `curate.report` and `curate.train` naming the functions: importing a subpackage
    would otherwise bind its module over the function of the same name."""

    def __setattr__(self, name: str, value) -> None:
        if isinstance(value, types.ModuleType) and name in _WHERE:
            return  # the name is resolved by __getattr__, to the function
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

if TYPE_CHECKING:  # for type checkers and editors: the same names, imported eagerly
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
