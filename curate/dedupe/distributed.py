"""`--engine ray` (without `--index`): dedupe's decision on the cluster too, with the local engine's answer.

plan.decide holds every row's exact hashes and band keys in the driver (~8 x bands + 40 bytes a row). Here they
stay where they were made, and the driver holds the edges and the rows that go:

  pass 1 (actors)  each batch is signed (signing.py) on an actor; its exact hashes, band keys, shingle hashes and
                   keep-rule values stay in the object store as one Block (owned by the driver); only the batch's
                   non-empty-key mask comes back.
  shuffle (tasks)  the active rows' (band, band key, row), split by (band, top bits of the key) into `parts`
                   partitions, and their exact hashes with their band 0 record -> per partition the exact groups'
                   edges (representative, row) as plan._exact_groups makes them, to the driver; then the
                   representatives' buckets -> their pairs by lsh.candidate_pairs' rules (the same top
                   key_bits(n) bits compared, the same window), split by pair.
  verify (tasks)   each pair partition asks the blocks for its rows' shingle sets (only those travel) and checks
                   its pairs: exact Jaccard, or the MinHash estimate with verify off -> the verified edges.
  driver           union-find over the exact and verified edges (its nodes: the rows in an edge), the keep rule
                   (rule values of those rows asked of the blocks), and the removed rows' Jaccard and estimate
                   against their kept row (those pairs checked on the blocks again).

Every step computes what plan.decide computes, only partitioned, so the Plan is equal (tests/test_ray_dedupe.py).
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate.dedupe import kernels, lsh
from curate.dedupe.config import DedupeConfig
from curate.dedupe.lsh import ShingleSets
from curate.dedupe.plan import Plan, Rows, decide, estimates
from curate.dedupe.signing import SignSettings, sign

ENABLED = True  # the benchmarks (and tests) turn it off to compare with the decision in the driver
WINDOW = 8  # lsh.candidate_pairs' bucket window
PART_RECORDS = 1 << 22  # about this many (band, key, row) records a partition: sets the number of partitions
GROUP_BLOCKS = 1  # groups of blocks asked for shingle sets, per partition
INLINE_BYTES = 128 << 10  # Ray returns smaller task results through the owner (the driver): keep shares above it
TOP_BITS = 11
GROUP_BATCHES = 8  # an actor reads a Parquet input's row group itself when it is at most this many batches  # key bits that place a band record: lsh.key_bits(n) is never fewer
_GOLD = np.uint64(0x9E3779B97F4A7C15)
_U64 = np.uint64


def wanted(cfg: DedupeConfig) -> bool:
    """Whether dedupe decides on the cluster: on the Ray engine, without an --index (that decision stays here)."""
    from curate.engine import current

    return ENABLED and current() == "ray" and cfg.index is None


@dataclass(frozen=True)
class BlockSettings:
    """What an actor needs to sign a batch into a Block."""

    sign: SignSettings
    keep: str
    origin_priority: tuple[str, ...]


@dataclass
class Block:
    """One signed batch, left in the object store: what deciding asks of its rows."""

    start: int  # the batch's first row in the input
    exact: np.ndarray  # (rows, 2) uint64 exact-key hashes
    band: np.ndarray  # (rows, bands) uint64 band keys
    hash32: np.ndarray  # uint32 shingle hashes, rows' runs adjacent
    offsets: np.ndarray  # rows + 1
    rule: np.ndarray | None  # int64 keep-rule value per row, the smallest kept (keep=longest, origin)

    @property
    def rows(self) -> int:
        return len(self.offsets) - 1

    def active(self, drop: np.ndarray) -> np.ndarray:
        """Rows (input row numbers) with a non-empty key, less the `drop` rows."""
        ok = np.diff(self.offsets) > 0
        ok[drop - self.start] = False
        return np.flatnonzero(ok) + self.start


def block_settings(state: BlockSettings) -> BlockSettings:
    """The engine's per-actor set-up: the settings themselves."""
    return state


