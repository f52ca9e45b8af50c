"""What `curate dedupe` prints for people: counts, then the largest clusters with kept and removed text side by side
(`--json` prints the outcome's to_dict())."""

from __future__ import annotations

from rich.markup import escape
from rich.table import Table

from curate.console import console
from curate.dedupe.decontam import where
from curate.dedupe.result import DedupeOutcome


def render_dedupe(result: DedupeOutcome, top: int = 5, show: int = 0) -> None:
    """Print the counts, one line for each of the `top` largest clusters, the `show` largest side by side (kept
    and removed text), and the decontamination matches."""
    s, c = result.summary, result.counts
    if s.get("dry_run"):
        console.print(
            f"dry run: {s['input_rows']} rows, ~{s['tokens_per_row']} tokens/row (sampled {s['sampled_rows']}); "
            f"estimated {s['estimated_seconds']} s and {s['estimated_peak_rss_mib']} MiB peak RSS; nothing written"
        )
        _judge_line(s)
        for p in s.get("semantic_pairs", []):  # --semantic: the pairs it would remove
            console.print(f"  would remove row {p['other_row']} ({p['other_id']}) as {p['kept_id']}'s paraphrase: cosine "
                          f"{p['cosine']}, word overlap {p['overlap']} ({p['verdict']}): {p['other_text'][:80]!r}",
                          markup=False)
        return
    why = s["reasons"]
    console.print(
        f"read {c['in']} = kept {c['kept']} + removed {c['rejected']} "
        f"(exact {why['exact']}, near {why['near']}, contaminated {why['contaminated']}"
        + (f", semantic {why['semantic']})" if "semantic" in why else ")")
    )
    cfg = s["config"]
    console.print(
        f"  key: {cfg['on']} turns, {cfg['shingle']} {cfg['ngram']}-grams; MinHash {cfg['num_perm']} perms, "
        f"LSH {cfg['bands']} bands x {cfg['rows_per_band']} rows (P(caught) at {cfg['threshold']}: {s['recall_at_threshold']:.3f}); "
        f"{s['candidate_pairs']} candidate pairs, {s['verified_pairs']} verified"
        + (f"; {s['index_rows_before']} rows already in the index" if s["index_rows_before"] else "")
    )
    _judge_line(s)
    clusters = result.clusters.slice(0, max(top, show)).to_pylist()
    if clusters[:top]:
        lines = Table("cluster", "rows", "kept", title="largest clusters", expand=True)
        lines.add_column("kept text", ratio=1, no_wrap=True, overflow="ellipsis")
        for cl in clusters[:top]:
            kept = f"row {cl['kept_row']}" if cl["kept_row"] is not None else "index"
            lines.add_row(str(cl["cluster_id"]), str(cl["size"]), kept, " ".join((cl["kept_preview"] or "").split()))
        console.print(lines)
        if not show:
            console.print("[dim]--show-clusters N prints the N largest with their removed rows side by side[/]")
    for cl in clusters[:show]:
        table = Table(title=f"cluster {cl['cluster_id']}: {cl['size']} rows", show_lines=True, expand=True)
        kept_where = f"row {cl['kept_row']}" if cl["kept_row"] is not None else "index"
        table.add_column(f"kept ({kept_where}, {cl['kept_id']})", ratio=1, overflow="fold")
        table.add_column("removed", ratio=1, overflow="fold")
        cosines, verdicts = cl.get("cosine") or [None] * len(cl["member_rows"]), cl.get("verdict") or []
        for i, (row, text, why_, j) in enumerate(zip(cl["member_rows"], cl["member_previews"], cl["reasons"], cl["jaccard"])):
            score = f"J={j if j is not None else 'unverified'}" if cosines[i] is None else \
                f"cosine {cosines[i]}, {escape(verdicts[i])}"  # --semantic's members: the verifier's verdict
            label = f"[dim]row {row}, {why_}, {score}[/]\n{text}"
            table.add_row(cl["kept_preview"] if i == 0 else "", label)
            if i == 2:
                if len(cl["member_rows"]) > 3:
                    table.add_row("", f"[dim]... {len(cl['member_rows']) - 3} more[/]")
                break
        console.print(table)
    if s["clusters"] > max(top, show):
        console.print(f"[dim]{s['clusters'] - max(top, show)} more clusters in the clusters table[/]")
    if result.decontamination.num_rows:
        table = Table("eval item", "training row", "match", "evidence", title="decontamination", expand=True)
        for d in result.decontamination.slice(0, 10).to_pylist():
            table.add_row(f"{d['eval_id']} {where(d)}: {d['eval_text'][:80]}", str(d["train_row"]), d["match"],
                          d["evidence"][:100])
        console.print(table)
        if result.decontamination.num_rows > 10:
            console.print(f"[dim]{result.decontamination.num_rows - 10} more matches in the decontamination table[/]")
    for name, path in result.outputs.items():
        console.print(f"  {name}: {path}")


def _judge_line(s: dict) -> None:
    """With --semantic-verifier judge: what the judge was asked and what it cost."""
    j = (s.get("semantic") or {}).get("judge")
    if j:
        console.print(f"  judge {j['teacher']}: {j['asked']} pairs asked ({j['same']} same, {j['different']} different, "
                      f"{j['failed']} failed, {j['budget']} left by the budget), {j['passed_on_cosine']} passed on cosine; "
                      f"{j.get('cached', 0)} cached, {j.get('sent', 0)} sent, {j.get('tokens', 0)} tokens, "
                      f"${j.get('spent', 0):.2f}", markup=False, highlight=False)
