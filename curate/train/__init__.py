"""Training, merging and evaluating LoRA adapters (`curate train`, `curate merge`, `curate eval`).

Heavy libraries (torch, transformers, peft) load only when one of these functions runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from curate.train.config import TrainConfig

if TYPE_CHECKING:
    from curate.train.evaluate import EvalResult
    from curate.train.trainer import TrainResult

__all__ = ["EvalResult", "TrainConfig", "TrainResult", "evaluate", "merge", "train"]


def train(data: Any, **kwargs: Any) -> "TrainResult":
    """Train a LoRA / QLoRA adapter; see curate.train.trainer.train."""
    from curate.train.trainer import train as run

    return run(data, **kwargs)


def merge(run_dir: Any, output: Any, **kwargs: Any) -> Any:
    """Merge a run's adapter into its base and save a standalone model; see curate.train.merge.merge."""
    from curate.train.merge import merge as run

    return run(run_dir, output, **kwargs)


def evaluate(**kwargs: Any) -> "EvalResult":
    """Generate on held-out prompts and score format compliance; see curate.train.evaluate.evaluate."""
    from curate.train.evaluate import evaluate as run

    return run(**kwargs)


def __getattr__(name: str) -> Any:
    if name == "TrainResult":
        from curate.train.trainer import TrainResult

        return TrainResult
    if name == "EvalResult":
        from curate.train.evaluate import EvalResult

        return EvalResult
    raise AttributeError(name)
