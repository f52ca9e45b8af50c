"""What `curate ingest` and `curate export` print for people (`--json` prints the outcome's to_dict())."""

from __future__ import annotations

from rich.markup import escape
from rich.table import Table

from curate.console import console
from curate.outcome import StageOutcome


def render_ingest(out: StageOutcome) -> None:
    c, s = out.counts, out.summary
    console.print(f"read {c['in']} = written {c['kept']} + rejected {c['rejected']}  ->  {out.outputs['data']}")
    for file, counts in s["formats"].items():
        console.print(f"  {file}: {', '.join(f'{k} {v}' for k, v in counts.items()) or 'no records'}")
    if s["reasons"]:
        table = Table("reason", "count", title=f"rejected (details in {out.outputs.get('rejects')})")
        for reason, n in sorted(s["reasons"].items(), key=lambda kv: -kv[1]):
            table.add_row(escape(reason), str(n))
        console.print(table)
    for w in s["warnings"]:
        console.print(f"[yellow]warning:[/] {escape(w)}")


def render_export(out: StageOutcome) -> None:
    c = out.counts
    console.print(f"read {c['in']} = written {c['kept']} + rejected {c['rejected']}  ->  {out.outputs['data']}")
    if "rejects" in out.outputs:
        console.print(f"[yellow]rows that {out.summary['config']['to']} cannot hold:[/] {out.outputs['rejects']}")
