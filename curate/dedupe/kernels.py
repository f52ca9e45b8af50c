"""Compiled (numba) loops for the per-token and per-shingle work of pass 1.

Each kernel is the definition the rest of `curate.dedupe` relies on: tests check the token and
shingle hashes against the pure-Python mirrors in `shingle` (`token_hash`, `shingle_hash_py`) and
the signatures against datasketch's own MinHash. Compiled code is cached on disk (numba's
`cache=True`), so only the first run on a machine pays the compile time (about 12 s).

All arithmetic is unsigned and wraps: every constant is a typed `np.uint64` / `np.uint32`, since
numba widens a mix of unsigned and signed Python ints to float.
"""

from __future__ import annotations

import numpy as np
from numba import njit

U64 = np.uint64
U32 = np.uint32
_S33 = U64(33)
_F1 = U64(0xFF51AFD7ED558CCD)
_F2 = U64(0xC4CEB9FE1A85EC53)
SEED_TOKEN = U64(0x9E3779B97F4A7C15)
SEED_SHINGLE = U64(0x243F6A8885A308D3)
MUL_A = U64(0xBF58476D1CE4E5B9)
_GOLD = U64(0x9E3779B97F4A7C15)
_EXACT2 = U64(0xC2B2AE3D27D4EB4F)
_ONE = U64(1)
_SWAR_A = U64(0x3F3F3F3F3F3F3F3F)
_SWAR_Z = U64(0x2525252525252525)
_SWAR_HIGH = U64(0x8080808080808080)


@njit(inline="always")
def _fmix64(h):
    h ^= h >> _S33
    h *= _F1
    h ^= h >> _S33
    h *= _F2
    return h ^ (h >> _S33)


@njit(inline="always")
def _fmix32(h):
    h = U32(h ^ (h >> U32(16)))
    h = U32(h * U32(0x85EBCA6B))
    h = U32(h ^ (h >> U32(13)))
    h = U32(h * U32(0xC2B2AE35))
    return U32(h ^ (h >> U32(16)))


@njit(inline="always")
def _load8(words, p, stop, ascii_lower):
    """The bytes p..min(p + 8, stop) - 1 of the buffer `words` holds, little-endian, zero-padded (and
    ASCII-lower-cased in SWAR fashion when `ascii_lower`: every byte is < 0x80 then)."""
    r = U64((p & 7) * 8)
    x = (words[p >> 3] >> r) | ((words[(p >> 3) + 1] << (U64(63) - r)) << _ONE)
    x &= ~U64(0) >> U64(64 - 8 * min(stop - p, 8))
    if ascii_lower:  # 0x41..0x5A (A-Z) are the bytes with b + 0x3F >= 0x80 and b + 0x25 < 0x80
        x |= (((x + _SWAR_A) & ~(x + _SWAR_Z)) & _SWAR_HIGH) >> U64(2)
    return x


