"""The one input path of every stage: `open_input(source)` streams record batches of the canonical schema.

A source is a canonical Parquet (any curate stage wrote it; its stage columns come along), an
Arrow table, or any raw file `curate ingest` reads (converted on the fly by curate.ingest.convert,
the same conversion ingest and validate use). A raw record that cannot become a canonical row is an
error for a stage that is not ingest or validate: the first one is raised, naming file and line,
once the input has been read (so the count of unreadable records is known).

    src = open_input("train.jsonl")
    for batch in src.batches(5_000, columns=["id", "messages"]): ...
    table = src.read()
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from curate.dataset import SCHEMA, canonical_parquet, open_parquet, parquet_batches
from curate.errors import InputError, UsageError

Source = str | Path | pa.Table


class Input:
    """A stage's input; iterate `batches()` as often as needed (a raw file is converted each time)."""

    def __init__(self, source: Source, format: str = "auto", origin: str | None = None, **parquet_options):
        self.format, self.origin = format, origin
        self.path: Path | None = None
        self.table: pa.Table | None = None
        self.parquet: pq.ParquetFile | None = None
        if isinstance(source, pa.Table):
            self.table = source  # a table is taken as it is: a caller may hold only the columns a stage reads
            return
        self.path = Path(source)
        if not self.path.exists():
            raise UsageError(f"no such file: {self.path}")
        if canonical_parquet(self.path):
            self.parquet = open_parquet(self.path, **parquet_options)

    @property
    def name(self) -> str:
        return str(self.path) if self.path is not None else "(table)"

    @property
    def raw(self) -> bool:
        """Whether the source is a raw file, converted record by record."""
        return self.table is None and self.parquet is None

    @property
    def schema(self) -> pa.Schema:
        if self.table is not None:
            return self.table.schema
        return self.parquet.schema_arrow if self.parquet is not None else SCHEMA

    @property
    def rows(self) -> int | None:
        """The number of rows, where known without reading (None for a raw file)."""
        if self.table is not None:
            return self.table.num_rows
        return self.parquet.metadata.num_rows if self.parquet is not None else None

    def batches(self, batch_size: int = 5_000, columns: Sequence[str] | None = None,
                workers: int | None = 1) -> Iterator[pa.RecordBatch]:
        """Record batches in input order; `columns` selects columns (or Parquet leaf paths of a Parquet file).
        `workers`: processes that convert a raw JSONL file's blocks (None: the usable cores); the rows are the
        same for any number."""
        cols = list(columns) if columns is not None else None
        if self.table is not None:
            t = self.table.select(cols) if cols else self.table
            yield from t.to_batches(max_chunksize=batch_size)
        elif self.parquet is not None:
            yield from parquet_batches(self.parquet, self.path, batch_size=batch_size, columns=cols)
        else:
            yield from self._converted(batch_size, cols, workers)

    def read(self, columns: Sequence[str] | None = None) -> pa.Table:
        """The whole input as one table."""
        if self.table is not None:
            return self.table.select(list(columns)) if columns else self.table
        if self.parquet is not None:
            from curate.dataset import read_parquet

            return read_parquet(self.parquet, self.path, list(columns) if columns else None)
        batches = list(self.batches(columns=columns))
        schema = SCHEMA if not columns else pa.schema([SCHEMA.field(c) for c in columns])
        return pa.Table.from_batches(batches, schema=schema)

    def _converted(self, batch_size: int, columns: list[str] | None, workers: int | None) -> Iterator[pa.RecordBatch]:
        from curate.ingest.blocks import canonical_batches
        from curate.ingest.readers import Reject

        rejects: list[Reject] = []
        yield from canonical_batches(self.path, self.format, self.origin, batch_size, columns, rejects, workers)
        if rejects:
            raise _unreadable(rejects)


def _unreadable(rejects: list) -> InputError:
    first = rejects[0]
    if len(rejects) == 1 and first.row is None:  # the file as a whole (a damaged container)
        return InputError(first.reason, file=first.file, line=first.line)
    return InputError(f"{len(rejects)} unreadable record(s); first: {first.reason} "
                      "(run `curate ingest` to write them to a rejects file)", file=first.file, line=first.line)


def open_input(source: Source, format: str = "auto", origin: str | None = None, **parquet_options) -> Input:
    """A stage's input from a canonical Parquet, a canonical table or any raw file (see the module docstring)."""
    return Input(source, format, origin, **parquet_options)


def load_any(path: Source, fmt: str = "auto", origin: str | None = None) -> pa.Table:
    """The whole of an input as a canonical table (open_input(...).read())."""
    return open_input(path, fmt, origin).read()
