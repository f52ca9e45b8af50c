"""`curate ingest`: any input files to one canonical Parquet, plus a rejects file.

Counts always balance: in = kept + rejected. Rejected records go to a rejects file (JSONL by
default, Parquet when its name says so) with file, line, row, reason and a raw snippet.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa

from curate.console import progress
from curate.dataset import REJECTS_SCHEMA, SCHEMA, rows_to_table
from curate.errors import UsageError
from curate.ingest.config import IngestConfig
from curate.ingest.convert import Conversion, raw_text
from curate.ingest.readers import Reject, file_problem, sniff
from curate.outcome import StageOutcome, over_rate
from curate.outputs import OutputSet, ParquetSink, write_table

BATCH = 5_000


def _reason_key(reason: str) -> str:
    """Group reasons by their kind (the text before details) for the summary table."""
    return reason.split(":")[0].split("(")[0].strip()


def iter_canonical(path: Path, fmt: str = "auto", origin: str | None = None,
                   conversion: list[Conversion] | None = None) -> Iterator[dict | Reject]:
    """Canonical rows (dicts) or Rejects for one input file, in file order (the file's Conversion is
    appended to `conversion` when given, for its format counts and warnings)."""
    conv = Conversion(Path(path), fmt, origin)
    if conversion is not None:
        conversion.append(conv)
    for item in conv:
        if isinstance(item, Reject):
            yield item
        elif item.row is not None:
            yield item.row
        else:
            r = item.record
            hint = " (use --format mixed to accept both)" if item.code == "format_mismatch" else ""
            yield Reject(r.file, r.line, r.row, item.problem + hint, raw_text(r.obj))


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


def ingest(inputs: Iterable[str | Path], output: str | Path, config: IngestConfig | dict | None = None, *,
           rejects: str | Path | None = None, **overrides: Any) -> StageOutcome:
    """Read any supported inputs and write one canonical Parquet plus a rejects file, as one output set."""
    cfg = IngestConfig.build(config, **overrides)
    paths = [Path(p) for p in inputs]
    if not paths:
        raise UsageError("give at least one input file")
    for p in paths:
        sniff(p)  # raises a UsageError for a missing file before any work
    output = Path(output)
    rejects_path = Path(rejects) if rejects else default_rejects_path(output)
    sink = _RejectsSink(rejects_path)
    reasons: Counter[str] = Counter()
    warnings: list[str] = []
    conversions: list[Conversion] = []
    read = written = 0
    # the output and its rejects file are one set: a stale rejects file of an earlier run goes with it
    with OutputSet(output, [rejects_path]) as outputs:
        with ParquetSink(output, SCHEMA, outputs) as writer, progress("ingest") as advance:
            batch: list[dict] = []
            for path in paths:
                if sniff(path) == "empty":
                    warnings.append(f"{path}: file is empty")
                for item in iter_canonical(path, cfg.format, cfg.origin, conversions):
                    read += 1
                    if isinstance(item, Reject):
                        reasons[_reason_key(item.reason)] += 1
                        sink.add(item)
                        notice = file_problem(item)
                        if notice and notice not in warnings:
                            warnings.append(notice)
                    else:
                        batch.append(item)
                        if len(batch) >= BATCH:
                            writer.write_rows(batch)
                            batch = []
                    advance()
            writer.write_rows(batch)
            written = writer.rows
        rejects_file = sink.write(outputs)
    rejected = len(sink.rows)
    files = {str(c.path): dict(c.per_format) for c in conversions}
    warnings = [w for c in conversions for w in c.warnings] + warnings
    failure = "no records read" if read == 0 else over_rate(rejected, read, cfg.max_reject_rate, "records rejected")
    outs = {"data": str(output), **({"rejects": rejects_file} if rejects_file else {})}
    return StageOutcome("ingest", {"in": read, "kept": written, "rejected": rejected}, outs,
                        {"config": cfg.to_dict(), "inputs": [str(p) for p in paths], "formats": files,
                         "reasons": dict(reasons), "warnings": warnings}, failure=failure)


def ingest_table(inputs: Iterable[str | Path], fmt: str = "auto", origin: str | None = None) -> tuple[pa.Table, list[dict]]:
    """In-memory ingest for small inputs: (canonical table, rejects as dicts)."""
    rows: list[dict] = []
    rejects: list[dict] = []
    for path in inputs:
        for item in iter_canonical(Path(path), fmt, origin):
            (rejects.append(item.as_dict()) if isinstance(item, Reject) else rows.append(item))
    return rows_to_table(rows), rejects