@njit(cache=True, nogil=True)
def tokenize(data, rel, doc, ndocs, word_byte, ascii_lower):
    """Tokens of UTF-8 `data`; piece k is data[rel[k]:rel[k+1]] and belongs to document doc[k] (ascending).

    A token is a maximal run of word bytes (word_byte[b] == 1) inside one piece. Returns (ok, edges, hashes,
    counts); ok is False, and nothing done, when `ascii_lower` is asked of text with a non-ASCII byte.
    Token j spans data[edges[2j]:edges[2j + 1]], hashes[j] is `shingle.token_hash` of its bytes
    (ASCII-lower-cased first when `ascii_lower`), counts[d] is document d's number of tokens.

    Branch-light passes over the whole batch: mark token edges, compact their positions, hash each token
    from 8-byte loads (the seed xor its first word, then fmix64 before each further word and at the end).
    A byte-at-a-time state machine mispredicts at every token boundary and measured ~1.3x slower; the
    same passes run piece by piece in small reused buffers, ~1.8x slower.
    """
    n = len(data)
    if ascii_lower:
        seen = U32(0)
        for i in range(n):
            seen |= U32(data[i])
        if seen & U32(0x80):  # not ASCII after all: the caller normalises the text and asks again
            return False, np.zeros(0, np.int64), np.zeros(0, np.uint64), np.zeros(ndocs, np.int64)
    mark = np.empty(n + 1, np.uint8)  # 1: a token starts or ends at i; 2: one ends and the next starts
    prev = np.uint8(0)
    for i in range(n):
        f = word_byte[data[i]]
        mark[i] = f ^ prev
        prev = f
    mark[n] = prev
    for k in range(1, len(doc)):  # a piece boundary inside a run of word bytes splits the run
        p = rel[k]
        if 0 < p < n and word_byte[data[p]] & word_byte[data[p - 1]]:
            mark[p] = 2
    total = 0
    for i in range(n + 1):
        total += mark[i]
    edges = np.empty(total + 2, np.int64)
    t = 0
    for i in range(n + 1):
        edges[t] = i
        edges[t + 1] = i
        t += mark[i]
    ntok = t >> 1
    words = np.zeros((n >> 3) + 2, np.uint64)  # the bytes again, 8-aligned and padded for 8-byte loads
    words.view(np.uint8)[:n] = data
    hashes = np.empty(ntok, np.uint64)
    counts = np.zeros(ndocs, np.int64)
    k = 0
    for j in range(ntok):
        s = edges[2 * j]
        e = edges[2 * j + 1]
        while rel[k + 1] <= s:
            k += 1
        counts[doc[k]] += 1
        # a token never holds a zero byte, so its zero-padded 8-byte words identify it: a token of up to
        # 8 bytes (nearly all) costs one mix, and two such tokens never collide (fmix64 is a bijection)
        h = SEED_TOKEN ^ _load8(words, s, e, ascii_lower)
        p = s + 8
        while p < e:
            h = _fmix64(h) ^ _load8(words, p, e, ascii_lower)
            p += 8
        hashes[j] = _fmix64(h)
    return True, edges[: 2 * ntok], hashes, counts


@njit(cache=True, nogil=True)
def windows(values, counts, n, whole_if_short):
    """(shingle hashes, offsets): the fold of every run of n consecutive values within each document
    (documents contiguous in `values`, `counts` long); a shorter non-empty document is one shingle of
    all its values when whole_if_short."""
    off = _window_offsets(counts, n, whole_if_short)
    out = np.empty(off[-1], np.uint64)
    _fold_windows(values, counts, n, whole_if_short, off, out, U64(0))
    return out, off


@njit(cache=True, nogil=True)
def window_tops(values, counts, n, whole_if_short):
    """As `windows`, but only the top 32 bits of each hash (MinHash's input), as uint32: the 64-bit
    hashes are never stored, nor shifted and narrowed in a second pass."""
    off = _window_offsets(counts, n, whole_if_short)
    out = np.empty(off[-1], np.uint32)
    _fold_windows(values, counts, n, whole_if_short, off, out, U64(32))
    return out, off


@njit(inline="always")
def _window_offsets(counts, n, whole_if_short):
    ndocs = len(counts)
    off = np.zeros(ndocs + 1, np.int64)
    for d in range(ndocs):
        c = counts[d]
        m = c - n + 1 if c >= n else (min(c, 1) if whole_if_short else 0)
        off[d + 1] = off[d] + m
    return off


@njit(inline="always")
def _fold_windows(values, counts, n, whole_if_short, off, out, shift):
    """out[off[d]:off[d + 1]] = the window hashes of document d, >> shift (stored in out's integer type)."""
    longest = 0
    for d in range(len(counts)):
        longest = max(longest, counts[d])
    seg = np.empty(max(longest - n + 1, 1), np.uint64)
    seed = SEED_SHINGLE * MUL_A
    v0 = 0
    for d in range(len(counts)):
        c = counts[d]
        o = off[d]
        if c >= n:
            # one step of the fold across all the document's windows at a time: loops SIMD can run
            m = c - n + 1
            for k in range(m):
                seg[k] = seed ^ values[v0 + k]
            for j in range(1, n):
                vals = values[v0 + j : v0 + j + m]
                for k in range(m):
                    seg[k] = (seg[k] * MUL_A) ^ vals[k]
            for k in range(m):
                out[o + k] = _fmix64(seg[k]) >> shift
        elif c > 0 and whole_if_short:
            h = SEED_SHINGLE
            for j in range(c):
                h = (h * MUL_A) ^ values[v0 + j]
            out[o] = _fmix64(h) >> shift
        v0 += c


