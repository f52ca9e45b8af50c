"""Raw files to canonical rows in parts, in file order: JSONL in blocks of lines, on a pool of workers.

A UTF-8 JSONL file is cut into blocks of about BLOCK_BYTES at newlines; each block is converted by a
worker (curate.engine.Engine), on the fast path where it can (curate.ingest.fast), and the parts come
back in input order. The blocks do not depend on the number of workers, so neither do the outputs.
The main process reads the blocks (a worker reads a plain file's bytes itself, from the page cache, so
only a gzip's travel through the pool's pipes), decides an auto file's format from its first records (as
the record path does) and numbers the rows: a worker numbers its block's rows from 1 and knows its
first line. Other files (JSON arrays, CSV, Parquet, other encodings) are read record by record here;
their records take the fast conversion too (fast.convert_records).

Memory is bounded by the block size times the engine's window (twice the workers), never by the file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import os
import shutil
import tempfile
from collections import Counter, deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc

from curate import stitch
from curate.dataset import SCHEMA, SOURCE_TYPE
from curate.engine import current, default_workers, make
from curate.ingest import fast, formats, traces
from curate.ingest.containers import Opened
from curate.ingest.convert import SNIFF_RECORDS, Conversion, batch_replies, canonical
from curate.ingest.readers import Layout, Record, Reject, inspect, jsonl_items
from curate.outputs import _pid_alive

BLOCK_BYTES = 4 << 20
POOL_BLOCKS = 8  # a pool costs about a second of CPU to start: worth it from this many blocks on
BATCH = 5_000  # rows per part of a file converted here, record by record
FAST = True  # the fast path (tests turn it off to compare with the record path)


@dataclass
class Block:
    """Whole lines of a JSONL file, after line `line` (the last block may end without a newline): `data`, or bytes
    start to start + size of a plain file, which a worker reads itself rather than get them through a pipe."""

    data: bytes | None
    line: int
    start: int = 0
    size: int = 0
    plain: bool = True  # the bytes are the file's own (not a gzip's)
    last: bool = False
    problem: str | None = None  # the container's damage, known once the last block is read

    def read(self, path: str) -> bytes:
        if self.data is not None:
            return self.data
        with open(path, "rb") as f:
            f.seek(self.start)
            return f.read(self.size)

    def without_data(self) -> Block:
        """The block to send a worker: a plain file's bytes stay on disk (in the page cache)."""
        return dataclasses.replace(self, data=None) if self.plain else self


def _lines(data: bytes) -> list[bytes]:
    lines = data.split(b"\n")
    if not lines[-1]:
        lines.pop()
    return lines


def _texts(lines: list[bytes], cut: bool) -> Iterator[tuple[str, bool]]:
    """(text, ends with a newline) per line, as readers._lines gives them; `cut`: the last one has no newline."""
    last = len(lines) - 1
    for i, raw in enumerate(lines):
        whole = i < last or not cut
        yield raw.decode("utf-8", errors="surrogateescape") + ("\n" if whole else ""), whole


@dataclass
class Part:
    """Consecutive records of one file: its canonical rows and the rejects among them."""

    file: str
    table: pa.Table | None
    rejects: list[Reject]
    rows: int  # rows (non-blank lines, records) it spans: the next part's rows start after them
    per_format: Counter = field(default_factory=Counter)
    input: int = 0  # the position of its file among the inputs
    spilled: str | None = None  # an Arrow file in shared memory holding `table`, until the main process maps it
    kept: int = 0  # rows in `table`, or in `encoded`
    encoded: str | None = None  # a Parquet file in shared memory holding the rows (canonical_parts(encode=True))
    layout: stitch.Layout | None = None  # `encoded`'s, for curate.stitch

    def unspill(self) -> Part:
        """Map the rows a worker wrote to shared memory (no copy) and remove the file (the mapping stays)."""
        if self.spilled is not None:
            with pa.memory_map(self.spilled) as source:
                self.table = pa.ipc.open_file(source).read_all()
            os.unlink(self.spilled)
            self.spilled = None
        return self

    @property
    def read(self) -> int:
        """Records read: rows kept plus rejects."""
        return (self.table.num_rows if self.table is not None else self.kept) + len(self.rejects)


@dataclass
class _Job:
    file: str
    fmt: str
    format: str | None
    origin: str | None
    block: Block
    fast: bool = True
    spill: str | None = None  # a folder in shared memory the worker writes its rows to (the pipe is slower)
    where: str = ""  # the file's absolute path, for a worker to read a block's bytes (`file` names it in rows)


