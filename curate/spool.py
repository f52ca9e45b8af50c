"""A raw input converted once into a temporary canonical Parquet, for a stage that reads its input more than once.

`open_input(raw)` converts a raw file record by record on every pass; a stage that makes several passes
(dedupe: keys, then writing; report: features, then the gap rows) or needs the row count first would convert it
several times, or hold the whole converted table. `spooled(src)` streams the conversion, batch by batch, into a
temporary Parquet file and yields that file as the input: memory stays bounded by a batch, the conversion runs
once, and the rows are the ones `curate ingest` writes. The file has no name (an unlinked temporary file), so
nothing is left behind when the block ends, fails, or the process is killed.

    with spooled(open_input("raw.jsonl"), near=output) as src:
        src.rows, src.batches(...)     # a canonical Parquet input
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import pyarrow as pa
import pyarrow.parquet as pq

from curate.dataset import SCHEMA
from curate.inputs import Input

# lz4, not zstd: the file lives for one command, and lz4 writes and decodes it faster, at a size near zstd's
SPOOL_OPTIONS: dict[str, Any] = {"compression": "lz4"}
GROUP_BYTES = 64 << 20  # converted batches gathered into row groups of about this many Arrow bytes


class Spooled(Input):
    """A raw input's rows in a temporary canonical Parquet file; `path`, `format` and `origin` stay the raw file's."""

    def __init__(self, raw: Input, file: IO[bytes], **parquet_options: Any):
        self.format, self.origin, self.path, self.table = raw.format, raw.origin, raw.path, None
        self.parquet = pq.ParquetFile(file, **parquet_options)

    @property
    def raw(self) -> bool:
        return False


@contextmanager
def spooled(src: Input, near: str | Path | None = None, batch_size: int = 5_000, workers: int | None = 1,
            **parquet_options: Any) -> Iterator[Input]:
    """`src` itself when it is not a raw file; else its rows in a temporary canonical Parquet, opened with
    `parquet_options`, converted on `workers` processes (None: the usable cores). The file goes in the folder of
    `near` (a stage's output), or in the system's temporary folder: where there is room for the converted rows."""
    if not src.raw:
        yield src
        return
    folder = Path(near).parent if near is not None else None
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile(prefix=".curate-spool-", dir=folder) as file:
        _write(src, file, batch_size, workers)
        file.seek(0)
        yield Spooled(src, file, **parquet_options)


def _write(src: Input, file: IO[bytes], batch_size: int, workers: int | None) -> None:
    parts: list[pa.RecordBatch] = []
    nbytes = 0
    with pq.ParquetWriter(file, SCHEMA, **SPOOL_OPTIONS) as writer:
        for batch in src.batches(batch_size, workers=workers):
            parts.append(batch)
            nbytes += batch.nbytes
            if nbytes >= GROUP_BYTES:
                writer.write_table(pa.Table.from_batches(parts, SCHEMA))
                parts, nbytes = [], 0
        if parts:
            writer.write_table(pa.Table.from_batches(parts, SCHEMA))
