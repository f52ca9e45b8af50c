"""`curate ingest`: any input files to one canonical Parquet, plus a rejects file.

Counts always balance: in = kept + rejected. Rejected records go to a rejects file (JSONL by
default, Parquet when its name says so) with file, line, row, reason and a raw snippet.
"""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa

from curate.console import progress
from curate.dataset import REJECTS_SCHEMA, SCHEMA
from curate.errors import UsageError
from curate.ingest.blocks import canonical_parts
from curate.ingest.config import IngestConfig
from curate.ingest.convert import Conversion, canonical
from curate.ingest.readers import Reject, file_problem, sniff
from curate.outcome import StageOutcome, over_rate
from curate.outputs import OutputSet, ParquetSink, write_table


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
        yield canonical(item)


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


def _empty(paths: list[Path]) -> list[str]:
    return [f"{p}: file is empty" for p in paths if sniff(p) == "empty"]


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
    read = 0
    # the output and its rejects file are one set: a stale rejects file of an earlier run goes with it
    with OutputSet(output, [rejects_path]) as outputs:
        with ParquetSink(output, SCHEMA, outputs, background=True, stitch=True) as writer, progress("ingest") as advance, \
                contextlib.ExitStack() as stack:
            checked = 0  # inputs checked for emptiness: its notice comes after those of the files before it
            # closed on failure too: its pools, and on Ray the folder of the actors' parts, go at once
            # a pool's workers also encode their rows: this process appends the bytes (curate.stitch)
            parts = contextlib.closing(canonical_parts(paths, cfg.format, cfg.origin, cfg.workers, conversions,
                                                       near=output, encode=True))
            for part in stack.enter_context(parts):
                warnings += _empty(paths[checked : part.input + 1])
                checked = max(checked, part.input + 1)
                read += part.read
                for item in part.rejects:
                    reasons[_reason_key(item.reason)] += 1
                    sink.add(item)
                    notice = file_problem(item)
                    if notice and notice not in warnings:
                        warnings.append(notice)
                if part.encoded is not None:
                    writer.write_encoded(part.encoded, part.layout)
                elif part.table is not None and part.table.num_rows:
                    writer.write_table(part.table)
                advance(part.read)
            warnings += _empty(paths[checked:])
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
    tables: list[pa.Table] = []
    rejects: list[dict] = []
    for part in canonical_parts(inputs, fmt, origin):
        rejects.extend(r.as_dict() for r in part.rejects)
        if part.table is not None:
            tables.append(part.table)
    return (pa.concat_tables(tables) if tables else SCHEMA.empty_table()), rejects
