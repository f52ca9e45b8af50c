"""Rich rendering of a dedupe result: counts, then the largest clusters with kept and removed text side by side."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table


def render(result, console: Console, top: int = 5) -> None:
    """Print the summary, the largest clusters side by side, and the decontamination matches."""
    s = result.summary
    if s.get("dry_run"):
        console.print(
            f"dry run: {s['input_rows']} rows, ~{s['tokens_per_row']} tokens/row (sampled {s['sampled_rows']}); "
            f"estimated {s['estimated_seconds']} s and {s['estimated_peak_rss_mib']} MiB peak RSS; nothing written"
        )
        return
    why = s["removed_by_reason"]
    console.print(
        f"read {s['input_rows']} = kept {s['kept']} + removed {s['removed']} "
        f"(exact {why['exact']}, near {why['near']}, contaminated {why['contaminated']})"
    )
    cfg = s["config"]
    console.print(
        f"  key: {cfg['on']} turns, {cfg['shingle']} {cfg['ngram']}-grams; MinHash {cfg['num_perm']} perms, "
        f"LSH {cfg['bands']} bands x {cfg['rows']} rows (P(caught) at {cfg['threshold']}: {cfg['recall_at_threshold']:.3f}); "
        f"{s['candidate_pairs']} candidate pairs, {s['verified_pairs']} verified"
        + (f"; {s['index_rows_before']} rows already in the index" if s["index_rows_before"] else "")
    )
    clusters = result.clusters.slice(0, top).to_pylist()
    for c in clusters:
        table = Table(title=f"cluster {c['cluster_id']}: {c['size']} rows", show_lines=True, expand=True)
        kept_where = f"row {c['kept_row']}" if c["kept_row"] is not None else "index"
        table.add_column(f"kept ({kept_where}, {c['kept_id']})", ratio=1, overflow="fold")
        table.add_column("removed", ratio=1, overflow="fold")
        for i, (row, text, why_, j) in enumerate(zip(c["member_rows"], c["member_previews"], c["reasons"], c["jaccard"])):
            label = f"[dim]row {row}, {why_}, J={j if j is not None else 'unverified'}[/]\n{text}"
            table.add_row(c["kept_preview"] if i == 0 else "", label)
            if i == 2:
                if len(c["member_rows"]) > 3:
                    table.add_row("", f"[dim]... {len(c['member_rows']) - 3} more[/]")
                break
        console.print(table)
    if result.summary["clusters"] > top:
        console.print(f"[dim]{result.summary['clusters'] - top} more clusters in the clusters table[/]")
    if result.decontamination.num_rows:
        table = Table("eval item", "training row", "match", "evidence", title="decontamination", expand=True)
        for d in result.decontamination.slice(0, 10).to_pylist():
            table.add_row(f"{d['eval_id']} turn {d['eval_turn']}: {d['eval_text'][:80]}", str(d["train_row"]), d["match"],
                          d["evidence"][:100])
        console.print(table)
        if result.decontamination.num_rows > 10:
            console.print(f"[dim]{result.decontamination.num_rows - 10} more matches in the decontamination table[/]")
    for name, path in s.get("outputs", {}).items():
        console.print(f"  {name}: {path}")
