"""`--dry-run`: estimate time and peak memory from a sample before doing the work."""

from __future__ import annotations

import resource
import time

from curate.dedupe.config import DedupeConfig
from curate.dedupe.keys import exact_hashes, key_tokens
from curate.dedupe.minhash import band_hashes, signatures
from curate.inputs import Input

SAMPLE = 2_000


def estimate(src: Input, cfg: DedupeConfig) -> dict:
    """Time the signature pass on a sample of rows and scale it; memory from per-row state sizes (cfg: bands chosen)."""
    from curate.dedupe.shingle import minhash_inputs

    n = src.rows
    sample_rows = tokens = 0
    elapsed = 0.0

    def pass1(batch) -> int:
        _, tok = key_tokens(batch, cfg.on, set())
        exact_hashes(tok)
        sig = signatures(*minhash_inputs(tok, cfg.shingle, cfg.ngram, cfg.hash), cfg.num_perm, cfg.seed)
        band_hashes(sig, cfg.bands, cfg.rows_per_band)
        return len(tok.hashes)

    for batch in src.batches(min(SAMPLE, max(n, 1)), ["id", "messages", "origin"]):
        # the first read decodes a whole row group and the first call warms up kernels: time neither,
        # and take the faster of two timed runs (a busy machine only ever adds time)
        pass1(batch)
        times = []
        for _ in range(2):
            t = time.perf_counter()
            tokens = pass1(batch)
            times.append(time.perf_counter() - t)
        elapsed = min(times)
        sample_rows = batch.num_rows
        break
    per_row = elapsed / max(sample_rows, 1)
    tok_per_row = tokens / max(sample_rows, 1)
    batch_rows = cfg.batch_size
    # state kept for every row between passes: band keys, exact hash, flags, length, id string
    state = n * (8 * cfg.bands + 16 + 8 + 1 + 80)
    # one batch in flight: tokens (hash, doc, offsets) + shingles + the signature matrix
    working = batch_rows * (tok_per_row * 8 * 6 + cfg.num_perm * 4 * 2) + 64 * 2**20
    # pass 2 holds shingle sets of candidate rows; assume a fifth of rows are candidates
    candidates = 0.2 * n * tok_per_row * 8 * 3
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    peak = base + state + working + candidates
    # pass 1's arithmetic measured; reading the input three times, verifying and writing add about
    # 2.4 times as much again (1M rows of the benchmark corpus: 7.5 s sampled, 25 CPU s in all)
    seconds = per_row * n * 3.4
    return {
        "input_rows": n,
        "sampled_rows": sample_rows,
        "tokens_per_row": round(tok_per_row, 1),
        "estimated_seconds": round(seconds, 1),
        "estimated_peak_rss_mib": round(peak / 2**20),
    }
