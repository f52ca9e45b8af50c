"""What `curate validate` prints for people (stderr): codes, tokens, compliance, mixed formats (`--json` prints to_dict())."""

from __future__ import annotations

from pathlib import Path

from rich.table import Table

from curate.console import console
from curate.outcome import StageOutcome


def _where(ex: dict, input_file: str) -> str:
    """'line N' inside the input itself; 'file:N' for a canonical row that came from another file."""
    loc = f"line {ex['line']}" if ex.get("line") is not None else f"row {ex['row']}"
    if ex.get("file") and ex["file"] != input_file:
        return f"{Path(ex['file']).name}:{loc.split()[-1]}"
    return loc


def render_validate(out: StageOutcome) -> None:
    """Counts per code with one example each, token percentiles, compliance rate, mixed-format warnings."""
    s, c = out.summary, out.counts
    console.print(
        f"{s['input']} ({s['format'] or 'unknown format'}"
        f"{', schema ' + s['schema'] if s['schema'] else ''}): "
        f"records {c['in']} = valid {c['kept']} + quarantined {c['rejected']} "
        f"({s['error_rate']:.1%} with errors)",
        highlight=False,
    )
    if s["codes"]:
        table = Table(title="findings per code (one example each)")
        table.add_column("code", no_wrap=True)
        table.add_column("severity")
        table.add_column("records", justify="right")
        table.add_column("where", overflow="fold")
        table.add_column("example", overflow="fold")
        for c in s["codes"]:
            ex = c["examples"][0] if c["examples"] else None
            style = "red" if c["severity"] == "error" else "yellow"
            row = [c["code"], f"[{style}]{c['severity']}[/]", str(c["count"])]
            table.add_row(*row, _where(ex, s["input"]) if ex else "", ex["message"] if ex else "")
        console.print(table)
    else:
        console.print("[green]no findings[/]")
    tok = s["tokens"]
    if tok:
        table = Table("tokens", "sum", "P50", "P95", "P99", "max", title=f"tokens per record ({tok['records']} rendered)")
        rows = [("all", {"sum": tok["total_tokens"], **tok["tokens"]})] + list(tok["per_role"].items())
        for name, p in rows:
            table.add_row(name, str(p["sum"]), str(p["p50"]), str(p["p95"]), str(p["p99"]), str(p["max"]))
        console.print(table)
        if tok["max_tokens"]:
            console.print(f"{tok['over_limit']} record(s) over --max-tokens {tok['max_tokens']} (flagged, not truncated)")
    comp = s["compliance"]
    if comp:
        rate = f"{comp['rate']:.1%}" if comp["rate"] is not None else "n/a"
        console.print(
            f"output-format compliance ({comp['mode']}): {comp['records_compliant']}/{comp['records_checked']} "
            f"records = {rate}; replies {comp['replies_compliant']}/{comp['replies_checked']}"
        )
    for m in s["mixed_formats"]:
        console.print(f"[yellow]mixed formats:[/] {m['message']}", highlight=False)
    for note in s["notes"]:
        console.print(f"[yellow]note:[/] {note}", highlight=False)
    for label, path in (("valid rows", out.outputs.get("valid")), ("quarantine", out.outputs.get("quarantine"))):
        if path:
            console.print(f"{label} -> {path}")
