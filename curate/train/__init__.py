"""Training, merging and evaluating LoRA adapters (`curate train`, `curate merge`, `curate eval`).

These modules import torch, transformers and peft only inside the functions that need them.
"""

from __future__ import annotations

from curate.train.config import TrainConfig
from curate.train.evaluation import EvalResult, evaluate
from curate.train.merging import merge
from curate.train.trainer import TrainResult, train

__all__ = ["EvalResult", "TrainConfig", "TrainResult", "evaluate", "merge", "train"]
