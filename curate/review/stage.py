"""`curate review export` and `curate review import`: the rows that need a person out, their decisions back in.

Decisions (one per task, `review_*` columns on the rows they touch):
    keep   the row stays, unchanged; a row that was out of the dataset (a removed near duplicate, a row
           synth held) comes back, from the copy its task carries (`review_restored`)
    drop   the row leaves the dataset for OUT.dropped.parquet, with who, when and why; a row already out
           stays out (counted as `already_out`)
    edit   the row stays (or comes back) with its last assistant reply replaced by the reviewer's text; the
           old reply is kept in `review_original`
A task without a decision leaves its row as it is. A decision that cannot be applied (its row is neither in
the dataset nor carried by the task, an unknown choice, an edit without text or without an assistant reply)
is listed with its task id in `rejects` and skipped; with `strict` it stops the import before anything is
written. Counts balance: in = kept + dropped; out = kept + restored.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from curate.dataset import check_canonical, open_parquet, parquet_batches
from curate.errors import InputError
from curate.outcome import StageOutcome
from curate.outputs import OutputSet, ParquetSink, write_table
from curate.review.config import ReviewExportConfig, ReviewImportConfig
from curate.review.formats import (
    DECISIONS,
    Decision,
    argilla_record,
    item_data,
    label_config,
    label_studio_task,
    read_decisions,
)
from curate.review.sources import find_items

REVIEW_COLUMNS = [
    pa.field("review_task", pa.string()), pa.field("review_reason", pa.string()),
    pa.field("review_decision", pa.string()), pa.field("review_by", pa.string()), pa.field("review_at", pa.string()),
    pa.field("review_note", pa.string()), pa.field("review_original", pa.string()),
    pa.field("review_restored", pa.bool_()),
]


def export_review(sources: list[str | Path], output: str | Path, config: ReviewExportConfig | None = None,
                  **settings: Any) -> StageOutcome:
    """Write the rows of `sources` (run folders or stage outputs) that need a person, as review tasks."""
    cfg = ReviewExportConfig.build(config, **settings)
    found = find_items(list(sources), cfg)
    output = Path(output)
    data = [item_data(item, f"t{n}") for n, item in enumerate(found.items.values(), 1)]
    outputs = {"tasks": str(output)}
    xml = output.with_name(f"{output.name.removesuffix('.json')}.label_config.xml")
    with OutputSet(output, [xml]) as outs:
        if cfg.to == "label-studio":
            outs.tmp(output).write_text(json.dumps([label_studio_task(d) for d in data], ensure_ascii=False, indent=1))
            outs.tmp(xml).write_text(label_config())
            outputs["config"] = str(xml)
        elif output.suffix == ".jsonl":
            outs.tmp(output).write_text("".join(json.dumps(argilla_record(d), ensure_ascii=False) + "\n" for d in data))
        else:
            outs.tmp(output).write_text(json.dumps([argilla_record(d) for d in data], ensure_ascii=False, indent=1))
    reasons = Counter(r for item in found.items.values() for r in item.reasons)
    thresholds = [{"file": f, "threshold": t} for f, t in found.thresholds]
    return StageOutcome("review_export", {"tasks": len(data)}, outputs,
                        {"format": cfg.to, "reasons": dict(sorted(reasons.items())), "margin": cfg.margin,
                         "near_duplicate_thresholds": thresholds, "sources": found.sources,
                         "config": cfg.to_dict()})


def import_review(decisions: str | Path, dataset: str | Path, output: str | Path,
                  config: ReviewImportConfig | None = None, **settings: Any) -> StageOutcome:
    """Apply the keep / drop / edit decisions of an annotated export to `dataset`, written to `output`."""
    cfg = ReviewImportConfig.build(config, **settings)
    fmt, read = read_decisions(decisions)
    rejects: list[dict[str, Any]] = []
    chosen: dict[str, Decision] = {}
    for d in read:
        if d.decision is None:
            continue
        why = _invalid(d)
        if why:
            rejects.append(_reject(d, why))
        elif d.row_id in chosen and (chosen[d.row_id].at or "") > (d.at or ""):
            chosen[d.row_id].conflict = True  # two tasks on one row: the later decision wins
        else:
            d.conflict = d.conflict or d.row_id in chosen
            chosen[d.row_id] = d
    pf = open_parquet(dataset)
    check_canonical(pf.schema_arrow, dataset)
    schema = pf.schema_arrow
    for f in REVIEW_COLUMNS:
        if f.name not in schema.names:
            schema = schema.append(f)
    c = Counter({k: 0 for k in ("in", "kept", "dropped", "edited", "restored")})
    output = Path(output)
    dropped_path = output.with_name(f"{output.name.removesuffix('.parquet')}.dropped.parquet")
    seen: set[str] = set()
    dropped_tables: list[pa.Table] = []
    outs = OutputSet(output, [dropped_path])
    try:
        with ParquetSink(output, schema, outs) as sink:
            for batch in parquet_batches(pf, dataset, batch_size=4096):
                kept, dropped = _apply(pa.Table.from_batches([batch]), schema, chosen, seen, rejects, c)
                sink.write_table(kept)
                if dropped.num_rows:
                    dropped_tables.append(dropped)
            restored = _restore(chosen, seen, schema, rejects, c)
            if restored.num_rows:
                sink.write_table(restored)
            if cfg.strict and rejects:
                r = rejects[0]
                raise InputError(f"{len(rejects)} decision(s) cannot be applied (--strict), the first: task "
                                 f"{r['task']}, row {r['id']}: {r['why']}", file=str(decisions))
        if dropped_tables:
            write_table(pa.concat_tables(dropped_tables), dropped_path, outs)
        outs.commit()
    except BaseException:
        outs.abort()
        raise
    c["out"] = c["kept"] + c["restored"]
    counts = {k: c[k] for k in ("in", "kept", "dropped", "edited", "restored", "out")}
    counts.update(decisions=sum(d.decision is not None for d in read), undecided=sum(d.decision is None for d in read),
                  already_out=c["already_out"], conflicts=sum(d.conflict for d in chosen.values()),
                  rejects=len(rejects))
    outputs = {"data": str(output), **({"dropped": str(dropped_path)} if dropped_tables else {})}
    return StageOutcome("review_import", counts, outputs,
                        {"format": fmt, "decisions_file": str(decisions), "rejects": rejects,
                         "config": cfg.to_dict()}, parts=("kept", "dropped"))


def _invalid(d: Decision) -> str | None:
    if d.decision not in DECISIONS:
        return f"unknown decision {d.decision!r} (keep, drop or edit)"
    if not d.row_id:
        return "the task names no row id (was it exported by `curate review export`?)"
    if d.decision == "edit" and not (d.text or "").strip():
        return "edit without an edited reply"
    return None


def _reject(d: Decision, why: str) -> dict[str, Any]:
    return {"task": d.task, "id": d.row_id, "decision": d.decision, "why": why}


def _review_values(d: Decision, original: str | None, restored: bool) -> dict[str, Any]:
    return {"review_task": d.task, "review_reason": ", ".join(d.reasons) or None, "review_decision": d.decision,
            "review_by": d.by, "review_at": d.at, "review_note": d.note, "review_original": original,
            "review_restored": restored}


def _edit(messages: list[dict[str, Any]], text: str) -> str | None:
    """Replace the last assistant reply's content in place; returns the old content (None: no reply)."""
    for m in reversed(messages):
        if m.get("role") == "assistant":
            old, m["content"] = m.get("content"), text
            return old if old is not None else ""
    return None


