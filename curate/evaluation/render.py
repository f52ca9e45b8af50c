"""What `curate eval` prints for people (`--json` prints the outcome's to_dict())."""

from __future__ import annotations

from typing import Any

from rich.markup import escape
from rich.table import Table
from rich.text import Text

from curate.console import console
from curate.outcome import StageOutcome

_SHOWN = {"parse_rate": "parses", "schema_valid_rate": "schema", "regex_rate": "regex", "exact_match_rate": "exact"}
_METRIC = {"task_accuracy": "task accuracy", "similarity": "similarity", "format_rate": "format rate"}
_CELL = 240  # characters of a prompt or reply shown in the examples table (--json has them whole)


def render_eval(out: StageOutcome) -> None:
    """The failures file; per model the task headline and per-field accuracy, then the format rates (all prompts and
    the P95 bucket); comparisons with their intervals; collapsed models in red; prompts side by side."""
    s = out.summary
    if "failures" in out.outputs:
        console.print(f"{out.counts['failed']} failing prompt(s) written to {out.outputs['failures']} "
                      "(seeds for `curate synth`)")
    if s["task"]["kind"] != "format":
        console.print(_task_table(s))
    console.print(_format_table(out))
    if s["task"]["kind"] == "fields":
        for table in _label_tables(s):
            console.print(table)
    for c in s["comparisons"]:
        console.print(f"{escape(c['a'])} vs {escape(c['b'])}: {_METRIC[c['metric']]} {_signed(c['metric'], c['difference'])} "
                      f"(95% CI {_signed(c['metric'], c['ci95'][0])} to {_signed(c['metric'], c['ci95'][1])}, "
                      f"{c['prompts']} prompts, paired bootstrap)")
    for v in s["variants"]:
        for field, label in v["collapsed"].items():
            console.print(f"[bold red]{escape(v['model'])} collapsed on {escape(field)}: answers {escape(label)!r} "
                          f"to nearly every prompt[/]")
    if s["examples"]:
        console.print(_examples_table(s))


def _task_table(s: dict[str, Any]) -> Table:
    """The headline (task accuracy, or similarity for prose), each field's accuracy, the format rate, the loss."""
    task = s["task"]
    fields = list(task["fields"]) if task["kind"] == "fields" else []
    loss = ["loss", "perplexity"] if any(v["loss"] is not None for v in s["variants"]) else []
    title = (f"{task['prompts']} prompts with a reference; task accuracy: {', '.join(task['task_fields'])} all right"
             if fields else f"{task['prompts']} prompts with a reference; similarity: chrF to it, 0-1")
    table = Table("model", _METRIC[task["headline"]], *fields, "format", *loss, title=title)
    for v in s["variants"]:
        table.add_row(Text(v["model"]), _value(task["headline"], v[task["headline"]]),
                      *(_pct(v["fields"][f]["accuracy"]) for f in fields), _pct(v["format_rate"]),
                      *(_num(v[k]) for k in loss))
    return table


def _format_table(out: StageOutcome) -> Table:
    """The format rates over all prompts, then over the prompts at or above the P95 input length."""
    rates = out.summary["summary"]
    keys = [k for k in _SHOWN if rates[0][k] is not None]
    table = Table("model", *(_SHOWN[k] for k in keys), *(f"{_SHOWN[k]} P95" for k in keys),
                  title=f"{out.counts['in']} prompts; P95 input length {out.summary['p95_input_tokens']} tokens "
                        f"({rates[0]['p95_rows']} rows at or above)")
    for r in rates:
        table.add_row(Text(r["model"]), *(_pct(r[k]) for k in keys), *(_pct(r["p95_" + k]) for k in keys))
    return table


def _label_tables(s: dict[str, Any]) -> list[Table]:
    """Per enum field, how often each label occurs: in the training data (when given), the references, each model."""
    labels = s["task"]["labels"]
    out = []
    for f in (f for f, kind in s["task"]["fields"].items() if kind == "enum"):
        sources = ([("training data", labels["train"][f])] if labels["train"] is not None else []) + [
            ("references", labels["references"][f])] + [(v["model"], v["labels"][f]) for v in s["variants"]]
        names = list(dict.fromkeys(k for _, counts in sources for k in counts))
        table = Table(f, *names, title=f"{f}: label counts")
        for name, counts in sources:
            table.add_row(Text(name), *(str(counts.get(k, 0)) for k in names))
        out.append(table)
    return out


def _examples_table(s: dict[str, Any]) -> Table:
    names = [v["model"] for v in s["variants"]]
    table = Table("prompt", "reference", *names, title="side by side (✗: wrong on the task or the format)",
                  show_lines=True)
    for e in s["examples"]:
        table.add_row(Text(_cut(e["prompt"])), Text(_cut(e["reference"] or "")),
                      *(Text(("" if e["correct"][n] else "✗ ") + _cut(e["replies"][n])) for n in names))
    return table


def _cut(text: str) -> str:
    return text if len(text) <= _CELL else text[: _CELL - 1] + "…"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.1%}"


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def _value(metric: str, x: float | None) -> str:
    return _num(x) if metric == "similarity" else _pct(x)


def _signed(metric: str, x: float) -> str:
    return f"{x:+.3f}" if metric == "similarity" else f"{x * 100:+.1f} pts"