@njit(cache=True, nogil=True)
def signatures(hash32, offsets, a, b):
    """(ndocs, num_perm) uint32 datasketch affine32 signatures; hash32[offsets[d]:offsets[d+1]] are document d's."""
    return signatures_at(hash32, offsets[:-1], offsets[1:], a, b)


@njit(cache=True, nogil=True)
def signatures_at(hash32, starts, ends, a, b):
    """(len(starts), num_perm) uint32 datasketch affine32 signatures of hash32[starts[d]:ends[d]], d = 0, 1, ...

    Four shingles per sweep over the permutations: the running minima are loaded and stored a quarter
    as often, which halves the time of the one-shingle loop (the SIMD units, not memory, then bound it).
    """
    ndocs = len(starts)
    p = len(a)
    sig = np.empty((ndocs, p), np.uint32)
    acc = np.empty(p, np.uint32)
    for d in range(ndocs):
        acc[:] = U32(0xFFFFFFFF)
        s = starts[d]
        e = ends[d]
        while s + 4 <= e:
            h0 = _fmix32(hash32[s])
            h1 = _fmix32(hash32[s + 1])
            h2 = _fmix32(hash32[s + 2])
            h3 = _fmix32(hash32[s + 3])
            for k in range(p):
                ak, bk = a[k], b[k]
                m = min(min(U32(ak * h0 + bk), U32(ak * h1 + bk)), min(U32(ak * h2 + bk), U32(ak * h3 + bk)))
                acc[k] = min(acc[k], m)
            s += 4
        while s < e:
            hv = _fmix32(hash32[s])
            for k in range(p):
                acc[k] = min(acc[k], U32(a[k] * hv + b[k]))
            s += 1
        sig[d] = acc
    return sig


@njit(cache=True, nogil=True)
def band_hashes(sig, bands, rows):
    """(ndocs, bands) uint64 band keys, as `minhash.band_hashes`."""
    ndocs = sig.shape[0]
    out = np.empty((ndocs, bands), np.uint64)
    for d in range(ndocs):
        for i in range(bands):
            h = U64(i) * _GOLD
            for j in range(rows):
                h = (h * MUL_A) ^ U64(sig[d, i * rows + j])
            out[d, i] = _fmix64(h)
    return out


@njit(cache=True, nogil=True)
def exact_hashes(hashes, counts):
    """(ndocs, 2) uint64 order-sensitive hashes of each document's token sequence, as `keys.exact_hashes`
    (document d's tokens are the next counts[d] of `hashes`)."""
    ndocs = len(counts)
    out = np.zeros((ndocs, 2), np.uint64)
    t = 0
    for d in range(ndocs):
        a = U64(0)
        b = U64(0)
        for pos in range(counts[d]):
            a += _fmix64(hashes[t] ^ (U64(pos) * _GOLD))
            b += _fmix64(hashes[t] * _EXACT2 + U64(pos) + _ONE)
            t += 1
        out[d, 0] = a ^ U64(counts[d])
        out[d, 1] = b
    return out


@njit(cache=True, nogil=True)
def bucket_pairs(packed, shift, window, out, k):
    """Pairs of documents sharing a key in one band, from `packed` = sorted (key << shift | position).

    Within a run of equal keys (positions ascending), each member is paired with its `window`
    predecessors and, beyond those, with the run's first member. Pairs (smaller, larger position)
    are written to out[k:] (grown as needed); returns (out, new k).
    """
    mask = (U64(1) << U64(shift)) - U64(1)
    sh = U64(shift)
    n = len(packed)
    run_start = 0
    for i in range(1, n + 1):
        if i < n and (packed[i] >> sh) == (packed[run_start] >> sh):
            continue
        for j in range(run_start + 1, i):
            lo = max(run_start, j - window)
            need = j - lo + (1 if lo > run_start else 0)
            if k + need > out.shape[0]:
                grown = np.empty((max(2 * out.shape[0], k + need), 2), np.int64)
                grown[:k] = out[:k]
                out = grown
            pj = np.int64(packed[j] & mask)
            if lo > run_start:
                out[k, 0] = np.int64(packed[run_start] & mask)
                out[k, 1] = pj
                k += 1
            for q in range(lo, j):
                out[k, 0] = np.int64(packed[q] & mask)
                out[k, 1] = pj
                k += 1
        run_start = i
    return out, k


