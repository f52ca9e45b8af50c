"""LSH banding over a whole band-key matrix at once, and exact Jaccard checks of candidate pairs.

Every band is sorted once; documents with equal keys in a band are candidates. A bucket of up to
`window + 1` documents yields all its pairs; in a larger bucket each document is paired with its
`window` neighbours and with the bucket's first member, which bounds the work on degenerate buckets
while union-find still joins them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


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
    """Sorted unique 64-bit shingle hashes of selected documents, in CSR form."""

    docs: np.ndarray  # global document numbers, sorted
    offsets: np.ndarray
    values: np.ndarray

    def size(self, docs: np.ndarray) -> np.ndarray:
        k = np.searchsorted(self.docs, docs)
        return self.offsets[k + 1] - self.offsets[k]


def build_sets(doc_ids: np.ndarray, hashes: np.ndarray, offsets: np.ndarray) -> ShingleSets:
    """CSR of unique shingles per document from per-document shingle lists."""
    counts = np.diff(offsets)
    owner = np.repeat(np.arange(len(counts)), counts)
    order = np.lexsort((hashes, owner))
    h, o = hashes[order], owner[order]
    keep = np.ones(len(h), dtype=bool)
    keep[1:] = (h[1:] != h[:-1]) | (o[1:] != o[:-1])
    h, o = h[keep], o[keep]
    new_off = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(np.bincount(o, minlength=len(counts)), out=new_off[1:])
    by_doc = np.argsort(doc_ids, kind="stable")
    sizes = np.diff(new_off)[by_doc]
    off = np.zeros(len(sizes) + 1, dtype=np.int64)
    np.cumsum(sizes, out=off[1:])
    return ShingleSets(np.asarray(doc_ids, dtype=np.int64)[by_doc], off, h[_ranges(new_off[:-1][by_doc], sizes)])


def jaccard(sets: ShingleSets, pairs: np.ndarray, chunk: int = 200_000) -> np.ndarray:
    """Exact Jaccard of each pair's shingle sets, vectorised: tag shared hashes by pair and count."""
    out = np.zeros(len(pairs), dtype=np.float64)
    for s in range(0, len(pairs), chunk):
        p = pairs[s : s + chunk]
        ka = np.searchsorted(sets.docs, p[:, 0])
        kb = np.searchsorted(sets.docs, p[:, 1])
        la = sets.offsets[ka + 1] - sets.offsets[ka]
        lb = sets.offsets[kb + 1] - sets.offsets[kb]
        tag = np.concatenate([np.repeat(np.arange(len(p)), la), np.repeat(np.arange(len(p)), lb)])
        idx = np.concatenate([_ranges(sets.offsets[ka], la), _ranges(sets.offsets[kb], lb)])
        vals = sets.values[idx]
        order = np.lexsort((vals, tag))
        tv, vv = tag[order], vals[order]
        dup = (tv[1:] == tv[:-1]) & (vv[1:] == vv[:-1])
        inter = np.bincount(tv[1:][dup], minlength=len(p))
        union = la + lb - inter
        out[s : s + len(p)] = np.where(union > 0, inter / np.maximum(union, 1), 0.0)
    return out


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenated arange(starts[i], starts[i] + lengths[i])."""
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    seg = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=seg[1:])
    return np.arange(total) - np.repeat(seg[:-1] - starts, lengths)


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
