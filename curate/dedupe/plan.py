"""Decide which rows go: exact groups, verified LSH pairs, union-find clusters and the keep rule.

Node numbers are global: rows of an existing `--index` come first (0..m-1, always kept: they were
published by an earlier run), then this input's rows (m..m+n-1).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from curate.dedupe import kernels, lsh
from curate.dedupe.config import DedupeConfig
from curate.dedupe.minhash import permutations


@dataclass
class Plan:
    m: int  # rows in the index before this run
    n: int
    removed: np.ndarray  # local rows removed as duplicates
    reason: list[str]  # "exact" | "near", per removed row
    kept_node: np.ndarray  # global node each removed row duplicates
    jaccard: np.ndarray  # verified Jaccard vs the kept row (NaN when not verified)
    jaccard_est: np.ndarray
    cluster_of_row: np.ndarray  # cluster id per local row, -1 when in no cluster
    cluster_kept: np.ndarray  # kept global node per cluster id
    stats: dict = field(default_factory=dict)


def _exact_groups(act_all: np.ndarray, ex_all: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """rep[node] = smallest node with the same exact key; and the representatives (active, ascending)."""
    rep = kernels.exact_groups(np.ascontiguousarray(ex_all, dtype=np.uint64), np.asarray(act_all, dtype=np.bool_))
    nodes = np.flatnonzero(act_all)
    return rep, nodes[rep[nodes] == nodes]


def _known_or_new(query: np.ndarray, pairs: np.ndarray, values: np.ndarray, compute: Callable) -> np.ndarray:
    """values of `query` pairs (rows sorted) found among `pairs` (rows sorted, unique, in lexicographic order),
    and `compute` of the rest: a removed row's pair with its kept row is most often a candidate pair already."""
    width = max(int(max(pairs.max(initial=0), query.max(initial=0))).bit_length(), 1)
    if width > 31 or len(pairs) == 0:  # codes would not fit one int64
        return compute(query)
    codes = (pairs[:, 0] << width) | pairs[:, 1]  # ascending, as the pairs are
    want = (query[:, 0] << width) | query[:, 1]
    pos = np.minimum(np.searchsorted(codes, want), len(codes) - 1)
    found = codes[pos] == want
    out = np.empty(len(query))
    out[found] = values[pos[found]]
    if not found.all():
        out[~found] = compute(query[~found])
    return out


def estimates(sets: lsh.ShingleSets, pairs: np.ndarray, num_perm: int, seed: int, chunk: int = 1 << 16) -> np.ndarray:
    """MinHash estimates of pairs, from signatures of just the documents in them, a chunk of pairs at a
    time (signatures of every document at once would take num_perm * 4 bytes each: ~1 GB at 10M rows)."""
    out = np.zeros(len(pairs))
    a, b = permutations(num_perm, seed)
    for lo in range(0, len(pairs), chunk):
        q = pairs[lo : lo + chunk]
        docs = np.unique(q)
        k = np.searchsorted(sets.docs, docs)
        sig = kernels.signatures_at(sets.values, sets.offsets[k], sets.offsets[k + 1], a, b)
        out[lo : lo + len(q)] = kernels.equal_fraction(sig, np.searchsorted(docs, q[:, 0]), np.searchsorted(docs, q[:, 1]))
    return out


@dataclass
class Rows:
    """What pass 1 learned about every row of the input that deciding needs."""

    exact: np.ndarray  # (n, 2) uint64 exact-key hashes
    band: np.ndarray  # (n, bands) uint64 LSH band keys
    active: np.ndarray  # rows that take part: a non-empty key, not contaminated
    length: np.ndarray  # key characters per row (keep="longest" only, else empty)
    origin: np.ndarray  # origin code per row (keep="origin" only, else empty)
    origin_names: list[str | None]  # origin of each code

    @property
    def n(self) -> int:
        return len(self.active)


