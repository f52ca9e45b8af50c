"""Training and merging LoRA adapters (`curate train`, `curate merge`); evaluation is curate.evaluation.

These modules import torch, transformers and peft only inside the functions that need them.
"""

from __future__ import annotations

from curate.lazy import lazy

_WHERE = {
    "TrainConfig": "curate.train.config",
    "merge": "curate.train.merging",
    "TrainResult": "curate.train.stage",
    "train": "curate.train.stage",
}
__getattr__, __dir__ = lazy(__name__, _WHERE)
__all__ = sorted(_WHERE)
