"""Stream raw records out of JSONL, JSON arrays, CSV and Parquet files (gzip'd or not).

Nothing is loaded whole: JSON arrays are parsed element by element (curate.ingest.jsonstream, which
resynchronises after a damaged element), JSONL line by line, Parquet batch by batch. Every problem
becomes a `Reject` with the file, the line (text files) or row (Parquet), a reason and a kind;
reading resumes after it, so everything readable before and after a bad spot is kept. Damage to the
container (a cut gzip, an unreadable Parquet row group, an encoding that is not text) is one Reject
that names it, after every record that could be read.
"""

from __future__ import annotations

import csv
import io
import json
import re
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from curate.dataset import parquet_problem
from curate.errors import UsageError
from curate.ingest.containers import Opened, encoding_of
from curate.ingest.jsonstream import Bad, Window, elements

RAW_SNIPPET = 300
# Invalid UTF-8 bytes survive decoding as lone surrogates (errors="surrogateescape").
_BAD_BYTES = re.compile("[\udc80-\udcff]")
_WS = " \t\r\n"
HEAD_BYTES = 1 << 16

# what kind of problem a Reject is (validate gives each its own code)
JSON, UTF8, NOT_OBJECT, TRUNCATED, UNREADABLE, RECORD = "json", "utf8", "type", "truncated", "unreadable", "record"


@dataclass
class Record:
    file: str
    line: int | None
    row: int
    obj: dict[str, Any]
    raw: str | None = None  # its JSON text, kept for a pretty-printed JSON document (traces find nested lines in it)


@dataclass
class Reject:
    file: str
    line: int | None
    row: int | None
    reason: str
    raw: str = ""
    kind: str = RECORD

    def as_dict(self) -> dict[str, Any]:
        return {"file": self.file, "line": self.line, "row": self.row, "reason": self.reason, "raw": self.raw}


def file_problem(r: Reject) -> str | None:
    """A one-line notice naming the file, for damage to the file itself (not to one record)."""
    if r.kind in (TRUNCATED, UNREADABLE) and (r.row is None or r.kind == TRUNCATED):
        return f"{r.file}: {r.reason}"
    if r.kind == UNREADABLE:
        return f"{r.file}: {r.reason.split(';')[0]}; the rows of that row group were rejected"
    return None


def _snippet(text: str) -> str:
    text = text.strip()
    text = _BAD_BYTES.sub("\ufffd", text)
    return text if len(text) <= RAW_SNIPPET else text[:RAW_SNIPPET] + "..."


@dataclass
class Layout:
    """What a file holds: its container kind, text codec and byte-order mark, or why it cannot be read."""

    kind: str  # jsonl | json-stream | csv | parquet | empty | unreadable
    codec: str | None = "utf-8"
    bom: int = 0
    problem: str | None = None


def inspect(path: Path) -> Layout:
    """The layout of a file, from its first bytes; a missing file or a folder is a usage error."""
    if not path.exists():
        raise UsageError(f"no such file: {path}")
    if path.is_dir():
        raise UsageError(f"{path} is a directory; give a file")
    with open(path, "rb") as f:
        magic = f.read(4)
    name = path.name.lower().removesuffix(".gz")
    if magic == b"PAR1" or name.endswith(".parquet"):
        return Layout("parquet", None)
    with Opened(path) as o:
        head = o.stream.read(HEAD_BYTES)
        problem = o.problem
    if not head:
        return Layout("unreadable", None, 0, problem) if problem else Layout("empty")
    codec, bom, bad = encoding_of(head, whole=len(head) < HEAD_BYTES)
    if codec is None:
        return Layout("unreadable", None, 0, bad)
    text = head[bom:].decode(codec, errors="surrogateescape").lstrip("\ufeff" + _WS)
    if not text:
        return Layout("empty", codec, bom)
    if name.endswith((".csv", ".tsv")):
        return Layout("csv", codec, bom)
    if text[0] == "[":
        return Layout("json-stream", codec, bom)
    if text[0] == "{":
        try:
            json.loads(text.split("\n", 1)[0])
            return Layout("jsonl", codec, bom)
        except json.JSONDecodeError:
            return Layout("json-stream", codec, bom)  # a pretty-printed object, or objects one after another
    return Layout("jsonl", codec, bom)  # not JSON-looking: read line by line so each bad line is rejected


def sniff(path: Path) -> str:
    """The container type of a file: jsonl, json-stream, csv, parquet, empty or unreadable."""
    return inspect(path).kind