def _apply(table: pa.Table, schema: pa.Schema, chosen: dict[str, Decision], seen: set[str],
           rejects: list[dict[str, Any]], c: Counter) -> tuple[pa.Table, pa.Table]:
    """One batch of the dataset with its decisions applied: (kept rows, dropped rows), both in `schema`."""
    n = table.num_rows
    c["in"] += n
    ids = table.column("id").to_pylist()
    hits = [i for i, rid in enumerate(ids) if rid in chosen]
    values: dict[str, list[Any]] = {f.name: [None] * n for f in REVIEW_COLUMNS}
    for name in values:  # a second round keeps the first round's columns on rows this one does not decide
        if name in table.schema.names:
            values[name] = table.column(name).to_pylist()
    drop = [False] * n
    messages = table.column("messages").to_pylist() if any(chosen[ids[i]].decision == "edit" for i in hits) else None
    for i in hits:
        d = chosen[ids[i]]
        seen.add(ids[i])
        original = None
        if d.decision == "edit":
            original = _edit(messages[i], d.text)
            if original is None:
                rejects.append(_reject(d, "the row has no assistant reply to edit"))
                continue
            c["edited"] += 1
        drop[i] = d.decision == "drop"
        for k, v in _review_values(d, original, False).items():
            values[k][i] = v
    cols = {name: table.column(name) for name in table.schema.names}
    if messages is not None:
        cols["messages"] = pa.array(messages, type=table.schema.field("messages").type)
    for f in REVIEW_COLUMNS:
        cols[f.name] = pa.array(values[f.name], type=schema.field(f.name).type)
    out = pa.table([cols[f.name] for f in schema], schema=schema)
    mask = pa.array(drop)
    dropped = out.filter(mask)
    c["dropped"] += dropped.num_rows
    kept = out.filter(pc.invert(mask))
    c["kept"] += kept.num_rows
    return kept, dropped


def _restore(chosen: dict[str, Decision], seen: set[str], schema: pa.Schema, rejects: list[dict[str, Any]],
             c: Counter) -> pa.Table:
    """Rows a decision keeps that are not in the dataset: back from the copy their task carries."""
    rows = []
    for rid, d in chosen.items():
        if rid in seen:
            continue
        if d.row is None:
            rejects.append(_reject(d, "no row with this id in the dataset"))
            continue
        if d.decision == "drop":
            c["already_out"] += 1
            continue
        row = dict(d.row)
        row["messages"] = [dict(m) for m in row.get("messages") or []]
        original = None
        if d.decision == "edit":
            original = _edit(row["messages"], d.text)
            if original is None:
                rejects.append(_reject(d, "the row has no assistant reply to edit"))
                continue
            c["edited"] += 1
        row.update(_review_values(d, original, True))
        rows.append({f.name: row.get(f.name) for f in schema})
        c["restored"] += 1
    return pa.Table.from_pylist(rows, schema=schema)
