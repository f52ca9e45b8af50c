"""Exact and MinHash-LSH near-duplicate removal, role-aware keys, eval decontamination.

    from curate.dedupe import dedupe
    outcome = dedupe("train.parquet", "clean.parquet", threshold=0.8, against=["mt_bench.jsonl"])

    config.py   DedupeConfig: every setting, its default and range (the CLI's options and the recipe's keys)
    stage.py    dedupe(): pass 1 (keys, exact hashes, LSH band keys), then deciding, then writing
    plan.py     deciding: exact groups, verified candidate pairs, clusters, the keep rule
    result.py   pass 3: the kept and removed rows, clusters, decontamination matches; DedupeOutcome
    keys.py, shingle.py, minhash.py, lsh.py, kernels.py   keys, shingles, signatures, banding (compiled loops)
    decontam.py eval items and matching;  index.py  the persistent --index;  spill.py  shingles on disk
    dryrun.py   --dry-run's estimate;  alloc.py  allocator settings the CLI asks for;  render.py  what people see
    semantic.py --semantic: paraphrases by embeddings, verified by a lexical rule or (judge.py) a teacher as judge
"""

from __future__ import annotations

from curate.lazy import lazy

_WHERE = {
    "DedupeConfig": "curate.dedupe.config",
    "KEEP_RULES": "curate.dedupe.config",
    "KEYS": "curate.dedupe.config",
    "choose_bands": "curate.dedupe.minhash",
    "collision_probability": "curate.dedupe.minhash",
    "permutations": "curate.dedupe.minhash",
    "signatures": "curate.dedupe.minhash",
    "DedupeOutcome": "curate.dedupe.result",
    "output_paths": "curate.dedupe.result",
    "hashfunc": "curate.dedupe.shingle",
    "shingles_py": "curate.dedupe.shingle",
    "dedupe": "curate.dedupe.stage",
    "text_signatures": "curate.dedupe.stage",
}
__getattr__, __dir__ = lazy(__name__, _WHERE)
__all__ = sorted(_WHERE)
