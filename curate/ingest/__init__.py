"""`curate ingest` and `curate export`: any input format to the canonical Parquet, and back out.

    containers.py  the bytes of a file: gzip that keeps what precedes a cut, text encodings
    jsonstream.py  JSON arrays and streams, element by element, resynchronising after damage
    readers.py     raw records (or rejects) out of JSONL, JSON, CSV and Parquet files
    formats.py     detecting input formats and converting records to canonical messages
    stage.py       ingest(): files -> one canonical Parquet + rejects
    export.py      export(): canonical Parquet -> OpenAI / ShareGPT / Alpaca
"""

from __future__ import annotations

from curate.ingest.export import ExportSummary, export
from curate.ingest.stage import IngestSummary, ingest, ingest_table, iter_canonical

__all__ = ["ExportSummary", "IngestSummary", "export", "ingest", "ingest_table", "iter_canonical"]
