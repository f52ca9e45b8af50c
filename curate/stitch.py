"""One Parquet file from whole Parquet files encoded elsewhere (a pool's workers), in order, without re-encoding.

Arrow's Parquet writer encodes and compresses one row group after another on one thread, so with every other
step of a stage spread over workers, the parent's writing is what is left serial. Here each worker encodes
its part into a Parquet file of its own; the parent appends the parts' row groups (their bytes, as they are)
to the output and writes one footer that lists them all, their page offsets moved by where they now start.
A file stitched from parts is byte for byte the file one `pq.ParquetWriter` makes from the same tables
written one after another (tests check it): the pages are the same bytes, and the footer differs only in
the offsets and row counts a single writer would have written.

The footer is Thrift's compact protocol. It is rewritten here, copying every field byte for byte except the
few that hold offsets, ordinals and the row count, so fields this module does not know (newer statistics,
say) pass through untouched: fastparquet's Thrift reader, the one library that parses these footers in
Python, drops fields newer than its schema (a footer read and written by it lost 400 of 6,483 bytes).
"""

from __future__ import annotations

import os
import tempfile
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.ipc
import pyarrow.parquet as pq

MAGIC = b"PAR1"

# compact protocol types
_TRUE, _FALSE, _BYTE, _I16, _I32, _I64, _DOUBLE, _BINARY, _LIST, _SET, _MAP, _STRUCT = range(1, 13)

# field ids of parquet.thrift that hold a byte offset into the file (every one is an i64)
_ROW_GROUP_OFFSETS = {5}  # RowGroup.file_offset
_ROW_GROUP_ORDINAL = 7  # RowGroup.ordinal (i16)
_CHUNK_OFFSETS = {2, 4, 6}  # ColumnChunk.file_offset, offset_index_offset, column_index_offset
_META_OFFSETS = {9, 10, 11, 14}  # ColumnMetaData: data, index and dictionary page, bloom filter


class FooterError(ValueError):
    """A part is not a Parquet file this module can read (a bug, not a user's input: the parts are ours)."""


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, pos
        shift += 7


def _put_varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _unzig(n: int) -> int:
    return (n >> 1) ^ -(n & 1)


def _zig(n: int) -> int:
    return (n << 1) ^ (n >> 63)


def _skip(buf: bytes, pos: int, kind: int, in_list: bool = False) -> int:
    """The position after a value of compact type `kind` at `pos` (a bool in a list is a byte; in a struct, none)."""
    if kind in (_TRUE, _FALSE):
        return pos + 1 if in_list else pos
    if kind == _BYTE:
        return pos + 1
    if kind in (_I16, _I32, _I64):
        return _varint(buf, pos)[1]
    if kind == _DOUBLE:
        return pos + 8
    if kind == _BINARY:
        size, pos = _varint(buf, pos)
        return pos + size
    if kind in (_LIST, _SET):
        size, elem, pos = _list_header(buf, pos)
        for _ in range(size):
            pos = _skip(buf, pos, elem, in_list=True)
        return pos
    if kind == _MAP:
        size, pos = _varint(buf, pos)
        if size:
            kv = buf[pos]
            pos += 1
            for _ in range(size):
                pos = _skip(buf, pos, kv >> 4, in_list=True)
                pos = _skip(buf, pos, kv & 0x0F, in_list=True)
        return pos
    if kind == _STRUCT:
        end = pos
        for *_, end in _fields(buf, pos):
            pass
        return end + 1  # the stop byte
    raise FooterError(f"unknown Thrift compact type {kind} at byte {pos}")


def _list_header(buf: bytes, pos: int) -> tuple[int, int, int]:
    head = buf[pos]
    pos += 1
    size = head >> 4
    if size == 15:
        size, pos = _varint(buf, pos)
    return size, head & 0x0F, pos


def _fields(buf: bytes, pos: int) -> Iterator[tuple[int, int, int, int, int]]:
    """A struct's fields from `pos`: (field id, compact type, where its header starts, where its value starts,
    where it ends); the last one's end is the struct's stop byte."""
    fid = 0
    while True:
        start = pos
        head = buf[pos]
        pos += 1
        if head == 0:
            return
        delta, kind = head >> 4, head & 0x0F
        if delta:
            fid += delta
        else:
            raw, pos = _varint(buf, pos)
            fid = _unzig(raw)
        value = pos
        pos = _skip(buf, value, kind)
        yield fid, kind, start, value, pos


Pieces = list  # bytes kept as they are, ints: byte offsets into the part, _ORDINAL: the row group's ordinal
_ORDINAL = None


