"""What `curate validate` prints for people (stderr): codes, tokens, compliance, mixed formats (`--json` prints to_dict())."""

from __future__ import annotations

from pathlib import Path

from rich.markup import escape
from rich.table import Table
from rich.text import Text

from curate.console import console
from curate.outcome import StageOutcome


def _where(ex: dict, input_file: str) -> str:
    """'line N' inside the input itself; 'file:N' for a canonical row that came from another file."""
    loc = f"line {ex['line']}" if ex.get("line") is not None else f"row {ex['row']}"
    if ex.get("file") and ex["file"] != input_file:
        return f"{Path(ex['file']).name}:{loc.split()[-1]}"
    return loc


MASK_STYLES = {"trained": "bold green", "other": "dim", "gap": "reverse yellow", "cut": "reverse red"}


def mask_text(runs: list[list], terminal: bool) -> Text:
    """A record's text with its trained tokens styled (on a terminal) or between ⟦ ⟧ (elsewhere); ⟪ ⟫ mark notes."""
    text = Text()
    for part, kind in runs:
        if kind in ("gap", "cut"):
            text.append(f"⟪{part}⟫", MASK_STYLES[kind] if terminal else "")
        elif terminal:
            text.append(part, MASK_STYLES[kind])
        else:
            text.append(f"⟦{part}⟧" if kind == "trained" else part)
    return text


def render_mask(view: dict, input_file: str) -> None:
    """One --show-mask record: where it is, its counts and findings, then its rendered text."""
    codes = f"; {', '.join(view['codes'])}" if view["codes"] else ""
    console.print(f"[bold]loss mask of {_where(view, input_file)}[/]: {view['trained']} of {view['tokens']} tokens "
                  f"trained{codes}", highlight=False)
    console.print(mask_text(view["text"], console.is_terminal), highlight=False)


WIDE = 120  # columns from which the findings table has a column each for severity, where and example


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
    if s["codes"] and console.width < WIDE:
        # a narrow terminal: severity as the code's colour, where and example in one cell of at most two lines
        code_w = max(len(c["code"]) for c in s["codes"])
        room = max(20, console.width - code_w - 7 - 10)  # the records column, borders and padding
        table = Table(title="findings per code (one example each; red: error, yellow: warning; --json for all)")
        table.add_column("code", no_wrap=True)
        table.add_column("records", justify="right")
        table.add_column("where: example", ratio=1, overflow="fold")
        for c in s["codes"]:
            ex = c["examples"][0] if c["examples"] else None
            style = "red" if c["severity"] == "error" else "yellow"
            text = f"{_where(ex, s['input'])}: {ex['message']}" if ex else ""
            text = text if len(text) <= 2 * room else text[: 2 * room - 1] + "…"
            table.add_row(f"[{style}]{c['code']}[/]", str(c["count"]), escape(text))
        console.print(table)
    elif s["codes"]:
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
        share = tok.get("trained_share")
        if share:
            console.print(f"trained tokens (loss mask) per record: P5 {share['p5']:.1%}, P50 {share['p50']:.1%}, "
                          f"P95 {share['p95']:.1%}; {share['all']:.1%} of all tokens", highlight=False)
        for view in tok.get("masks") or []:
            render_mask(view, s["input"])
    comp = s["compliance"]
    if comp:
        rate = f"{comp['rate']:.1%}" if comp["rate"] is not None else "n/a"
        console.print(
            f"output-format compliance ({comp['mode']}): {comp['records_compliant']}/{comp['records_checked']} "
            f"records = {rate}; replies {comp['replies_compliant']}/{comp['replies_checked']}"
        )
    _preferences(s.get("preferences"), s.get("kto"))
    for m in s["mixed_formats"]:
        console.print(f"[yellow]mixed formats:[/] {m['message']}", highlight=False)
    for note in s["notes"]:
        console.print(f"[yellow]note:[/] {note}", highlight=False)
    for label, path in (("valid rows", out.outputs.get("valid")), ("quarantine", out.outputs.get("quarantine"))):
        if path:
            console.print(f"{label} -> {path}")


def _preferences(pref: dict | None, kto: dict | None) -> None:
    """Length bias of preference pairs (a histogram of chosen/rejected lengths), pairs per prompt, KTO label balance."""
    if pref:
        n = pref["pairs"]
        median = pref["median_length_ratio"]
        console.print(
            f"preference pairs: {n}; chosen is the longer in {pref['chosen_longer']} ({pref['chosen_longer_share']:.1%}), "
            f"rejected in {pref['rejected_longer']}, equal {pref['equal_length']}; median length ratio chosen/rejected "
            f"{'n/a' if median is None else f'{median:.2f}'} (characters)",
            highlight=False,
        )
        table = Table("chosen/rejected", "pairs", "", title="length ratio of the pairs")
        top = max((b["pairs"] for b in pref["length_ratio_histogram"]), default=0) or 1
        for b in pref["length_ratio_histogram"]:
            table.add_row(b["ratio"], str(b["pairs"]), "#" * round(30 * b["pairs"] / top))
        console.print(table)
        if pref["prompts_with_several_pairs"]:
            console.print(
                f"[yellow]pairs per prompt:[/] {pref['prompts_with_several_pairs']} of {pref['prompts']} prompts have "
                f"several pairs ({pref['pairs_sharing_a_prompt']} pairs, at most {pref['max_pairs_per_prompt']} a prompt)",
                highlight=False,
            )
    if kto:
        console.print(f"KTO labels: {kto['records']} records, {kto['desirable']} desirable ({kto['desirable_share']:.1%}), "
                      f"{kto['undesirable']} undesirable", highlight=False)
