"""A JSON array, or JSON values one after another, streamed element by element, resynchronising after damage.

Good elements are decoded by the C decoder straight from a text window. An element it cannot decode
is measured by its brackets and strings: when those balance, the damage was inside (an `undefined`,
a single quote, a missing comma) and only that element is rejected. When they do not (a cut record,
an unterminated string, a lost bracket), reading resumes at the next place a record starts: a `{` at
the element's own indentation for one-record-per-line and pretty-printed layouts, a `{` after a comma
for compact ones, confirmed by decoding a record of a shape already seen there. The look-ahead is
bounded: a region that yields no record start within LOOKAHEAD characters is rejected up to there and
the search goes on, so nothing after it is lost and memory stays bounded.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

CHUNK = 1 << 20
LOOKAHEAD = 64 << 20  # characters an element may span before it is treated as damaged
_WS = " \t\r\n"
_OUTSIDE = re.compile(r'[{}\[\]"]')
_INSIDE = re.compile(r'["\\\n]')
_COMPACT_START = re.compile(r'[,\[]\s*\{')
_SCALAR_END = re.compile(r"[\s,\]\[{}]")
AT_EOF = "its brackets or quotes do not balance before the end of the file"


class Window:
    """Decoded text over a binary stream (UTF-8 split across chunks decodes whole), with line numbers."""

    def __init__(self, f: BinaryIO, codec: str = "utf-8"):
        self.f = f
        self.decoder = codecs.getincrementaldecoder(codec)(errors="surrogateescape")
        self.buf = ""
        self.pos = 0
        self.line = 1
        self.eof = False
        self._first = True

    def fill(self, size: int = CHUNK) -> bool:
        """Append more text (positions into buf stay valid); False at end of file."""
        if self.eof:
            return False
        data = self.f.read(size)
        text = self.decoder.decode(data, final=not data)
        if self._first and text:
            text = text.removeprefix("\ufeff")
            self._first = False
        if not data:
            self.eof = True
        self.buf += text
        return bool(data) or bool(text)

    def release(self) -> int:
        """Drop the text before pos once it is large; returns how far positions moved."""
        if self.pos < CHUNK:
            return 0
        moved = self.pos
        self.buf = self.buf[moved:]
        self.pos = 0
        return moved

    def advance(self, to: int) -> None:
        self.line += self.buf.count("\n", self.pos, to)
        self.pos = to

    def peek(self) -> str | None:
        """Move past whitespace; the next character, or None at end of file."""
        while True:
            n = len(self.buf)
            i = self.pos
            while i < n and self.buf[i] in _WS:
                i += 1
            self.advance(i)
            if i < n:
                return self.buf[i]
            self.release()
            if not self.fill():
                return None


@dataclass
class Bad:
    """A stretch of the stream that held no readable element: where it starts, why, and its first characters."""

    line: int
    reason: str
    text: str
    truncated: bool = False


def elements(w: Window) -> Iterator[tuple[int, Any, str] | Bad]:
    """(line, value, raw text) for every element, or Bad for each damaged stretch, in file order."""
    decoder = json.JSONDecoder()
    shapes: set[frozenset] = set()  # key sets of records seen, to confirm a resync point
    in_array = w.peek() == "["
    if in_array:
        w.advance(w.pos + 1)
    while True:
        w.release()
        ch = w.peek()
        if ch is None:
            if in_array:
                yield Bad(w.line, "JSON array not closed: file truncated after the last record", "", truncated=True)
            return
        if ch == "]" and in_array:
            w.advance(w.pos + 1)
            in_array = False
            continue
        if ch == "[" and not in_array:  # arrays one after another
            w.advance(w.pos + 1)
            in_array = True
            continue
        if ch == ",":
            w.advance(w.pos + 1)
            continue
        line = w.line
        value, end, error = _decode(decoder, w)
        if error is None:
            raw = w.buf[w.pos : end]
            w.advance(end)
            if isinstance(value, dict):
                shapes.add(frozenset(value))
            yield line, value, raw
            continue
        bad = _skip_damaged(w, line, error, in_array, shapes, decoder)
        yield bad
        if bad.truncated:
            return


def _decode(decoder: json.JSONDecoder, w: Window) -> tuple[Any, int, str | None]:
    """Decode the value at w.pos, reading more while it may just be incomplete (up to LOOKAHEAD)."""
    size = CHUNK
    while True:
        try:
            value, end = decoder.raw_decode(w.buf, w.pos)
        except json.JSONDecodeError as exc:
            incomplete = exc.pos >= len(w.buf) - 1 or exc.msg.startswith("Unterminated string")
            if not incomplete or w.eof or len(w.buf) - w.pos > LOOKAHEAD:
                into = w.buf.count("\n", w.pos, exc.pos)
                return None, exc.pos, f"{exc.msg} ({into} line(s) into the record)" if into else exc.msg
            w.fill(size)
            size = min(size * 2, LOOKAHEAD)
            continue
        except RecursionError:
            return None, w.pos, "nested too deeply"
        # a number or literal cut at the window's end decodes short: make sure it is whole
        if end == len(w.buf) and not w.eof and not isinstance(value, (dict, list, str)):
            w.fill(size)
            continue
        return value, end, None


def _skip_damaged(w: Window, line: int, error: str, in_array: bool, shapes: set[frozenset],
                  decoder: json.JSONDecoder) -> Bad:
    """Reject the damaged element at w.pos and move to where the next one starts."""
    start = w.pos
    head = w.buf[start : start + 300]
    end, damage = _extent(w)
    if damage is None:  # brackets and strings balance: only this element is bad
        w.advance(end)
        return Bad(line, f"invalid JSON: {error}", head)
    resume = _resync(w, start, in_array, shapes, decoder)
    w.advance(len(w.buf) if resume is None else resume)
    if resume is not None:
        return Bad(line, f"invalid JSON: {error}; {damage}; reading resumed at line {w.line}", head)
    if damage == AT_EOF:
        return Bad(line, f"file ends inside this record ({error})", head, truncated=True)
    return Bad(line, f"invalid JSON: {error}; {damage}; no record follows it", head)


def _extent(w: Window) -> tuple[int, str | None]:
    """Where the element at w.pos ends if its brackets and strings balance, else (position, what broke)."""
    start = w.pos
    if w.buf[start] not in "{[":
        return _scalar_extent(w)
    indent = w.buf[w.buf.rfind("\n", 0, start) + 1 : start]
    at_line_start = not indent.strip(_WS)
    stack: list[str] = []
    i = start
    in_string = False
    while True:
        if i - start > LOOKAHEAD:
            return i, f"no end within {LOOKAHEAD >> 20} MiB"
        m = (_INSIDE if in_string else _OUTSIDE).search(w.buf, i)
        if m is None or (m.group() == "\\" and m.end() >= len(w.buf)):
            if m is None:
                i = len(w.buf)  # nothing of note up to here: the bound counts it as read
            if not w.fill():
                return len(w.buf), AT_EOF
            continue
        ch, i = m.group(), m.end()
        if in_string:
            if ch == "\\":
                i += 1
            elif ch == '"':
                in_string = False
            else:
                return i, "a string runs past the end of its line"
        elif ch == '"':
            in_string = True
        elif ch in "{[":
            if ch == "{" and at_line_start and stack and w.buf[w.buf.rfind("\n", 0, i - 1) + 1 : i - 1] == indent:
                return i - 1, "a new record starts before it closes"
            stack.append(ch)
        elif ch in "}]":
            if not stack or stack.pop() != ("{" if ch == "}" else "["):
                return i, f"an unmatched '{ch}'"
            if not stack:
                return i, None


def _scalar_extent(w: Window) -> tuple[int, str | None]:
    """A bare word (undefined, NaN-like junk, an unquoted string) ends at a separator."""
    while True:
        m = _SCALAR_END.search(w.buf, w.pos + 1)
        if m is not None:
            return max(m.start(), w.pos + 1), None
        if not w.fill():
            return len(w.buf), None


def _resync(w: Window, start: int, in_array: bool, shapes: set[frozenset],
            decoder: json.JSONDecoder) -> int | None:
    """The position of the next record start after `start`, confirmed by decoding it; None at end of file."""
    line_start = w.buf.rfind("\n", 0, start) + 1
    indent = w.buf[line_start:start]
    if not indent.strip(_WS):
        pattern = re.compile(r"\n%s\{" % re.escape(indent))
        offset_in_match = 1 + len(indent)
    else:
        pattern, offset_in_match = _COMPACT_START, None
    # the damaged element's first character is skipped; everything before the resume point is rejected
    w.advance(start)
    i = w.pos + 1
    while True:
        m = pattern.search(w.buf, i)
        if m is None:
            keep = max(w.pos, len(w.buf) - 64 - len(indent))  # a record start may straddle the fill
            if keep - w.pos > LOOKAHEAD // 2:
                w.advance(keep)  # bound memory: what was searched is rejected and forgotten
                i = keep - w.release()
            else:
                i = max(i, keep)
            if not w.fill():
                return None
            continue
        cand = m.start() + offset_in_match if offset_in_match is not None else m.end() - 1
        if _confirmed(w, cand, in_array, shapes, decoder):
            return cand
        i = m.start() + 1


def _confirmed(w: Window, pos: int, in_array: bool, shapes: set[frozenset], decoder: json.JSONDecoder) -> bool:
    """Whether a whole record of a known shape starts at `pos`, followed by what may follow a record."""
    saved, w.pos = w.pos, pos  # _decode reads at w.pos; positions stay valid (fill only appends)
    try:
        value, end, error = _decode(decoder, w)
    finally:
        w.pos = saved
    if error is not None or not isinstance(value, dict) or (shapes and frozenset(value) not in shapes):
        return False
    rest = w.buf[end : end + 64].lstrip(_WS)
    return not rest or rest[0] in ("],{" if in_array else ",{[")