def sign_block(s: BlockSettings, item: tuple[int, Any]) -> tuple[np.ndarray, Block]:
    """(non-empty-key mask, Block) of one batch (or of a ParquetRange the actor reads itself): the mask goes to the
    driver, the block stays in the cluster."""
    start, batch = item
    if not isinstance(batch, pa.Table):
        batch = batch.read()
    signed = sign(s.sign, batch)
    rule = None
    if s.keep == "longest":
        rule = -np.asarray(signed.length, dtype=np.int64)
    elif s.keep == "origin":
        rule = _origin_rank(batch.column("origin"), s.origin_priority)
    block = Block(start, signed.exact, signed.band, np.ascontiguousarray(signed.hash32, dtype=np.uint32),
                  np.asarray(signed.offsets, dtype=np.int64), rule)
    return np.diff(block.offsets) > 0, block


def _origin_rank(col: pa.ChunkedArray, priority: Sequence[str]) -> np.ndarray:
    """Each row's place in `priority` (as plan.decide ranks origins: an unnamed or missing origin comes last)."""
    prio = {o: i for i, o in enumerate(priority)}
    enc = pc.dictionary_encode(col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col)
    codes = np.array([prio.get(v, len(prio)) for v in enc.dictionary.to_pylist()] + [len(prio)], dtype=np.int64)
    return codes[np.asarray(pc.fill_null(enc.indices, -1), dtype=np.int64)]


# ------------------------------------------------------------------------------------------ the tasks


def _mix(x: np.ndarray) -> np.ndarray:
    return (x * _GOLD) >> _U64(40)


def _split(values: np.ndarray, part: np.ndarray, parts: int, as_returns: Callable = lambda t: t) -> Any:
    """values' rows by partition (order kept within each): a tuple of `parts` arrays, or the one array (the form
    of a task's `parts` return values; as_returns=tuple: always the tuple)."""
    order = np.argsort(part, kind="stable")
    out = tuple(np.split(values[order], np.searchsorted(part[order], np.arange(1, parts, dtype=part.dtype))))
    return out if parts > 1 or as_returns is tuple else out[0]


def band_split(block: Block, drop: np.ndarray, parts: int) -> Any:
    """Per partition: the (band, key, row) records of the block's active rows, rows ascending, by partition of
    (band, the key's top TOP_BITS bits), and their (exact hash 0, exact hash 1, row) by partition of their band 0
    record. Every bucket lsh.candidate_pairs compares (the top key_bits(n) >= TOP_BITS bits of one band's keys)
    is in one partition, and so is every exact group (equal token sequences have equal band keys)."""
    rows = block.active(drop)
    keys = block.band[rows - block.start]
    nb = keys.shape[1]
    rec = np.empty((keys.size, 3), dtype=np.uint64)
    rec[:, 0] = np.tile(np.arange(nb, dtype=np.uint64), len(rows))
    rec[:, 1] = keys.ravel()
    rec[:, 2] = np.repeat(rows.astype(np.uint64), nb)
    ex = np.empty((len(rows), 3), dtype=np.uint64)
    ex[:, :2] = block.exact[rows - block.start]
    ex[:, 2] = rows
    out = tuple(zip(_split(rec, _band_part(rec[:, 0], rec[:, 1], parts), parts, tuple),
                    _split(ex, _band_part(np.zeros(len(rows), np.uint64), keys[:, 0], parts), parts, tuple)))
    return out if parts > 1 else out[0]


def _band_part(band: np.ndarray, key: np.ndarray, parts: int) -> np.ndarray:
    return _mix((key >> _U64(64 - TOP_BITS)) ^ (band * _GOLD)) % _U64(parts)


