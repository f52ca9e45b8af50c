"""Pass 3 of `dedupe()`: write kept and removed rows, the clusters and decontamination tables, the summary."""

from __future__ import annotations

import json
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curate.dataset import AtomicParquetWriter, atomic_path, write_table
from curate.dedupe.decontam import REPORT_SCHEMA
from curate.dedupe.keys import extract
from curate.dedupe.plan import Plan
from curate.dedupe.spill import ShingleSpill

KEPT_EXTRA = [pa.field("dedupe_cluster", pa.int64())]
REMOVED_EXTRA = [
    pa.field("dedupe_cluster", pa.int64()),
    pa.field("dedupe_reason", pa.string()),
    pa.field("dedupe_duplicate_of", pa.string()),
    pa.field("dedupe_duplicate_row", pa.int64()),
    pa.field("dedupe_jaccard", pa.float64()),
    pa.field("dedupe_jaccard_est", pa.float64()),
    pa.field("dedupe_evidence", pa.string()),
]
CLUSTER_SCHEMA = pa.schema(
    [
        ("cluster_id", pa.int64()),
        ("size", pa.int64()),
        ("kept_id", pa.string()),
        ("kept_row", pa.int64()),
        ("kept_preview", pa.string()),
        ("member_ids", pa.list_(pa.string())),
        ("member_rows", pa.list_(pa.int64())),
        ("member_previews", pa.list_(pa.string())),
        ("reasons", pa.list_(pa.string())),
        ("jaccard", pa.list_(pa.float64())),
        ("jaccard_est", pa.list_(pa.float64())),
        ("min_jaccard", pa.float64()),
    ]
)
PREVIEW = 240


@dataclass
class DedupeResult:
    """What `dedupe()` did: counts, clusters, decontamination matches, and the kept / removed rows."""

    summary: dict
    clusters: pa.Table
    decontamination: pa.Table
    paths: dict[str, str] = field(default_factory=dict)
    _kept: pa.Table | None = None
    _removed: pa.Table | None = None

    @property
    def kept(self) -> pa.Table:
        return self._kept if self._kept is not None else pq.read_table(self.paths["kept"])

    @property
    def removed(self) -> pa.Table:
        return self._removed if self._removed is not None else pq.read_table(self.paths["removed"])


def output_paths(output: str | Path) -> dict[str, Path]:
    out = Path(output)
    stem = out.name.removesuffix(".parquet")
    return {
        "kept": out,
        "removed": out.with_name(f"{stem}.removed.parquet"),
        "clusters": out.with_name(f"{stem}.clusters.parquet"),
        "decontamination": out.with_name(f"{stem}.decontam.parquet"),
        "summary": out.with_name(f"{stem}.dedupe.json"),
    }


def _strip(schema: pa.Schema) -> list[str]:
    return [f.name for f in schema if not f.name.startswith("dedupe_")]


@dataclass
class RowState:
    """What pass 1 learned about every row, kept for the decision and for writing."""

    ids: list[str]
    exact: np.ndarray
    band: np.ndarray
    nonempty: np.ndarray
    spill: ShingleSpill
    contam: list[dict] = field(default_factory=list)