def iter_raw(path: str | Path) -> Iterator[Record | Reject]:
    """Every record of a file as a dict, or a Reject saying where and why it could not be read."""
    path = Path(path)
    layout = inspect(path)
    if layout.kind == "empty":
        return
    if layout.kind == "unreadable":
        yield Reject(str(path), None, None, f"cannot read the file: {layout.problem}", kind=UNREADABLE)
    elif layout.kind == "parquet":
        yield from _iter_parquet(path)
    else:
        with Opened(path) as o:
            o.stream.read(layout.bom)
            reader = {"csv": _iter_csv, "jsonl": _iter_jsonl}.get(layout.kind, _iter_json_stream)
            yield from reader(str(path), o, layout.codec or "utf-8")


def _check_obj(file: str, line: int | None, row: int, obj: Any, raw: str) -> Record | Reject:
    if not isinstance(obj, dict):
        return Reject(file, line, row, f"record is a JSON {type(obj).__name__}, expected an object", _snippet(raw),
                      NOT_OBJECT)
    bad = _BAD_BYTES.search(raw)
    if bad:
        return Reject(file, line, row, f"invalid UTF-8 (bad byte near character {bad.start()})", _snippet(raw), UTF8)
    return Record(file, line, row, obj)


def _cut(o: Opened, file: str, line: int | None) -> Reject | None:
    """One Reject for a damaged container once its readable records are out."""
    return cut_reject(o.problem, file, line)


def cut_reject(problem: str | None, file: str, line: int | None) -> Reject | None:
    """The Reject for a container damaged by `problem` (None when it is whole), after its last line `line`."""
    if problem is None:
        return None
    return Reject(file, line, None, f"{problem}; every complete record before it was kept", kind=TRUNCATED)


def _lines(o: Opened, codec: str) -> Iterator[tuple[str, bool]]:
    """(text, ends with a newline) per line; UTF-8 is split as bytes, other codecs decoded first."""
    if codec == "utf-8":
        for raw in o.stream:
            yield raw.decode("utf-8", errors="surrogateescape"), raw.endswith(b"\n")
    else:
        for text in io.TextIOWrapper(o.stream, encoding=codec, errors="surrogateescape", newline=""):
            yield text, text.endswith("\n")


def _iter_jsonl(file: str, o: Opened, codec: str) -> Iterator[Record | Reject]:
    yield from jsonl_items(file, _lines(o, codec), lambda: o.problem)


def jsonl_items(file: str, lines: Iterable[tuple[str, bool]], problem: Callable[[], str | None], line: int = 0,
                row: int = 0, end: bool = True) -> Iterator[Record | Reject]:
    """The records of JSONL lines (text, ends with a newline) numbered from line + 1 and row + 1; `end`: they are
    the last of the file, so a damaged container (`problem()`, asked once the lines are read) ends them."""
    lineno = line
    for lineno, (text, whole) in enumerate(lines, start=line + 1):
        if lineno == 1:
            text = text.lstrip("\ufeff")
        if not text.strip():
            continue
        row += 1
        item = jsonl_item(file, lineno, row, text, whole, problem)
        yield item
        if not whole and isinstance(item, Reject) and item.kind == TRUNCATED and problem():
            return  # the cut fell inside this record: its reject says both
    cut = cut_reject(problem(), file, lineno or None) if end else None
    if cut:
        yield cut


def jsonl_item(file: str, lineno: int, row: int, text: str, whole: bool,
               problem: Callable[[], str | None]) -> Record | Reject:
    """One non-blank JSONL line (its text with the newline, whether it had one) as a Record or a Reject."""
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        if not whole and problem():  # the cut fell inside this record: one reject says both
            return Reject(file, lineno, row, f"{problem()}; the file ends inside this record", _snippet(text),
                          TRUNCATED)
        if not whole and (exc.pos >= len(text.rstrip()) - 1 or exc.msg.startswith("Unterminated string")):
            return Reject(file, lineno, row, f"file ends inside this record ({exc.msg})", _snippet(text), TRUNCATED)
        return Reject(file, lineno, row, f"invalid JSON: {exc.msg} at column {exc.colno}", _snippet(text), JSON)
    except RecursionError:
        return Reject(file, lineno, row, "invalid JSON: nested too deeply", _snippet(text), JSON)
    return _check_obj(file, lineno, row, obj, text)


