"""Shingle hashes of every row, spilled to a temporary file in pass 1 and read back window by window.

Keeping them in memory would cost ~400 MB per million 100-word rows; re-reading and re-tokenising
the input for the candidates costs a third pass over it. A sequential file read per window of rows
costs neither, and never maps the file, so it adds nothing to the resident set.
"""

from __future__ import annotations

import tempfile

import numpy as np

from curate.dedupe import kernels
from curate.dedupe.lsh import ShingleSets


class ShingleSpill:
    """Per-row 32-bit shingle hashes in a temporary file, with their offsets in memory (8 bytes per row)."""

    def __init__(self, n: int, window: int = 20_000):
        self.file = tempfile.TemporaryFile(prefix="curate-dedupe-")  # noqa: SIM115 -- closed by close()
        self.offsets = np.zeros(n + 1, dtype=np.int64)
        self.pos = 0
        self.window = window

    def add(self, start: int, hash32: np.ndarray, offsets: np.ndarray) -> None:
        """Append a batch's shingles; offsets are the batch-local CSR offsets (rows start..)."""
        self.file.write(np.ascontiguousarray(hash32, dtype=np.uint32).data)  # no intermediate bytes copy
        self.offsets[start + 1 : start + len(offsets)] = self.pos + offsets[1:]
        self.pos += len(hash32)

    def sets(self, rows: np.ndarray) -> ShingleSets:
        """Unique shingle sets of the given rows, reading one window of rows at a time into one reused buffer;
        each row's set goes straight into the result (no per-window parts to join)."""
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) > 1 and not np.all(rows[1:] > rows[:-1]):
            rows = np.unique(rows)
        self.file.flush()
        starts, ends = self.offsets[rows], self.offsets[rows + 1]
        out = np.empty(int((ends - starts).sum()), dtype=np.uint32)  # the tail left by repeated shingles is never touched
        off = np.zeros(len(rows) + 1, dtype=np.int64)
        buf = np.empty(0, dtype=np.uint32)
        bounds = np.flatnonzero(np.diff(rows // self.window)) + 1
        p = 0
        for s, e in zip(np.split(starts, bounds), np.split(ends, bounds)) if len(rows) else ():
            lo, hi = int(s[0]), int(e[-1])
            if len(buf) < hi - lo:
                buf = np.empty(hi - lo, dtype=np.uint32)
            self.file.seek(lo * 4)
            got = self.file.readinto(memoryview(buf[: hi - lo]).cast("B"))
            if got != (hi - lo) * 4:
                raise OSError(f"dedupe spill file: read {got} of {(hi - lo) * 4} bytes")
            kernels.unique_into(buf, s - lo, e - lo, out, off, p)
            p += len(s)
        return ShingleSets(rows, off, out[: off[-1]])

    def close(self) -> None:
        self.file.close()
