"""LSH banding over a whole band-key matrix at once, and exact Jaccard checks of candidate pairs.

Every band is sorted once; documents with equal keys in a band are candidates. A bucket of up to
`window + 1` documents yields all its pairs; in a larger bucket each document is paired with its
`window` neighbours and with the bucket's first member, which bounds the work on degenerate buckets
while union-find still joins them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from curate.dedupe import kernels


def candidate_pairs(bands: np.ndarray, docs: np.ndarray, window: int = 8) -> np.ndarray:
    """(P, 2) int64 unique pairs (i < j) of entries of `docs` (rows of `bands`, ascending) sharing a band key.

    Each band is sorted once as (key bits << s | position) in one uint64, s = bits for a position, by a
    radix sort of the key bits alone, with ties in position order. Only the top `key_bits(n)` bits of a
    key are sorted and compared: two different keys then share them with probability 2^-bits, about
    n^2 / 2^(bits + 1) false pairs per band (~60 at n = 10^6, bits = 33). Verification rejects those;
    none is lost. Sorting all 64 - s bits would take a fourth radix pass per band at 10^6 rows.
    """
    n = len(docs)
    if n < 2:
        return np.zeros((0, 2), dtype=np.int64)
    shift = max(int(n - 1).bit_length(), 1)
    bits = key_bits(n, shift)
    docs = np.asarray(docs, dtype=np.int64)
    bands = np.asarray(bands, dtype=np.uint64)
    src, dst = np.empty(n, dtype=np.uint64), np.empty(n, dtype=np.uint64)
    out, k = np.empty((1024, 2), dtype=np.int64), 0
    for b in range(bands.shape[1]):
        # the column view, gathered at `docs` while packing: no copy of the band matrix
        packed = kernels.band_sorted(bands[:, b], docs, shift, bits, src, dst)
        out, k = kernels.bucket_pairs(packed, shift, window, out, k)
    pairs = docs[out[:k]]
    pairs.sort(axis=1)
    return _unique_pairs(pairs)


def key_bits(n: int, shift: int) -> int:
    """Band-key bits to sort for n documents: whole 11-bit radix passes, enough that chance collisions
    add at most ~n / 1000 false pairs per band (2^(bits + 1) >= 1000 n), at most the 64 - shift bits left."""
    passes = -(-(n.bit_length() + 9) // 11)
    return min(11 * passes, 64 - shift)


def _unique_pairs(pairs: np.ndarray) -> np.ndarray:
    if len(pairs) == 0:
        return np.zeros((0, 2), dtype=np.int64)
    width = max(int(pairs.max()).bit_length(), 1)
    if width <= 31:  # both ends fit one int64: a 1-D unique, far cheaper than unique(axis=0)
        code = np.unique((pairs[:, 0] << width) | pairs[:, 1])
        return np.stack([code >> width, code & ((1 << width) - 1)], axis=1)
    return np.unique(pairs, axis=0)


@dataclass
class ShingleSets:
    """Unique 32-bit shingle hashes (the MinHash inputs) of selected documents, in CSR form.

    Exact Jaccard is computed on these 32-bit hashes: two distinct shingles of a pair collide with
    probability ~|A||B|/2^32 (about 1e-5 for 100-shingle rows), moving that pair's Jaccard by 1/|A u B|.
    """

    docs: np.ndarray  # global document numbers, sorted
    offsets: np.ndarray
    values: np.ndarray  # uint32

    def size(self, docs: np.ndarray) -> np.ndarray:
        k = np.searchsorted(self.docs, docs)
        return self.offsets[k + 1] - self.offsets[k]


def build_sets(doc_ids: np.ndarray, hashes: np.ndarray, offsets: np.ndarray) -> ShingleSets:
    """CSR of unique shingles per document (sorted by document number) from per-document lists of 32-bit hashes."""
    doc_ids = np.asarray(doc_ids, dtype=np.int64)
    order = np.argsort(doc_ids, kind="stable")
    off, values = kernels.unique_sets(np.ascontiguousarray(hashes, dtype=np.uint32), np.asarray(offsets, dtype=np.int64), order)
    return ShingleSets(doc_ids[order], off, values)


def concat_sets(parts: list[ShingleSets]) -> ShingleSets:
    """Join CSR sets whose document numbers ascend from one part to the next."""
    if not parts:
        return ShingleSets(np.zeros(0, np.int64), np.zeros(1, np.int64), np.zeros(0, np.uint32))
    if len(parts) == 1:  # no copy: the candidates' sets are ~0.2 GB at 10^6 rows
        return parts[0]
    offs, base = [np.zeros(1, dtype=np.int64)], 0
    for p in parts:
        offs.append(p.offsets[1:] + base)
        base += len(p.values)
    return ShingleSets(np.concatenate([p.docs for p in parts]), np.concatenate(offs),
                       np.concatenate([p.values for p in parts]))


def jaccard(sets: ShingleSets, pairs: np.ndarray) -> np.ndarray:
    """Exact Jaccard of each pair's shingle sets (one set in a hash table, the other looked up in it)."""
    if len(pairs) == 0:
        return np.zeros(0, dtype=np.float64)
    return kernels.jaccard(sets.docs, sets.offsets, sets.values, np.ascontiguousarray(pairs, dtype=np.int64))


def components(n: int, pairs: np.ndarray) -> np.ndarray:
    """Union-find labels (the smallest member of each component) for n nodes joined by pairs."""
    label = np.arange(n, dtype=np.int64)
    if len(pairs) == 0:
        return label
    u, v = pairs[:, 0], pairs[:, 1]
    while True:
        m = np.minimum(label[u], label[v])
        before = label.copy()
        np.minimum.at(label, u, m)
        np.minimum.at(label, v, m)
        while True:  # pointer jumping: follow labels to their roots
            nxt = label[label]
            if np.array_equal(nxt, label):
                break
            label = nxt
        if np.array_equal(label, before):
            return label
