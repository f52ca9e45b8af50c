"""A self-contained HTML report: base64 PNG plots (matplotlib, Agg) and tables; no external JS, CSS or fonts."""

from __future__ import annotations

import base64
import io
import itertools
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from curate.outputs import OutputSet
    from curate.report.stage import ReportOutcome

COLORS = {"train": "#4c72b0", "production": "#dd8452", "baseline": "#55a868"}
CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1100px;color:#222;padding:0 1em}
h1{margin-bottom:0}h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:1em 0;font-size:14px}td,th{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f4f4f4}td.num{text-align:right;font-variant-numeric:tabular-nums}
.warn{background:#fff4e5;border-left:4px solid #f0a030;padding:.5em 1em;margin:.3em 0}
.fail{color:#b00020;font-weight:bold}.pass{color:#1b7f3b;font-weight:bold}
img{max-width:100%}pre{white-space:pre-wrap;margin:0;font-size:13px;max-height:8em;overflow:auto}
.muted{color:#666;font-size:13px}
"""


def _png(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return f'<img alt="plot" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def _figure(*args: Any, **kwargs: Any) -> Any:
    import matplotlib

    matplotlib.use("Agg")  # no display: render to PNG only
    import matplotlib.pyplot as plt

    return plt.subplots(*args, **kwargs)


def length_histograms(rep: ReportOutcome) -> str:
    """Overlaid token-length histograms per set (log-spaced bins), P95 marked."""
    feats = [("prompt_tokens", "prompt tokens (everything but assistant replies)"), ("assistant_tokens", "assistant tokens")]
    fig, axes = _figure(1, 2, figsize=(11, 3.8))
    for ax, (f, title) in zip(axes, feats):
        values = {n: r.features[f][~np.isnan(r.features[f])] for n, r in rep.records.items()}
        top = max((v.max() for v in values.values() if v.size), default=1)
        low = min((v.min() for v in values.values() if v.size), default=0)
        bins = np.logspace(np.log10(low + 1), np.log10(max(top, low + 1) + 2), 40)
        for name, v in values.items():
            # weights, not density: with log-spaced bins a density would shrink the long tail
            ax.hist(v + 1, bins=bins, alpha=0.45, weights=np.full(v.size, 1 / max(v.size, 1)),
                    label=f"{name} (n={v.size})", color=COLORS[name])
            if v.size:
                ax.axvline(np.percentile(v, 95, method="inverted_cdf") + 1, color=COLORS[name], ls="--", lw=1.5)
        ax.set_xscale("log")
        ax.set_title(f"{title}; dashed: P95")
        ax.set_xlabel("tokens (log scale)")
        ax.set_ylabel("share of records")
        ax.legend(fontsize=8)
    return _png(fig)


def preference_plot(rep: ReportOutcome) -> str:
    """Chosen / rejected reply length of each set's preference pairs: how often the longer reply was chosen."""
    sets = {n: r.stats.get("preference") for n, r in rep.records.items() if r.stats.get("preference")}
    if not sets:
        return ""
    fig, ax = _figure(figsize=(11, 3.6))
    width = 0.8 / len(sets)
    for k, (name, pref) in enumerate(sets.items()):
        hist = pref["ratio_histogram"]
        x = np.arange(len(hist["pairs"]))
        share = np.asarray(hist["pairs"]) / max(pref["pairs"], 1)
        ax.bar(x + k * width, share, width, label=f"{name} ({pref['pairs']} pairs, chosen longer in "
                                                 f"{pref['chosen_longer_share']:.0%})", color=COLORS.get(name))
    edges = sets[next(iter(sets))]["ratio_histogram"]["edges"]
    labels = [f"< {edges[0]:g}"] + [f"{a:g}-{b:g}" for a, b in itertools.pairwise(edges)] + [f">= {edges[-1]:g}"]
    ax.set_xticks(np.arange(len(labels)) + width * (len(sets) - 1) / 2, labels)
    ax.set_xlabel("chosen / rejected reply length (characters)")
    ax.set_ylabel("share of pairs")
    ax.set_title("Length bias of preference pairs (a bias towards longer replies teaches length, not quality)")
    ax.legend(fontsize=8)
    return _png(fig)


def history_plot(steps: list[dict[str, Any]]) -> str:
    """Drift from each snapshot to the next: how far requests moved, step by step."""
    fig, ax = _figure(figsize=(11, 3.6))
    x = np.arange(len(steps))
    for key, label in (("emerged_share", "share in new kinds of request"), ("vanished_share", "share in fading kinds"),
                       ("domain_auc", "domain-classifier AUC (0.5: alike)")):
        ax.plot(x, [s[key] if s[key] is not None else np.nan for s in steps], marker="o", label=label)
    ax.set_xticks(x, [f"-> {Path(s['to']).name}" for s in steps], fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_title("Drift along the snapshots (each point: one snapshot against the one before)")
    ax.legend(fontsize=8)
    return _png(fig)


def coverage_bars(clusters: list[dict[str, Any]], target: str, reference: str) -> str:
    """Per-cluster share of the target set next to the reference's share; gaps in red."""
    order = sorted(clusters, key=lambda c: -c["target_share"])
    fig, ax = _figure(figsize=(11, 0.45 * len(order) + 1.2))
    y = np.arange(len(order))
    ax.barh(y - 0.2, [c["target_share"] for c in order], 0.4, label=target, color=COLORS.get(target, "#dd8452"))
    ax.barh(y + 0.2, [c["reference_share"] for c in order], 0.4, label=reference, color=COLORS.get(reference, "#4c72b0"))
    ax.set_yticks(y, [f"{'GAP ' if c['gap'] else ''}#{c['id']} {c['label'][:45]}" for c in order], fontsize=9)
    for tick, c in zip(ax.get_yticklabels(), order):
        tick.set_color("#b00020" if c["gap"] else "#222")
    ax.invert_yaxis()
    ax.set_xlabel("share of set")
    ax.set_title(f"{target} clusters: share of {target} vs share of {reference}")
    ax.legend(loc="lower right")
    return _png(fig)


def cluster_map(cov: Any, target: str, reference: str) -> str:
    """2-D PCA map: target points coloured by cluster, reference points grey, gap clusters labelled."""
    fig, ax = _figure(figsize=(10, 7))
    xr, xt = cov.xy_reference, cov.xy_target
    if len(xr):
        ax.scatter(xr[:, 0], xr[:, 1], s=6, c="#999", alpha=0.35, label=reference)
    ax.scatter(xt[:, 0], xt[:, 1], s=8, c=cov.labels % 20, cmap="tab20", alpha=0.7, label=target)
    for c in cov.section["clusters"]:
        gap = c["gap"]
        ax.annotate(f"{'GAP ' if gap else ''}#{c['id']}", (c["x"], c["y"]), fontsize=9, weight="bold",
                    color="#b00020" if gap else "#222", ha="center",
                    bbox={"boxstyle": "round", "fc": "white", "alpha": 0.8, "ec": "#b00020" if gap else "#888"})
    ax.set_title(f"{target} clusters (coloured) and {reference} (grey), PCA of the embeddings")
    ax.legend(loc="best", markerscale=2)
    ax.set_xticks([])
    ax.set_yticks([])
    return _png(fig)


def score_histograms(sets: dict[str, dict[str, Any]]) -> str:
    """One small histogram per number score column, a bar group per set (the bins each set's own)."""
    names = list(dict.fromkeys(n for scores in sets.values() for n, d in scores.items() if d["kind"] == "number"
                               and d["count"]))
    if not names:
        return ""
    cols = min(3, len(names))
    rows = -(-len(names) // cols)
    fig, axes = _figure(rows, cols, figsize=(11, 2.8 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        for set_name, scores in sets.items():
            d = scores.get(name)
            if not d or d["kind"] != "number" or not d["count"]:
                continue
            h = d["histogram"]
            edges, counts = np.asarray(h["edges"]), np.asarray(h["counts"])
            share = counts / max(counts.sum(), 1)
            ax.stairs(share, edges, fill=True, alpha=0.45, color=COLORS.get(set_name), label=f"{set_name} (n={d['count']})")
            if h["scale"] == "log" and edges[0] > 0:
                ax.set_xscale("log")
        ax.set_title(name, fontsize=10)
        ax.set_ylabel("share of rows", fontsize=8)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(names):]:
        ax.set_visible(False)
    fig.tight_layout()
    return _png(fig)


def _scores(d: dict[str, Any]) -> str:
    """The score_* distributions of every set that has them: a table and the histograms."""
    sets = {n: s["scores"] for n, s in d["structure"].items() if s.get("scores")}
    if not sets:
        return ""
    rows: list[list[Any]] = []
    for set_name, scores in sets.items():
        for name, x in scores.items():
            if x["kind"] == "number":
                rows.append([set_name, name, x["count"], x["missing"], *(x[k] if x[k] is not None else "-"
                                                                         for k in ("mean", "p5", "p50", "p95", "max"))])
            else:
                top = ", ".join(f"{k} {v:.1%}" for k, v in x["values"].items())
                rows.append([set_name, name, x["count"], x["missing"], f"{x['distinct']} distinct: {top}", "", "", "",
                             ""])
    return ("<h2>Scores</h2><p class='muted'>Per-row scores `curate score` added (score_* columns): rows with a "
            "value, rows without, and the distribution; missing is null (a judge that failed, a reply without "
            "letters).</p>" + _table(["set", "score", "rows", "missing", "mean", "P5", "P50", "P95", "max"], rows)
            + score_histograms(sets))


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f'<td class="num">{v:.4g}</td>'
        if isinstance(v, int):
            return f'<td class="num">{v:,}</td>'
        return f"<td>{v if isinstance(v, _Raw) else escape(str(v))}</td>"

    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(cell(v) for v in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


class _Raw(str):
    """HTML already escaped."""


def _examples(texts: list[str]) -> _Raw:
    return _Raw("".join(f"<pre>{escape(t)}</pre>" for t in texts))


def _structure(d: dict[str, Any]) -> str:
    sets = list(d["structure"])
    s = d["structure"]
    rows: list[list[Any]] = [["records"] + [s[n]["count"] for n in sets]]
    rows.append(["user turns per record (P50 / P95)"] + [f"{s[n]['turns']['p50']:g} / {s[n]['turns']['p95']:g}" for n in sets])
    for f in ("prompt_tokens", "user_tokens", "assistant_tokens", "system_tokens", "total_tokens"):
        rows.append([f"{f} P50 / P95 / P99"] + [
            f"{s[n]['tokens'][f]['p50']:g} / {s[n]['tokens'][f]['p95']:g} / {s[n]['tokens'][f]['p99']:g}" for n in sets])
    rows.append(["messages per role"] + [", ".join(f"{k} {v}" for k, v in s[n]["roles"].items()) for n in sets])
    rows.append(["records with tools / tool calls"] + [
        f"{s[n]['tool_use']['records_with_tools']} / {s[n]['tool_use']['records_with_tool_calls']}" for n in sets])
    rows.append(["system prompts (records / distinct)"] + [
        f"{s[n]['system_prompts']['records_with_system']} / {s[n]['system_prompts']['distinct']}" for n in sets])
    rows.append(["languages"] + [", ".join(f"{k} {v:.1%}" for k, v in s[n]["languages"].items()) for n in sets])
    rows.append(["duplicate share"] + [f"{s[n]['duplicate_share']:.2%}" for n in sets])
    rows.append(["synthetic share"] + [f"{s[n]['synthetic_share']:.2%}" for n in sets])
    rows.append(["format compliance (curate validate)"] + [
        f"{s[n]['format_compliance']['pass_share']:.1%} of {s[n]['format_compliance']['checked']:,} checked"
        if s[n]["format_compliance"] else "not checked" for n in sets])
    return _table([""] + sets, rows)


def _features(cmp: dict[str, Any], ref: str, tgt: str) -> str:
    rows = [[f["feature"], f["reference"]["p50"], f["target"]["p50"], f["reference"]["p95"], f["target"]["p95"],
             f["p95_ratio"] if f["p95_ratio"] is not None else "-", f["ks"], f["psi"]] for f in cmp["features"]]
    skipped = "".join(f"<div class='muted'>not compared: {escape(sk['feature'])}: {escape(sk['why'])}</div>"
                      for sk in cmp.get("skipped", []))
    return _table(["feature", f"{ref} P50", f"{tgt} P50", f"{ref} P95", f"{tgt} P95", "P95 ratio", "KS", "PSI"], rows) \
        + skipped


def _clusters(clusters: list[dict[str, Any]], tgt: str, ref: str) -> str:
    rows = [[f"#{c['id']}", "GAP" if c["gap"] else "", c["label"], c["size"], c["target_share"], c["reference_share"],
             c["coverage_ratio"], c["nn_distance_p50"], _examples(c["examples"])]
            for c in sorted(clusters, key=lambda c: -c["target_share"])]
    return _table(["cluster", "", "top terms", "rows", f"{tgt} share", f"{ref} share", "ratio", "NN dist P50", "examples"], rows)


def render_html(rep: ReportOutcome) -> str:
    """The whole report as one HTML string."""
    d = rep.summary["report"]
    parts = [(f"<h1>curate report</h1><p class='muted'>curate {escape(d['curate_version'])} · embedder "
              f"{escape(d['settings']['embedder']['name'])} · tokenizer {escape(d['settings']['tokenizer'])} · "
              f"seed {d['settings']['seed']}</p>")]
    for name, info in d["inputs"].items():
        if info:
            parts.append(f"<div class='muted'>{escape(name)}: {escape(str(info['path'] or '(in-memory table)'))} ({info['rows']:,} rows)</div>")
    if d["gates"]:
        parts.append("<h2>Gates</h2>" + _table(["gate", "value", "result"], [
            [g["expr"], g["value"], _Raw(f"<span class='{'fail' if g['failed'] else 'pass'}'>{'FAILED' if g['failed'] else 'passed'}</span>")]
            for g in d["gates"]]))
    if d["warnings"]:
        parts.append("<h2>Warnings</h2>" + "".join(f"<div class='warn'>{escape(w)}</div>" for w in d["warnings"]))
    if d.get("redaction"):
        r = d["redaction"]
        kinds = sorted({k for c in r["found"].values() for k in c})
        parts.append("<h2>Personal data masked</h2><p class='muted'>Everything below shows masked text "
                     f"({escape(r['detector'])}; person names {escape(r['person_names'])}).</p>"
                     + (_table(["set", *kinds], [[name, *(c.get(k, 0) for k in kinds)] for name, c in r["found"].items()])
                        if kinds else "<p>Nothing found.</p>"))
    metrics = [[k, v] for k, v in d["metrics"].items() if v is not None]
    parts.append("<h2>Summary</h2>" + _table(["metric", "value"], metrics))
    parts.append("<h2>Structure</h2>" + _structure(d) + length_histograms(rep) + preference_plot(rep))
    parts.append(_scores(d))
    if d["comparison"]:
        parts.append("<h2>Training vs production, per record</h2>" + _features(d["comparison"], "train", "production"))
    if d["coverage"] and rep.coverage is not None:
        c = d["coverage"]
        parts.append(f"<h2>Coverage</h2><p>{c['k']} production clusters (k by silhouette); domain-classifier AUC "
                     f"{c['domain_auc']}; {c['uncovered_share']:.1%} of production lies in gap clusters (training share under "
                     f"{c['gap_ratio']:g} x production share).</p>")
        parts.append(coverage_bars(c["clusters"], "production", "train") + cluster_map(rep.coverage, "production", "train"))
        parts.append("<h2>Gaps</h2>" + (_clusters([x for x in c["clusters"] if x["gap"]], "production", "train")
                                        if d["gaps"] else "<p>No under-covered production cluster.</p>"))
        parts.append("<h2>All production clusters</h2>" + _clusters(c["clusters"], "production", "train"))
    if d["drift"] and rep.drift_maps is not None:
        dr = d["drift"]
        moved = "".join(f"<li>{escape(m)}</li>" for m in dr["moved"]) or "<li>nothing moved past the thresholds</li>"
        parts.append(f"<h2>Drift: baseline vs new production</h2><ul>{moved}</ul>" + _features(dr, "baseline", "production"))
        parts.append(coverage_bars(dr["clusters"], "production", "baseline") + cluster_map(rep.drift_maps[0], "production", "baseline"))
    if d.get("history"):
        parts.append("<h2>History: drift from snapshot to snapshot</h2>" + history_plot(d["history"]) + _table(
            ["from", "to", "rows", "max PSI", "domain AUC", "new kinds share", "fading kinds share", "moved"],
            [[Path(h["from"]).name, Path(h["to"]).name, h["rows"], h["max_psi"], h["domain_auc"], h["emerged_share"],
              h["vanished_share"], h["moved"]] for h in d["history"]]))
    body = "\n".join(parts)
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>curate report</title>"
            f"<style>{CSS}</style></head><body>{body}</body></html>\n")


def write_html(rep: ReportOutcome, path: str | Path, outputs: OutputSet | None = None) -> Path:
    """Write the report, atomically on its own or as part of an output set."""
    from curate.outputs import atomic_path

    text = render_html(rep)
    if outputs is not None:
        outputs.tmp(path).write_text(text, encoding="utf-8")
        return Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)
