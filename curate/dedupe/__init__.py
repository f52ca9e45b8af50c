"""Exact and MinHash-LSH near-duplicate removal, role-aware keys, eval decontamination.

    from curate.dedupe import dedupe
    result = dedupe("train.parquet", "clean.parquet", on="user", threshold=0.8, against=["mt_bench.jsonl"])
"""

from __future__ import annotations

from curate.lazy import lazy

_WHERE = {
    "KEYS": "curate.dedupe.keys",
    "choose_bands": "curate.dedupe.minhash",
    "collision_probability": "curate.dedupe.minhash",
    "permutations": "curate.dedupe.minhash",
    "signatures": "curate.dedupe.minhash",
    "DedupeResult": "curate.dedupe.result",
    "output_paths": "curate.dedupe.result",
    "hashfunc": "curate.dedupe.shingle",
    "shingles_py": "curate.dedupe.shingle",
    "KEEP_RULES": "curate.dedupe.stage",
    "dedupe": "curate.dedupe.stage",
    "text_signatures": "curate.dedupe.stage",
}
__getattr__, __dir__ = lazy(__name__, _WHERE)
__all__ = sorted(_WHERE)
