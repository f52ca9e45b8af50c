"""`dedupe()`: exact, then MinHash-LSH near-duplicate removal, plus eval decontamination.

Three streaming passes keep memory flat: (1) keys, exact hashes and LSH band keys per row, batches signed on
`workers` threads (curate/dedupe/signing.py) and taken in input order; (2) shingle sets of candidate rows only,
to verify candidate pairs by exact Jaccard; (3) write kept and removed rows. Per row, only ~(8 * bands + 40)
bytes live between passes. A raw input is converted once, batch by batch, into a temporary canonical Parquet
(curate/spool.py) that the passes read.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Iterator, Mapping, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate.dedupe import distributed
from curate.dedupe.alloc import reuse_freed_memory, small_pages
from curate.dedupe.config import DedupeConfig
from curate.dedupe.keys import shared_system_prompts, system_prompts
from curate.dedupe.minhash import choose_bands, collision_probability, signatures
from curate.dedupe.plan import Rows, decide
from curate.dedupe.result import DedupeOutcome, RowState, batches, finish
from curate.dedupe.shingle import minhash_inputs
from curate.dedupe.signing import Signed, SignSettings, settings_of, sign
from curate.dedupe.spill import ShingleSpill
from curate.engine import current, default_workers, make
from curate.inputs import Input, open_input
from curate.spool import spooled

# a canonical Parquet input's column chunks are read through an 8 MiB buffer, without pre-buffering: pre-buffering
# keeps every row group's chunks of the read columns in memory until the reader goes (~2 GB more at 10M rows), and
# an unbuffered read holds a whole compressed chunk (~250 MB for 1M rows of text); neither is faster here
PARQUET_READ = {"pre_buffer": False, "buffer_size": 1 << 23}


def dedupe(data: pa.Table | str | Path, output: str | Path | None = None,
           config: DedupeConfig | Mapping[str, Any] | None = None, *, against: Sequence[str | Path] | None = (),
           dry_run: bool = False, cache_dir: str | Path | None = None, tune_allocator: bool = False,
           **overrides: Any) -> DedupeOutcome:
    """Remove exact and near-duplicate rows of `data` (and rows containing items of the `against` eval files).

    data: a canonical Parquet file, a table of canonical rows, or any file `curate ingest` reads (format: cfg.format).
    output: the kept rows' Parquet, with the removed rows, clusters, decontamination matches and dedupe.json beside
    it as one output set; None keeps everything in memory (the outcome's kept, rejected, clusters, decontamination).
    dry_run: time a sample and estimate time and peak memory; nothing is written (with semantic, the pairs it would
    remove are listed; the judge's cache is written, so the run after it pays nothing for them).
    cache_dir: with semantic_verifier judge, the judge's request cache (default beside the output: OUT.judge-cache/).
    tune_allocator: while the call lasts, let glibc and Arrow keep freed memory for the next batch and numpy ask for
    no transparent huge pages (curate/dedupe/alloc.py): process-wide settings, so only the caller that owns the
    process (the CLI, the benchmarks) should ask. The outputs are the same either way.
    See the README, section `curate dedupe`, for the settings (DedupeConfig) and the outputs.
    """
    cfg = DedupeConfig.build(config, **overrides)
    if cfg.bands is None:
        bands, rows_per_band = choose_bands(cfg.threshold, cfg.num_perm)
        cfg = cfg.model_copy(update={"bands": bands, "rows_per_band": rows_per_band})  # the settings used, recorded
    if cfg.workers is None:
        cfg = cfg.model_copy(update={"workers": default_workers()})
    if cfg.semantic and cfg.semantic_verifier == "judge":  # no cache folder: refused before any work
        from curate.score.judge import cache_folder

        cache_dir = cache_folder(output, cache_dir)
    t0, c0 = time.perf_counter(), time.process_time()
    src = open_input(data, cfg.format, **PARQUET_READ)
    with reuse_freed_memory() if tune_allocator else nullcontext(), \
            spooled(src, output, cfg.batch_size, cfg.workers, **PARQUET_READ) as src:
        if cfg.semantic:  # MinHash in memory, then paraphrases (curate/dedupe/semantic.py)
            from curate.dedupe.semantic import dedupe_semantic

            return dedupe_semantic(lambda dry: _dedupe(src, None, cfg, list(against or ()), dry, tune_allocator, t0, c0),
                                   output, cfg, list(against or ()), dry_run, cache_dir)
        return _dedupe(src, output, cfg, list(against or ()), dry_run, tune_allocator, t0, c0)


def _dedupe(src: Input, output: str | Path | None, cfg: DedupeConfig, against: list[str | Path], dry_run: bool,
            tune_allocator: bool, t0: float, c0: float) -> DedupeOutcome:
    bands, rows_per_band, keep = cfg.bands, cfg.rows_per_band, cfg.keep
    recall = round(collision_probability(cfg.threshold, bands, rows_per_band), 4)
    if dry_run:
        from curate.dedupe.dryrun import estimate

        return DedupeOutcome("dedupe", summary={"dry_run": True, **estimate(src, cfg), "recall_at_threshold": recall,
                                                "eval_files": [str(a) for a in against], "config": cfg.to_dict()})

    shared: set[str] = set()
    if cfg.on == "conversation":
        counts: Counter = Counter()
        for _, batch in batches(src, cfg.batch_size, ["messages"], keys_only=True):
            counts.update(system_prompts(batch).to_pylist())
        shared = shared_system_prompts(counts)

    index = None
    if cfg.index is not None:
        from curate.dedupe.index import LshIndex

        index = LshIndex(cfg.index, cfg)
    matcher = None
    if against:
        from curate.dedupe.decontam import Matcher, load_eval

        matcher = Matcher(load_eval(against, cfg.against_format, cfg.long_ngram, cfg.against_field or None))

    if distributed.wanted(cfg):  # --engine ray: deciding runs on the cluster too (curate/dedupe/distributed.py)
        with small_pages() if tune_allocator else nullcontext():
            return distributed.dedupe_on_cluster(src, output, cfg, shared, matcher, recall, t0, c0)

    with small_pages() if tune_allocator else nullcontext():  # see curate/dedupe/alloc.py
        # pass 1: exact hashes and band keys of every row
        n = src.rows
        exact = np.zeros((n, 2), dtype=np.uint64)
        # column-major: LSH reads one band of every row at a time (~0.07 s less at 1M than gathering a strided column)
        band = np.zeros((n, bands), dtype=np.uint64, order="F")
        nonempty = np.zeros(n, dtype=bool)
        length = np.zeros(n if keep == "longest" else 0, dtype=np.int64)
        id_chunks: list[pa.Array] = []  # row ids stay in Arrow: a Python list of 10M ids would cost ~700 MB
        # origin codes (into origin_code, so a million rows hold no strings), read only for keep="origin"
        origin = np.zeros(n if keep == "origin" else 0, dtype=np.int32)
        origin_code: dict[str | None, int] = {}
        spill = ShingleSpill(n)
        columns = ["id", "messages"] + (["origin"] if keep == "origin" else [])
        settings = SignSettings(cfg.on, frozenset(shared), cfg.shingle, cfg.ngram, cfg.hash, cfg.num_perm, cfg.seed,
                                bands, rows_per_band, keep == "longest")
        # threads, not processes: the kernels release the GIL, and a process pool would ship every batch's text
        # out and its shingle hashes back (benchmarks/RESULTS.md, section dedupe-workers)
        held: deque[pa.Table] = deque()  # the batches being signed: their ids, origins and texts are needed here

        def feed() -> Iterator[tuple[int, pa.Table]]:
            for start, batch in batches(src, cfg.batch_size, columns, keys_only=True):
                held.append(batch)
                yield start, batch

        with make(cfg.workers, settings_of, (settings,), threads=True, worth=cfg.workers > 1 or current() == "ray") \
                as engine:
            for start, signed in engine.map(_sign, feed()):
                batch = held.popleft()
                sl = slice(start, start + batch.num_rows)
                exact[sl] = signed.exact
                spill.add(start, signed.hash32, signed.offsets)
                band[sl] = signed.band
                nonempty[sl] = np.diff(signed.offsets) > 0
                if keep == "longest":
                    length[sl] = signed.length
                id_chunks.extend(batch.column("id").chunks)
                if keep == "origin":
                    enc = pc.dictionary_encode(batch.column("origin").combine_chunks())
                    codes = [origin_code.setdefault(v, len(origin_code)) for v in enc.dictionary.to_pylist()]
                    idx = np.asarray(pc.fill_null(enc.indices, -1), dtype=np.int64)
                    origin[sl] = np.where(idx >= 0, np.asarray(codes + [0], dtype=np.int32)[idx],
                                          origin_code.setdefault(None, len(origin_code)))
                if matcher is not None:
                    matcher.add_batch(batch, start)

        t1, c1 = time.perf_counter(), time.process_time()
        contam = matcher.matches(cfg.containment, boilerplate_rows=cfg.boilerplate_rows) if matcher else []
        contaminated = np.zeros(n, dtype=bool)
        contaminated[[c["row"] for c in contam]] = True
        plan = decide(Rows(exact, band, nonempty & ~contaminated, length, origin, list(origin_code)), cfg, spill.sets,
                      index)
    plan.stats["recall_at_threshold"] = recall
    plan.stats["seconds_pass1"] = round(t1 - t0, 3)
    plan.stats["seconds_pass2"] = round(time.perf_counter() - t1, 3)
    # CPU seconds of this process per phase: read + hash, decide (LSH, verify, clusters), write
    plan.stats["cpu_seconds"] = {"pass1": round(c1 - c0, 3), "decide": round(time.process_time() - c1, 3)}
    try:
        ids = pa.chunked_array(id_chunks).combine_chunks().cast(pa.string()) if id_chunks else pa.array([], pa.string())
        if index is None:  # band keys and exact hashes are needed after deciding only to extend an index:
            exact = band = None  # free them (~170 bytes a row, 1.7 GB at 10M rows) before writing
        state = RowState(ids, exact, band, nonempty, spill, contam)
        return finish(src, output, plan, state, cfg, index=index, matcher=matcher, shared=shared, t0=t0)
    finally:
        spill.close()


def _sign(settings: SignSettings, item: tuple[int, pa.Table]) -> tuple[int, Signed]:
    start, batch = item
    return start, sign(settings, batch)


def text_signatures(texts: Sequence[str], shingle: str = "word", ngram: int = 5, num_perm: int = 128,
                    seed: int = 1, hash: str = "curate") -> np.ndarray:
    """(len(texts), num_perm) uint32 MinHash signatures of plain texts, as `dedupe` computes them.

    With hash="sha1" they equal `datasketch.MinHash(num_perm, seed)` updated with
    `shingles_py(text)`; with the default hash, `MinHash(..., hashfunc=hashfunc(shingle))`.
    """
    from curate.dedupe.shingle import tokenize

    tok = tokenize(pa.array(list(texts), pa.string()), np.arange(len(texts)), len(texts))
    return signatures(*minhash_inputs(tok, shingle, ngram, hash), num_perm, seed)
