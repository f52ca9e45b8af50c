"""Pass 3 of `dedupe()`: write kept and removed rows, the clusters and decontamination tables; the outcome."""

from __future__ import annotations

import json
import math
import resource
import time
from collections.abc import Iterator
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate.dedupe.config import DedupeConfig
from curate.dedupe.decontam import REPORT_SCHEMA, where
from curate.dedupe.keys import Keys, extract
from curate.dedupe.plan import Plan
from curate.dedupe.spill import ShingleSpill
from curate.engine import current, make
from curate.ingest.blocks import _spill_folder, roomy_shm
from curate.inputs import Input
from curate.outcome import StageOutcome
from curate.outputs import OutputSet, ParquetSink, write_table
from curate.stitch import Offload

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
ROW_GROUP_BYTES = 64 << 20  # in-memory Arrow bytes gathered into one row group of the kept / removed files
ENCODE_ON_POOL = True  # the benchmark (bench_dedupe_write.py) turns it off to compare with encoding here


@dataclass
class DedupeOutcome(StageOutcome):
    """What `dedupe()` did (a StageOutcome), plus its clusters and decontamination matches as tables.

    counts: in = kept + rejected (removed); summary["reasons"]: removed rows by reason (exact, near,
    contaminated). `kept` and `rejected` (the removed rows, reason in `dedupe_reason`) are tables when
    nothing was written (output=None), else None: the rows are in outputs["kept"] and outputs["removed"].
    """

    clusters: pa.Table = field(default_factory=CLUSTER_SCHEMA.empty_table, repr=False)
    decontamination: pa.Table = field(default_factory=REPORT_SCHEMA.empty_table, repr=False)
    # input row numbers of the removed rows, for the semantic pass (curate/dedupe/semantic.py); not in to_dict
    removed_rows: np.ndarray | None = field(default=None, repr=False)


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

    ids: pa.Array  # string id per row
    exact: np.ndarray | None  # None unless an index is extended
    band: np.ndarray | None
    nonempty: np.ndarray
    spill: ShingleSpill
    contam: list[dict] = field(default_factory=list)


