"""What `curate train` and `curate merge` print for people (`--json` prints the outcome's to_dict())."""

from __future__ import annotations

from rich.markup import escape

from curate.console import console
from curate.outcome import StageOutcome


def render_train(out: StageOutcome) -> None:
    s = out.summary
    m, d = s["metrics"], s["data"]
    if s["stopped_early"]:
        console.print(f"[yellow]{escape(s['stopped_early'])}[/]")
    losses = ", ".join(f"{k} {m[k]:.4f}" for k in ("eval_loss_before", "train_loss", "eval_loss_best")
                       if m.get(k) is not None)
    console.print(f"{m['global_step']} steps, {d['train_rows']} training rows "
                  f"({d['dropped_too_long']} dropped as longer than {d['max_length']} tokens); {losses}")
    o = out.outputs
    console.print(f"adapter: {o['adapter']}   run card: {o['run_card']}   curves: {o.get('loss_plot')}")


def render_merge(out: StageOutcome) -> None:
    s = out.summary
    console.print(f"merged {s['adapter']} into {s['base_path']} -> {out.outputs['model']}")