def decide(rows: Rows, cfg: DedupeConfig, load_sets: Callable[[np.ndarray], lsh.ShingleSets], index=None) -> Plan:
    """Which rows go and why: exact groups, verified candidate pairs, clusters, and cfg.keep's choice in each."""
    n, exact, band, active, length = rows.n, rows.exact, rows.band, rows.active, rows.length
    keep, threshold, verify, num_perm, seed = cfg.keep, cfg.threshold, cfg.verify, cfg.num_perm, cfg.seed
    m = index.rows if index is not None else 0
    total = m + n
    ex_all = np.concatenate([index.exact(), exact]) if m else exact
    band_all = np.concatenate([index.bands(band.shape[1]), band]) if m else band
    act_all = np.concatenate([np.ones(m, dtype=bool), active])
    rep, reps = _exact_groups(act_all, ex_all)
    members = np.flatnonzero(rep != np.arange(total))
    exact_edges = np.stack([rep[members], members], axis=1)
    exact_edges = exact_edges[exact_edges[:, 1] >= m]

    pairs = lsh.candidate_pairs(band_all, reps)
    pairs = pairs[pairs[:, 1] >= m]  # both ends old: decided by an earlier run
    cand = np.unique(pairs)
    old_c, new_c = cand[cand < m], cand[cand >= m]
    parts = []
    if m and len(old_c):
        d1, v1, o1 = index.sets(old_c)
        parts.append(lsh.build_sets(d1, v1, o1))
    new_sets = load_sets(new_c - m)
    new_sets.docs = new_sets.docs + m
    sets = lsh.concat_sets(parts + [new_sets])

    def est(p: np.ndarray) -> np.ndarray:
        return estimates(sets, p, num_perm, seed)

    # verified: estimates are only reported, for the removed rows' pairs below (a fraction of the candidates)
    pair_j = lsh.jaccard(sets, pairs) if verify else est(pairs)
    near_edges = pairs[pair_j >= threshold - 1e-12]
    labels = lsh.components(total, np.concatenate([exact_edges, near_edges]))

    sizes = np.bincount(labels, minlength=total)
    nodes = np.flatnonzero(sizes[labels] > 1)
    is_new = (nodes >= m).astype(np.int64)
    rule = np.zeros(len(nodes), dtype=np.int64)
    new_local = nodes - m
    if keep == "longest":
        rule = np.where(is_new == 1, -length[np.maximum(new_local, 0)], 0)
    elif keep == "origin":
        prio = {o: i for i, o in enumerate(cfg.origin_priority)}
        by_code = np.array([prio.get(name, len(prio)) for name in rows.origin_names] + [0], dtype=np.int64)
        rule = np.where(is_new == 1, by_code[rows.origin[np.maximum(new_local, 0)]], 0)
    order = np.lexsort((nodes, rule, is_new, labels[nodes]))
    sn = nodes[order]
    lab = labels[sn]
    first = np.ones(len(sn), dtype=bool)
    first[1:] = lab[1:] != lab[:-1]
    cluster = np.cumsum(first) - 1
    kept_sorted = sn[first][cluster]
    cluster_kept = sn[first]
    gone = (~first) & (sn >= m)
    removed_nodes, kept_nodes = sn[gone], kept_sorted[gone]
    same = rep[removed_nodes] == rep[kept_nodes]
    rp = np.stack([rep[removed_nodes], rep[kept_nodes]], axis=1)
    near_p = rp[~same]
    jac = np.ones(len(removed_nodes))
    jest = np.ones(len(removed_nodes))
    if len(near_p):
        near_p = np.sort(near_p, axis=1)
        jest[~same] = est(near_p)
        jac[~same] = _known_or_new(near_p, pairs, pair_j, lambda q: lsh.jaccard(sets, q)) if verify else np.nan
    cluster_of_row = np.full(n, -1, dtype=np.int64)
    new_members = sn >= m
    cluster_of_row[sn[new_members] - m] = cluster[new_members]
    order_rows = np.argsort(removed_nodes - m, kind="stable")
    stats = {
        "candidate_pairs": len(pairs),
        "verified_pairs": len(near_edges),
        "rejected_candidates": int(len(pairs) - len(near_edges)),
        "candidate_rows": len(new_c),
    }
    return Plan(
        m=m,
        n=n,
        removed=(removed_nodes - m)[order_rows],
        reason=np.where(same, "exact", "near")[order_rows].tolist(),
        kept_node=kept_nodes[order_rows],
        jaccard=jac[order_rows],
        jaccard_est=jest[order_rows],
        cluster_of_row=cluster_of_row,
        cluster_kept=cluster_kept,
        stats=stats,
    )