def finish(src, output: str | Path | None, plan: Plan, rows: RowState, config: dict, *, index, matcher,
           shared: set[str], batch_size: int, t0: float) -> DedupeResult:
    """Pass 3: write kept and removed rows; build the clusters and decontamination tables and the summary."""
    ids, contam, nonempty, spill, on = rows.ids, rows.contam, rows.nonempty, rows.spill, config["on"]
    n = plan.n
    old_ids = index.ids() if plan.m else []

    def id_of(node: int) -> str:
        return old_ids[node] if node < plan.m else ids[node - plan.m]

    reason = np.full(n, None, dtype=object)
    dup_of = np.full(n, None, dtype=object)
    dup_row = np.full(n, None, dtype=object)
    jac = np.full(n, None, dtype=object)
    jest = np.full(n, None, dtype=object)
    evidence = np.full(n, None, dtype=object)
    for r, why, k, j, e in zip(plan.removed.tolist(), plan.reason, plan.kept_node.tolist(), plan.jaccard, plan.jaccard_est):
        reason[r], dup_of[r] = why, id_of(k)
        dup_row[r] = k - plan.m if k >= plan.m else None
        jac[r] = None if np.isnan(j) else round(float(j), 4)
        jest[r] = round(float(e), 4)
        if why == "exact":
            evidence[r] = "same normalised text"
        elif jac[r] is None:
            evidence[r] = f"MinHash estimated Jaccard {jest[r]} (not verified)"
        else:
            evidence[r] = f"{config['shingle']} {config['ngram']}-gram Jaccard {jac[r]} (verified)"
        if k < plan.m:
            evidence[r] += " with a row of the index"
    for c in contam:
        r = c["row"]
        if reason[r] is None:
            reason[r], dup_of[r] = "contaminated", c["eval_id"]
            evidence[r] = f"{c['match']} match with {c['eval_file']} item {c['eval_id']} turn {c['eval_turn']}: {c['evidence']}"
    removed_mask = np.array([x is not None for x in reason], dtype=bool)

    in_cluster = plan.cluster_of_row >= 0
    previews: dict[int, str] = {}
    keep_schema = pa.schema([src.schema.field(c) for c in _strip(src.schema)] + KEPT_EXTRA)
    rem_schema = pa.schema([src.schema.field(c) for c in _strip(src.schema)] + REMOVED_EXTRA)
    paths = output_paths(output) if output is not None else {}
    kept_w = AtomicParquetWriter(paths["kept"], keep_schema) if output is not None else None
    rem_w = AtomicParquetWriter(paths["removed"], rem_schema) if output is not None else None
    kept_parts, rem_parts = [], []
    idx_rows = []
    try:
        for start, batch in src.batches(batch_size):
            batch = batch.select(_strip(batch.schema))
            sl = slice(start, start + batch.num_rows)
            rm = removed_mask[sl]
            cl = plan.cluster_of_row[sl]
            kept = batch.filter(pa.array(~rm)).append_column(
                KEPT_EXTRA[0], pa.array(np.where(cl[~rm] >= 0, cl[~rm], None).tolist(), pa.int64()))
            cols = [
                pa.array(np.where(cl[rm] >= 0, cl[rm], None).tolist(), pa.int64()),
                pa.array(reason[sl][rm].tolist(), pa.string()),
                pa.array(dup_of[sl][rm].tolist(), pa.string()),
                pa.array(dup_row[sl][rm].tolist(), pa.int64()),
                pa.array(jac[sl][rm].tolist(), pa.float64()),
                pa.array(jest[sl][rm].tolist(), pa.float64()),
                pa.array(evidence[sl][rm].tolist(), pa.string()),
            ]
            removed = batch.filter(pa.array(rm))
            for f, col in zip(REMOVED_EXTRA, cols):
                removed = removed.append_column(f, col)
            local = np.flatnonzero(in_cluster[sl])
            if len(local):
                keys = extract(batch.take(pa.array(local)), on, shared)
                joined = _join_pieces(keys)
                for k, text in zip(local.tolist(), joined):
                    previews[start + k] = text[:PREVIEW]
            if index is not None:
                idx_rows.append(np.flatnonzero(~rm & nonempty[sl]) + start)
            if kept_w is not None:
                kept_w.write_table(kept.cast(keep_schema))
                rem_w.write_table(removed.cast(rem_schema))
            else:
                kept_parts.append(kept)
                rem_parts.append(removed)
    except BaseException:
        for w in (kept_w, rem_w):
            if w is not None:
                w.__exit__(RuntimeError, RuntimeError("aborted"), None)
        raise
    if kept_w is not None:
        kept_w.close()
        rem_w.close()

    clusters = _clusters_table(plan, removed_mask, reason, jac, jest, id_of, previews, ids)
    dec_rows = [{"train_id": ids[c["row"]], "train_row": c["row"], **{k: c[k] for k in REPORT_SCHEMA.names if k in c}}
                for c in contam]
    decon = pa.Table.from_pylist(dec_rows, schema=REPORT_SCHEMA)

    if index is not None and idx_rows:
        sets = spill.sets(np.concatenate(idx_rows))
        if len(sets.docs):
            index.append([ids[r] for r in sets.docs.tolist()], rows.exact[sets.docs], rows.band[sets.docs], sets.offsets,
                     sets.values)

    counts = {r: int(np.sum(reason == r)) for r in ("exact", "near", "contaminated")}
    sizes = pc.list_value_length(clusters.column("member_ids")).to_numpy(zero_copy_only=False) + 1 if clusters.num_rows else []
    summary = {
        "input_rows": n,
        "kept": int(n - removed_mask.sum()),
        "removed": int(removed_mask.sum()),
        "removed_by_reason": counts,
        "empty_key_rows": int((~nonempty).sum()),
        "clusters": clusters.num_rows,
        "largest_cluster": int(max(sizes)) if len(sizes) else 0,
        "index_rows_before": plan.m,
        "eval_items": len(matcher.evals) if matcher else 0,
        "contaminated_eval_items": len({(c["eval_file"], c["eval_id"], c["eval_turn"]) for c in contam}),
        **plan.stats,
        "config": config,
        "seconds": round(time.perf_counter() - t0, 3),
        # the whole process's high-water mark (Linux reports KiB), so it includes whatever ran before
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }
    if output is not None:
        write_table(clusters, paths["clusters"])
        if matcher is not None:
            write_table(decon, paths["decontamination"])
        summary["outputs"] = {k: str(v) for k, v in paths.items() if k != "decontamination" or matcher is not None}
        with atomic_path(paths["summary"]) as tmp:
            tmp.write_text(json.dumps(summary, indent=2, default=str) + "\n")
    kept_t = pa.concat_tables(kept_parts).cast(keep_schema) if kept_parts else (keep_schema.empty_table() if output is None else None)
    rem_t = pa.concat_tables(rem_parts).cast(rem_schema) if rem_parts else (rem_schema.empty_table() if output is None else None)
    return DedupeResult(summary, clusters, decon, {k: str(v) for k, v in paths.items()}, kept_t, rem_t)


