"""Training and merging LoRA adapters (`curate train`, `curate merge`); evaluation is curate.evaluation.

These modules import torch, transformers and peft only inside the functions that need them.
"""

from __future__ import annotations

from curate.train.config import TrainConfig
from curate.train.merging import merge
from curate.train.stage import TrainResult, train

__all__ = ["TrainConfig", "TrainResult", "merge", "train"]
