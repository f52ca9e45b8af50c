"""`curate eval`: greedy replies of the base model and adapters to held-out prompts, scored against the task.

These modules import torch, transformers and peft only inside the functions that need them.
"""

from __future__ import annotations

from curate.evaluation.stage import EvalResult, evaluate

__all__ = ["EvalResult", "evaluate"]