def _join_pieces(keys) -> list[str]:
    texts = keys.texts.to_pylist()
    out = [[] for _ in range(keys.nrows)]
    for d, t in zip(keys.doc.tolist(), texts):
        out[d].append(t)
    return [" / ".join(p) for p in out]


def _clusters_table(plan, removed_mask, reason, jac, jest, id_of, previews, ids) -> pa.Table:
    by_cluster: dict[int, list[int]] = {}
    for r in np.flatnonzero(removed_mask & (plan.cluster_of_row >= 0)).tolist():
        by_cluster.setdefault(int(plan.cluster_of_row[r]), []).append(r)
    rows = []
    for c, members in sorted(by_cluster.items()):
        k = int(plan.cluster_kept[c])
        js = [jac[r] for r in members]
        rows.append(
            {
                "cluster_id": c,
                "size": len(members) + 1,
                "kept_id": id_of(k),
                "kept_row": k - plan.m if k >= plan.m else None,
                "kept_preview": previews.get(k - plan.m, "(kept by an earlier run; in the index)") if k >= plan.m else "(kept by an earlier run; in the index)",
                "member_ids": [ids[r] for r in members],
                "member_rows": members,
                "member_previews": [previews.get(r, "") for r in members],
                "reasons": [reason[r] for r in members],
                "jaccard": js,
                "jaccard_est": [jest[r] for r in members],
                "min_jaccard": min((j for j in js if j is not None), default=None),
            }
        )
    rows.sort(key=lambda x: (-x["size"], x["cluster_id"]))
    return pa.Table.from_pylist(rows, schema=CLUSTER_SCHEMA)
