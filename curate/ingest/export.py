"""`curate export`: a canonical Parquet out as OpenAI chat JSONL, ShareGPT JSON or Alpaca JSON."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from curate.dataset import iter_dataset
from curate.errors import UsageError
from curate.ingest import formats
from curate.ingest.readers import Reject
from curate.ingest.stage import _RejectsSink
from curate.outputs import OutputSet


@dataclass
class ExportSummary:
    input: str
    output: str
    to: str
    read: int = 0
    written: int = 0
    rejected: int = 0
    rejects_file: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def export(input: str | Path, output: str | Path, to: str = "openai", rejects: str | Path | None = None) -> ExportSummary:
    """Write a canonical Parquet out as OpenAI chat JSONL, ShareGPT JSON or Alpaca JSON."""
    if to not in formats.EXPORTERS:
        raise UsageError(f"unknown export format '{to}'; choose one of {', '.join(formats.EXPORT_FORMATS)}")
    convert = formats.EXPORTERS[to]
    output = Path(output)
    summary = ExportSummary(str(input), str(output), to)
    rejects_path = Path(rejects) if rejects else output.with_name(output.name + ".rejects.jsonl")
    sink = _RejectsSink(rejects_path)
    as_array = to != "openai" and output.suffix != ".jsonl"
    with OutputSet(output, [rejects_path]) as outputs:
        with open(outputs.tmp(output), "w", encoding="utf-8") as f:
            if as_array:
                f.write("[\n")
            for batch in iter_dataset(input):
                for row in batch.to_pylist():
                    summary.read += 1
                    try:
                        rec = convert(row)
                    except formats.RecordError as exc:
                        src = row.get("source") or {}
                        sink.add(Reject(str(input), src.get("line"), summary.read, f"cannot export as {to}: {exc}",
                                        row["id"]))
                        summary.rejected += 1
                        continue
                    text = json.dumps(rec, ensure_ascii=False)
                    if as_array:
                        f.write((",\n" if summary.written else "") + "  " + text)
                    else:
                        f.write(text + "\n")
                    summary.written += 1
            if as_array:
                f.write("\n]\n")
        summary.rejects_file = sink.write(outputs)
    return summary