def read_blocks(path: Path, layout: Layout, size: int = BLOCK_BYTES) -> Iterator[Block]:
    """The blocks of a JSONL file, each about `size` bytes of whole lines (a longer line makes its own)."""
    with Opened(path) as o:
        o.stream.read(layout.bom)
        line, start = 0, layout.bom
        pending: list[bytes] = []  # what follows the last newline read
        while chunk := o.stream.read(size):
            cut = chunk.rfind(b"\n") + 1
            if not cut:
                pending.append(chunk)
                continue
            data = b"".join([*pending, chunk[:cut]]) if pending else chunk[:cut]
            pending = [chunk[cut:]] if cut < len(chunk) else []
            yield Block(data, line, start, len(data), not o.gzip)
            line += data.count(b"\n")
            start += len(data)
        data = b"".join(pending)
        yield Block(data, line, start, len(data), not o.gzip, last=True, problem=o.problem)


def convert_block(_state: object, job: _Job) -> Part:
    """One block's part (a worker's call): its rows numbered from 1, its rejects, its per-format counts."""
    part = _convert_block(job)
    if job.spill is not None and part.table is not None:
        part.kept = part.table.num_rows
        fd, path = tempfile.mkstemp(".arrow", dir=job.spill)
        os.close(fd)
        with pa.OSFile(path, "wb") as sink, pa.ipc.new_file(sink, part.table.schema) as writer:
            writer.write_table(part.table)
        part.table, part.spilled = None, path
    return part


@dataclass
class _Encode:
    spilled: str  # a block's rows, numbered from 1 (an Arrow file in shared memory)
    base: int  # the rows before the block


def encode_block(_state: object, job: _Encode) -> tuple[str, stitch.Layout]:
    """A block's rows numbered after the rows before it, encoded as a Parquet file of their own beside the Arrow
    file they came in, which goes (a worker's call, once the rows before are known): (its path, its Layout)."""
    return stitch.encode_beside(shift_rows(stitch.read_spilled(job.spilled), job.base), job.spilled)


def _convert_block(job: _Job) -> Part:
    conv = Conversion(Path(job.file), job.fmt, job.origin)
    conv.format = job.format
    block = job.block
    data = block.read(job.where or job.file)
    lines = _lines(data)
    if job.fast and block.problem is None and (conv.fmt == "mixed" or conv.format in fast.SHAPES):
        whole_last = not block.last or data.endswith(b"\n")
        table, rejects, rows = fast.convert_lines(conv, lines, block.line, whole_last)
        return Part(job.file, table, rejects, rows, conv.per_format)
    items = list(jsonl_items(job.file, _texts(lines, block.last and not data.endswith(b"\n")),
                             lambda: block.problem, block.line, 0, end=block.last))
    rows: list[dict] = []
    rejects: list[Reject] = []
    for item in items:
        got = canonical(conv.convert(item) if isinstance(item, Record) else item)
        (rejects.append(got) if isinstance(got, Reject) else rows.append(got))
    table = pa.Table.from_pylist(rows, schema=SCHEMA) if rows else None
    return Part(job.file, table, rejects, sum(item.row is not None for item in items), conv.per_format)


def _sniffed(conv: Conversion, blocks: Iterator[Block]) -> list[Block]:
    """Decide an auto file's format from its first records, as the record path does (a mixed file's is left
    undecided, unless trace records are among them: then it is one of those); the blocks read for it."""
    read: list[Block] = []
    head: list[Record | Reject] = []
    for block in blocks:
        read.append(block)
        data = block.data or b""
        texts = _texts(_lines(data), block.last and not data.endswith(b"\n"))
        head.extend(itertools.islice(jsonl_items(str(conv.path), texts, lambda p=block.problem: p, block.line,
                                                 end=block.last), SNIFF_RECORDS - len(head)))
        if len(head) >= SNIFF_RECORDS:
            break
    if conv.fmt != "mixed":
        conv.decide(head)
    elif found := [f for r in head if isinstance(r, Record) and (f := formats.detect(r.obj)) in traces.FORMATS]:
        conv.format = found[0]
    return read


def _shift(part: Part, base: int) -> Part:
    """Number a part's rows after the `base` rows before it."""
    if not base:
        return part
    for r in part.rejects:
        if r.row is not None:
            r.row += base
    if part.table is not None:
        part.table = shift_rows(part.table, base)
    return part