def _struct(buf: bytes, pos: int, edit: Callable[[int, int, int], Pieces | None]) -> tuple[Pieces, int]:
    """A struct as pieces, with some field values replaced (`edit` gives the new value's pieces, or None to keep
    its bytes), and the position after it in `buf`."""
    out: Pieces = []
    kept = pos  # bytes from here on are copied until a replaced value
    for fid, kind, _start, value, end in _fields(buf, pos):
        new = edit(fid, kind, value)
        if new is not None:
            out += [buf[kept:value], *new]
            kept = end
        pos = end
    out.append(buf[kept : pos + 1])  # with the stop byte
    return out, pos + 1


def _offset(buf: bytes, value: int) -> Pieces | None:
    """An offset to move; 0 is none (the magic bytes are there), which stays 0 as a single writer leaves it: a
    deprecated ColumnChunk.file_offset, an empty row group's page offsets."""
    offset = _unzig(_varint(buf, value)[0])
    return [offset] if offset else None


def _structs(buf: bytes, value: int, each: Callable[[bytes, int], tuple[Pieces, int]]) -> list[Pieces]:
    size, elem, pos = _list_header(buf, value)
    if size and elem != _STRUCT:
        raise FooterError(f"a list of compact type {elem} where structs were expected")
    out = []
    for _ in range(size):
        got, pos = each(buf, pos)
        out.append(got)
    return out


def _list_head(n: int) -> bytes:
    return bytes([n << 4 | _STRUCT]) if n < 15 else bytes([0xF0 | _STRUCT]) + _put_varint(n)


def _meta(buf: bytes, pos: int) -> tuple[Pieces, int]:
    return _struct(buf, pos, lambda fid, kind, value: _offset(buf, value)
                   if fid in _META_OFFSETS and kind == _I64 else None)


def _chunk(buf: bytes, pos: int) -> tuple[Pieces, int]:
    def edit(fid: int, kind: int, value: int) -> Pieces | None:
        if fid == 3 and kind == _STRUCT:
            return _meta(buf, value)[0]
        if kind == _I64 and fid in _CHUNK_OFFSETS:
            return _offset(buf, value)
        return None

    return _struct(buf, pos, edit)


def _row_group(buf: bytes, pos: int) -> tuple[Pieces, int]:
    def edit(fid: int, kind: int, value: int) -> Pieces | None:
        if fid == 1 and kind == _LIST:
            chunks = _structs(buf, value, _chunk)
            return [_list_head(len(chunks)), *(p for c in chunks for p in c)]
        if fid in _ROW_GROUP_OFFSETS and kind == _I64:
            return _offset(buf, value)
        if fid == _ROW_GROUP_ORDINAL and kind == _I16:
            return [_ORDINAL]
        return None

    return _struct(buf, pos, edit)


def _render(pieces: Pieces, by: int, ordinal: int) -> bytes:
    return b"".join(p if isinstance(p, bytes) else _put_varint(_zig(ordinal if p is None else p + by))
                    for p in pieces)


@dataclass
class Layout:
    """What the parent needs of one encoded part, found where it was encoded: where its row groups' bytes end,
    its rows, its row groups' footer entries as pieces, and its footer (the first part's is the file's)."""

    end: int
    rows: int
    groups: list[Pieces]
    footer: bytes


def layout(data: bytes | memoryview) -> Layout:
    """The Layout of a whole Parquet file."""
    if bytes(data[:4]) != MAGIC or bytes(data[-4:]) != MAGIC:
        raise FooterError("not a Parquet file (no PAR1 at both ends)")
    size = int.from_bytes(data[-8:-4], "little")
    end = len(data) - 8 - size
    meta = bytes(data[end:-8])
    rows, groups = 0, None
    for fid, kind, _start, value, _end in _fields(meta, 0):
        if fid == 3 and kind == _I64:
            rows = _unzig(_varint(meta, value)[0])
        elif fid == 4 and kind == _LIST:
            groups = _structs(meta, value, _row_group)
    if groups is None:
        raise FooterError("a footer without row groups")
    return Layout(end, rows, groups, meta)


def encode(table: pa.Table, path: str | Path) -> Layout:
    """Write `table` as a Parquet file of its own at `path` (a worker's call; curate.outputs.PARQUET_OPTIONS); its
    Layout."""
    from curate.outputs import PARQUET_OPTIONS

    pq.write_table(table, path, **PARQUET_OPTIONS)
    with pa.memory_map(str(path)) as f:
        return layout(memoryview(f.read_buffer()))


def encode_buffer(table: pa.Table) -> tuple[pa.Buffer, Layout]:
    """`table` as a Parquet file of its own in memory (curate.outputs.PARQUET_OPTIONS), and its Layout."""
    from curate.outputs import PARQUET_OPTIONS

    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, **PARQUET_OPTIONS)
    data = sink.getvalue()
    return data, layout(memoryview(data))


