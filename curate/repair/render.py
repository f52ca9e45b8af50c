"""What `curate repair` prints: the counts, then one line per fix with its first change."""

from __future__ import annotations

from rich.markup import escape

from curate.console import console
from curate.outcome import StageOutcome

LEFT = {
    "mojibake": "validate still flags them: ftfy was not certain",
    "control_characters": "C1 characters, or \\b \\f before a letter: encoding damage or an eaten LaTeX backslash",
    "tool_arguments": "not a JSON object: validate's invalid_tool_arguments",
}


def render_repair(out: StageOutcome) -> None:
    c = out.counts
    console.print(f"{c['in']} in = changed {c['changed']} + unchanged {c['unchanged']}; out {c['out']}  ->  "
                  f"{escape(out.outputs['data'])}")
    for name, f in out.summary["fixes"].items():
        line = f"  {name:<18} {f['rows']} row(s), {f['texts']} text(s)"
        if f["left"]:
            line += f"; {f['left']} left as they are ({LEFT[name]})"
        console.print(escape(line), highlight=False)
        ex = f["example"]
        if ex:
            console.print(escape(f"      e.g. row {ex['id']} {ex['where']}: {ex['before']!r} -> {ex['after']!r}"),
                          highlight=False)