def shift_rows(rows: pa.Table | pa.RecordBatch, base: int) -> pa.Table | pa.RecordBatch:
    """Canonical rows with `source.row` counted after `base` rows before them."""
    if not base or not rows.num_rows:
        return rows
    i = rows.schema.get_field_index("source")
    src = rows.column(i)
    file, line, row = (src.combine_chunks() if isinstance(src, pa.ChunkedArray) else src).flatten()
    return rows.set_column(i, "source", pa.StructArray.from_arrays([file, line, pc.add(row, base)],
                                                                  fields=list(SOURCE_TYPE)))


@contextlib.contextmanager
def _spill_folder(workers: int) -> Iterator[str | None]:
    """A folder in shared memory for the workers' rows (None: there is no roomy /dev/shm, the rows take the pipe)."""
    if not roomy_shm(workers):
        yield None
        return
    _clear_stale_spills()
    with tempfile.TemporaryDirectory(prefix=f"{SPILL_PREFIX}{os.getpid()}-", dir="/dev/shm") as folder:
        yield folder


SPILL_PREFIX = "curate-spill-"


def roomy_shm(workers: int) -> bool:
    """Whether `workers` (2 or more) can spill their rows to /dev/shm: it exists, with room for many blocks each."""
    try:
        return workers > 1 and shutil.disk_usage("/dev/shm").free > 64 * workers * BLOCK_BYTES
    except OSError:
        return False


def _clear_stale_spills() -> None:
    """Remove the spill folders of killed runs (their process is gone): a killed run cannot remove its own, and
    what is in /dev/shm takes memory until the machine restarts."""
    for entry in os.scandir("/dev/shm"):
        pid = entry.name[len(SPILL_PREFIX):].split("-", 1)[0]
        if entry.name.startswith(SPILL_PREFIX) and pid.isdigit() and not _pid_alive(int(pid)):
            shutil.rmtree(entry.path, ignore_errors=True)


@contextlib.contextmanager
def _sharded(remote: bool, near: str | Path | None) -> Iterator[Any]:
    """On Ray, a folder beside the output for the actors' rows (curate.ray_io.Parts); else None."""
    if not remote:
        yield None
        return
    from curate import ray_io

    with ray_io.parts_folder(near) as parts:
        yield parts


def _planned(path: Path, layout: Layout, size: int, parts: Any) -> list[Block] | None:
    """On Ray: the file's blocks planned by workers that read it themselves (None: the driver reads them)."""
    from curate import ray_io

    return ray_io.plan_blocks(path, layout, size, parts)


def _jsonl(path: Path) -> Layout | None:
    layout = inspect(path)
    return layout if layout.kind == "jsonl" and layout.codec == "utf-8" else None


