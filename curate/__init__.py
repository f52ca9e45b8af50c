"""curate: turn raw examples into a fine-tuning dataset you can trust.

The public Python API. Each stage is a package named for its command, and its function lives there:

    from curate.ingest import ingest        from curate.dedupe import dedupe
    from curate.validate import validate    from curate.report import report
    from curate.synth import synthesize     from curate.train import train, merge
    from curate.evaluation import evaluate  from curate.pipeline import run_recipe
    from curate.pickbase import pick_base   from curate.repair import repair
    from curate.review import export_review, import_review
    from curate.score import score         (not `curate.score`: that name is the package)

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
    "write_table": "curate.outputs", "open_input": "curate.inputs", "load_any": "curate.inputs",
    "StageOutcome": "curate.outcome",
    "IngestConfig": "curate.ingest.config", "ExportConfig": "curate.ingest.config",
    "ValidateConfig": "curate.validate.config", "DedupeConfig": "curate.dedupe.config",
    "ReportConfig": "curate.report.config", "SynthConfig": "curate.synth.config",
    "TrainConfig": "curate.train.config", "MergeConfig": "curate.train.config", "EvalConfig": "curate.evaluation.config",
    "ingest_table": "curate.ingest", "export": "curate.ingest", "CODES": "curate.validate",
    "synthesize": "curate.synth", "start_local_teacher": "curate.synth", "merge": "curate.train",
    "evaluate": "curate.evaluation", "run_recipe": "curate.pipeline",
    "ScoreConfig": "curate.score.config",
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
    from curate.dedupe.config import DedupeConfig
    from curate.errors import (
        CurateError,
        InputError,
        MissingDependency,
        RecipeError,
        ThresholdExceeded,
        UsageError,
    )
    from curate.evaluation import evaluate
    from curate.evaluation.config import EvalConfig
    from curate.ingest import export, ingest_table
    from curate.ingest.config import ExportConfig, IngestConfig
    from curate.inputs import load_any, open_input
    from curate.outcome import StageOutcome
    from curate.outputs import write_table
    from curate.pipeline import run_recipe
    from curate.report.config import ReportConfig
    from curate.score.config import ScoreConfig
    from curate.synth import start_local_teacher, synthesize
    from curate.synth.config import SynthConfig
    from curate.train import merge
    from curate.train.config import MergeConfig, TrainConfig
    from curate.validate import CODES
    from curate.validate.config import ValidateConfig

__all__ = [
    "__version__", "CurateError", "InputError", "MissingDependency", "RecipeError", "ThresholdExceeded", "UsageError",
    "SCHEMA", "make_row", "read_dataset", "write_table", "open_input", "load_any", "StageOutcome",
    "IngestConfig", "ExportConfig", "ValidateConfig", "DedupeConfig", "ReportConfig", "SynthConfig", "TrainConfig",
    "MergeConfig", "EvalConfig", "ingest_table", "export", "CODES", "synthesize", "start_local_teacher", "merge",
    "evaluate", "run_recipe", "ScoreConfig",
]