def _iter_json_stream(file: str, o: Opened, codec: str) -> Iterator[Record | Reject]:
    """A top-level JSON array, streamed element by element, or JSON values one after another."""
    w = Window(o.stream, codec)
    row = 0
    said_cut = False
    for item in elements(w):
        if isinstance(item, Bad):
            row += bool(item.text)
            reason = item.reason
            if item.truncated and o.problem:  # the cut explains the unfinished record: one reject says both
                reason = f"{o.problem}; " + ("the file ends inside this record" if item.text else "the array is not closed")
                said_cut = True
            yield Reject(file, item.line, row if item.text else None, reason, _snippet(item.text),
                         TRUNCATED if item.truncated else JSON)
            continue
        line, value, raw = item
        row += 1
        rec = _check_obj(file, line, row, value, raw)
        if isinstance(rec, Record):
            rec.raw = raw
        yield rec
    cut = None if said_cut else _cut(o, file, w.line)
    if cut:
        yield cut


class _Lines:
    """The lines of a text stream, remembering whether the last one ended with a newline."""

    def __init__(self, text: io.TextIOBase):
        self.text = text
        self.whole = True

    def __iter__(self) -> Iterator[str]:
        for line in self.text:
            self.whole = line.endswith("\n")
            yield line


def _iter_csv(file: str, o: Opened, codec: str) -> Iterator[Record | Reject]:
    csv.field_size_limit(sys.maxsize // 2 if sys.maxsize < 2**63 else 2**31 - 1)
    delimiter = "\t" if file.lower().removesuffix(".gz").endswith(".tsv") else ","
    lines = _Lines(io.TextIOWrapper(o.stream, encoding="utf-8-sig" if codec == "utf-8" else codec,
                                    errors="surrogateescape", newline=""))
    reader = csv.DictReader(lines, delimiter=delimiter)
    row = 0
    last_line = 1
    held: Record | Reject | None = None  # the last record waits: a cut container may have cut it short
    try:
        for rec in reader:
            if held is not None:
                yield held
            row += 1
            line = last_line + 1
            last_line = reader.line_num
            raw = json.dumps(rec, ensure_ascii=False)
            if None in rec:
                held = Reject(file, line, row, "more fields than the header has columns", _snippet(raw))
                continue
            held = _check_obj(file, line, row, _decode_json_cells(rec), raw)
    except csv.Error as exc:
        if held is not None:
            yield held
        held = Reject(file, reader.line_num, row + 1, f"malformed CSV: {exc}")
    if held is not None and o.problem and not lines.whole:
        raw = held.raw if isinstance(held, Reject) else json.dumps(held.obj, ensure_ascii=False)
        yield Reject(file, held.line, held.row, f"{o.problem}; the file ends inside this record", _snippet(raw), TRUNCATED)
        return
    if held is not None:
        yield held
    cut = _cut(o, file, reader.line_num)
    if cut:
        yield cut


_JSON_CELLS = ("messages", "conversations", "history", "tools", "chosen", "rejected", "turns")


def _decode_json_cells(rec: dict[str, Any]) -> dict[str, Any]:
    """Cells holding JSON lists/objects (a messages column, say) become structures again."""
    out = {}
    for key, value in rec.items():
        if key in _JSON_CELLS and isinstance(value, str) and value.strip()[:1] in ("[", "{"):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                pass  # left as text; the format check names the field
        out[key] = value
    return out


def _iter_parquet(path: Path) -> Iterator[Record | Reject]:
    """Rows batch by batch; a row group that cannot be decoded rejects its rows and the others are read."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    file = str(path)
    try:
        pf = pq.ParquetFile(path, page_checksum_verification=True)
    except (pa.ArrowException, OSError) as exc:
        yield Reject(file, None, None, f"not a readable Parquet file: {parquet_problem(exc)}", kind=UNREADABLE)
        return
    row = 0
    for group in range(pf.num_row_groups):
        end = row + pf.metadata.row_group(group).num_rows
        try:
            for batch in pf.iter_batches(batch_size=4096, row_groups=[group]):
                for obj in batch.to_pylist():
                    row += 1
                    yield Record(file, None, row, obj)
        except (pa.ArrowException, OSError) as exc:
            why = f"Parquet row group {group} cannot be decoded ({parquet_problem(exc)}); the other row groups were read"
            for lost in range(row + 1, end + 1):
                yield Reject(file, None, lost, why, kind=UNREADABLE)
            row = end
