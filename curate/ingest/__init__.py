"""`curate ingest` and `curate export`: any input format to the canonical Parquet, and back out.

    containers.py  the bytes of a file: gzip that keeps what precedes a cut, text encodings
    jsonstream.py  JSON arrays and streams, element by element, resynchronising after damage
    readers.py     raw records (or rejects) out of JSONL, JSON, CSV and Parquet files
    formats.py     detecting input formats and converting records to canonical messages
    traces.py      production traces: OpenAI Batch files, stored completions, Langfuse, LangSmith
    stage.py       ingest(): files -> one canonical Parquet + rejects
    blocks.py      files -> canonical rows in parts, in order: JSONL in blocks of lines on worker processes
    fast.py        the fast path: JSONL lines of the common shapes -> Arrow columns and ids (msgspec)
    convert.py     raw records -> canonical rows, shared with validate and every stage's input
    config.py      IngestConfig, ExportConfig
    export.py      export(): canonical Parquet -> OpenAI / ShareGPT / Alpaca
"""

from __future__ import annotations

from curate.lazy import lazy

_WHERE = {
    "ExportConfig": "curate.ingest.config",
    "IngestConfig": "curate.ingest.config",
    "export": "curate.ingest.export",
    "ingest": "curate.ingest.stage",
    "ingest_table": "curate.ingest.stage",
    "iter_canonical": "curate.ingest.stage",
}
__getattr__, __dir__ = lazy(__name__, _WHERE)
__all__ = sorted(_WHERE)
