"""Conversations as a person reads them, and what `curate review` prints."""

from __future__ import annotations

from typing import Any

from rich.markup import escape

from curate.console import console
from curate.outcome import StageOutcome


def _turn(m: dict[str, Any]) -> tuple[str, str]:
    """(author, text) of one message; tool calls are written out as `-> call name(arguments)`."""
    author = m.get("role") or "?"
    if m.get("name"):
        author += f" ({m['name']})"
    if m.get("tool_call_id"):
        author += f" [result of {m['tool_call_id']}]"
    parts = [m["content"]] if m.get("content") else []
    for call in m.get("tool_calls") or []:
        fn = call.get("function") or {}
        parts.append(f"-> call {fn.get('name')}({fn.get('arguments') or ''})")
    return author, "\n".join(parts)


def dialogue(row: dict[str, Any]) -> list[dict[str, str]]:
    """The conversation as Label Studio's Paragraphs tag takes it: [{author, text}, ...]."""
    turns = [dict(zip(("author", "text"), _turn(m))) for m in row.get("messages") or []]
    for m in row.get("rejected") or []:
        author, text = _turn(m)
        turns.append({"author": f"rejected {author}", "text": text})
    return turns


def conversation_text(row: dict[str, Any]) -> str:
    """The conversation as plain text: each turn headed by its role."""
    return "\n\n".join(f"[{t['author']}]\n{t['text']}" for t in dialogue(row))


def last_reply(row: dict[str, Any]) -> str | None:
    """The content of the last assistant message: what `edit` replaces."""
    for m in reversed(row.get("messages") or []):
        if m.get("role") == "assistant":
            return m.get("content")
    return None


def render_export(out: StageOutcome) -> None:
    s = out.summary
    reasons = ", ".join(f"{k} {v}" for k, v in s["reasons"].items()) or "nothing to review"
    console.print(f"{out.counts['tasks']} tasks for review ({reasons}) -> {escape(out.outputs['tasks'])}")
    if "config" in out.outputs:
        console.print(f"  labeling config: {escape(out.outputs['config'])}")
    for t in s["near_duplicate_thresholds"]:
        console.print(f"  near duplicates: Jaccard under {t['threshold']:g} + {s['margin']:g} ({escape(t['file'])})")


def render_import(out: StageOutcome) -> None:
    c = out.counts
    console.print(f"{c['in']} in = kept {c['kept']} (edited {c['edited']}) + dropped {c['dropped']}; restored "
                  f"{c['restored']}, out {c['out']}  ->  {escape(out.outputs['data'])}")
    console.print(f"  {c['decisions']} decisions read ({out.summary['format']}), {c['undecided']} tasks without "
                  f"one, {c['already_out']} drops of rows already out, {c['conflicts']} with reviewers disagreeing")
    if "dropped" in out.outputs:
        console.print(f"  dropped rows: {escape(out.outputs['dropped'])}")
    for r in out.summary["rejects"][:20]:
        console.print(f"[yellow]  not applied:[/] task {escape(r['task'])}, row {escape(str(r['id']))}, "
                      f"{r['decision']}: {escape(r['why'])}")
    if len(out.summary["rejects"]) > 20:
        console.print(f"[yellow]  ... {len(out.summary['rejects']) - 20} more not applied (--json lists them)[/]")
