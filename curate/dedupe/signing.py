"""Pass 1's work on one batch: keys, tokens, exact hashes, shingle hashes, MinHash signatures and band keys.

`sign(settings, batch)` depends on nothing but the batch and the settings, so batches can be signed on any
worker; `dedupe()` takes the results in input order, so its outputs do not depend on the number of workers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from curate.dedupe.keys import exact_hashes, key_tokens
from curate.dedupe.minhash import band_hashes, signatures
from curate.dedupe.shingle import minhash_inputs


@dataclass(frozen=True)
class SignSettings:
    """What signing a batch needs of the run's settings (the bands chosen, the shared system prompts)."""

    on: str
    shared: frozenset[str]
    shingle: str
    ngram: int
    hash: str
    num_perm: int
    seed: int
    bands: int
    rows_per_band: int
    lengths: bool  # key lengths, for keep="longest"


@dataclass
class Signed:
    """One batch's per-row results, rows in batch order."""

    exact: np.ndarray  # (rows, 2) uint64 exact-key hashes
    hash32: np.ndarray  # uint32 shingle hashes (MinHash inputs), rows' runs adjacent
    offsets: np.ndarray  # int64, rows + 1: row d's shingles are hash32[offsets[d]:offsets[d + 1]]
    band: np.ndarray  # (rows, bands) uint64 LSH band keys
    length: np.ndarray | None  # key characters per row, when settings.lengths


def settings_of(state: SignSettings) -> SignSettings:
    """The engine's per-worker set-up: the settings themselves."""
    return state


def sign(s: SignSettings, batch: pa.Table) -> Signed:
    """Everything pass 1 learns about the rows of `batch` (the compiled kernels release the GIL)."""
    keys, tok = key_tokens(batch, s.on, s.shared)
    exact = exact_hashes(tok)
    h32, offsets = minhash_inputs(tok, s.shingle, s.ngram, s.hash)
    band = band_hashes(signatures(h32, offsets, s.num_perm, s.seed), s.bands, s.rows_per_band)
    return Signed(exact, h32, offsets, band, keys.length if s.lengths else None)
