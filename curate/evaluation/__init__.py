"""`curate eval`: greedy replies of the base model and adapters to held-out prompts, scored against the task.

    config.py      EvalConfig
    stage.py       evaluate(): replies, per-row verdicts, variants, the rows and failures outputs
    compliance.py  the format verdicts of one reply (through curate.replies.ReplyCheck) and the rates per model
    task.py        task metrics: per-field accuracy, confusion, label distributions, collapse, chrF
    compare.py     paired bootstrap intervals between models, prompts side by side
    model.py       the base model with its adapters: greedy replies, loss of the reference replies
    render.py      what the command prints

These modules import torch, transformers and peft only inside the functions that need them.
"""

from __future__ import annotations

from curate.lazy import lazy

_WHERE = {
    "EvalConfig": "curate.evaluation.config",
    "evaluate": "curate.evaluation.stage",
}
__getattr__, __dir__ = lazy(__name__, _WHERE)
__all__ = sorted(_WHERE)
