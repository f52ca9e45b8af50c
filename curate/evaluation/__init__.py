"""`curate eval`: greedy replies of the base model and adapters to held-out prompts, scored against the task.

These modules import torch, transformers and peft only inside the functions that need them.
"""

from __future__ import annotations

from curate.lazy import lazy

_WHERE = {
    "EvalResult": "curate.evaluation.stage",
    "evaluate": "curate.evaluation.stage",
}
__getattr__, __dir__ = lazy(__name__, _WHERE)
__all__ = sorted(_WHERE)
