"""Sharded reads and writes on the Ray engine: the workers read their part of an input and write their rows.

Reads. A plain UTF-8 JSONL file is cut into the blocks curate.ingest.blocks.read_blocks makes (about BLOCK_BYTES of
whole lines, the same cuts, so the same outputs), but the driver reads none of its bytes: Ray tasks each scan a
range of the file's fixed-size chunks (`_scan`: per chunk, its newline count and its last newline), which is all
the cuts and every block's first line number need. The blocks then go to the actors as (path, offset, length,
first line), and each actor reads its own. The format of an `auto` file is decided by a task too, from the first
blocks (`sniff`). What the driver reads of the file is its head: the layout (readers.inspect, 64 KiB) and the
4 KiB this module compares (`FileId`).

Before that, a task placed on every alive node of the cluster checks that the node sees the driver's file (same
path, size and head: `nodes_see`). Where one does not (a cluster without the driver's filesystem, another file
under the name), the driver reads the blocks and sends their bytes, as before: detected, never assumed. A gzip
file cannot be cut by offset: its blocks are read by the driver too. Dedupe's first pass over a canonical Parquet
does the same by row ranges (`ParquetRange`): the driver reads the ids only, each actor its rows' texts.

Writes. A JSONL ingest's rows are written by the actor that converted them, as an Arrow IPC part in a folder beside
the output (`parts_folder`, when every node saw the folder's token: the same filesystem), instead of
travelling back through the object store. Once the driver knows how many rows come before a part, an actor
numbers its rows and encodes them as a Parquet part beside it (curate.ingest.blocks.encode_block); the driver
appends the part's row groups, as they are, to the one Parquet output of the output set and removes it
(curate.stitch), so it neither decodes nor encodes the rows. The output set is published only when every part
is in (curate.outputs.OutputSet), so a killed run leaves no output, and its parts folder is removed by the next
run that writes beside it. The output stays one Parquet file because every stage's input is one
(curate.inputs). Validate's verdicts depend on every row (duplicate ids), so the driver decides them, but its
rows stay in the object store and an actor makes and encodes each valid part (curate.validate.stage.encode_valid);
dedupe's writing pass goes through the driver as on the local engine.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from curate.ingest.blocks import Block, _sniffed
from curate.ingest.convert import Conversion
from curate.ingest.readers import Layout

ENABLED = True  # tests and benchmarks turn it off to compare with the driver reading the blocks
SCAN_CHUNKS = 16  # chunks of the block size one scan task reads
HEAD = 4096  # bytes of the file's head compared between the driver and the workers
PARTS_SUFFIX = ".curate-parts"


@dataclass(frozen=True)
class FileId:
    """What a worker checks to know it sees the driver's file: its size and a digest of its head."""

    path: str
    size: int
    head: str

    @staticmethod
    def of(path: str | Path) -> FileId:
        path = os.path.abspath(path)
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            return FileId(path, size, hashlib.sha256(f.read(HEAD)).hexdigest())

    def seen(self) -> bool:
        """Whether this process sees the same file at the same path."""
        try:
            return FileId.of(self.path) == self
        except OSError:
            return False


def _scan(fid: FileId, first: int, size: int, chunks: int) -> np.ndarray | None:
    """On a worker: (newline count, offset of the last newline or -1) of each chunk [first + k * size, + size);
    None when this worker does not see the driver's file."""
    if not fid.seen():
        return None
    out = np.full((chunks, 2), -1, dtype=np.int64)
    with open(fid.path, "rb") as f:
        f.seek(first)
        for k in range(chunks):
            data = f.read(size)
            out[k, 0] = data.count(b"\n")
            cut = data.rfind(b"\n")
            out[k, 1] = first + k * size + cut if cut >= 0 else -1
    return out


def _token_seen(folder: str, token: str) -> bool:
    try:
        return Path(folder, "token").read_text() == token
    except OSError:
        return False


def _sees(fid: FileId, token: tuple[str, str] | None) -> tuple[bool, bool]:
    return fid.seen(), token is not None and _token_seen(*token)


