"""Training callbacks: the overfitting guard, loss curves (JSONL + PNG), rich progress, step timings."""

from __future__ import annotations

import json
import time
from contextlib import ExitStack
from itertools import pairwise
from pathlib import Path
from typing import Any

from transformers import TrainerCallback
from transformers.trainer_utils import has_length

from curate.console import console, progress


def guard_check(log_history: list[dict], patience: int = 3, min_delta: float = 0.0) -> str | None:
    """Why to stop, when validation loss rose `patience` evaluations in a row while training loss fell."""
    evals = curve_points(log_history)
    points = [p for p in evals if p["train_loss"] is not None]
    if len(points) < patience + 1:
        return None
    window = points[-(patience + 1):]
    val = [p["eval_loss"] for p in window]
    train = [p["train_loss"] for p in window]
    rising = all(b - a > min_delta for a, b in pairwise(val))
    falling = train[-1] < train[0]
    if not (rising and falling):
        return None
    return (
        f"overfitting: validation loss rose for {patience} evaluations in a row ({val[0]:.4f} -> {val[-1]:.4f}) "
        f"while training loss fell ({train[0]:.4f} -> {train[-1]:.4f}); stopped early at step "
        f"{window[-1]['step']}, keeping the checkpoint with the lowest validation loss"
    )


def curve_points(log_history: list[dict]) -> list[dict]:
    """One point per evaluation: its step, val loss, and the mean training loss logged since the last one."""
    points, pending = [], []
    for entry in log_history:
        if "loss" in entry:
            pending.append(entry["loss"])
        if "eval_loss" in entry:
            train = sum(pending) / len(pending) if pending else (points[-1]["train_loss"] if points else None)
            points.append({"step": entry["step"], "eval_loss": entry["eval_loss"], "train_loss": train})
            pending = []
    return points


def write_curves(log_history: list[dict], jsonl: Path, png: Path | None) -> None:
    """Rewrite loss.jsonl (and the plot) from the trainer's history, which survives resume."""
    rows = []
    for e in log_history:
        if "loss" in e:
            rows.append({"step": e["step"], "epoch": e.get("epoch"), "train_loss": e["loss"],
                         "lr": e.get("learning_rate"), "grad_norm": e.get("grad_norm")})
        if "eval_loss" in e:
            rows.append({"step": e["step"], "epoch": e.get("epoch"), "eval_loss": e["eval_loss"]})
    tmp = jsonl.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tmp.replace(jsonl)
    if png is not None:
        plot_curves(rows, png)


def plot_curves(rows: list[dict], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display on servers
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    tr = [(r["step"], r["train_loss"]) for r in rows if "train_loss" in r]
    ev = [(r["step"], r["eval_loss"]) for r in rows if "eval_loss" in r]
    if tr:
        ax.plot(*zip(*tr), label="train loss")
    if ev:
        ax.plot(*zip(*ev), marker="o", label="validation loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    if tr or ev:
        ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    tmp = png.with_name(png.stem + ".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(png)


class CurateCallback(TrainerCallback):
    """Overfitting guard + loss curves + rich progress in one place, all fed by the trainer's log history."""

    def __init__(self, run_dir: Path, guard: bool, patience: int, min_delta: float, plot: bool = True):
        self.run_dir = run_dir
        self.guard, self.patience, self.min_delta, self.plot = guard, patience, min_delta, plot
        self.stop_reason: str | None = None
        self.start_eval_loss: float | None = None  # the base model's, measured before step 1
        self._stack = ExitStack()
        self._advance: Any = None
        self._t0 = 0.0
        self._tokens0 = 0
        self._rate = ""
        # the validation pass in progress: batches done, its total, its own bar (before training) and start
        self._eval_stack = ExitStack()
        self._eval_bar: Any = None
        self._eval_done, self._eval_total, self._eval_t0 = 0, None, 0.0
        self._step_t0 = 0.0
        # this attempt's optimizer steps (evaluations and saves left out) and validation passes
        self.step_seconds: list[float] = []
        self.eval_seconds: list[float] = []

    def on_train_begin(self, args, state, control, **kw):
        self._end_pass()  # a pass that failed before training started leaves no bar behind
        if self.start_eval_loss is not None and state.global_step == 0:
            # kept in the trainer's history (and so in checkpoints) as the curve's starting point
            state.log_history.insert(0, {"eval_loss": self.start_eval_loss, "step": 0, "epoch": 0.0})
        self._advance = self._stack.enter_context(progress("training", total=state.max_steps, unit="steps"))
        self._advance(state.global_step)  # resumed runs start part-way
        self._t0, self._tokens0 = time.perf_counter(), state.num_input_tokens_seen

    def on_step_begin(self, args, state, control, **kw):
        self._step_t0 = time.perf_counter()

    def on_step_end(self, args, state, control, **kw):
        if self._step_t0:
            self.step_seconds.append(time.perf_counter() - self._step_t0)
        if self._advance:
            rate = (state.num_input_tokens_seen - self._tokens0) / max(time.perf_counter() - self._t0, 1e-9)
            self._rate = f"{rate:,.0f} tok/s"
            self._advance(1, rate=self._rate)

    def on_prediction_step(self, args, state, control, eval_dataloader=None, **kw):
        """Validation batches done / total: on CPU a pass can take minutes between two training steps."""
        if self._eval_done == 0:
            self._eval_t0 = time.perf_counter()
            self._eval_total = len(eval_dataloader) if has_length(eval_dataloader) else None
            if self._advance is None:  # the pass before training starts has no training bar to show it on
                self._eval_bar = self._eval_stack.enter_context(
                    progress("validation loss", total=self._eval_total, unit="batches"))
        self._eval_done += 1
        if self._eval_bar is not None:
            self._eval_bar(1)
        elif self._advance is not None:
            of = f"/{self._eval_total}" if self._eval_total is not None else ""
            self._advance(0, rate=f"validation loss: batch {self._eval_done}{of}")

    def _end_pass(self) -> None:
        if self._eval_done:
            self.eval_seconds.append(time.perf_counter() - self._eval_t0)
        self._eval_stack.close()
        self._eval_bar, self._eval_done, self._eval_total = None, 0, None
        if self._advance is not None:
            self._advance(0, rate=self._rate)

    def on_log(self, args, state, control, logs=None, **kw):
        write_curves(state.log_history, self.run_dir / "loss.jsonl", None)
        if logs and "eval_loss" in logs:
            points = curve_points(state.log_history)
            train = points[-1]["train_loss"] if points else None
            train_txt = f"train loss {train:.4f}, " if train is not None else ""
            console.print(f"step {state.global_step}: {train_txt}validation loss {logs['eval_loss']:.4f}")

    def on_evaluate(self, args, state, control, metrics=None, **kw):
        self._end_pass()
        if self.plot:
            write_curves(state.log_history, self.run_dir / "loss.jsonl", self.run_dir / "loss.png")
        if self.guard and self.stop_reason is None:
            reason = guard_check(state.log_history, self.patience, self.min_delta)
            if reason:
                self.stop_reason = reason
                console.print(f"[bold yellow]{reason}[/]")
                control.should_training_stop = True

    def on_train_end(self, args, state, control, **kw):
        self._eval_stack.close()
        self._stack.close()
        self._advance = None
        write_curves(state.log_history, self.run_dir / "loss.jsonl", self.run_dir / "loss.png" if self.plot else None)