def finish(src: Input, output: str | Path | None, plan: Plan, rows: RowState, cfg: DedupeConfig, *, index, matcher,
           shared: set[str], t0: float) -> DedupeOutcome:
    """Pass 3: write kept and removed rows; build the clusters and decontamination tables and the outcome
    (cfg: the settings used, bands chosen)."""
    c2 = time.process_time()
    ids, contam, nonempty, spill, on = rows.ids, rows.contam, rows.nonempty, rows.spill, cfg.on
    n = plan.n
    old_ids = index.ids() if plan.m else []

    old_obj = _objects(old_ids)

    def ids_of(nodes: np.ndarray) -> np.ndarray:
        """Object array of the ids of global nodes (rows of the index first, then this input's)."""
        out = np.empty(len(nodes), dtype=object)
        new = nodes >= plan.m
        out[new] = ids.take(pa.array(nodes[new] - plan.m)).to_numpy(zero_copy_only=False)
        out[~new] = old_obj[nodes[~new]]
        return out

    # per-row columns of the removed file; None / -1 / NaN where a row was not removed (or has no value)
    rem, kept_node = plan.removed, plan.kept_node
    reason = np.full(n, None, dtype=object)
    dup_of = np.full(n, None, dtype=object)
    dup_row = np.full(n, -1, dtype=np.int64)
    jac = np.full(n, np.nan)
    jest = np.full(n, np.nan)
    evidence = np.full(n, None, dtype=object)
    reason[rem] = plan.reason
    dup_of[rem] = ids_of(kept_node)
    dup_row[rem] = np.where(kept_node >= plan.m, kept_node - plan.m, -1)
    jac[rem] = np.round(plan.jaccard, 4)
    jest[rem] = np.round(plan.jaccard_est, 4)
    near_text = f"{cfg.shingle} {cfg.ngram}-gram Jaccard"
    evidence[rem] = [
        ("same normalised text" if why == "exact"
         else f"MinHash estimated Jaccard {e} (not verified)" if math.isnan(j)
         else f"{near_text} {j} (verified)") + (" with a row of the index" if old else "")
        for why, j, e, old in zip(plan.reason, jac[rem].tolist(), jest[rem].tolist(), (kept_node < plan.m).tolist())
    ]
    for c in contam:
        r = c["row"]
        if reason[r] is None:
            reason[r], dup_of[r] = "contaminated", c["eval_id"]
            evidence[r] = f"{c['match']} match with {c['eval_file']} item {c['eval_id']} {where(c)}: {c['evidence']}"
    removed_mask = np.not_equal(reason, None)  # elementwise on the object array

    in_cluster = plan.cluster_of_row >= 0
    preview_rows: list[np.ndarray] = []  # per batch: its rows that are in a cluster, and their previews
    preview_texts: list[pa.Array] = []
    columns = _strip(src.schema)
    keep_schema = pa.schema([src.schema.field(c) for c in columns] + KEPT_EXTRA)
    rem_schema = pa.schema([src.schema.field(c) for c in columns] + REMOVED_EXTRA)
    paths = output_paths(output) if output is not None else {}
    # kept, removed, clusters, decontamination and summary are one set: all appear together or none (a failure
    # drops every temporary file; an earlier run's outputs stay as they were)
    with OutputSet(paths["kept"], paths.values()) if output is not None else nullcontext() as outs, \
            _Encoders(cfg.workers if output is not None else 1) as encoders:
        stitch = encoders.wanted  # parts encoded elsewhere are appended: the same bytes as one writer's
        kept_w = _RowGroups(ParquetSink(paths["kept"], keep_schema, outs, stitch=stitch), encoders) \
            if output is not None else None
        rem_w = _RowGroups(ParquetSink(paths["removed"], rem_schema, outs, stitch=stitch), encoders) \
            if output is not None else None
        kept_parts, rem_parts = [], []
        idx_rows = []
        for start, batch in batches(src, cfg.batch_size, columns):
            sl = slice(start, start + batch.num_rows)
            rm = removed_mask[sl]
            cl = plan.cluster_of_row[sl]
            kc = cl[~rm]
            kept = batch.filter(pa.array(~rm)).append_column(KEPT_EXTRA[0], pa.array(kc, mask=kc < 0))
            rc, rr, rj, re = cl[rm], dup_row[sl][rm], jac[sl][rm], jest[sl][rm]
            cols = [
                pa.array(rc, mask=rc < 0),
                pa.array(reason[sl][rm], pa.string()),
                pa.array(dup_of[sl][rm], pa.string()),
                pa.array(rr, mask=rr < 0),
                pa.array(rj, mask=np.isnan(rj)),
                pa.array(re, mask=np.isnan(re)),
                pa.array(evidence[sl][rm], pa.string()),
            ]
            removed = batch.filter(pa.array(rm))
            for f, col in zip(REMOVED_EXTRA, cols):
                removed = removed.append_column(f, col)
            local = np.flatnonzero(in_cluster[sl])
            if len(local):
                # only the messages column: the other columns of these rows are not needed for a preview
                keys = extract(batch.select(["messages"]).take(pa.array(local)), on, shared)
                preview_rows.append(local + start)
                preview_texts.append(_preview_texts(keys))
            if index is not None:
                idx_rows.append(np.flatnonzero(~rm & nonempty[sl]) + start)
            if kept_w is not None:
                kept_w.add(kept)
                rem_w.add(removed)
            else:
                kept_parts.append(kept)
                rem_parts.append(removed)
        if kept_w is not None:
            kept_w.close()
            rem_w.close()
        previews = _Previews(preview_rows, preview_texts)

        clusters = _clusters_table(plan, removed_mask, reason, jac, jest, ids_of, previews, ids)
        dec_rows = [{"train_id": ids[c["row"]].as_py(), "train_row": c["row"], **{k: c[k] for k in REPORT_SCHEMA.names if k in c}}
                    for c in contam]
        decon = pa.Table.from_pylist(dec_rows, schema=REPORT_SCHEMA)

        counts = {r: int(np.sum(reason == r)) for r in ("exact", "near", "contaminated")}
        sizes = pc.list_value_length(clusters.column("member_ids")).to_numpy(zero_copy_only=False) + 1 if clusters.num_rows else []
        gone = int(removed_mask.sum())
        summary = {
            "reasons": counts,
            "empty_key_rows": int((~nonempty).sum()),
            "clusters": clusters.num_rows,
            "largest_cluster": int(max(sizes)) if len(sizes) else 0,
            "index_rows_before": plan.m,
            "eval_items": len(matcher.evals) if matcher else 0,
            "contaminated_eval_items": len({(c["eval_file"], c["eval_id"], c["eval_turn"]) for c in contam}),
            **plan.stats,
            "config": cfg.to_dict(),
        }
        written = {k: str(v) for k, v in paths.items() if k != "decontamination" or matcher is not None}
        outcome = DedupeOutcome("dedupe", {"in": n, "kept": n - gone, "rejected": gone}, written, summary,
                                clusters=clusters, decontamination=decon, removed_rows=np.flatnonzero(removed_mask))
        if output is not None:
            write_table(clusters, paths["clusters"], outs)
            if matcher is not None:
                write_table(decon, paths["decontamination"], outs)
        summary["cpu_seconds"]["write"] = round(time.process_time() - c2, 3)
        summary["seconds"] = round(time.perf_counter() - t0, 3)
        # the whole process's high-water mark (Linux reports KiB), so it includes whatever ran before
        summary["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        if output is not None:  # the same document as `--json`
            outs.tmp(paths["summary"]).write_text(json.dumps(outcome.to_dict(), indent=2, default=str) + "\n")
    # the index learns this run's rows only once its outputs are published: a run killed before that
    # leaves the index as it was, so the rerun's outputs equal an uninterrupted run's
    if index is not None and idx_rows:
        sets = spill.sets(np.concatenate(idx_rows))
        if len(sets.docs):
            index.append(ids.take(pa.array(sets.docs)).to_pylist(), rows.exact[sets.docs], rows.band[sets.docs],
                         sets.offsets, sets.values)
    if output is None:
        outcome.kept = pa.concat_tables(kept_parts).cast(keep_schema) if kept_parts else keep_schema.empty_table()
        outcome.rejected = pa.concat_tables(rem_parts).cast(rem_schema) if rem_parts else rem_schema.empty_table()
    return outcome


def batches(src: Input, size: int, columns: list[str], *, keys_only: bool = False) -> Iterator[tuple[int, pa.Table]]:
    """(first row, table) per batch of `src`. keys_only: of a Parquet file's `messages`, read only the leaf columns
    keys are made of (role and content), which spares decoding the other message fields (a third of pass 1's
    Parquet time)."""
    if keys_only and src.parquet is not None and "messages" in columns:
        leaves = [c.path for c in src.parquet.schema if c.path.startswith("messages.")
                  and c.path.count(".") == 3 and c.path.rsplit(".", 1)[1] in ("role", "content")]
        if len(leaves) == 2:
            columns = [x for c in columns for x in (leaves if c == "messages" else [c])]
    start = 0
    for rb in src.batches(size, columns):
        yield start, pa.Table.from_batches([rb])
        start += rb.num_rows


def _preview_texts(keys: Keys) -> pa.Array:
    """Each row's key pieces joined by " / ", cut to PREVIEW characters."""
    # a row's pieces are adjacent and in row order, so per-row counts give list offsets
    offsets = np.zeros(keys.nrows + 1, dtype=np.int32)
    np.cumsum(np.bincount(keys.doc, minlength=keys.nrows), out=offsets[1:])
    joined = pc.binary_join(pa.ListArray.from_arrays(pa.array(offsets), keys.texts), " / ")
    return pc.utf8_slice_codeunits(joined, 0, PREVIEW)  # counts code points, as str slicing does


class _Previews:
    """Preview text of the rows that are in a cluster, looked up by row."""

    def __init__(self, rows: list[np.ndarray], texts: list[pa.Array]):
        self.rows = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
        self.texts = pa.concat_arrays(texts) if texts else pa.array([], pa.string())

    def get(self, rows: np.ndarray, default: str) -> pa.Array:
        """Previews of `rows` (`default` for a row without one)."""
        pos = np.searchsorted(self.rows, rows)
        found = pos < len(self.rows)
        found[found] = self.rows[pos[found]] == rows[found]
        return pc.fill_null(self.texts.take(pa.array(pos, mask=~found)), default)


class _Encoders:
    """Where the kept and removed row groups are encoded: with 2+ workers, on a pool (a local process pool with a
    roomy /dev/shm, or Ray actors) started at the first full row group, so an output smaller than one is encoded
    here as before; each part's bytes are appended in order (curate.stitch.Offload), the files byte for byte those
    one writer makes. Encoding is ~60% of the writing pass's CPU (4.0 of 6.6 CPU s at 1M rows)."""

    def __init__(self, workers: int):
        # a local pool's parts go through shared memory, or the pool is not worth it
        self.wanted = workers > 1 and ENCODE_ON_POOL and (current() == "ray" or roomy_shm(workers))
        self.workers = workers
        self.engine: Any = None
        self.folder: str | None = None
        self._tried = False
        self._stack = ExitStack()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()  # the pool first (its workers waited for, or killed), then the folder they wrote to

    def offload(self, sink: ParquetSink) -> Offload | None:
        """An Offload for `sink` on the pool, started now if it is not yet; None where there is no pool."""
        if self.wanted and not self._tried:
            self._tried = True
            pool = make(self.workers)
            if pool.kind != "ray":
                self.folder = self._stack.enter_context(_spill_folder(pool.workers))
                if self.folder is None:  # /dev/shm filled up since
                    return None
            self.engine = self._stack.enter_context(pool)
        return Offload(sink, self.engine, self.folder, self.engine.workers) if self.engine is not None else None


class _RowGroups:
    """Gathers batches for a writer and writes them as row groups of about ROW_GROUP_BYTES (encoded on the
    `encoders`' pool once the first is full)."""

    # a row group per input batch would make hundreds of small ones, each paying the per-group
    # encoding and metadata cost again: about 0.6 CPU-s of the write phase at 1M rows

    def __init__(self, writer: ParquetSink, encoders: _Encoders | None = None):
        self.writer = writer
        self.encoders = encoders
        self.offload: Offload | None = None
        self.parts: list[pa.Table] = []
        self.nbytes = 0

    def add(self, table: pa.Table) -> None:
        self.parts.append(table)
        self.nbytes += table.nbytes
        if self.nbytes >= ROW_GROUP_BYTES:
            if self.offload is None and self.encoders is not None:
                self.offload = self.encoders.offload(self.writer)
            self.flush()

    def flush(self) -> None:
        if self.parts:
            table = pa.concat_tables(self.parts).cast(self.writer.schema)
            if self.offload is not None:
                self.offload.put(table)
            else:
                self.writer.write_table(table)
        self.parts, self.nbytes = [], 0

    def close(self) -> None:
        """Write what is gathered and publish the file."""
        self.flush()
        if self.offload is not None:
            self.offload.close()
        self.writer.close()


def _objects(values: list) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def _lists(offsets: np.ndarray, values: pa.Array) -> pa.ListArray:
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), values)