@njit(inline="always")
def _slot(v, mask):
    return np.int64(((U64(v) * _GOLD) >> U64(40)) & mask)


@njit(inline="always")
def _probe(v, keys, stamp, gen, size):
    """Slot of `v` in the open-addressing table of generation `gen`: where it is, or the free slot it goes in."""
    s = _slot(v, U64(size - 1))
    while stamp[s] == gen and keys[s] != v:
        s = (s + 1) & (size - 1)
    return s


@njit(inline="always")
def _table(size, need, keys, stamp):
    """An open-addressing table (size, keys, generation stamps) with room for need / 2 values."""
    if need <= size:
        return size, keys, stamp
    while size < need:
        size *= 2
    return size, np.empty(size, np.uint32), np.zeros(size, np.int64)


@njit(cache=True, nogil=True)
def jaccard(docs, offsets, values, pairs):
    """Exact Jaccard of each pair's unique value sets (CSR rows found by binary search in `docs`).

    The first row of a pair goes into an open-addressing table (kept while consecutive pairs share
    that row); the second row's values are looked up in it."""
    out = np.zeros(len(pairs), np.float64)
    size = 256
    keys = np.empty(size, np.uint32)
    stamp = np.zeros(size, np.int64)
    gen = 0
    last = -1
    for p in range(len(pairs)):
        ka = np.searchsorted(docs, pairs[p, 0])
        kb = np.searchsorted(docs, pairs[p, 1])
        i, ie = offsets[ka], offsets[ka + 1]
        j, je = offsets[kb], offsets[kb + 1]
        if ka != last:
            last = ka
            gen += 1
            size, keys, stamp = _table(size, 2 * (ie - i), keys, stamp)
            for q in range(i, ie):
                s = _probe(values[q], keys, stamp, gen, size)
                stamp[s] = gen
                keys[s] = values[q]
        inter = 0
        for q in range(j, je):
            inter += stamp[_probe(values[q], keys, stamp, gen, size)] == gen
        union = (ie - i) + (je - j) - inter
        out[p] = inter / union if union > 0 else 0.0
    return out


@njit(cache=True, nogil=True)
def unique_sets(values, offsets, order):
    """CSR of the unique values of segments order[0], order[1], ... (segment i: values[offsets[i]:offsets[i+1]]),
    each in first-seen order (see `unique_into`)."""
    out = np.empty(offsets[-1], np.uint32)
    off = np.zeros(len(order) + 1, np.int64)
    k = unique_into(values, offsets[order], offsets[order + 1], out, off, 0)
    return off, out[:k]


@njit(cache=True, nogil=True)
def unique_into(values, starts, ends, out, off, p0):
    """Write the unique values of each segment values[starts[i]:ends[i]], in first-seen order, to `out` from
    position off[p0] on; off[p0 + i + 1] is where segment i's values end. Returns that end for the last one.

    One open-addressing table serves every segment (~7x faster than sorting each)."""
    size = 256
    keys = np.empty(size, np.uint32)
    stamp = np.zeros(size, np.int64)
    k = off[p0]
    for i in range(len(starts)):
        lo, hi = starts[i], ends[i]
        size, keys, stamp = _table(size, 2 * (hi - lo), keys, stamp)
        gen = i + 1
        for q in range(lo, hi):
            v = values[q]
            s = _probe(v, keys, stamp, gen, size)
            if stamp[s] != gen:
                stamp[s] = gen
                keys[s] = v
                out[k] = v
                k += 1
        off[p0 + i + 1] = k
    return k


