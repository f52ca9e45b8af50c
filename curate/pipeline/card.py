"""The dataset card: a Markdown description of the final dataset, written from the run's stage records."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from curate.dataset import atomic_path
from curate.pipeline.runner import StageRecord


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join("" if v is None else str(v) for v in r) + " |" for r in rows]
    return "\n".join(out)


def write_card(work: Path, recipe: dict[str, Any], records: list[StageRecord], dataset: Path) -> Path:
    """Write WORK/DATASET_CARD.md and return its path."""
    by = {r.name: r for r in records}
    table = pq.read_table(dataset, columns=["id", "origin", "source"])
    origins = Counter(table.column("origin").to_pylist())
    files = Counter((s or {}).get("file") for s in table.column("source").to_pylist())
    parts = [f"# Dataset card: {recipe['name']}", ""]
    if recipe.get("description"):
        parts += [recipe["description"], ""]
    parts += [
        f"Final dataset: `{dataset}`, **{table.num_rows} rows**. Produced by `curate run` "
        f"(stages and hashes in `{work / 'manifest.json'}`).",
        "",
        "## Sources and origin mix",
        "",
        _table(["origin", "rows", "share"], [[o, n, f"{n / max(table.num_rows, 1):.1%}"] for o, n in origins.most_common()]),
        "",
        _table(["source file", "rows"], [[f, n] for f, n in files.most_common()]),
        "",
        "## Stages",
        "",
        _table(["stage", "status", "seconds", "counts"],
               [[r.name, r.status if r.status != "skipped" else f"skipped: {r.summary.get('reason')}", r.seconds,
                 _fmt(r.counts)] for r in records]),
    ]
    if "ingest" in by:
        parts += ["", "## Ingest", "", _fmt_block(by["ingest"].counts)]
    for name, title in (("validate", "Validation"), ("synth_validate", "Validation of synthetic rows")):
        if name in by and by[name].status != "skipped":
            s = by[name].summary
            parts += ["", f"## {title}", "", f"Records in {s.get('records')}, valid {s.get('valid')}, quarantined "
                      f"{s.get('quarantined')} (quarantine: `{by[name].outputs.get('quarantine', {}).get('path')}`)."]
            codes = [[k, "error", v] for k, v in (s.get("errors") or {}).items()]
            codes += [[k, "warning", v] for k, v in (s.get("warnings") or {}).items()]
            if codes:
                parts += ["", _table(["code", "severity", "records"], sorted(codes, key=lambda x: -x[2]))]
            if s.get("compliance"):
                parts += ["", f"Output-format compliance: {_fmt(s['compliance'])}."]
    for name, title in (("dedupe", "Deduplication and decontamination"), ("final", "Deduplication of seed + synthetic rows")):
        if name in by and by[name].status != "skipped":
            parts += ["", f"## {title}", "", _fmt_block(by[name].counts)]
            if "clusters" in by[name].outputs:
                parts.append(f"\nClusters: `{by[name].outputs['clusters']['path']}`.")
            if "decontamination" in by[name].outputs:
                parts.append(f"Decontamination evidence per eval item: `{by[name].outputs['decontamination']['path']}`.")
    if "report" in by and by["report"].status != "skipped":
        m = by["report"].summary
        parts += ["", "## Coverage against production", "", _fmt_block(m),
                  f"\nGap rows: {by['report'].counts.get('gap_rows')}. Report: `{by['report'].outputs['html']['path']}`."]
    if "synth" in by and by["synth"].status != "skipped":
        c = by["synth"].counts
        parts += ["", "## Synthetic rows and fact flags", "",
                  f"Teacher `{by['synth'].summary.get('teacher')}`, recipe `{by['synth'].summary.get('recipe')}`. "
                  f"Requested {c.get('requested')}, succeeded {c.get('succeeded')}, failed {c.get('failed')}. "
                  f"Claims checked {c.get('claims')}, unsupported {c.get('unsupported_claims')} "
                  f"({c.get('flagged_rows')} rows flagged and kept, see the `unsupported_claims` column)."]
    if "train" in by and by["train"].status != "skipped":
        parts += ["", "## Training", "", f"Adapter: `{by['train'].outputs['adapter']['path']}`.", "",
                  _fmt_block(by["train"].counts), "", _fmt_block(by["train"].summary.get("metrics") or {})]
    if "eval" in by and by["eval"].status != "skipped":
        rows = by["eval"].summary.get("summary") or []
        if rows:
            keys = list(rows[0].keys())
            parts += ["", "## Evaluation", "", _table(keys, [[_num(r.get(k)) for k in keys] for r in rows])]
        fails = by["eval"].outputs.get("failures")
        if fails:
            parts.append(f"\nFailures, ready as seeds for `curate synth`: `{fails['path']}`.")
    path = work / "DATASET_CARD.md"
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(parts) + "\n")
    return path


def _num(v: Any) -> Any:
    return f"{v:.3f}" if isinstance(v, float) else v


def _fmt(d: dict[str, Any]) -> str:
    return ", ".join(f"{k} {json.dumps(v, default=str) if isinstance(v, (dict, list)) else v}" for k, v in d.items())


def _fmt_block(d: dict[str, Any]) -> str:
    rows = [[k, json.dumps(v, default=str) if isinstance(v, (dict, list)) else _num(v)] for k, v in d.items()]
    return _table(["", "value"], rows) if rows else "(nothing recorded)"
