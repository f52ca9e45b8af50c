"""LSH banding over a whole band-key matrix at once, and exact Jaccard checks of candidate pairs.

Every band is sorted once; documents with equal keys in a band are candidates. A bucket of up to
`window + 1` documents yields all its pairs; in a larger bucket each document is paired with its
`window` neighbours and with the bucket's first member, which bounds the work on degenerate buckets
while union-find still joins them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from curate.dedupe.shingle import ranges as _ranges


def candidate_pairs(bands: np.ndarray, docs: np.ndarray, window: int = 8) -> np.ndarray:
    """(P, 2) int64 unique pairs (i < j) of entries of `docs` sharing a band key in `bands` (rows align with docs)."""
    found: list[np.ndarray] = []
    if len(docs) < 2:
        return np.zeros((0, 2), dtype=np.int64)
    for b in range(bands.shape[1]):
        order = np.argsort(bands[:, b], kind="stable")
        vals = bands[order, b]
        new_run = np.empty(len(vals), dtype=bool)
        new_run[0] = True
        new_run[1:] = vals[1:] != vals[:-1]
        if new_run.all():
            continue
        run = np.cumsum(new_run)
        ids = docs[order]
        for d in range(1, window + 1):
            same = run[d:] == run[:-d]
            if not same.any():
                break
            found.append(np.stack([ids[:-d][same], ids[d:][same]], axis=1))
        run_first = np.flatnonzero(new_run)
        first_of = ids[run_first[run - 1]]
        rank = np.arange(len(vals)) - run_first[run - 1]
        far = rank > window
        if far.any():
            found.append(np.stack([first_of[far], ids[far]], axis=1))
    if not found:
        return np.zeros((0, 2), dtype=np.int64)
    pairs = np.concatenate(found)
    pairs.sort(axis=1)
    return np.unique(pairs, axis=0)


def query_pairs(bands: np.ndarray, ref_bands: np.ndarray) -> np.ndarray:
    """(P, 2) unique (query row, reference row) pairs sharing any band key (small reference sets)."""
    found = []
    for b in range(bands.shape[1]):
        order = np.argsort(ref_bands[:, b], kind="stable")
        ref_sorted = ref_bands[order, b]
        lo = np.searchsorted(ref_sorted, bands[:, b], side="left")
        hi = np.searchsorted(ref_sorted, bands[:, b], side="right")
        hit = np.flatnonzero(hi > lo)
        for q in hit:  # hits are rare: a reference set is an eval set, far smaller than the data
            for k in range(lo[q], hi[q]):
                found.append((q, order[k]))
    if not found:
        return np.zeros((0, 2), dtype=np.int64)
    return np.unique(np.asarray(found, dtype=np.int64), axis=0)


@dataclass
class ShingleSets:
    """Sorted unique 32-bit shingle hashes (the MinHash inputs) of selected documents, in CSR form.

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
    counts = np.diff(offsets)
    rank = np.empty(len(doc_ids), dtype=np.uint64)
    rank[np.argsort(doc_ids, kind="stable")] = np.arange(len(doc_ids), dtype=np.uint64)
    h32 = np.asarray(hashes, dtype=np.uint32).astype(np.uint64)
    # one sort of (document rank, hash) packed in a uint64 orders and groups everything at once
    key = np.sort((np.repeat(rank, counts) << np.uint64(32)) | h32)
    keep = np.ones(len(key), dtype=bool)
    keep[1:] = key[1:] != key[:-1]
    key = key[keep]
    owner = (key >> np.uint64(32)).astype(np.int64)
    off = np.zeros(len(doc_ids) + 1, dtype=np.int64)
    np.cumsum(np.bincount(owner, minlength=len(doc_ids)), out=off[1:])
    return ShingleSets(np.sort(doc_ids), off, (key & np.uint64(0xFFFFFFFF)).astype(np.uint32))


def concat_sets(parts: list[ShingleSets]) -> ShingleSets:
    """Join CSR sets whose document numbers ascend from one part to the next."""
    if not parts:
        return ShingleSets(np.zeros(0, np.int64), np.zeros(1, np.int64), np.zeros(0, np.uint32))
    offs, base = [np.zeros(1, dtype=np.int64)], 0
    for p in parts:
        offs.append(p.offsets[1:] + base)
        base += len(p.values)
    return ShingleSets(np.concatenate([p.docs for p in parts]), np.concatenate(offs),
                       np.concatenate([p.values for p in parts]))


def jaccard(sets: ShingleSets, pairs: np.ndarray, chunk: int = 20_000) -> np.ndarray:
    """Exact Jaccard of each pair's shingle sets, vectorised: tag both sides' hashes by pair, sort, count repeats."""
    out = np.zeros(len(pairs), dtype=np.float64)
    for s in range(0, len(pairs), chunk):
        p = pairs[s : s + chunk]
        ka = np.searchsorted(sets.docs, p[:, 0])
        kb = np.searchsorted(sets.docs, p[:, 1])
        la = sets.offsets[ka + 1] - sets.offsets[ka]
        lb = sets.offsets[kb + 1] - sets.offsets[kb]
        tag = np.arange(len(p), dtype=np.uint64)
        vals = np.concatenate([sets.values[_ranges(sets.offsets[ka], la)], sets.values[_ranges(sets.offsets[kb], lb)]])
        key = np.sort((np.concatenate([np.repeat(tag, la), np.repeat(tag, lb)]) << np.uint64(32)) | vals.astype(np.uint64))
        dup = key[1:] == key[:-1]
        inter = np.bincount((key[1:][dup] >> np.uint64(32)).astype(np.int64), minlength=len(p))
        union = la + lb - inter
        out[s : s + len(p)] = np.where(union > 0, inter / np.maximum(union, 1), 0.0)
    return out


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
