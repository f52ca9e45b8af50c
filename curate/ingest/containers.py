"""The bytes of an input file: gzip that keeps what precedes a cut, and the text encoding it is in.

A truncated or corrupt gzip stream ends the data instead of raising, and says so in `problem`, so a
reader keeps every complete record before the damage. Text is UTF-8 (with or without a BOM), or
UTF-16/32 when a byte-order mark says so; UTF-16/32 without a mark, and binary data, are named
rather than read as thousands of broken lines.
"""

from __future__ import annotations

import io
import zlib
from pathlib import Path
from typing import BinaryIO

CHUNK = 1 << 20
GZIP_MAGIC = b"\x1f\x8b"
SLICE = 1 << 16

# longest first: the UTF-32-LE mark begins with the UTF-16-LE one
BOMS = (
    (b"\x00\x00\xfe\xff", "utf-32-be"),
    (b"\xff\xfe\x00\x00", "utf-32-le"),
    (b"\xef\xbb\xbf", "utf-8"),
    (b"\xfe\xff", "utf-16-be"),
    (b"\xff\xfe", "utf-16-le"),
)


class Gunzip(io.RawIOBase):
    """Decompress gzip members one after another; damage ends the stream and is kept in `problem`."""

    def __init__(self, raw: BinaryIO):
        self.raw = raw
        self.problem: str | None = None
        self._d = zlib.decompressobj(wbits=31)
        self._out = b""
        self._pos = 0
        self._done = False
        self._fed = False
        self._pending = b""
        self._compressed = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:  # type: ignore[override]
        while self._pos >= len(self._out):
            if self._done:
                return 0
            self._out, self._pos = self._step(), 0
        n = min(len(b), len(self._out) - self._pos)
        b[:n] = self._out[self._pos : self._pos + n]
        self._pos += n
        return n

    def _step(self) -> bytes:
        if self._d.eof:  # a member ended: what follows it may be another member
            self._pending = self._d.unused_data + self._pending
            self._d, self._fed = zlib.decompressobj(wbits=31), False
        if not self._pending:
            self._pending = self.raw.read(CHUNK)
            self._compressed += len(self._pending)
        if not self._pending:
            self._done = True
            if self._fed and not self._d.eof:
                self.problem = ("gzip file is truncated: the compressed data ends before the end-of-stream "
                                f"marker (after {self._compressed:,} bytes)")
            return b""
        if not self._fed and not self._pending.strip(b"\0"):
            self._pending = b""
            return b""  # zero padding after the last member is allowed
        # small slices: when the data turns out corrupt, what decompressed before the damage is kept
        data, self._pending = self._pending[:SLICE], self._pending[SLICE:]
        self._fed = True
        try:
            return self._d.decompress(data)
        except zlib.error as exc:
            self._done = True
            self.problem = f"gzip data is corrupt near compressed byte {self._compressed - len(self._pending):,} ({exc})"
            return b""

    def close(self) -> None:
        self.raw.close()
        super().close()


class Opened:
    """A file's decompressed bytes (a buffered binary stream) and what went wrong with its container."""

    def __init__(self, path: Path):
        raw = open(path, "rb")
        self.gzip = raw.read(2) == GZIP_MAGIC
        raw.seek(0)
        self._gz = Gunzip(raw) if self.gzip else None
        self.stream: BinaryIO = io.BufferedReader(self._gz, CHUNK) if self._gz else raw  # type: ignore[assignment]

    @property
    def problem(self) -> str | None:
        return self._gz.problem if self._gz else None

    def close(self) -> None:
        self.stream.close()

    def __enter__(self) -> Opened:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def encoding_of(head: bytes, whole: bool = False) -> tuple[str | None, int, str | None]:
    """(codec, BOM length, problem) for the first bytes of a text file (`whole`: they are all of it).

    codec is None with a problem when the file cannot be read as text: UTF-16/32 without a
    byte-order mark, or nothing but zero bytes. Other binary damage is read as UTF-8 lines, so
    each bad line is rejected and the good ones around it are kept.
    """
    for bom, codec in BOMS:
        if head.startswith(bom):
            return codec, len(bom), None
    sample = head[:4096]
    if b"\0" not in sample:
        return "utf-8", 0, None
    if whole and not head.strip(b"\0"):
        return None, 0, "the file holds only zero bytes (overwritten or never written)"
    guess = _utf16_32_guess(sample)
    if guess:
        return None, 0, (f"the file looks like {guess.upper()} text without a byte-order mark; convert it to UTF-8 "
                         f"(e.g. iconv -f {guess.upper()} -t UTF-8) or save it with a BOM")
    return "utf-8", 0, None


def _utf16_32_guess(sample: bytes) -> str | None:
    """The encoding ASCII-heavy text in UTF-16/32 betrays by where its zero bytes fall."""
    n = len(sample) - len(sample) % 4
    if n < 4:
        return None
    zeros = [sample[i:n:4].count(0) / (n // 4) for i in range(4)]
    if zeros[0] < 0.2 and min(zeros[1:]) > 0.8:
        return "utf-32-le"
    if zeros[3] < 0.2 and max(zeros[:3]) > 0.8 and min(zeros[:3]) > 0.8:
        return "utf-32-be"
    even, odd = (zeros[0] + zeros[2]) / 2, (zeros[1] + zeros[3]) / 2
    if odd > 0.8 and even < 0.2:
        return "utf-16-le"
    if even > 0.8 and odd < 0.2:
        return "utf-16-be"
    return None
