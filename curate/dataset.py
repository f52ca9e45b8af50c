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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from curate.errors import InputError, UsageError
from curate.outputs import atomic_path as atomic_path  # re-exported: the writers live in curate.outputs
from curate.outputs import write_table as write_table

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


def open_parquet(path: str | Path, **options: Any) -> pq.ParquetFile:
    """Open a Parquet file with page checksums verified; damage is one InputError naming the file."""
    path = Path(path)
    if not path.exists():
        raise UsageError(f"no such file: {path}")
    try:
        return pq.ParquetFile(path, page_checksum_verification=True, **options)
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"not a readable Parquet file: {parquet_problem(exc)}", file=str(path)) from exc


def parquet_batches(pf: pq.ParquetFile, path: str | Path, **options: Any) -> Iterator[pa.RecordBatch]:
    """pf.iter_batches, with a damaged row group reported as one InputError naming the file."""
    try:
        yield from pf.iter_batches(**options)
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"part of the Parquet file cannot be decoded: {parquet_problem(exc)}", file=str(path)) from exc


def canonical_parquet(path: str | Path) -> bool:
    """Whether `path` is a readable Parquet file with the canonical columns.

    A damaged one is not: it goes the way of raw files, whose reader rejects it with the reason.
    """
    path = Path(path)
    if path.suffix != ".parquet" or not path.exists():
        return False
    try:
        return is_canonical(open_parquet(path).schema_arrow)
    except InputError:
        return False


def read_dataset(path: str | Path, columns: list[str] | None = None) -> pa.Table:
    """Read a canonical Parquet dataset written by any curate stage."""
    pf = open_parquet(path)
    check_canonical(pf.schema_arrow, path)
    return read_parquet(pf, path, columns)


def read_parquet(pf: pq.ParquetFile, path: str | Path, columns: list[str] | None = None) -> pa.Table:
    """The whole of an opened Parquet file, with damage reported as one InputError naming the file."""
    try:
        return pf.read(columns=columns)
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"part of the Parquet file cannot be decoded: {parquet_problem(exc)}", file=str(path)) from exc


def iter_dataset(path: str | Path, batch_size: int = 10_000, columns: list[str] | None = None) -> Iterator[pa.RecordBatch]:
    """Stream a canonical Parquet dataset in record batches."""
    pf = open_parquet(path)
    check_canonical(pf.schema_arrow, path)
    yield from parquet_batches(pf, path, batch_size=batch_size, columns=columns)


def content_hash_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """sha256 of a file's bytes, for manifests and run cards."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def parquet_problem(exc: BaseException) -> str:
    """pyarrow's message for a damaged Parquet file, with a plain-words hint in front."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    text = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)
    low = text.lower()
    if "magic bytes" in low or "footer" in low or "file size" in low:
        return f"the file is cut or not Parquet ({text})"
    if "checksum" in low or "crc" in low:
        return f"a page's checksum does not match: its bytes changed after it was written ({text})"
    if "thrift" in low or "deserialize" in low:
        return f"its metadata is corrupt ({text})"
    return text
