"""`dedupe()`: exact, then MinHash-LSH near-duplicate removal, plus eval decontamination.

Three streaming passes keep memory flat: (1) keys, exact hashes and LSH band keys per row;
(2) shingle sets of candidate rows only, to verify candidate pairs by exact Jaccard;
(3) write kept and removed rows. Per row, only ~(8 * bands + 40) bytes live between passes.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curate.dedupe.alloc import reuse_freed_memory, small_pages
from curate.dedupe.keys import check_on, exact_hashes, key_tokens, shared_system_prompts, system_prompts
from curate.dedupe.minhash import band_hashes, choose_bands, collision_probability, signatures
from curate.dedupe.plan import decide
from curate.dedupe.shingle import minhash_inputs
from curate.dedupe.spill import ShingleSpill
from curate.errors import UsageError

KEEP_RULES = ("first", "longest", "origin")
DEFAULT_ORIGIN_PRIORITY = ("production", "seed", "eval", "synthetic")


class Source:
    """Rows to deduplicate: an in-memory table, a canonical Parquet file (streamed) or any raw input."""

    def __init__(self, data: pa.Table | str | Path, fmt: str = "auto"):
        self.path: Path | None = None
        self._pf: pq.ParquetFile | None = None
        self.table: pa.Table | None = None
        if isinstance(data, pa.Table):
            self.table = data
        else:
            from curate.dataset import canonical_parquet, open_parquet
            from curate.inputs import load_any

            self.path = Path(data)
            if not self.path.exists():
                raise UsageError(f"no such file: {self.path}")
            if canonical_parquet(self.path):
                # read column chunks through an 8 MiB buffer, and without pre-buffering: pre-buffering keeps every
                # row group's chunks of the read columns in memory until the reader goes (~2 GB more at 10M rows), and
                # an unbuffered read holds a whole compressed chunk (~250 MB for 1M rows of text); neither is faster here
                self._pf = open_parquet(self.path, pre_buffer=False, buffer_size=1 << 23)
            else:
                self.table = load_any(self.path, fmt=fmt)

    @property
    def rows(self) -> int:
        return self.table.num_rows if self.table is not None else self._pf.metadata.num_rows

    @property
    def schema(self) -> pa.Schema:
        return self.table.schema if self.table is not None else self._pf.schema_arrow

    def batches(self, size: int, columns: list[str] | None = None, *, keys_only: bool = False) -> Iterator[tuple[int, pa.Table]]:
        """(first row, table) per batch. keys_only: of `messages`, read only what keys are made of (role and
        content), which spares decoding the other message fields (a third of pass 1's Parquet time)."""
        start = 0
        if self.table is not None:
            t = self.table.select(columns) if columns else self.table
            for start in range(0, t.num_rows, size):
                yield start, t.slice(start, size)
            return
        if keys_only and columns and "messages" in columns:
            leaves = [c.path for c in self._pf.schema if c.path.startswith("messages.")
                      and c.path.count(".") == 3 and c.path.rsplit(".", 1)[1] in ("role", "content")]
            if len(leaves) == 2:
                columns = [x for c in columns for x in (leaves if c == "messages" else [c])]
        from curate.dataset import parquet_batches

        for rb in parquet_batches(self._pf, self.path, batch_size=size, columns=columns):
            yield start, pa.Table.from_batches([rb])
            start += rb.num_rows


def _check(on: str, shingle: str, ngram: int, num_perm: int, threshold: float, keep: str) -> None:
    check_on(on)
    if shingle not in ("word", "char"):
        raise UsageError(f"unknown --shingle {shingle!r}; choose word or char")
    if ngram < 1:
        raise UsageError(f"--ngram must be at least 1, got {ngram}")
    if num_perm < 2:
        raise UsageError(f"--num-perm must be at least 2, got {num_perm}")
    if not 0.0 < threshold <= 1.0:
        raise UsageError(f"--threshold must be in (0, 1], got {threshold}")
    if keep not in KEEP_RULES:
        raise UsageError(f"unknown --keep {keep!r}; choose one of: {', '.join(KEEP_RULES)}")


@reuse_freed_memory()
def dedupe(
    data: pa.Table | str | Path,
    output: str | Path | None = None,
    *,
    on: str = "user",
    shingle: str = "word",
    ngram: int = 5,
    num_perm: int = 128,
    threshold: float = 0.8,
    bands: int | None = None,
    rows_per_band: int | None = None,
    keep: str = "first",
    origin_priority: Sequence[str] = DEFAULT_ORIGIN_PRIORITY,
    against: Sequence[str | Path] | None = None,
    against_format: str = "auto",
    index_dir: str | Path | None = None,
    verify: bool = True,
    dry_run: bool = False,
    fmt: str = "auto",
    batch_size: int = 5_000,
    seed: int = 1,
    hash: str = "curate",
    long_ngram: int = 13,
    containment: float = 0.7,
    boilerplate_rows: int | None = None,
):
    """Remove exact and near-duplicate rows (and rows containing eval items); see the README, section `curate dedupe`."""
    from curate.dedupe.result import RowState, finish

    _check(on, shingle, ngram, num_perm, threshold, keep)
    if hash not in ("curate", "sha1"):
        raise UsageError(f"unknown --hash {hash!r}; choose curate (fast) or sha1 (datasketch's default hashfunc)")
    if (bands is None) != (rows_per_band is None):
        raise UsageError("give both --bands and --rows, or neither (they are chosen from --threshold)")
    if bands is None:
        bands, rows_per_band = choose_bands(threshold, num_perm)
    if bands * rows_per_band > num_perm:
        raise UsageError(f"--bands x --rows = {bands * rows_per_band} exceeds --num-perm {num_perm}")
    t0, c0 = time.perf_counter(), time.process_time()
    src = Source(data, fmt)
    config = {
        "on": on, "shingle": shingle, "ngram": ngram, "hash": hash, "num_perm": num_perm, "seed": seed,
        "bands": bands, "rows": rows_per_band, "threshold": threshold, "keep": keep,
        "origin_priority": list(origin_priority), "verify": verify,
        "recall_at_threshold": round(collision_probability(threshold, bands, rows_per_band), 4),
    }
    if dry_run:
        from curate.dedupe.decontam import REPORT_SCHEMA
        from curate.dedupe.dryrun import estimate
        from curate.dedupe.result import CLUSTER_SCHEMA, DedupeResult

        return DedupeResult(estimate(src, config, against, index_dir), CLUSTER_SCHEMA.empty_table(),
                            REPORT_SCHEMA.empty_table())

    shared: set[str] = set()
    if on == "conversation":
        counts: Counter = Counter()
        for _, batch in src.batches(batch_size, ["messages"], keys_only=True):
            counts.update(system_prompts(batch).to_pylist())
        shared = shared_system_prompts(counts)

    index = None
    if index_dir is not None:
        from curate.dedupe.index import LshIndex

        index = LshIndex(index_dir, config)
    matcher = None
    if against:
        from curate.dedupe.decontam import Matcher, load_eval

        matcher = Matcher(load_eval(list(against), against_format, long_ngram))

    with small_pages():  # see curate/dedupe/alloc.py
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
        for start, batch in src.batches(batch_size, columns, keys_only=True):
            keys, tok = key_tokens(batch, on, shared)
            sl = slice(start, start + batch.num_rows)
            exact[sl] = exact_hashes(tok)
            h32, offsets = minhash_inputs(tok, shingle, ngram, hash)
            spill.add(start, h32, offsets)
            sig = signatures(h32, offsets, num_perm, seed)
            band[sl] = band_hashes(sig, bands, rows_per_band)
            nonempty[sl] = np.diff(offsets) > 0
            if keep == "longest":
                length[sl] = keys.length
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
        contam = matcher.matches(containment, boilerplate_rows=boilerplate_rows) if matcher else []
        contaminated = np.zeros(n, dtype=bool)
        contaminated[[c["row"] for c in contam]] = True

        plan = decide(
            n=n,
            exact=exact,
            band=band,
            active=nonempty & ~contaminated,
            length=length,
            origins=(origin, list(origin_code)),
            keep=keep,
            origin_priority=origin_priority,
            threshold=threshold,
            verify=verify,
            index=index,
            load_sets=spill.sets,
            num_perm=num_perm,
            seed=seed,
        )
    plan.stats["seconds_pass1"] = round(t1 - t0, 3)
    plan.stats["seconds_pass2"] = round(time.perf_counter() - t1, 3)
    # CPU seconds of this process per phase: read + hash, decide (LSH, verify, clusters), write
    plan.stats["cpu_seconds"] = {"pass1": round(c1 - c0, 3), "decide": round(time.process_time() - c1, 3)}
    try:
        ids = pa.chunked_array(id_chunks).combine_chunks().cast(pa.string()) if id_chunks else pa.array([], pa.string())
        if index is None:  # band keys and exact hashes are needed after deciding only to extend an index:
            exact = band = None  # free them (~170 bytes a row, 1.7 GB at 10M rows) before writing
        state = RowState(ids, exact, band, nonempty, spill, contam)
        return finish(src, output, plan, state, config, index=index, matcher=matcher, shared=shared,
                      batch_size=batch_size, t0=t0)
    finally:
        spill.close()


def text_signatures(texts: Sequence[str], shingle: str = "word", ngram: int = 5, num_perm: int = 128,
                    seed: int = 1, hash: str = "curate") -> np.ndarray:
    """(len(texts), num_perm) uint32 MinHash signatures of plain texts, as `dedupe` computes them.

    With hash="sha1" they equal `datasketch.MinHash(num_perm, seed)` updated with
    `shingles_py(text)`; with the default hash, `MinHash(..., hashfunc=hashfunc(shingle))`.
    """
    from curate.dedupe.shingle import tokenize

    tok = tokenize(pa.array(list(texts), pa.string()), np.arange(len(texts)), len(texts))
    return signatures(*minhash_inputs(tok, shingle, ngram, hash), num_perm, seed)
