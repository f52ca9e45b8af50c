"""The canonical dataset: one Arrow schema every stage reads and writes, stable ids, atomic writes.

Columns (stages add their own, prefixed with the stage name, and never rewrite these):
    id        string   stable content hash of messages + tools + rejected
    messages  list<struct<role, content, name, tool_calls, tool_call_id>>
    tools     string   JSON list of tool definitions, or null
    rejected  list<message>  the rejected reply of a preference pair, or null
    source    struct<file, line, row>  where the record came from (line for text files, row otherwise)
    origin    string   production | seed | synthetic | eval | ...
    meta      string   JSON object with whatever else the input carried
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from curate.errors import InputError, UsageError

TOOL_CALL_TYPE = pa.struct(
    [
        ("id", pa.string()),
        ("type", pa.string()),
        ("function", pa.struct([("name", pa.string()), ("arguments", pa.string())])),
    ]
)
MESSAGE_TYPE = pa.struct(
    [
        ("role", pa.string()),
        ("content", pa.string()),
        ("name", pa.string()),
        ("tool_calls", pa.list_(TOOL_CALL_TYPE)),
        ("tool_call_id", pa.string()),
    ]
)
SOURCE_TYPE = pa.struct([("file", pa.string()), ("line", pa.int64()), ("row", pa.int64())])

SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("messages", pa.list_(MESSAGE_TYPE), nullable=False),
        pa.field("tools", pa.string()),
        pa.field("rejected", pa.list_(MESSAGE_TYPE)),
        pa.field("source", SOURCE_TYPE),
        pa.field("origin", pa.string()),
        pa.field("meta", pa.string()),
    ]
)
CANONICAL_COLUMNS = tuple(SCHEMA.names)
ROLES = ("system", "user", "assistant", "tool")

REJECTS_SCHEMA = pa.schema(
    [
        ("file", pa.string()),
        ("line", pa.int64()),
        ("row", pa.int64()),
        ("reason", pa.string()),
        ("raw", pa.string()),
    ]
)


def message(
    role: str,
    content: str | None,
    name: str | None = None,
    tool_calls: list[dict] | None = None,
    tool_call_id: str | None = None,
) -> dict[str, Any]:
    """A message dict with every canonical key present, so hashing and Arrow conversion agree."""
    return {
        "role": role,
        "content": content,
        "name": name,
        "tool_calls": tool_calls or None,
        "tool_call_id": tool_call_id,
    }


def make_id(messages: list[dict], tools: str | None = None, rejected: list[dict] | None = None) -> str:
    """Stable content hash: equal conversations get equal ids wherever they came from."""
    payload = json.dumps(
        {"m": [_strip_none(m) for m in messages], "t": tools, "r": [_strip_none(m) for m in rejected or []]},
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]


def _strip_none(m: dict) -> dict:
    return {k: v for k, v in m.items() if v is not None}


def make_row(
    messages: list[dict],
    *,
    tools: str | None = None,
    rejected: list[dict] | None = None,
    source: dict | None = None,
    origin: str | None = None,
    meta: dict | str | None = None,
) -> dict[str, Any]:
    """One canonical row as a Python dict (the form `rows_to_table` takes)."""
    messages = [message(**m) for m in messages]
    rejected = [message(**m) for m in rejected] if rejected else None
    if isinstance(meta, dict):
        meta = json.dumps(meta, ensure_ascii=False, sort_keys=True) if meta else None
    return {
        "id": make_id(messages, tools, rejected),
        "messages": messages,
        "tools": tools,
        "rejected": rejected,
        "source": {"file": None, "line": None, "row": None, **(source or {})},
        "origin": origin,
        "meta": meta,
    }


def rows_to_table(rows: list[dict], schema: pa.Schema = SCHEMA) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=schema)


def empty_table(schema: pa.Schema = SCHEMA) -> pa.Table:
    return schema.empty_table()


def is_canonical(schema: pa.Schema) -> bool:
    return all(name in schema.names for name in ("id", "messages", "source", "origin", "meta"))


def check_canonical(table_or_schema: pa.Table | pa.Schema, path: str | Path) -> None:
    schema = table_or_schema.schema if isinstance(table_or_schema, pa.Table) else table_or_schema
    missing = [c for c in CANONICAL_COLUMNS if c not in schema.names]
    if missing:
        raise InputError(
            f"not a canonical curate dataset (missing columns {', '.join(missing)}); "
            "run `curate ingest` on it first",
            file=str(path),
        )


def read_dataset(path: str | Path, columns: list[str] | None = None) -> pa.Table:
    """Read a canonical Parquet dataset written by any curate stage."""
    path = Path(path)
    if not path.exists():
        raise UsageError(f"no such file: {path}")
    try:
        schema = pq.read_schema(path)
    except pa.ArrowInvalid as exc:
        raise InputError(f"not a readable Parquet file ({exc})", file=str(path)) from exc
    check_canonical(schema, path)
    return pq.read_table(path, columns=columns)


def iter_dataset(path: str | Path, batch_size: int = 10_000, columns: list[str] | None = None) -> Iterator[pa.RecordBatch]:
    """Stream a canonical Parquet dataset in record batches."""
    path = Path(path)
    if not path.exists():
        raise UsageError(f"no such file: {path}")
    pf = pq.ParquetFile(path)
    check_canonical(pf.schema_arrow, path)
    yield from pf.iter_batches(batch_size=batch_size, columns=columns)


def load_any(path: str | Path, fmt: str = "auto", origin: str | None = None) -> pa.Table:
    """A canonical table from a canonical Parquet or from any input `curate ingest` reads.

    Used by stages that take raw files directly (e.g. an eval set for decontamination);
    records that cannot be read raise, naming file and line, rather than vanish.
    """
    path = Path(path)
    if path.suffix == ".parquet" and path.exists() and is_canonical(pq.read_schema(path)):
        return pq.read_table(path)
    from curate.ingest import ingest_table

    table, rejects = ingest_table([path], fmt=fmt, origin=origin)
    if rejects:
        first = rejects[0]
        raise InputError(
            f"{len(rejects)} unreadable record(s); first: {first['reason']} "
            "(run `curate ingest` to write them to a rejects file)",
            file=first["file"],
            line=first["line"],
        )
    return table


def messages_of(table: pa.Table) -> list[list[dict]]:
    """The messages column as Python lists of dicts."""
    return table.column("messages").to_pylist()


def content_hash_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """sha256 of a file's bytes, for manifests and run cards."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it over `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_table(table: pa.Table, path: str | Path) -> Path:
    """Write a table to Parquet atomically (a killed run never leaves a complete-looking file)."""
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")
    return Path(path)


class AtomicParquetWriter:
    """Streaming Parquet writer that appears under its final name only when closed cleanly."""

    def __init__(self, path: str | Path, schema: pa.Schema = SCHEMA):
        self.path = Path(path)
        self.schema = schema
        self.rows = 0
        self._ctx = atomic_path(self.path)
        self._tmp = self._ctx.__enter__()
        self._writer = pq.ParquetWriter(self._tmp, schema, compression="zstd")

    def write_rows(self, rows: list[dict]) -> None:
        if rows:
            self.write_table(pa.Table.from_pylist(rows, schema=self.schema))

    def write_table(self, table: pa.Table) -> None:
        self._writer.write_table(table)
        self.rows += table.num_rows

    def close(self) -> None:
        self._writer.close()
        self._ctx.__exit__(None, None, None)

    def __enter__(self) -> AtomicParquetWriter:
        return self

    def __exit__(self, et, exc, tb) -> None:
        if exc is None:
            self.close()
        else:
            self._writer.close()
            self._ctx.__exit__(et, exc, tb)  # removes the temporary file; the exception propagates