@njit(cache=True, nogil=True)
def equal_fraction(sig, a, b):
    """Per pair p, the share of positions where rows a[p] and b[p] of `sig` agree (MinHash's Jaccard estimate).

    Equal to (sig[a] == sig[b]).mean(axis=1) without its two (pairs x num_perm) temporaries."""
    out = np.empty(len(a), np.float64)
    width = sig.shape[1]
    for p in range(len(a)):
        x = sig[a[p]]
        y = sig[b[p]]
        same = 0
        for k in range(width):
            same += x[k] == y[k]
        out[p] = same / width
    return out


@njit(cache=True, nogil=True)
def _radix(src, dst, shift, nbits):
    """Sort `src` by its bits shift..shift + nbits - 1 (stable LSD radix, 11 bits per pass; all passes'
    counts in one read); `dst` is scratch of the same length. Returns whichever of the two holds the result."""
    n = len(src)
    npass = (nbits + 10) // 11
    mask = U64(2047)
    count = np.zeros((npass, 2049), np.int64)
    for i in range(n):
        v = src[i]
        for q in range(npass):
            count[q, ((v >> U64(shift + 11 * q)) & mask) + U64(1)] += 1
    for q in range(npass):
        c = count[q]
        for j in range(2048):
            c[j + 1] += c[j]
        sb = U64(shift + 11 * q)
        for i in range(n):
            d = (src[i] >> sb) & mask
            dst[c[d]] = src[i]
            c[d] += 1
        src, dst = dst, src
    return src


@njit(cache=True, nogil=True)
def sort_by_key(packed, shift):
    """`packed` (key << shift | position, positions ascending) sorted: a stable LSD radix sort on bits
    shift..63 only; equal keys keep their position order, so this equals np.sort."""
    return _radix(packed.copy(), np.empty_like(packed), shift, 64 - shift)


@njit(cache=True, nogil=True)
def band_sorted(keys, rows, shift, bits, src, dst):
    """keys[rows[i]] packed as (its top `bits` bits << shift | i), shift + bits <= 64, and sorted by those
    key bits with ties in position order, in the scratch arrays src / dst (the result is one of them)."""
    drop = U64(64 - bits)
    sh = U64(shift)
    for i in range(len(rows)):
        src[i] = ((keys[rows[i]] >> drop) << sh) | U64(i)
    return _radix(src, dst, shift, bits)


@njit(cache=True, nogil=True)
def exact_groups(ex, active):
    """rep[node] = smallest active node with the same (ex[:, 0], ex[:, 1]); inactive nodes are their own rep.

    Nodes are radix-sorted by the top bits of ex[:, 0] (ties in node order); inside each run, the
    few distinct full keys are told apart by comparing both words.
    """
    n = ex.shape[0]
    rep = np.arange(n)
    nodes = np.flatnonzero(active)
    m = len(nodes)
    if m == 0:
        return rep
    shift = 1
    while (1 << shift) < m:
        shift += 1
    low = U64((1 << shift) - 1)
    packed = np.empty(m, np.uint64)
    for p in range(m):
        packed[p] = (ex[nodes[p], 0] & ~low) | U64(p)
    packed = sort_by_key(packed, shift)
    keys0 = np.empty(8, np.uint64)
    keys1 = np.empty(8, np.uint64)
    reps = np.empty(8, np.int64)
    start = 0
    for i in range(1, m + 1):
        if i < m and (packed[i] & ~low) == (packed[start] & ~low):
            continue
        if i - start > 1:
            k = 0  # distinct full keys seen in this run, with their first (smallest) node
            for q in range(start, i):
                node = nodes[np.int64(packed[q] & low)]
                a, b = ex[node, 0], ex[node, 1]
                found = -1
                for j in range(k):
                    if keys0[j] == a and keys1[j] == b:
                        found = j
                        break
                if found >= 0:
                    rep[node] = reps[found]
                else:
                    if k == len(keys0):
                        keys0 = np.concatenate((keys0, keys0))
                        keys1 = np.concatenate((keys1, keys1))
                        reps = np.concatenate((reps, reps))
                    keys0[k], keys1[k], reps[k] = a, b, node
                    k += 1
        start = i
    return rep
