"""What `curate report` prints for people (stderr); `--json` prints the report document on stdout."""

from __future__ import annotations

from typing import Any

from rich.markup import escape
from rich.table import Table

from curate.console import console, print_json
from curate.outcome import StageOutcome


def _q(q: dict[str, Any]) -> str:
    return f"{q['p50']:g} / {q['p95']:g} / {q['p99']:g}"


def render_report(out: StageOutcome) -> None:
    """Structure side by side, coverage and gaps, drift, warnings and gates, then the files written."""
    d = out.summary["report"]
    sets = list(d["structure"])
    s = d["structure"]
    t = Table("", *sets, title="structure")
    t.add_row("records", *(f"{s[n]['count']:,}" for n in sets))
    t.add_row("user turns P50 / P95", *(f"{s[n]['turns']['p50']:g} / {s[n]['turns']['p95']:g}" for n in sets))
    for f in ("prompt_tokens", "assistant_tokens", "total_tokens"):
        t.add_row(f"{f} P50/P95/P99", *(_q(s[n]["tokens"][f]) for n in sets))
    t.add_row("tool calls (records)", *(str(s[n]["tool_use"]["records_with_tool_calls"]) for n in sets))
    t.add_row("system prompts (distinct)", *(str(s[n]["system_prompts"]["distinct"]) for n in sets))
    t.add_row("languages", *(", ".join(f"{k} {v:.0%}" for k, v in list(s[n]["languages"].items())[:3]) for n in sets))
    t.add_row("duplicates / synthetic", *(f"{s[n]['duplicate_share']:.1%} / {s[n]['synthetic_share']:.1%}" for n in sets))
    console.print(t)
    if d["comparison"]:
        c = Table("feature", "P95 train", "P95 production", "ratio", "KS", "PSI", title="train vs production")
        for f in d["comparison"]["features"]:
            c.add_row(f["feature"], f"{f['reference']['p95']:g}", f"{f['target']['p95']:g}",
                      "-" if f["p95_ratio"] is None else f"{f['p95_ratio']:.2f}", f"{f['ks']:.3f}", f"{f['psi']:.3f}")
        console.print(c)
        for sk in d["comparison"].get("skipped", []):
            console.print(f"[dim]not compared: {escape(sk['feature'])}: {escape(sk['why'])}[/]")
    cov = d["coverage"]
    if cov:
        ct = Table("cluster", "top terms", "prod share", "train share", "ratio", "NN dist", title=(
            f"coverage: {cov['k']} production clusters, domain AUC {cov['domain_auc']}, "
            f"{cov['uncovered_share']:.1%} of production in gaps"))
        for cl in sorted(cov["clusters"], key=lambda x: -x["target_share"]):
            style = "bold red" if cl["gap"] else None
            ct.add_row(f"{'GAP ' if cl['gap'] else ''}#{cl['id']}", cl["label"], f"{cl['target_share']:.1%}",
                       f"{cl['reference_share']:.1%}", f"{cl['coverage_ratio']:.2f}", f"{cl['nn_distance_p50']:.3f}", style=style)
        console.print(ct)
        for g in d["gaps"][:5]:
            example = g["examples"][0].splitlines()[0][:100] if g["examples"] else ""
            console.print(f"  [red]gap[/] #{g['cluster']} {g['label']}: e.g. {example!r}", highlight=False)
    if d["drift"]:
        console.print("[bold]drift, baseline -> new production:[/]")
        for m in d["drift"]["moved"][:12] or ["nothing moved past the thresholds"]:
            console.print(f"  - {m}", highlight=False)
    for w in d["warnings"]:
        console.print(f"[yellow]warning:[/] {w}", highlight=False)
    for g in d["gates"]:
        mark = "[bold red]FAILED[/]" if g["failed"] else "[green]passed[/]"
        console.print(f"gate {g['expr']}: {g['metric']} = {g['value']:g} {mark}", highlight=False)
    _written(out)


def render_report_json(out: StageOutcome) -> None:
    """The report document (schemas/report.schema.json) on stdout, the files written on stderr."""
    print_json(out.to_dict()["report"])
    _written(out)


def _written(out: StageOutcome) -> None:
    if "html" in out.outputs:
        console.print(f"HTML report -> {out.outputs['html']}")
    if "gaps" in out.outputs:
        console.print(f"{out.counts['gap_rows']} gap rows -> {out.outputs['gaps']}")
