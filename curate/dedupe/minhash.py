"""Batched MinHash signatures bit-identical to datasketch 2.x's default `affine32` scheme.

datasketch's MinHash(num_perm, seed) draws `a` (odd) and `b` from numpy.random.RandomState(seed),
pre-mixes each 32-bit input hash with the MurmurHash3 32-bit finaliser, and keeps
min(a * h + b mod 2**32) per permutation as uint32. The same arithmetic runs here over whole
batches of documents in a compiled loop (`kernels.signatures`), with no Python call per shingle.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from curate.dedupe import kernels


@lru_cache(maxsize=8)
def permutations(num_perm: int = 128, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(a, b) as datasketch.MinHash(num_perm, seed, scheme='affine32') generates them."""
    gen = np.random.RandomState(seed)
    a = gen.randint(0, 1 << 31, num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
    b = gen.randint(0, 1 << 32, num_perm, dtype=np.uint32)
    return a, b


def signatures(hash32: np.ndarray, offsets: np.ndarray, num_perm: int = 128, seed: int = 1) -> np.ndarray:
    """(ndocs, num_perm) uint32 signatures; hash32[offsets[d]:offsets[d+1]] are document d's shingle hashes.

    Per shingle: h = fmix32(hash32), then min over documents' shingles of (a_k * h + b_k) mod 2^32.
    """
    a, b = permutations(num_perm, seed)
    return kernels.signatures(np.ascontiguousarray(hash32, dtype=np.uint32), np.asarray(offsets, dtype=np.int64), a, b)


def collision_probability(j: float, bands: int, rows: int) -> float:
    """P(a pair with Jaccard j shares at least one band) = 1 - (1 - j^r)^b."""
    return 1.0 - (1.0 - j**rows) ** bands


def choose_bands(threshold: float, num_perm: int, recall: float = 0.99) -> tuple[int, int]:
    """(bands, rows) with the most rows per band (fewest false candidates) that still catch a pair
    at exactly `threshold` with probability >= `recall`. Candidates are verified afterwards, so
    false candidates cost time, never correctness."""
    best = (num_perm, 1)
    for rows in range(1, num_perm + 1):
        bands = num_perm // rows
        if bands < 1:
            break
        if collision_probability(threshold, bands, rows) >= recall:
            best = (bands, rows)
    return best


def band_hashes(sig: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """(ndocs, bands) uint64 keys: two documents share key i iff (barring 2^-64 collisions) band i matches.

    Key i is fmix64 of the multiply-xor chain, seeded with i * golden ratio, over sig[:, i*rows:(i+1)*rows].
    """
    if bands * rows > sig.shape[1]:
        raise ValueError(f"bands*rows = {bands * rows} exceeds num_perm = {sig.shape[1]}")
    return kernels.band_hashes(np.ascontiguousarray(sig, dtype=np.uint32), bands, rows)