def _size(path: Path) -> int:
    """The bytes of a file's text: a gzip's trailer says (modulo 4 GiB, or garbage when it is cut)."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        if f.read(2) != b"\x1f\x8b" or size < 18:
            return size
        f.seek(-4, 2)
        return max(size, int.from_bytes(f.read(4), "little"))


def _by_record(conv: Conversion, index: int) -> Iterator[Part]:
    """A file that is not UTF-8 JSONL (a JSON array, CSV, Parquet), read record by record in this process and
    converted in parts of BATCH records (on the fast path where it can)."""
    items = conv.records()
    while chunk := list(itertools.islice(items, BATCH)):
        if FAST:
            table, rejects = fast.convert_records(conv, chunk)
        else:
            got = [canonical(x if isinstance(x, Reject) else conv.convert(x)) for x in chunk]
            rows = [x for x in got if not isinstance(x, Reject)]
            table = pa.Table.from_pylist(rows, schema=SCHEMA) if rows else None
            rejects = [x for x in got if isinstance(x, Reject)]
        yield Part(str(conv.path), table, rejects, len(chunk), input=index)
    conv.finish()


def _encoded(waiting: deque[tuple[Part, Future]], keep: int) -> Iterator[Part]:
    """The parts whose encoding is done, in order, until at most `keep` wait."""
    while len(waiting) > keep or (waiting and waiting[0][1].done()):
        part, future = waiting.popleft()
        part.encoded, part.layout = future.result()
        yield part


def canonical_parts(paths: Iterable[str | Path], fmt: str = "auto", origin: str | None = None,
                    workers: int | None = 1, conversions: list[Conversion] | None = None,
                    block_bytes: int | None = None, near: str | Path | None = None,
                    encode: bool = False) -> Iterator[Part]:
    """Every input file's canonical rows and rejects, in parts, in file order (each file's Conversion, with its
    format counts and warnings, is appended to `conversions`). `workers`: processes for JSONL blocks (None: the
    usable cores); a pool starts only for POOL_BLOCKS blocks of JSONL or more. `near`: the output the parts go to
    (on Ray, the actors read their blocks and write their rows beside it where they can: curate.ray_io).
    `encode`: a pool's workers also encode their blocks' rows as Parquet (Part.encoded, for a stitching
    ParquetSink), so that the parent only appends bytes; a part's file lasts until the generator is closed."""
    paths = [Path(p) for p in paths]
    block_bytes = block_bytes or BLOCK_BYTES
    jsonl_bytes = sum(_size(p) for p in paths if _jsonl(p))
    count = -(-jsonl_bytes // block_bytes)
    n = 1 if count < POOL_BLOCKS else min(workers or default_workers(), count)
    remote = count >= POOL_BLOCKS and current() == "ray"  # Ray actors, maybe elsewhere: blocks carry their bytes
    replies = batch_replies(paths, fmt)
    # the folders outlive the engine: its workers are stopped (a pool's waited for, actors killed) before the
    # folders they write to are removed, so a failed run leaves no file behind
    with _spill_folder(1 if remote else n) as spill, _sharded(remote, near) as parts, \
            make(n, worth=n > 1 or remote) as engine:
        for index, path in enumerate(paths):
            conv = Conversion(path, fmt, origin, replies=replies)
            if conversions is not None:
                conversions.append(conv)
            if replies is not None and path in replies.files:
                continue  # its lines are taken by the requests they answer; what is left comes last
            layout = _jsonl(path)
            if layout is None or fmt in traces.FORMATS:
                yield from _by_record(conv, index)
                continue
            conv.format = None if fmt in ("auto", "mixed") else fmt
            planned = _planned(path, layout, block_bytes, parts) if remote else None
            blocks: Iterator[Block]
            if planned is not None:  # the actors read their blocks (and write their rows where they can)
                blocks = iter(planned)
                if fmt in ("auto", "mixed"):
                    from curate import ray_io

                    ray_io.sniff(conv, planned)
                if conv.format in traces.FORMATS:
                    yield from _by_record(conv, index)
                    continue
            else:
                read = read_blocks(path, layout, block_bytes)
                blocks = read
                if fmt in ("auto", "mixed"):
                    blocks = itertools.chain(_sniffed(conv, read), read)
                    if conv.format in traces.FORMATS:  # trace records may hold others, or pair with replies
                        read.close()
                        yield from _by_record(conv, index)
                        continue
            where = os.path.abspath(path)
            to = parts.where if planned is not None and parts is not None else spill
            jobs = (_Job(str(path), fmt, conv.format, origin, b.without_data() if n > 1 and not remote else b, FAST,
                         to, where)
                    for b in blocks)
            base = 0
            waiting: deque[tuple[Part, Future]] = deque()  # parts whose rows a worker is encoding
            for part in engine.map(convert_block, jobs):
                conv.per_format.update(part.per_format)
                part.input = index
                if encode and part.spilled is not None:
                    waiting.append((_shift(part, base), engine.submit(encode_block, _Encode(part.spilled, base))))
                    part.spilled = None
                else:
                    yield from _encoded(waiting, 0)  # the parts before it first
                    yield _shift(part.unspill(), base)
                base += part.rows
                yield from _encoded(waiting, n)
            yield from _encoded(waiting, 0)
    for index, path in enumerate(paths):
        if replies is not None and path in replies.files:
            left = replies.left(path)
            yield Part(str(path), None, left, len(left), input=index)
            if conversions is not None:
                conversions[index].warnings.append(
                    f"{path}: OpenAI Batch output; its replies are paired by custom_id with the requests of the "
                    "batch input files (rows are counted there)")


def canonical_batches(path: str | Path, fmt: str = "auto", origin: str | None = None, batch_size: int = BATCH,
                      columns: list[str] | None = None, rejects: list[Reject] | None = None,
                      workers: int | None = 1) -> Iterator[pa.RecordBatch]:
    """One raw file's canonical rows as record batches of `batch_size` rows (the last one shorter), in file order;
    its Rejects are appended to `rejects`."""
    held: list[pa.Table] = []
    count = 0
    for part in canonical_parts([path], fmt, origin, workers):
        if rejects is not None:
            rejects.extend(part.rejects)
        if part.table is None or not part.table.num_rows:
            continue
        held.append(part.table.select(columns) if columns else part.table)
        count += part.table.num_rows
        while count >= batch_size:
            table = pa.concat_tables(held)
            yield from table.slice(0, batch_size).combine_chunks().to_batches()
            held, count = [table.slice(batch_size)], count - batch_size
    if count:
        yield from pa.concat_tables(held).combine_chunks().to_batches()