def gather(*parts: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """One partition's exact edges, (representative, row) for each row with an equal exact key in an earlier row
    (the smallest: plan._exact_groups), and its (band, key, row) records, rows ascending within a band's."""
    rec = np.concatenate([p[0] for p in parts]) if parts else np.zeros((0, 3), dtype=np.uint64)
    ex = np.concatenate([p[1] for p in parts]) if parts else np.zeros((0, 3), dtype=np.uint64)
    ex = ex[np.lexsort((ex[:, 2], ex[:, 1], ex[:, 0]))]
    new = np.ones(len(ex), dtype=bool)
    new[1:] = (ex[1:, 0] != ex[:-1, 0]) | (ex[1:, 1] != ex[:-1, 1])
    first = np.maximum.accumulate(np.where(new, np.arange(len(ex)), 0))
    return np.stack([ex[first[~new], 2], ex[~new, 2]], axis=1).astype(np.int64), rec


def bucket_reduce(window: int, bits: int, parts: int, rec: np.ndarray, members: np.ndarray) -> Any:
    """Candidate pairs (smaller row first, unique) of one partition's buckets, as lsh.candidate_pairs makes them
    (the exact groups' representatives only; a bucket: one band's equal top `bits` key bits, members in row
    order; kernels.bucket_pairs' window rule), by partition of the pair."""
    rec = rec[~_isin_sorted(rec[:, 2].astype(np.int64), members)]
    if len(rec) < 2:
        return _split(np.zeros((0, 2), dtype=np.int64), np.zeros(0, dtype=np.uint64), parts)
    keys = rec[:, 1] >> _U64(64 - bits)
    if int(rec[:, 0].max()).bit_length() + bits <= 64:
        # the blocks came in input order, each listing its rows ascending: a stable sort of (band, key bits)
        # keeps a bucket's members in row order
        order = np.argsort((rec[:, 0] << _U64(bits)) | keys, kind="stable")
    else:
        order = np.lexsort((rec[:, 2], keys, rec[:, 0]))
    band, keys, rows = rec[order, 0], keys[order], rec[order, 2].astype(np.int64)
    n = len(rows)
    new = np.ones(n, dtype=bool)
    new[1:] = (band[1:] != band[:-1]) | (keys[1:] != keys[:-1])
    shift = max(int(n - 1).bit_length(), 1)
    packed = ((np.cumsum(new) - 1).astype(np.uint64) << _U64(shift)) | np.arange(n, dtype=np.uint64)
    out, k = kernels.bucket_pairs(packed, shift, window, np.empty((1024, 2), dtype=np.int64), 0)
    pairs = lsh._unique_pairs(rows[out[:k]])
    return _split(pairs, _pair_part(pairs, parts), parts)


def _isin_sorted(x: np.ndarray, sorted_values: np.ndarray) -> np.ndarray:
    if len(sorted_values) == 0:
        return np.zeros(len(x), dtype=bool)
    pos = np.minimum(np.searchsorted(sorted_values, x), len(sorted_values) - 1)
    return sorted_values[pos] == x


def _pair_part(pairs: np.ndarray, parts: int) -> np.ndarray:
    return _mix((pairs[:, 0].astype(np.uint64) * _GOLD) ^ pairs[:, 1].astype(np.uint64)) % _U64(parts)


def collect(bounds: np.ndarray, *parts: np.ndarray) -> tuple:
    """One partition's unique pairs, then its rows split by group of blocks (bounds: each group's first row, n)."""
    pairs = lsh._unique_pairs(np.concatenate(parts)) if parts else np.zeros((0, 2), dtype=np.int64)
    rows = np.unique(pairs)
    return (pairs, *np.split(rows, np.searchsorted(rows, bounds[1:-1])))


def sets_for(parts: int, *args: Any) -> tuple:
    """(rows asked for, then per partition the shingle sets of the rows it asked for) from a group's blocks.
    args: the partitions' rows (ascending), then the group's blocks (in input order)."""
    needs, blocks = args[:parts], args[parts:]
    asked = len(np.unique(np.concatenate(needs))) if needs else 0
    return (asked, *(_sets_of(rows, blocks) for rows in needs))


def _sets_of(rows: np.ndarray, blocks: Sequence[Block]) -> ShingleSets:
    """Unique shingle sets of `rows` (ascending, all in `blocks`), as ShingleSpill.sets makes them."""
    spans = []
    for b in blocks:
        lo, hi = np.searchsorted(rows, [b.start, b.start + b.rows])
        local = rows[lo:hi] - b.start
        spans.append((b, b.offsets[local], b.offsets[local + 1]))
    out = np.empty(int(sum((e - s).sum() for _, s, e in spans)), dtype=np.uint32)
    off = np.zeros(len(rows) + 1, dtype=np.int64)
    p = 0
    for b, s, e in spans:
        kernels.unique_into(b.hash32, s, e, out, off, p)
        p += len(s)
    return ShingleSets(np.asarray(rows, dtype=np.int64), off, out[: off[-1]])


def check(pairs: np.ndarray, threshold: float, verify: bool, num_perm: int, seed: int,
          *sets: ShingleSets) -> tuple[int, np.ndarray]:
    """(pairs, the pairs at or above the threshold): by exact Jaccard, or by MinHash estimate without verify."""
    s = lsh.concat_sets(list(sets))
    j = lsh.jaccard(s, pairs) if verify else estimates(s, pairs, num_perm, seed)
    return len(pairs), pairs[j >= threshold - 1e-12]


def measure(pairs: np.ndarray, verify: bool, num_perm: int, seed: int,
            *sets: ShingleSets) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(pairs, exact Jaccard (NaN without verify), MinHash estimate)."""
    s = lsh.concat_sets(list(sets))
    jac = lsh.jaccard(s, pairs) if verify else np.full(len(pairs), np.nan)
    return pairs, jac, estimates(s, pairs, num_perm, seed)


def rules_at(rows: np.ndarray, block: Block) -> np.ndarray:
    return block.rule[rows - block.start]


# ------------------------------------------------------------------------------------------ the driver


_REMOTE: dict[Callable, Any] = {}


def _task(fn: Callable, returns: int = 1) -> Any:
    if fn not in _REMOTE:
        from curate.ray_engine import require

        _REMOTE[fn] = require().remote(num_cpus=1)(fn)
    return _REMOTE[fn].options(num_returns=returns) if returns != 1 else _REMOTE[fn]


def _refs(out: Any, k: int) -> list:
    return out if k > 1 else [out]


def _by_block(rows: np.ndarray, starts: np.ndarray) -> list[np.ndarray]:
    """Sorted rows cut at the blocks' first rows."""
    return np.split(rows, np.searchsorted(rows, starts[1:-1]))


class ClusterDecision:
    """The blocks of pass 1 on the cluster, and the rounds of tasks that decide over them."""

    def __init__(self, blocks: list, starts: np.ndarray, cfg: DedupeConfig):
        from curate.ray_engine import require

        self.ray = require()
        self.blocks, self.starts, self.cfg = blocks, starts, cfg
        n, nb = int(starts[-1]), len(blocks)
        # enough partitions for about PART_RECORDS records each, but few enough that a block's share of a
        # partition stays above Ray's inline limit (100 KiB): smaller task results travel through the driver
        most = max(2, cfg.batch_size * cfg.bands * 24 // INLINE_BYTES)
        self.parts = min(max(2, cfg.workers or 1, math.ceil(n * cfg.bands / PART_RECORDS)), most)
        groups = min(nb, GROUP_BLOCKS * self.parts)
        self.group_first = np.linspace(0, nb, groups + 1).round().astype(np.int64)  # block index of each group
        self.bounds = starts[self.group_first]

    def buckets(self, contaminated: np.ndarray) -> tuple[np.ndarray, list]:
        """(exact edges, then the bucket partitions' records) of the active rows (less `contaminated`)."""
        p = self.parts
        drops = _by_block(contaminated, self.starts)
        split = [_refs(_task(band_split, p).remote(b, d, p), p) for b, d in zip(self.blocks, drops)]
        gathered = [_task(gather, 2).remote(*[s[i] for s in split]) for i in range(p)]
        del split
        return np.concatenate(self.ray.get([g[0] for g in gathered])), [g[1] for g in gathered]

    def candidate_parts(self, records: list, members: np.ndarray, reps: int) -> list[list]:
        """Per pair partition, the references of its candidate pairs (from every bucket partition)."""
        p = self.parts
        if reps < 2:
            return [[] for _ in range(p)]
        shift = max(int(reps - 1).bit_length(), 1)
        bits = lsh.key_bits(reps, shift)
        members_ref = self.ray.put(members)
        buckets = [_refs(_task(bucket_reduce, p).remote(WINDOW, bits, p, r, members_ref), p) for r in records]
        return [[b[i] for b in buckets] for i in range(p)]

    def with_sets(self, pair_parts: list[list], fn: Callable, *args: Any) -> tuple[list, list]:
        """fn(pairs, *args, *shingle sets of their rows) per pair partition, and per group of blocks the number
        of its rows asked for (references, both)."""
        p, g = self.parts, len(self.group_first) - 1
        col = [_refs(_task(collect, 1 + g).remote(self.bounds, *parts), 1 + g) for parts in pair_parts]
        sets = [_refs(_task(sets_for, 1 + p).remote(p, *[c[1 + k] for c in col],
                                                    *self.blocks[self.group_first[k]:self.group_first[k + 1]]), 1 + p)
                for k in range(g)]
        return [_task(fn).remote(c[0], *args, *[s[1 + i] for s in sets]) for i, c in enumerate(col)], [s[0] for s in sets]

    def rules(self, nodes: np.ndarray) -> np.ndarray:
        """The keep-rule values of rows `nodes` (ascending)."""
        cut = _by_block(nodes, self.starts)
        refs = [_task(rules_at).remote(r, b) for r, b in zip(cut, self.blocks) if len(r)]
        return np.concatenate(self.ray.get(refs)) if refs else np.zeros(0, dtype=np.int64)

    def measure(self, pairs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(exact Jaccard or NaN, estimate) of unique pairs (smaller row first), in their order."""
        cfg, p = self.cfg, self.parts
        part = _pair_part(pairs, p)
        put = [[self.ray.put(pairs[part == i])] for i in range(p)]
        refs, _ = self.with_sets(put, measure, cfg.verify, cfg.num_perm, cfg.seed)
        got = self.ray.get(refs)
        done = np.concatenate([g[0] for g in got])
        n = int(self.starts[-1])
        code = done[:, 0] * n + done[:, 1]
        sorter = np.argsort(code)
        at = sorter[np.searchsorted(code, pairs[:, 0] * n + pairs[:, 1], sorter=sorter)]
        return np.concatenate([g[1] for g in got])[at], np.concatenate([g[2] for g in got])[at]


def decide_on_cluster(blocks: list, starts: np.ndarray, nonempty: np.ndarray, contaminated: np.ndarray,
                      cfg: DedupeConfig) -> Plan:
    """plan.decide's Plan (no index) from the blocks of pass 1, deciding on the cluster."""
    n = len(nonempty)
    if n == 0:
        empty = Rows(np.zeros((0, 2), np.uint64), np.zeros((0, cfg.bands), np.uint64), np.zeros(0, bool),
                     np.zeros(0, np.int64), np.zeros(0, np.int32), [])
        return decide(empty, cfg, lambda rows: lsh.concat_sets([]))
    run = ClusterDecision(blocks, starts, cfg)
    exact_edges, records = run.buckets(contaminated)  # exact edges: (representative, row)
    by_member = np.argsort(exact_edges[:, 1])
    members, member_rep = exact_edges[by_member, 1], exact_edges[by_member, 0]
    reps = int(nonempty.sum()) - int(nonempty[contaminated].sum()) - len(members)

    pair_parts = run.candidate_parts(records, members, reps)
    checked, asked = run.with_sets(pair_parts, check, cfg.threshold, cfg.verify, cfg.num_perm, cfg.seed)
    del pair_parts, records
    got = run.ray.get(checked)
    candidates = sum(g[0] for g in got)
    near_edges = np.concatenate([g[1] for g in got]) if got else np.zeros((0, 2), np.int64)
    candidate_rows = int(sum(run.ray.get(asked)))

    # clusters and the keep rule, as plan.decide, over the rows in an edge only (m = 0: every node is new)
    edges = np.concatenate([exact_edges, near_edges]).astype(np.int64)
    nodes = np.unique(edges)
    labels = nodes[lsh.components(len(nodes), np.searchsorted(nodes, edges))]
    rule = run.rules(nodes) if cfg.keep in ("longest", "origin") else np.zeros(len(nodes), dtype=np.int64)
    order = np.lexsort((nodes, rule, labels))
    sn = nodes[order]
    lab = labels[order]
    first = np.ones(len(sn), dtype=bool)
    first[1:] = lab[1:] != lab[:-1]
    cluster = np.cumsum(first) - 1
    kept_sorted = sn[first][cluster]
    removed_nodes, kept_nodes = sn[~first], kept_sorted[~first]

    def rep(x: np.ndarray) -> np.ndarray:
        """The exact group's representative of each row (plan.decide's rep)."""
        if len(members) == 0:
            return x
        pos = np.minimum(np.searchsorted(members, x), len(members) - 1)
        return np.where(members[pos] == x, member_rep[pos], x)

    rr, rk = rep(removed_nodes), rep(kept_nodes)
    same = rr == rk
    jac = np.ones(len(removed_nodes))
    jest = np.ones(len(removed_nodes))
    if (~same).any():
        near_p = np.sort(np.stack([rr[~same], rk[~same]], axis=1), axis=1)
        uniq, inv = np.unique(near_p, axis=0, return_inverse=True)
        j, e = run.measure(uniq)
        jest[~same] = e[inv.ravel()]
        jac[~same] = j[inv.ravel()] if cfg.verify else np.nan
    cluster_of_row = np.full(n, -1, dtype=np.int64)
    cluster_of_row[sn] = cluster
    order_rows = np.argsort(removed_nodes, kind="stable")
    stats = {
        "candidate_pairs": int(candidates),
        "verified_pairs": len(near_edges),
        "rejected_candidates": int(candidates - len(near_edges)),
        "candidate_rows": candidate_rows,
    }
    return Plan(m=0, n=n, removed=removed_nodes[order_rows], reason=np.where(same, "exact", "near")[order_rows].tolist(),
                kept_node=kept_nodes[order_rows], jaccard=jac[order_rows], jaccard_est=jest[order_rows],
                cluster_of_row=cluster_of_row, cluster_kept=sn[first], stats=stats)


def _ranges_of(src: Any, batch_size: int) -> Any:
    """The FileId of a canonical Parquet input every node sees (curate.ray_io) and whose row groups are a few batches
    at most (an actor reads one whole: Parquet has no smaller unit to read), else None: the driver sends rows."""
    from curate.ray_io import parquet_ranges
    from curate.spool import Spooled

    if src.parquet is None or src.table is not None or isinstance(src, Spooled):
        return None  # a table, or a raw file's rows spooled to a nameless file of this machine
    meta = src.parquet.metadata
    if any(meta.row_group(g).num_rows > GROUP_BATCHES * batch_size for g in range(meta.num_row_groups)):
        return None
    return parquet_ranges(src.path)


def _key_columns(src: Any, columns: list[str]) -> list[str]:
    """result.batches' columns with keys_only: of `messages`, the role and content leaves only (when both exist)."""
    leaves = [c.path for c in src.parquet.schema if c.path.startswith("messages.")
              and c.path.count(".") == 3 and c.path.rsplit(".", 1)[1] in ("role", "content")]
    return [x for c in columns for x in (leaves if c == "messages" else [c])] if len(leaves) == 2 else columns


def dedupe_on_cluster(src: Any, output: str | Path | None, cfg: DedupeConfig, shared: set[str], matcher: Any,
                      recall: float, t0: float, c0: float) -> Any:
    """stage._dedupe's passes with the decision on the cluster: pass 1 on actors into blocks, deciding by tasks
    over them, pass 3 (writing) here. The driver keeps the ids, a non-empty flag a row, and the edges."""
    from curate.dedupe.result import RowState, batches, finish
    from curate.dedupe.spill import ShingleSpill
    from curate.engine import make

    n, keep = src.rows, cfg.keep
    columns = ["id", "messages"] + (["origin"] if keep == "origin" else [])
    settings = BlockSettings(SignSettings(cfg.on, frozenset(shared), cfg.shingle, cfg.ngram, cfg.hash, cfg.num_perm,
                                          cfg.seed, cfg.bands, cfg.rows_per_band, keep == "longest"),
                             keep, tuple(cfg.origin_priority))
    nonempty = np.zeros(n, dtype=bool)
    id_chunks: list[pa.Array] = []
    blocks: list = []
    starts: list[int] = []
    held: deque[tuple[int, pa.Table]] = deque()  # the batches being signed: their ids (and texts) are needed here
    # decontamination matches the texts here: then they are read here
    fid = _ranges_of(src, cfg.batch_size) if matcher is None else None

    def feed() -> Iterator[tuple[int, Any]]:
        if fid is not None:  # the driver reads the ids, each actor a row group's texts (curate.ray_io.ParquetRange)
            from curate.ray_io import ParquetRange

            leaves = tuple(c for c in _key_columns(src, columns) if c != "id")
            start = 0
            for g in range(src.parquet.num_row_groups):
                ids = src.parquet.read_row_group(g, columns=["id"])
                held.append((start, ids))
                yield start, ParquetRange(fid, start, ids.num_rows, leaves)
                start += ids.num_rows
            return
        for start, batch in batches(src, cfg.batch_size, columns, keys_only=True):
            held.append((start, batch))
            yield start, batch.drop_columns(["id"])  # the actor signs the messages (and origins) only

    with make(cfg.workers, block_settings, (settings,), threads=True) as engine:
        for mask, block in engine.map_held(sign_block, feed()):
            start, batch = held.popleft()
            nonempty[start : start + batch.num_rows] = mask
            id_chunks.extend(batch.column("id").chunks)
            if matcher is not None:
                matcher.add_batch(batch, start)
            blocks.append(block)
            starts.append(start)
    t1, c1 = time.perf_counter(), time.process_time()
    contam = matcher.matches(cfg.containment, boilerplate_rows=cfg.boilerplate_rows) if matcher else []
    contaminated = np.unique(np.array([c["row"] for c in contam], dtype=np.int64))
    plan = decide_on_cluster(blocks, np.array(starts + [n], dtype=np.int64), nonempty, contaminated, cfg)
    del blocks  # the object store frees them
    plan.stats["recall_at_threshold"] = recall
    plan.stats["seconds_pass1"] = round(t1 - t0, 3)
    plan.stats["seconds_pass2"] = round(time.perf_counter() - t1, 3)
    plan.stats["cpu_seconds"] = {"pass1": round(c1 - c0, 3), "decide": round(time.process_time() - c1, 3)}
    ids = pa.chunked_array(id_chunks).combine_chunks().cast(pa.string()) if id_chunks else pa.array([], pa.string())
    spill = ShingleSpill(0)  # finish reads shingles only to extend an index, and there is none here
    try:
        return finish(src, output, plan, RowState(ids, None, None, nonempty, spill, contam), cfg, index=None,
                      matcher=matcher, shared=shared, t0=t0)
    finally:
        spill.close()

