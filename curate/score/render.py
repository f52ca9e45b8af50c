"""What `curate score` prints for people: the counts, each score's distribution, the rules, the costs."""

from __future__ import annotations

from typing import Any

from rich import box
from rich.markup import escape
from rich.table import Table

from curate.console import console
from curate.outcome import StageOutcome

BARS = " ▁▂▃▄▅▆▇█"


def sparkline(counts: list[int]) -> str:
    """A histogram in one line of block characters (each bar scaled to the tallest)."""
    top = max(counts, default=0)
    if not top:
        return ""
    return "".join(BARS[0 if c == 0 else max(1, round(c / top * (len(BARS) - 1)))] for c in counts)


def _num(v: Any) -> str:
    if v is None:
        return "-"
    if abs(v) >= 100 or float(v).is_integer():
        return f"{v:.0f}"
    return f"{v:.3g}"


def render_score(out: StageOutcome) -> None:
    c, s = out.counts, out.summary
    where = f"  ->  {escape(out.outputs['kept'])}" if "kept" in out.outputs else ""
    console.print(f"{c['in']} in = kept {c['kept']} + quarantined {c['rejected']}{where}", highlight=False)
    numbers = Table(title="score_* distributions (all rows in)", box=box.SIMPLE_HEAD, collapse_padding=True,
                    pad_edge=False)
    for head in ("score_", "rows", "null", "mean", "P5", "P50", "P95", "max", "histogram"):
        numbers.add_column(head, no_wrap=True,
                           justify="left" if head in ("score_", "histogram") else "right")
    texts = []
    for name, d in s["scores"].items():
        if d["kind"] == "text":
            texts.append((name, d))
            continue
        h = d["histogram"]
        numbers.add_row(name.removeprefix("score_"), str(d["count"]), str(d["missing"]),
                        *(_num(d[k]) for k in ("mean", "p5", "p50", "p95", "max")),
                        sparkline(h["counts"]) + (" log" if h["scale"] == "log" else ""))
    console.print(numbers)
    for name, d in texts:
        shares = ", ".join(f"{k} {v:.1%}" for k, v in d["values"].items())
        console.print(f"{name}: {d['distinct']} distinct; {escape(shares)}; missing {d['missing']}", highlight=False)
    gate = s["gate"]
    for r in gate["rules"]:
        console.print(f"keep {escape(r['rule'])}: {r['failed']} failed, {r['undecided']} undecided", highlight=False)
    undecided = gate["undecided_kept"] + gate["undecided_quarantined"]
    if undecided:
        console.print(f"{undecided} row(s) a rule could not decide (a score missing): "
                      f"{'kept' if gate['missing'] == 'keep' else 'quarantined'} (missing: {gate['missing']})")
    if "quarantine" in out.outputs and c["rejected"]:
        console.print(f"quarantined rows, each with its reason -> {escape(out.outputs['quarantine'])}")
    p = s.get("perplexity")
    if p:
        console.print(f"perplexity ({escape(p['model'])}): {p['rows']} rows, {p['tokens']:,} tokens in "
                      f"{p['seconds']:.1f} s ({p['tokens_per_s']:,.0f} tokens/s, {p['threads']['count']} "
                      f"thread(s)); {p['unrenderable']} unrenderable, {p['no_reply']} without a reply", highlight=False)
    j = s.get("judge")
    if j:
        shown = ", ".join(f"{k} {v:g}" for k, v in j["counts"].items())
        console.print(f"judge: {escape(shown)}", highlight=False)