def _clusters_table(plan, removed_mask, reason, jac, jest, ids_of, previews, ids) -> pa.Table:
    """One row per cluster with a removed member, largest first: who was kept, who went, and why."""
    rows = np.flatnonzero(removed_mask & (plan.cluster_of_row >= 0))
    if len(rows) == 0:
        return CLUSTER_SCHEMA.empty_table()
    cl = plan.cluster_of_row[rows]
    rows = rows[np.lexsort((rows, cl))]  # grouped by cluster, members in row order
    cl = plan.cluster_of_row[rows]
    cid, first, count = np.unique(cl, return_index=True, return_counts=True)
    offsets = np.append(first, len(rows))
    kept = plan.cluster_kept[cid]
    in_index = "(kept by an earlier run; in the index)"
    mj, mje = jac[rows], jest[rows]
    with np.errstate(invalid="ignore"):
        min_j = np.fmin.reduceat(mj, first)  # fmin skips NaN (unverified); all-NaN stays NaN
    table = pa.table(
        {
            "cluster_id": pa.array(cid),
            "size": pa.array(count + 1),
            "kept_id": pa.array(ids_of(kept), pa.string()),
            "kept_row": pa.array(kept - plan.m, mask=kept < plan.m),
            # a kept row of the index has no preview: -1 matches no row
            "kept_preview": previews.get(np.where(kept >= plan.m, kept - plan.m, -1), in_index),
            "member_ids": _lists(offsets, ids.take(pa.array(rows))),
            "member_rows": _lists(offsets, pa.array(rows)),
            "member_previews": _lists(offsets, previews.get(rows, "")),
            "reasons": _lists(offsets, pa.array(reason[rows], pa.string())),
            "jaccard": _lists(offsets, pa.array(mj, mask=np.isnan(mj))),
            "jaccard_est": _lists(offsets, pa.array(mje, mask=np.isnan(mje))),
            "min_jaccard": pa.array(min_j, mask=np.isnan(min_j)),
        },
        schema=CLUSTER_SCHEMA,
    )
    return table.take(np.lexsort((cid, -(count + 1))))
