"""Stream raw records out of JSONL, JSON arrays, CSV and Parquet files (gzip'd or not).

Nothing is loaded whole: JSON arrays are parsed element by element from a growing buffer,
JSONL line by line, Parquet batch by batch. Every problem becomes a `Reject` with the file,
the line (text files) or row (Parquet), and a reason; parsing resumes after it, so everything
readable before and after a bad spot is kept.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from curate.errors import UsageError

CHUNK = 1 << 20
RAW_SNIPPET = 300
# Invalid UTF-8 bytes survive decoding as lone surrogates (errors="surrogateescape").
_BAD_BYTES = re.compile("[\udc80-\udcff]")
_WS = " \t\r\n"


@dataclass
class Record:
    file: str
    line: int | None
    row: int
    obj: dict[str, Any]


@dataclass
class Reject:
    file: str
    line: int | None
    row: int | None
    reason: str
    raw: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"file": self.file, "line": self.line, "row": self.row, "reason": self.reason, "raw": self.raw}


def _snippet(text: str) -> str:
    text = text.strip()
    text = _BAD_BYTES.sub("\ufffd", text)
    return text if len(text) <= RAW_SNIPPET else text[:RAW_SNIPPET] + "..."


def _open_binary(path: Path) -> BinaryIO:
    f = open(path, "rb")
    if f.read(2) == b"\x1f\x8b":
        f.close()
        return gzip.open(path, "rb")  # type: ignore[return-value]
    f.seek(0)
    return f


def sniff(path: Path) -> str:
    """The container type of a file: jsonl, json-stream, csv, parquet, or empty."""
    if not path.exists():
        raise UsageError(f"no such file: {path}")
    if path.is_dir():
        raise UsageError(f"{path} is a directory; give a file")
    with open(path, "rb") as f:
        if f.read(4) == b"PAR1":
            return "parquet"
    name = path.name.lower().removesuffix(".gz")
    with _open_binary(path) as f:
        try:
            head = f.read(1 << 16)
        except (OSError, EOFError) as exc:
            raise UsageError(f"{path}: cannot read ({exc})") from exc
    text = head.decode("utf-8", errors="surrogateescape").lstrip("\ufeff" + _WS)
    if not text:
        return "empty"
    if name.endswith((".csv", ".tsv")):
        return "csv"
    if text[0] == "[":
        return "json-stream"
    if text[0] == "{":
        first_line = text.split("\n", 1)[0]
        try:
            json.loads(first_line)
            return "jsonl"
        except json.JSONDecodeError:
            return "json-stream"  # a pretty-printed object, or objects one after another
    return "jsonl"  # not JSON-looking: read line by line so each bad line is rejected, not the file


def iter_raw(path: str | Path) -> Iterator[Record | Reject]:
    """Every record of a file as a dict, or a Reject saying where and why it could not be read."""
    path = Path(path)
    kind = sniff(path)
    if kind == "empty":
        return
    if kind == "parquet":
        yield from _iter_parquet(path)
    elif kind == "csv":
        yield from _iter_csv(path)
    elif kind == "jsonl":
        yield from _iter_jsonl(path)
    else:
        yield from _iter_json_stream(path)


def _check_obj(file: str, line: int | None, row: int, obj: Any, raw: str) -> Record | Reject:
    if not isinstance(obj, dict):
        return Reject(file, line, row, f"record is a JSON {type(obj).__name__}, expected an object", _snippet(raw))
    if _BAD_BYTES.search(raw):
        col = _BAD_BYTES.search(raw).start()
        return Reject(file, line, row, f"invalid UTF-8 (bad byte near character {col})", _snippet(raw))
    return Record(file, line, row, obj)


def _iter_jsonl(path: Path) -> Iterator[Record | Reject]:
    file = str(path)
    row = 0
    with _open_binary(path) as f:
        for lineno, raw_bytes in enumerate(f, start=1):
            text = raw_bytes.decode("utf-8", errors="surrogateescape")
            if lineno == 1:
                text = text.lstrip("\ufeff")
            if not text.strip():
                continue
            row += 1
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as exc:
                hint = " (file truncated?)" if not raw_bytes.endswith(b"\n") else ""
                yield Reject(file, lineno, row, f"invalid JSON: {exc.msg} at column {exc.colno}{hint}", _snippet(text))
                continue
            except RecursionError:
                yield Reject(file, lineno, row, "invalid JSON: nested too deeply", _snippet(text))
                continue
            yield _check_obj(file, lineno, row, obj, text)


class _Buffer:
    """A text window over a binary stream that knows the line number of its read position."""

    def __init__(self, f: BinaryIO):
        self.f = f
        self.decoder = io.IncrementalNewlineDecoder(None, translate=False)
        self.buf = ""
        self.pos = 0
        self.line = 1
        self.eof = False
        self._first = True

    def fill(self, size: int = CHUNK) -> bool:
        data = self.f.read(size)
        if not data:
            self.eof = True
            return False
        text = data.decode("utf-8", errors="surrogateescape")
        if self._first:
            text = text.lstrip("\ufeff")
            self._first = False
        self.buf = self.buf[self.pos :] + text
        self.pos = 0
        return True

    def advance(self, to: int) -> None:
        self.line += self.buf.count("\n", self.pos, to)
        self.pos = to

    def skip_ws(self) -> str | None:
        """Move past whitespace; the next character, or None at end of file."""
        while True:
            while self.pos < len(self.buf) and self.buf[self.pos] in _WS:
                if self.buf[self.pos] == "\n":
                    self.line += 1
                self.pos += 1
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if not self.fill():
                return None


def _iter_json_stream(path: Path) -> Iterator[Record | Reject]:
    """A top-level JSON array, streamed element by element, or JSON values one after another."""
    file = str(path)
    decoder = json.JSONDecoder()
    row = 0
    with _open_binary(path) as f:
        b = _Buffer(f)
        in_array = b.skip_ws() == "["
        if in_array:
            b.advance(b.pos + 1)
        while True:
            ch = b.skip_ws()
            if ch is None:
                if in_array:
                    yield Reject(file, b.line, None, "JSON array not closed: file truncated after the last record")
                return
            if in_array and ch == "]":
                b.advance(b.pos + 1)
                if b.skip_ws() is not None:
                    yield Reject(file, b.line, None, "unexpected data after the closing ']'", _snippet(b.buf[b.pos :]))
                return
            if in_array and ch == ",":
                b.advance(b.pos + 1)
                continue
            row += 1
            start_line = b.line
            obj, end, error = _decode_one(decoder, b)
            if error is None:
                raw = b.buf[b.pos : end]
                b.advance(end)
                yield _check_obj(file, start_line, row, obj, raw)
                continue
            if b.eof and error.startswith("truncated"):
                yield Reject(file, start_line, row, f"file ends inside this record ({error})", _snippet(b.buf[b.pos :]))
                return
            resume = _resync(b, in_array)
            raw = b.buf[b.pos : resume] if resume is not None else b.buf[b.pos :]
            yield Reject(file, start_line, row, f"invalid JSON: {error}", _snippet(raw))
            if resume is None:
                return
            b.advance(resume)


def _decode_one(decoder: json.JSONDecoder, b: _Buffer) -> tuple[Any, int, str | None]:
    """Decode the value at b.pos, reading more input while it may just be incomplete."""
    size = CHUNK
    while True:
        try:
            obj, end = decoder.raw_decode(b.buf, b.pos)
            # a number or literal cut at the buffer's end parses short: make sure it is complete
            if end == len(b.buf) and not b.eof and not isinstance(obj, (dict, list, str)):
                raise json.JSONDecodeError("incomplete", b.buf, end)
            return obj, end, None
        except json.JSONDecodeError as exc:
            near_end = exc.pos >= len(b.buf) - 1 or exc.msg.startswith("Unterminated string")
            if not near_end:
                line_in_record = b.buf.count("\n", b.pos, exc.pos)
                return None, exc.pos, f"{exc.msg} ({line_in_record} line(s) into the record)"
            if b.eof or not b.fill(size):
                return None, exc.pos, f"truncated: {exc.msg}"
            size = min(size * 2, 64 * CHUNK)
        except RecursionError:
            return None, b.pos, "nested too deeply"


def _resync(b: _Buffer, in_array: bool) -> int | None:
    """Where the next record starts after a malformed one: the next '{' at the same indentation."""
    start = b.pos
    col = start - (b.buf.rfind("\n", 0, start) + 1)
    pattern = re.compile(r"\n[ \t]{%d}\{" % col) if col else re.compile(r"\n\{|\}\s*,\s*\{")
    search_from = start + 1
    while True:
        m = pattern.search(b.buf, search_from)
        if m:
            return m.end() - 1
        search_from = max(start + 1, len(b.buf) - 64)
        if not b.fill():
            return None
        # fill() dropped everything before b.pos: shift positions to the new buffer
        search_from -= start
        start = 0


def _iter_csv(path: Path) -> Iterator[Record | Reject]:
    file = str(path)
    csv.field_size_limit(sys.maxsize // 2 if sys.maxsize < 2**63 else 2**31 - 1)
    delimiter = "\t" if path.name.lower().removesuffix(".gz").endswith(".tsv") else ","
    with _open_binary(path) as fb:
        text = io.TextIOWrapper(fb, encoding="utf-8-sig", errors="surrogateescape", newline="")
        reader = csv.DictReader(text, delimiter=delimiter)
        row = 0
        last_line = 1
        try:
            for rec in reader:
                row += 1
                line = last_line + 1
                last_line = reader.line_num
                raw = json.dumps(rec, ensure_ascii=False)
                if None in rec:
                    yield Reject(file, line, row, "more fields than the header has columns", _snippet(raw))
                    continue
                yield _check_obj(file, line, row, _decode_json_cells(rec), raw)
        except csv.Error as exc:
            yield Reject(file, reader.line_num, row + 1, f"malformed CSV: {exc}")


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
    import pyarrow.parquet as pq

    file = str(path)
    row = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=4096):
        for obj in batch.to_pylist():
            row += 1
            yield Record(file, None, row, obj)
