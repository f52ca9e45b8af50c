"""What `curate quantize` prints for people (`--json` prints the outcome's to_dict())."""

from __future__ import annotations

from typing import Any

from rich.markup import escape
from rich.table import Table
from rich.text import Text

from curate.console import console
from curate.outcome import StageOutcome

_NAMES = {"task_accuracy": "task accuracy", "similarity": "similarity", "format_rate": "format rate"}


def render_quantize(out: StageOutcome) -> None:
    """One row per GGUF file: size, the headline and per-field accuracy, format, the headline's change against the
    f32 file and the share of replies identical to its; the comparisons' intervals; files that fell back."""
    s = out.summary
    ev = s["eval"]
    fields = list(ev["task"]["fields"]) if ev and ev["task"]["kind"] == "fields" else []
    columns = ["file", "size"]
    if ev:
        columns += [_NAMES[ev["task"]["headline"]], *fields, "format", f"vs {s['baseline']}", "same replies"]
    title = (f"{ev['counts']['in']} held-out prompts, greedy replies from llama.cpp's server" if ev
             else "no --data: files only")
    table = Table(*columns, title=title)
    for m in s["models"]:
        row = [Text(m["name"]), f"{m['bytes'] / 2**20:,.1f} MiB"]
        if ev:
            row += [_pct(m["value"]), *(_pct(m["fields"][f]) for f in fields), _pct(m["format_rate"]),
                    "" if m["name"] == s["baseline"] else _signed(None if m["loss"] is None else 0.0 - m["loss"]), _pct(m["same_replies"])]
        table.add_row(*row)
    console.print(table)
    if ev:
        for c in ev["comparisons"]:
            console.print(f"{escape(c['a'])} vs {escape(c['b'])}: {_NAMES[c['metric']]} {_points(c['difference'])} "
                          f"(95% CI {_points(c['ci95'][0])} to {_points(c['ci95'][1])}, {c['prompts']} prompts, "
                          "paired bootstrap)")
    for m in s["models"]:
        if m["fallback_tensors"]:
            console.print(f"{escape(m['name'])}: {m['fallback_tensors']} tensors quantized to another type by llama.cpp "
                          "(rows not a multiple of 256 values)")
    console.print(f"files in {escape(out.outputs['files'])}; outcome: {escape(out.outputs['report'])}")


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.1%}"


def _signed(x: float | None) -> str:
    return "-" if x is None else f"{x * 100:+.1f} pts"


def _points(x: Any) -> str:
    return f"{x * 100:+.1f} pts"
