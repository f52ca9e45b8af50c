"""`curate ingest` and `curate export`: any input to the canonical Parquet, and back out.

Counts always balance: read = written + rejected. Rejected records go to a rejects file
(Parquet by default, JSONL when its name says so) with file, line, row, reason and a raw snippet.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from curate.console import progress
from curate.dataset import REJECTS_SCHEMA, SCHEMA, make_row, rows_to_table
from curate.errors import UsageError
from curate.ingest import formats
from curate.ingest.readers import Record, Reject, file_problem, iter_raw, sniff
from curate.outputs import OutputSet, ParquetSink, write_table

SNIFF_RECORDS = 200
BATCH = 5_000


@dataclass
class IngestSummary:
    inputs: list[str]
    output: str | None
    rejects_file: str | None
    read: int = 0
    written: int = 0
    rejected: int = 0
    formats: dict[str, dict[str, int]] = field(default_factory=dict)
    reasons: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def balanced(self) -> bool:
        return self.read == self.written + self.rejected

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "balanced": self.balanced}


def _reason_key(reason: str) -> str:
    """Group reasons by their kind (the text before details) for the summary table."""
    return reason.split(":")[0].split("(")[0].strip()


def iter_canonical(
    path: Path,
    fmt: str = "auto",
    origin: str | None = None,
    summary: IngestSummary | None = None,
) -> Iterator[dict | Reject]:
    """Canonical rows (dicts) or Rejects for one input file, in file order."""
    if fmt != "auto" and fmt != "mixed" and fmt not in formats.INPUT_FORMATS:
        raise UsageError(f"unknown format '{fmt}'; choose auto, mixed or one of {', '.join(formats.INPUT_FORMATS)}")
    file = str(path)
    raw = iter_raw(path)
    file_fmt = fmt
    head: list[Record | Reject] = []
    if fmt == "auto":
        # The file's format is the one most of its first records have; a record of another
        # format is rejected with a reason (mixed formats confuse training), unless fmt="mixed".
        for item in raw:
            head.append(item)
            if len(head) >= SNIFF_RECORDS:
                break
        seen = Counter(formats.detect(r.obj) for r in head if isinstance(r, Record))
        seen.pop(None, None)
        file_fmt = seen.most_common(1)[0][0] if seen else "auto"
        if len(seen) > 1 and summary is not None:
            summary.warnings.append(f"{file}: records of several formats ({dict(seen)}); treating it as {file_fmt}")
    per_format: Counter[str] = Counter()

    def items() -> Iterator[Record | Reject]:
        yield from head
        yield from raw

    for item in items():
        if isinstance(item, Reject):
            yield item
            continue
        obj = item.obj
        detected = formats.detect(obj)
        use = detected if fmt == "mixed" else file_fmt
        if use in (None, "auto") or (fmt == "auto" and detected is None):
            keys = ", ".join(sorted(obj)[:8]) or "none"
            yield Reject(file, item.line, item.row, f"record fits no known format (keys: {keys})", _raw(obj))
            continue
        if fmt == "auto" and detected != use:
            yield Reject(
                file,
                item.line,
                item.row,
                f"record is {detected} but the file is {use} "
                "(use --format mixed to accept both)",
                _raw(obj),
            )
            continue
        source = {"file": file, "line": item.line, "row": item.row}
        if use == "canonical":
            yield {**{k: obj.get(k) for k in SCHEMA.names}}
            per_format[use] += 1
            continue
        try:
            msgs, tools, rejected, meta = formats.to_messages(obj, use)
        except formats.RecordError as exc:
            yield Reject(file, item.line, item.row, f"not valid {use}: {exc}", _raw(obj))
            continue
        row_origin = origin or (meta.pop("origin") if isinstance(meta.get("origin"), str) else None) or "seed"
        per_format[use] += 1
        yield make_row(msgs, tools=tools, rejected=rejected, source=source, origin=row_origin, meta=meta)
    if summary is not None:
        summary.formats[file] = dict(per_format)


def _raw(obj: Any) -> str:
    text = json.dumps(obj, ensure_ascii=False, default=str)
    return text if len(text) <= 300 else text[:300] + "..."


class _RejectsSink:
    """Rejects to Parquet or JSONL, as part of the command's output set; written only if something is rejected."""

    def __init__(self, path: Path | None):
        self.path = path
        self.rows: list[dict] = []

    def add(self, r: Reject) -> None:
        self.rows.append(r.as_dict())

    def write(self, outputs: OutputSet) -> str | None:
        if self.path is None or not self.rows:
            return None
        if self.path.suffix in (".jsonl", ".json"):
            with open(outputs.tmp(self.path), "w", encoding="utf-8") as f:
                f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in self.rows)
        else:
            write_table(pa.Table.from_pylist(self.rows, schema=REJECTS_SCHEMA), self.path, outputs)
        return str(self.path)


def default_rejects_path(output: Path) -> Path:
    return output.with_name(output.name.removesuffix(".parquet") + ".rejects.jsonl")


def ingest(
    inputs: Iterable[str | Path],
    output: str | Path,
    fmt: str = "auto",
    origin: str | None = None,
    rejects: str | Path | None = None,
) -> IngestSummary:
    """Read any supported inputs and write one canonical Parquet (atomically) plus a rejects file."""
    paths = [Path(p) for p in inputs]
    if not paths:
        raise UsageError("give at least one input file")
    for p in paths:
        sniff(p)  # raises a UsageError for a missing file before any work
    output = Path(output)
    rejects_path = Path(rejects) if rejects else default_rejects_path(output)
    summary = IngestSummary([str(p) for p in paths], str(output), None)
    sink = _RejectsSink(rejects_path)
    reasons: Counter[str] = Counter()
    # the output and its rejects file are one set: a stale rejects file of an earlier run goes with it
    with OutputSet(output, [rejects_path]) as outputs:
        with ParquetSink(output, SCHEMA, outputs) as writer, progress("ingest") as advance:
            batch: list[dict] = []
            for path in paths:
                if sniff(path) == "empty":
                    summary.warnings.append(f"{path}: file is empty")
                for item in iter_canonical(path, fmt, origin, summary):
                    summary.read += 1
                    if isinstance(item, Reject):
                        summary.rejected += 1
                        reasons[_reason_key(item.reason)] += 1
                        sink.add(item)
                        notice = file_problem(item)
                        if notice and notice not in summary.warnings:
                            summary.warnings.append(notice)
                    else:
                        batch.append(item)
                        if len(batch) >= BATCH:
                            writer.write_rows(batch)
                            batch = []
                    advance()
            writer.write_rows(batch)
            summary.written = writer.rows
        summary.rejects_file = sink.write(outputs)
    summary.reasons = dict(reasons)
    return summary


def ingest_table(inputs: Iterable[str | Path], fmt: str = "auto", origin: str | None = None) -> tuple[pa.Table, list[dict]]:
    """In-memory ingest for small inputs: (canonical table, rejects as dicts)."""
    rows: list[dict] = []
    rejects: list[dict] = []
    for path in inputs:
        for item in iter_canonical(Path(path), fmt, origin):
            (rejects.append(item.as_dict()) if isinstance(item, Reject) else rows.append(item))
    return rows_to_table(rows), rejects
