"""Exact and MinHash-LSH near-duplicate removal, role-aware keys, eval decontamination.

    from curate.dedupe import dedupe
    result = dedupe("train.parquet", "clean.parquet", on="user", threshold=0.8, against=["mt_bench.jsonl"])
    result.summary, result.clusters, result.removed, result.decontamination
"""

from __future__ import annotations

from curate.dedupe.keys import KEYS
from curate.dedupe.minhash import choose_bands, collision_probability, permutations, signatures
from curate.dedupe.result import DedupeResult, output_paths
from curate.dedupe.shingle import hashfunc, shingles_py
from curate.dedupe.stage import KEEP_RULES, dedupe, text_signatures

__all__ = [
    "KEEP_RULES",
    "KEYS",
    "DedupeResult",
    "choose_bands",
    "collision_probability",
    "dedupe",
    "hashfunc",
    "output_paths",
    "permutations",
    "shingles_py",
    "signatures",
    "text_signatures",
]