def nodes_see(fid: FileId, token: tuple[str, str] | None = None) -> tuple[bool, bool]:
    """(whether every alive node of the cluster sees the driver's file, whether every one sees the token's folder),
    asked of each node by a task placed on it."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from curate.ray_engine import require

    ray = require()
    task = ray.remote(num_cpus=0, max_retries=3)(_sees)
    nodes = [n["NodeID"] for n in ray.nodes() if n.get("Alive")]
    got = ray.get([task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False))
                   .remote(fid, token) for node in nodes])
    return all(f for f, _ in got), all(t for _, t in got)


def plan_blocks(path: str | Path, layout: Layout, size: int, parts: Parts | None = None) -> list[Block] | None:
    """read_blocks' blocks of a plain JSONL file, without their bytes, planned by tasks that read the file where
    they run; None when a node of the cluster does not see it (the driver then reads the blocks itself). `parts`:
    learn whether every node sees its folder (parts.visible)."""
    if not ENABLED:
        return None
    fid = FileId.of(path)
    with open(fid.path, "rb") as f:
        if f.read(2) == b"\x1f\x8b":
            return None  # a gzip: no offsets to cut at
    from curate.ray_engine import require

    ray = require()
    token = (str(parts.folder), parts.token) if parts is not None else None
    file_seen, token_seen = nodes_see(fid, token)
    if not file_seen:
        return None
    if parts is not None:
        parts.visible = parts.visible is not False and token_seen
    # no CPU reserved: the stage's actors may hold every CPU while these short reads run; SPREAD: over the nodes
    scan = ray.remote(num_cpus=0, max_retries=3)(_scan).options(scheduling_strategy="SPREAD")
    total = max(0, fid.size - layout.bom)
    n = -(-total // size)
    got = ray.get([scan.remote(fid, layout.bom + j * size, size, min(SCAN_CHUNKS, n - j))
                   for j in range(0, n, SCAN_CHUNKS)])
    if any(g is None for g in got):  # the file changed under its name since the nodes were asked
        return None
    chunks = np.concatenate(got) if got else np.zeros((0, 2), dtype=np.int64)
    blocks: list[Block] = []
    line, start = 0, layout.bom
    for count, last in chunks.tolist():
        if last < 0:
            continue  # no newline in the chunk: its bytes join the next block, as read_blocks' pending
        blocks.append(Block(None, line, start, last + 1 - start, True))
        line += count
        start = last + 1
    blocks.append(Block(None, line, start, fid.size - start, True, last=True))
    return blocks


def _sniff(conv: Conversion, blocks: list[Block], where: str) -> tuple[str | None, list[str]]:
    """On a worker: an auto file's format (and the warnings deciding it gave), from its first blocks read here."""
    _sniffed(conv, (dataclasses.replace(b, data=b.read(where)) for b in blocks))
    return conv.format, conv.warnings


def sniff(conv: Conversion, blocks: list[Block]) -> None:
    """Decide `conv`'s format as blocks._sniffed does, reading the first blocks on a worker instead of here."""
    from curate.ray_engine import require

    ray = require()
    task = ray.remote(num_cpus=0, max_retries=3)(_sniff)
    mine = dataclasses.replace(conv, replies=None, warnings=[])
    fmt, warnings = ray.get(task.remote(mine, blocks, os.path.abspath(conv.path)))
    conv.format = fmt
    conv.warnings.extend(warnings)


class Parts:
    """A folder beside an output where actors write their rows' parts; removed at the end whatever happens."""

    def __init__(self, near: str | Path):
        near = Path(near).absolute()
        clean_parts(near.parent)
        self.folder = near.with_name(f".{near.name}.{os.getpid()}.{secrets.token_hex(4)}{PARTS_SUFFIX}")
        self.token = secrets.token_hex(8)
        self.visible: bool | None = None  # whether every worker that scanned an input saw the folder
        self.folder.mkdir(parents=True)
        (self.folder / "token").write_text(self.token)

    @property
    def where(self) -> str | None:
        """The folder for the actors to write to, once every scan saw it; else None (rows via the object store)."""
        return str(self.folder) if self.visible else None

    def close(self) -> None:
        """Remove the folder. Killed actors may still be writing for a moment (ray.kill does not wait): renamed
        first, so that no new part can be made in it while it is removed."""
        gone = self.folder.with_name(self.folder.name[: -len(PARTS_SUFFIX)] + "x" + PARTS_SUFFIX)
        try:
            self.folder.rename(gone)
        except OSError:
            gone = self.folder
        shutil.rmtree(gone, ignore_errors=True)


@contextlib.contextmanager
def parts_folder(near: str | Path | None) -> Iterator[Parts | None]:
    """A Parts folder beside `near` (an output) for the block, or None without an output."""
    if near is None or not ENABLED:
        yield None
        return
    parts = Parts(near)
    try:
        yield parts
    finally:
        parts.close()


def clean_parts(folder: Path) -> list[Path]:
    """Remove the parts folders that killed runs (their process gone) left in `folder`; returns what was removed."""
    from curate.outputs import _pid_alive

    removed = []
    with contextlib.suppress(OSError):
        for p in folder.glob(f".*{PARTS_SUFFIX}"):
            bits = p.name[: -len(PARTS_SUFFIX)].rsplit(".", 2)
            if len(bits) == 3 and bits[1].isdigit() and not _pid_alive(int(bits[1])):
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p)
    return removed


@dataclass(frozen=True)
class ParquetRange:
    """Rows [start, start + rows) of a Parquet file, `columns` of them (leaf paths too), for a worker to read."""

    file: FileId
    start: int
    rows: int
    columns: tuple[str, ...]

    def read(self) -> pa.Table:
        """The rows, as ParquetFile.iter_batches gives them (one chunk), read from the row groups that hold them."""
        if not self.file.seen():
            from curate.errors import InputError

            raise InputError("a Ray worker does not see this file (its node lost the driver's filesystem)",
                             file=self.file.path)
        pf = pq.ParquetFile(self.file.path)
        ends = np.cumsum([pf.metadata.row_group(g).num_rows for g in range(pf.num_row_groups)])
        first = int(np.searchsorted(ends, self.start, side="right"))
        last = int(np.searchsorted(ends, self.start + self.rows - 1, side="right"))
        table = pf.read_row_groups(list(range(first, last + 1)), columns=list(self.columns))
        before = int(ends[first - 1]) if first else 0
        return table.slice(self.start - before, self.rows).combine_chunks()


def parquet_ranges(path: str | Path | None) -> FileId | None:
    """The FileId of a Parquet input every node of the cluster sees (its workers read their rows themselves), or
    None (the driver reads and sends them)."""
    if not ENABLED or path is None:
        return None
    fid = FileId.of(path)
    return fid if nodes_see(fid)[0] else None
