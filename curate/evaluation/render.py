"""What `curate eval` prints for people (`--json` prints the outcome's to_dict())."""

from __future__ import annotations

from rich.table import Table

from curate.console import console
from curate.outcome import StageOutcome

_SHOWN = {"parse_rate": "parses", "schema_valid_rate": "schema", "regex_rate": "regex", "exact_match_rate": "exact"}


def render_eval(out: StageOutcome) -> None:
    """The failures file written, then one row of rates per model: all prompts, then the P95 bucket."""
    if "failures" in out.outputs:
        console.print(f"{out.counts['failed']} failing prompt(s) written to {out.outputs['failures']} "
                      "(seeds for `curate synth`)")
    rates = out.summary["summary"]
    keys = [k for k in _SHOWN if rates[0][k] is not None]
    table = Table("model", *(_SHOWN[k] for k in keys), *(f"{_SHOWN[k]} P95" for k in keys),
                  title=f"{out.counts['in']} prompts; P95 input length {out.summary['p95_input_tokens']} tokens "
                        f"({rates[0]['p95_rows']} rows at or above)")
    for s in rates:
        table.add_row(s["model"], *(f"{s[k]:.1%}" for k in keys), *(f"{s['p95_' + k]:.1%}" for k in keys))
    console.print(table)
