"""Training and merging LoRA adapters (`curate train`, `curate merge`); evaluation is curate.evaluation.

    config.py     TrainConfig, MergeConfig: every setting, its default and range
    data.py       training data -> tokenized examples, assistant-only labels, validation split, length limit
    stage.py      train(): a run folder with adapter/, run_card.json and loss curves; resume
    callbacks.py  the overfitting guard, loss curves and progress, fed by the trainer's log history
    merging.py    merge(): a run's adapter folded into its base, saved as one model
    threads.py    how many CPU threads torch uses in train, eval and merge
    render.py     what the commands print

These modules import torch, transformers and peft only inside the functions that need them.
"""

from __future__ import annotations

from curate.lazy import lazy

_WHERE = {
    "MergeConfig": "curate.train.config",
    "TrainConfig": "curate.train.config",
    "merge": "curate.train.merging",
    "train": "curate.train.stage",
}
__getattr__, __dir__ = lazy(__name__, _WHERE)
__all__ = sorted(_WHERE)