def read_spilled(spilled: str) -> pa.Table:
    """The table in an Arrow file a worker left in shared memory, mapped (not copied); the file goes."""
    with pa.memory_map(spilled) as source:
        table = pa.ipc.open_file(source).read_all()
    os.unlink(spilled)
    return table


def encode_beside(table: pa.Table, spilled: str) -> tuple[str, Layout]:
    """`table` encoded as a Parquet file beside the Arrow file `spilled` it came from: (its path, its Layout)."""
    path = spilled.removesuffix(".arrow") + ".parquet"
    return path, encode(table, path)


class Stitcher:
    """Appends whole Parquet files' row groups to `file` (opened for writing, empty) and writes the footer on
    finish(): the parts must share one schema and the options they were written with."""

    def __init__(self, file: BinaryIO):
        self.file = file
        self.file.write(MAGIC)
        self.pos = len(MAGIC)
        self.rows = 0
        self.groups: list[bytes] = []

    def append(self, data: bytes | memoryview, found: Layout | None = None) -> int:
        """Add one Parquet file's row groups (`found`: its Layout, if known); its rows."""
        found = found or layout(data)
        by = self.pos - len(MAGIC)
        self.groups += [_render(g, by, len(self.groups) + i) for i, g in enumerate(found.groups)]
        self.file.write(data[len(MAGIC) : found.end])
        self.pos += found.end - len(MAGIC)
        self.rows += found.rows
        return found.rows

    def finish(self, schema: pa.Schema, **options: Any) -> None:
        """Write the footer: that of a writer of `schema` and `options` given no rows (its Parquet and Arrow schema,
        key-value metadata and writer name, as one writer of the whole file would write them, whatever metadata
        the parts' tables carried), with the parts' row groups and rows."""
        sink = pa.BufferOutputStream()
        pq.ParquetWriter(sink, schema, **options).close()
        empty = memoryview(sink.getvalue())
        meta = layout(empty).footer

        def edit(fid: int, kind: int, value: int) -> Pieces | None:
            if fid == 3 and kind == _I64:
                return [_put_varint(_zig(self.rows))]
            if fid == 4 and kind == _LIST:
                return [_list_head(len(self.groups)), *self.groups]
            return None

        merged = b"".join(_struct(meta, 0, edit)[0])
        self.file.write(merged + len(merged).to_bytes(4, "little") + MAGIC)


def encode_spilled(_state: object, spilled: str) -> tuple[str, Layout]:
    """A table in an Arrow file (in shared memory) encoded as a Parquet file beside it, which replaces it (a pool
    worker's call): (its path, its Layout)."""
    return encode_beside(read_spilled(spilled), spilled)


def encode_table(_state: object, table: pa.Table) -> tuple[pa.Buffer, Layout]:
    """`table` encoded as a Parquet file in memory (a worker's call, the table sent to it): its bytes, its Layout."""
    return encode_buffer(table)


class Offload:
    """Tables for a stitching ParquetSink encoded by a pool's workers instead of this process, appended in order.

    put() writes the table to an Arrow file in `folder` (shared memory: one copy, no pickling) and asks the pool
    to encode it, or with no folder (Ray: the workers may be on other machines) sends the table itself; the encoded
    parts are appended as they are done, in the order put, at most `window` waiting.
    """

    def __init__(self, sink: Any, engine: Any, folder: str | None, window: int):
        self.sink, self.engine, self.folder, self.window = sink, engine, folder, window
        self.waiting: deque[Any] = deque()

    def put(self, table: pa.Table) -> None:
        """Encode `table` on the pool (through `folder`, where there is one), then append it."""
        if not table.schema.equals(self.sink.schema):
            raise ValueError(f"table schema does not match the sink's schema:\n{table.schema}\nvs\n{self.sink.schema}")
        if self.folder is None:
            self.submit(encode_table, table)
            return
        fd, path = tempfile.mkstemp(".arrow", dir=self.folder)  # a name of its own: several Offloads may share a folder
        os.close(fd)
        with pa.OSFile(path, "wb") as f, pa.ipc.new_file(f, table.schema) as writer:
            writer.write_table(table)
        self.submit(encode_spilled, path)

    def submit(self, fn: Callable[[Any, Any], tuple[Any, Layout]], item: Any) -> None:
        """Append what fn(state, item) encodes on the pool: (a Parquet file's path, or its bytes; its Layout), made
        of rows of the sink's schema."""
        self.waiting.append(self.engine.submit(fn, item))
        self._append(self.window)

    def _append(self, keep: int) -> None:
        while len(self.waiting) > keep or (self.waiting and self.waiting[0].done()):
            path, found = self.waiting.popleft().result()
            self.sink.write_encoded(path, found)

    def close(self) -> None:
        """Append every part still waiting."""
        self._append(0)
