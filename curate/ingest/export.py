"""`curate export`: a canonical Parquet out as OpenAI chat JSONL, ShareGPT JSON or Alpaca JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from curate.dataset import iter_dataset
from curate.ingest import formats
from curate.ingest.config import ExportConfig
from curate.ingest.readers import Reject
from curate.ingest.stage import _RejectsSink
from curate.outcome import StageOutcome
from curate.outputs import OutputSet


def export(input: str | Path, output: str | Path, config: ExportConfig | dict | None = None, *,
           rejects: str | Path | None = None, **overrides: Any) -> StageOutcome:
    """Write a canonical Parquet out as OpenAI chat JSONL, ShareGPT JSON or Alpaca JSON (with its rejects, one set)."""
    cfg = ExportConfig.build(config, **overrides)
    to = cfg.to
    convert = formats.EXPORTERS[to]
    output = Path(output)
    read = written = 0
    rejects_path = Path(rejects) if rejects else output.with_name(output.name + ".rejects.jsonl")
    sink = _RejectsSink(rejects_path)
    as_array = to not in ("openai", "hermes") and output.suffix != ".jsonl"
    with OutputSet(output, [rejects_path]) as outputs:
        with open(outputs.tmp(output), "w", encoding="utf-8") as f:
            if as_array:
                f.write("[\n")
            for batch in iter_dataset(input):
                for row in batch.to_pylist():
                    read += 1
                    try:
                        rec = convert(row)
                    except formats.RecordError as exc:
                        src = row.get("source") or {}
                        sink.add(Reject(str(input), src.get("line"), read, f"cannot export as {to}: {exc}", row["id"]))
                        continue
                    text = json.dumps(rec, ensure_ascii=False)
                    if as_array:
                        f.write((",\n" if written else "") + "  " + text)
                    else:
                        f.write(text + "\n")
                    written += 1
            if as_array:
                f.write("\n]\n")
        rejects_file = sink.write(outputs)
    outs = {"data": str(output), **({"rejects": rejects_file} if rejects_file else {})}
    return StageOutcome("export", {"in": read, "kept": written, "rejected": len(sink.rows)}, outs,
                        {"config": cfg.to_dict(), "input": str(input)})
