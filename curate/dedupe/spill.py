"""Shingle hashes of every row, spilled to a temporary file in pass 1 and read back window by window.

Keeping them in memory would cost ~400 MB per million 100-word rows; re-reading and re-tokenising
the input for the candidates costs a third pass over it. A sequential file read per window of rows
costs neither, and never maps the file, so it adds nothing to the resident set.
"""

from __future__ import annotations

import tempfile

import numpy as np

from curate.dedupe.lsh import ShingleSets, build_sets, concat_sets
from curate.dedupe.shingle import ranges as _ranges


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
        """Unique shingle sets of the given rows, reading one window of rows at a time."""
        rows = np.unique(np.asarray(rows, dtype=np.int64))
        self.file.flush()
        parts = []
        bounds = np.flatnonzero(np.diff(rows // self.window)) + 1
        for r in np.split(rows, bounds) if len(rows) else []:
            lo, hi = int(self.offsets[r[0]]), int(self.offsets[r[-1] + 1])
            self.file.seek(lo * 4)
            buf = np.frombuffer(self.file.read((hi - lo) * 4), dtype=np.uint32)
            sizes = self.offsets[r + 1] - self.offsets[r]
            off = np.zeros(len(r) + 1, dtype=np.int64)
            np.cumsum(sizes, out=off[1:])
            parts.append(build_sets(r, buf[_ranges(self.offsets[r] - lo, sizes)], off))
        return concat_sets(parts)

    def close(self) -> None:
        self.file.close()
