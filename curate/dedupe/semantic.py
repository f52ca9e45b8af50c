"""`dedupe --semantic`: after the MinHash pass, remove paraphrases of kept rows and of eval items.

The kept rows' key texts (the key `on` picks) are embedded with the report's embedder (curate/report/embed.py);
every pair above `semantic_threshold` cosine is found by exact search in tiles (a matmul per 2048 x 2048 block, so
memory is bounded; time grows as rows squared), or above ANN_ROWS rows by a faiss inverted-file index, and
checked before anything is removed: embeddings put "same topic, different question" pairs ("reset" / "change my
password", Spanish / French) close together, and the verifier refuses those: a lexical rule, or a teacher as judge
(curate/dedupe/judge.py; README, section Semantic duplicates, has the measured precision and recall of both).
Removal is a star, not a chain: each removed row was verified directly against the row it names as kept, so the
scores it carries are its own.
"""

from __future__ import annotations

import importlib.util
import re
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate.dedupe.config import DedupeConfig
from curate.dedupe.keys import extract, shared_system_prompts, system_prompts
from curate.errors import UsageError

CHUNK = 2048  # the exact search's tile: 2048 x 2048 float32 cosines (16 MiB) at a time, whatever the row count
ANN_ROWS = 500_000  # above this many rows the self-search is faiss's inverted-file index (benchmarks/bench_semantic.py)
NPROBE = 16  # cells each row probes in that index
TRAIN_PER_CELL = 64  # k-means training rows per cell
QUERY_BLOCK = 16_384  # rows range-searched at a time: bounds the result lists held at once
EXTRA = [pa.field("dedupe_cosine", pa.float64()), pa.field("dedupe_overlap", pa.float64())]
# the clusters table's columns with --semantic, one value per member (null for MinHash's): cosine, word overlap and
# the verifier's verdict against the kept row
CLUSTER_EXTRA = [pa.field("cosine", pa.list_(pa.float64())), pa.field("overlap", pa.list_(pa.float64())),
                 pa.field("verdict", pa.list_(pa.string()))]

NUMBER_WORDS = {w: str(i) for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve".split())}  # noqa: SIM905
# function words and the verbs that frame a request ("write", "explain", "how do you say"): two wordings of one
# request differ in these, so they are not content
STOP = frozenset("""a an the and or of to in on at for from by with about into as is are was were be been being do does
did have has had i me my we our you your it its this that these those there here what which who whom whose when where
why how can could would should will shall may might must please let lets s t just some any all each so than then very
give tell write compose explain describe list name suggest show say make create provide come up way best""".split())  # noqa: SIM905
TOKEN = re.compile(r"[^\W\d_][\w'-]*|\d+(?:[.,]\d+)*")


@dataclass(frozen=True)
class Lexical:
    """The parts of a text the verifier compares: content-word stems, numbers, and capitalised names."""

    words: frozenset[str]
    numbers: frozenset[str]
    names: frozenset[str]


def _stem(word: str) -> str:
    for suffix in ("ing", "ed", "es", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word


def lexical(text: str) -> Lexical:
    """Content words (stemmed, number words as digits), numbers, and names (capitalised, not sentence-initial)."""
    words, numbers, names = set(), set(), set()
    sentence_start = True
    for match in TOKEN.finditer(text):
        token = match.group()
        for part in filter(None, token.split("-")):
            word = part.lower().removesuffix("'s").strip("'")
            word = NUMBER_WORDS.get(word, word)
            if word[:1].isdigit():
                numbers.add(word.replace(",", ""))
                words.add(word)
                continue
            if word in STOP:
                continue
            if part[:1].isupper() and not sentence_start:
                names.add(word)
            words.add(_stem(word))
        sentence_start = text[match.end(): match.end() + 2].lstrip(" ")[:1] in (".", "?", "!", "\n")
    return Lexical(frozenset(words), frozenset(numbers), frozenset(names))


def overlap(a: Lexical, b: Lexical) -> float:
    """Jaccard of the content-word sets."""
    union = len(a.words | b.words)
    return round(len(a.words & b.words) / union, 4) if union else 1.0


def verdict(cosine: float, a: Lexical, b: Lexical, cfg: DedupeConfig) -> tuple[bool, str]:
    """Whether a candidate pair is one request worded twice, and why."""
    if not cfg.semantic_verify:
        return True, "cosine only"
    if cosine >= cfg.semantic_high:
        return True, f"cosine >= {cfg.semantic_high}"
    if a.numbers != b.numbers:
        return False, f"numbers differ: {sorted(a.numbers ^ b.numbers)}"
    if a.names != b.names:
        return False, f"names differ: {sorted(a.names ^ b.names)}"
    only_a, only_b = a.words - b.words, b.words - a.words
    if len(only_a) == 1 and len(only_b) == 1:  # one content word swapped in the same frame: another question
        return False, f"one word swapped: {next(iter(only_a))} / {next(iter(only_b))}"
    return True, "numbers, names agree; no single-word swap"


def candidate_pairs(vecs: np.ndarray, threshold: float, other: np.ndarray | None = None,
                    chunk: int = CHUNK) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(i, j, cosine) with cosine >= threshold, sorted by (i, j): pairs i < j within `vecs`, or (row of vecs, row
    of other). Exact: every pair's cosine is computed, a chunk x chunk tile at a time (only tiles on or above the
    diagonal within `vecs`), so memory stays one tile whatever the number of rows."""
    ii, jj, cc = [], [], []
    target = vecs if other is None else other
    for r in range(0, len(vecs), chunk):
        rows = vecs[r: r + chunk]
        for c in range(r if other is None else 0, len(target), chunk):
            sims = rows @ target[c: c + chunk].T
            i, j = np.nonzero(sims >= threshold)
            if other is None and c == r:  # the diagonal tile: each pair once, j > i
                i, j = i[j > i], j[j > i]
            if len(i):
                ii.append(i + r)
                jj.append(j + c)
                cc.append(sims[i, j])
    if not ii:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    i, j, cos = np.concatenate(ii), np.concatenate(jj), np.concatenate(cc)
    order = np.lexsort((j, i))
    return i[order], j[order], cos[order]


def ann_pairs(vecs: np.ndarray, threshold: float, nprobe: int = NPROBE, nlist: int | None = None,
              seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The pairs of `candidate_pairs(vecs, threshold)`, approximately: a faiss inverted-file index (k-means cells)
    range-searched from every row, `nprobe` cells per row. A pair is found when either row's probed cells hold the
    other; each found pair's cosine is recomputed exactly, so every pair returned is a true one: precision 1, recall up to 1."""
    import faiss

    n, dim = vecs.shape
    nlist = nlist or ivf_cells(n)
    rng = np.random.default_rng(seed)
    sample = vecs[np.sort(rng.choice(n, size=min(n, TRAIN_PER_CELL * nlist), replace=False))]
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
    index.cp.seed = seed
    index.train(sample)
    index.add(vecs)
    index.nprobe = min(nprobe, nlist)
    lo, hi = [], []
    for start in range(0, n, QUERY_BLOCK):
        lims, _, labels = index.range_search(vecs[start: start + QUERY_BLOCK], threshold - 1e-4)
        q = np.repeat(np.arange(start, start + len(lims) - 1), np.diff(lims.astype(np.int64)))
        found = labels != q
        lo.append(np.minimum(q, labels)[found])
        hi.append(np.maximum(q, labels)[found])
    key = np.unique(np.concatenate(lo) * n + np.concatenate(hi)) if lo else np.zeros(0, np.int64)
    i, j = key // n, key % n
    cos = np.einsum("ij,ij->i", vecs[i], vecs[j]) if len(key) else np.zeros(0, np.float32)
    keep = cos >= threshold
    return i[keep], j[keep], cos[keep]


def ivf_cells(n: int) -> int:
    """Cells of the inverted-file index for n rows: about 4 sqrt(n), and at least 39 training rows per cell."""
    return max(1, min(int(4 * np.sqrt(n)), n // 39))


def have_faiss() -> bool:
    """Whether faiss (PyPI faiss-cpu) is installed; found without importing it."""
    return importlib.util.find_spec("faiss") is not None


def search(vecs: np.ndarray, threshold: float, ann_rows: int = ANN_ROWS) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                                                 dict[str, Any]]:
    """Candidate pairs within `vecs` and how they were found: exact up to `ann_rows` rows (or without faiss), else
    the faiss index (summary["semantic"]["search"] says which, so an approximate run is never silent)."""
    n = len(vecs)
    if n > ann_rows and have_faiss():
        i, j, cos = ann_pairs(vecs, threshold)
        return i, j, cos, {"method": "faiss-ivf", "rows": n, "cells": ivf_cells(n), "probes": min(NPROBE, ivf_cells(n))}
    i, j, cos = candidate_pairs(vecs, threshold)
    why = None if n <= ann_rows else "faiss is not installed (pip install faiss-cpu)"
    return i, j, cos, {"method": "exact", "rows": n, "tile": CHUNK, "why_not_ann": why}


def key_texts(table: pa.Table, on: str) -> list[str]:
    """Each row's key text: its key pieces joined by newlines (system prompts shared by 2+ rows left out)."""
    shared: set[str] = set()
    if on == "conversation":
        shared = shared_system_prompts(Counter(system_prompts(table.select(["messages"])).to_pylist()))
    keys = extract(table.select(["messages"]), on, shared)
    offsets = np.zeros(keys.nrows + 1, dtype=np.int32)
    np.cumsum(np.bincount(keys.doc, minlength=keys.nrows), out=offsets[1:])
    return pc.binary_join(pa.ListArray.from_arrays(pa.array(offsets), keys.texts), "\n").to_pylist()


def _keep_order(texts: list[str], table: pa.Table, cfg: DedupeConfig) -> np.ndarray:
    """Rows in the order they claim to be kept (cfg.keep): first, longest key text, or by origin priority."""
    n = len(texts)
    if cfg.keep == "longest":
        return np.lexsort((np.arange(n), -np.array([len(t) for t in texts], dtype=np.int64)))
    if cfg.keep == "origin":
        rank = {o: i for i, o in enumerate(cfg.origin_priority)}
        origins = table.column("origin").to_pylist() if "origin" in table.column_names else [None] * n
        return np.lexsort((np.arange(n), np.array([rank.get(o, len(rank)) for o in origins])))
    return np.arange(n)


@dataclass
class Pair:
    """A candidate pair with its scores and the verifier's verdict."""

    kept: int
    other: int
    cosine: float
    overlap: float
    duplicate: bool
    why: str

    def to_dict(self, ids: Sequence[str], texts: Sequence[str], other_ids: Sequence[str] | None = None,
                other_texts: Sequence[str] | None = None) -> dict[str, Any]:
        oi, ot = (ids, texts) if other_ids is None else (other_ids, other_texts)
        return {"kept_row": self.kept, "kept_id": ids[self.kept], "kept_text": texts[self.kept][:200],
                "other_row": self.other, "other_id": oi[self.other], "other_text": ot[self.other][:200],
                "cosine": round(self.cosine, 4), "overlap": self.overlap, "removed": self.duplicate,
                "verdict": self.why}


def find(texts: list[str], table: pa.Table, cfg: DedupeConfig, i: np.ndarray, j: np.ndarray,
         cos: np.ndarray) -> tuple[list[Pair], np.ndarray]:
    """Candidate pairs of rows (i, j with cosine cos), each from the row kept first to the other, in the order the
    star visits them, with the verifier's verdict (ASK: the judge's, asked later); and each row's rank to be kept."""
    order = _keep_order(texts, table, cfg)
    rank = np.empty(len(texts), dtype=np.int64)
    rank[order] = np.arange(len(texts))
    lex: dict[int, Lexical] = {}
    pairs = []
    for a, b, c in sorted(zip(i.tolist(), j.tolist(), cos.tolist()), key=lambda p: (min(rank[p[0]], rank[p[1]]), -p[2])):
        keep, other = (a, b) if rank[a] < rank[b] else (b, a)
        la = lex.setdefault(keep, lexical(texts[keep]))
        lb = lex.setdefault(other, lexical(texts[other]))
        pairs.append(Pair(keep, other, c, overlap(la, lb), *_first_verdict(c, la, lb, cfg)))
    return pairs, rank


ASK = "the judge's: not asked yet"  # the verdict of a pair the judge decides, until it has


def _first_verdict(cosine: float, a: Lexical, b: Lexical, cfg: DedupeConfig) -> tuple[bool, str]:
    """The rule's verdict, or with the judge: cosine >= semantic_high passes without asking, the others ASK."""
    if cfg.semantic_verifier == "judge" and cfg.semantic_verify and cosine < cfg.semantic_high:
        return False, ASK
    return verdict(cosine, a, b, cfg)


def star(pairs: list[Pair], rank: np.ndarray) -> None:
    """Removal as a star, rows removed only by a row that stays: a verified pair whose rows one earlier removed is
    not a removal (said in its verdict)."""
    removed: set[int] = set()
    for p in sorted(pairs, key=lambda p: (rank[p.kept], -p.cosine)):
        _settle(p, removed)


def _settle(p: Pair, removed: set[int]) -> None:
    """One step of the star: p removes its other row if verified and neither row has gone yet."""
    if p.duplicate and p.kept not in removed and p.other not in removed:
        removed.add(p.other)
    elif p.duplicate:
        p.duplicate, p.why = False, p.why + "; one of the pair already removed"


MOOT = "judge: not asked: one of the pair already removed"


def ask_judge(pairs: list[Pair], texts: list[str], contam: list[Pair], eval_texts: list[str], cfg: DedupeConfig,
              cache_dir: Path, rank: np.ndarray) -> dict[str, Any]:
    """The star with the judge's verdicts on the ASK pairs, asked in waves so that no pair is asked whose rows an
    earlier pair removes: the same outcome as asking every pair first (a pair's fate depends only on the earlier
    pairs that could remove one of its rows, and those are settled before it is asked), fewer requests. The eval
    pairs are asked in the first wave. Returns the judge's counts."""
    from curate.dedupe.judge import PairJudge

    first_wave = [(p, eval_texts[p.other]) for p in contam if p.why == ASK]
    waiting = sorted(pairs, key=lambda p: (rank[p.kept], -p.cosine))  # the star's order
    removed: set[int] = set()
    moot = 0
    with PairJudge(cfg.semantic_judge, cache_dir=cache_dir, progress=True) as judge:
        while waiting or first_wave:
            unsettled: set[int] = set()  # rows an earlier pair still waiting may remove
            ask, later = list(first_wave), []
            first_wave = []
            for p in waiting:
                if p.kept in unsettled or p.other in unsettled:
                    later.append(p)
                    unsettled.add(p.other)
                elif p.why != ASK:
                    _settle(p, removed)
                elif p.kept in removed or p.other in removed:
                    p.duplicate, p.why = False, MOOT
                    moot += 1
                else:
                    ask.append((p, texts[p.other]))
                    later.append(p)
                    unsettled.add(p.other)
            for (p, _), v in zip(ask, judge.ask([(texts[p.kept], other) for p, other in ask])):
                p.duplicate, p.why = bool(v.same), v.why()
            waiting = later
    return {"passed_on_cosine": sum(p.cosine >= cfg.semantic_high for p in pairs + contam), "not_asked": moot,
            **judge.counts, "config": cfg.semantic_judge.to_dict()}


def run(outcome: Any, cfg: DedupeConfig, against: list[str | Path], cache_dir: Path | None = None) -> dict[str, Any]:
    """Apply the semantic pass to an in-memory outcome (kept, rejected, clusters, decontamination), in place
    (cache_dir: the judge's, with semantic_verifier judge)."""
    from curate.report.embed import load_embedder, single_blas_thread

    t0 = time.perf_counter()
    kept: pa.Table = outcome.kept
    texts = key_texts(kept, cfg.on)
    ids = kept.column("id").cast(pa.string()).to_pylist()
    embedder = load_embedder("auto")  # the report's: MiniLM when installed; summary["semantic"]["embedder"] says which
    eval_texts: list[str] = []
    evals = None
    if against:
        from curate.dedupe.decontam import load_eval

        evals = load_eval(against, cfg.against_format, cfg.long_ngram, cfg.against_field or None)
        eval_texts = list(evals.item_text)
    vecs, evecs = embedder.embed_sets([texts, eval_texts])
    with single_blas_thread():
        t_search = time.perf_counter()
        i, j, cos, how = search(vecs, cfg.semantic_threshold)
        how["seconds"] = round(time.perf_counter() - t_search, 3)
        pairs, rank = find(texts, kept, cfg, i, j, cos)
        contam: list[Pair] = []
        if evals is not None and len(eval_texts):
            i, j, cos = candidate_pairs(vecs, cfg.semantic_threshold, evecs)
            elex = [lexical(t) for t in eval_texts]
            for a, b, c in sorted(zip(i.tolist(), j.tolist(), cos.tolist()), key=lambda p: (p[0], -p[2])):
                la = lexical(texts[a])
                contam.append(Pair(a, b, c, overlap(la, elex[b]), *_first_verdict(c, la, elex[b], cfg)))
    judged = None
    if cfg.semantic_verifier == "judge" and cfg.semantic_verify:
        if cache_dir is None:
            raise UsageError("the semantic judge needs a cache folder (cache_dir)")
        judged = ask_judge(pairs, texts, contam, eval_texts, cfg, cache_dir, rank)
    else:
        star(pairs, rank)
    contaminated: dict[int, Pair] = {}
    for p in contam:
        if p.duplicate and p.kept not in contaminated:
            contaminated[p.kept] = p
    removed = {p.other: p for p in pairs if p.duplicate and p.other not in contaminated}
    # a keeper later found contaminated goes too; its duplicates then stay (they were verified against it only)
    summary = {
        "embedder": embedder.describe(), "threshold": cfg.semantic_threshold, "high": cfg.semantic_high,
        "verify": cfg.semantic_verify, "verifier": cfg.semantic_verifier if cfg.semantic_verify else None,
        "search": how, "candidate_pairs": len(pairs), "verified_pairs": len(removed),
        "rejected_pairs": sum(not p.duplicate for p in pairs), "eval_candidate_pairs": len(contam),
        "contaminated_rows": len(contaminated),
        "pairs": [p.to_dict(ids, texts) for p in pairs],
        "eval_pairs": [p.to_dict(ids, texts, [evals.item_id[k] for k in range(len(eval_texts))], eval_texts)
                       for p in contam] if evals is not None else [],
    }
    if judged is not None:
        summary["judge"] = judged
    removed = {r: p for r, p in removed.items() if p.kept not in contaminated}
    _move(outcome, kept, ids, texts, removed, contaminated, evals)
    summary["verified_pairs"] = len(removed)
    summary["seconds"] = round(time.perf_counter() - t0, 3)
    return summary


def _move(outcome: Any, kept: pa.Table, ids: list[str], texts: list[str], removed: dict[int, Pair],
          contaminated: dict[int, Pair], evals: Any) -> None:
    """Move the semantic duplicates and matches from the kept table to the removed one; extend the clusters."""
    from curate.dedupe.result import CLUSTER_SCHEMA, PREVIEW

    n = kept.num_rows
    cluster = np.asarray(pc.fill_null(kept.column("dedupe_cluster"), -1), dtype=np.int64).copy()
    next_id = int(max(cluster.max(initial=-1),
                      pc.max(outcome.clusters.column("cluster_id")).as_py() if outcome.clusters.num_rows else -1)) + 1
    members: dict[int, list[int]] = {}
    for r, p in sorted(removed.items()):
        if cluster[p.kept] < 0:
            cluster[p.kept] = next_id
            next_id += 1
        members.setdefault(p.kept, []).append(r)
    gone = np.zeros(n, dtype=bool)
    gone[list(removed)] = True
    gone[list(contaminated)] = True
    # the kept rows' original row numbers are not in the kept table: the clusters table names them by id
    row_of = _row_numbers(outcome, ids)
    reason, dup_of, dup_row, evidence, cosine, lex = [], [], [], [], [], []
    rows = np.flatnonzero(gone)
    for r in rows.tolist():
        if r in contaminated:
            p = contaminated[r]
            reason.append("contaminated")
            dup_of.append(evals.item_id[p.other])
            dup_row.append(None)
            evidence.append(f"semantic match with {evals.item_file[p.other]} item {evals.item_id[p.other]} turn "
                            f"{evals.item_turn[p.other]}: cosine {p.cosine:.4f}, word overlap {p.overlap} ({p.why})")
        else:
            p = removed[r]
            reason.append("semantic")
            dup_of.append(ids[p.kept])
            dup_row.append(row_of[p.kept])
            evidence.append(f"paraphrase of row {row_of[p.kept]} ({ids[p.kept]}): cosine {p.cosine:.4f}, word "
                            f"overlap {p.overlap} ({p.why})")
        cosine.append(round(p.cosine, 4))
        lex.append(p.overlap)
    moved = kept.take(pa.array(rows)).drop_columns(["dedupe_cluster"])
    cl = cluster[rows]
    extra = {"dedupe_cluster": pa.array(cl, mask=cl < 0), "dedupe_reason": pa.array(reason, pa.string()),
             "dedupe_duplicate_of": pa.array(dup_of, pa.string()), "dedupe_duplicate_row": pa.array(dup_row, pa.int64()),
             "dedupe_jaccard": pa.nulls(len(rows), pa.float64()), "dedupe_jaccard_est": pa.nulls(len(rows), pa.float64()),
             "dedupe_evidence": pa.array(evidence, pa.string()),
             "dedupe_cosine": pa.array(cosine, pa.float64()), "dedupe_overlap": pa.array(lex, pa.float64())}
    for name, col in extra.items():
        moved = moved.append_column(name, col)
    rejected = outcome.rejected
    rejected = rejected.append_column(EXTRA[0], pa.nulls(rejected.num_rows, pa.float64())) \
        .append_column(EXTRA[1], pa.nulls(rejected.num_rows, pa.float64()))
    outcome.rejected = pa.concat_tables([rejected, moved.select(rejected.column_names).cast(rejected.schema)])
    stay = kept.filter(pa.array(~gone))
    new_cluster = cluster[~gone]
    outcome.kept = stay.set_column(stay.column_names.index("dedupe_cluster"), "dedupe_cluster",
                                   pa.array(new_cluster, mask=new_cluster < 0))

    clusters = outcome.clusters.to_pylist()
    for c in clusters:  # MinHash's members: no cosine, no verdict
        for name in ("cosine", "overlap", "verdict"):
            c[name] = [None] * len(c["member_ids"])
    by_id = {c["cluster_id"]: c for c in clusters}
    for keeper, rs in members.items():
        c = by_id.get(int(cluster[keeper]))
        if c is None:
            c = {"cluster_id": int(cluster[keeper]), "size": 1, "kept_id": ids[keeper], "kept_row": row_of[keeper],
                 "kept_preview": texts[keeper][:PREVIEW], "member_ids": [], "member_rows": [], "member_previews": [],
                 "reasons": [], "jaccard": [], "jaccard_est": [], "min_jaccard": None, "cosine": [], "overlap": [],
                 "verdict": []}
            by_id[c["cluster_id"]] = c
        for r in rs:
            p = removed[r]
            for name, value in (("member_ids", ids[r]), ("member_rows", row_of[r]), ("member_previews",
                                texts[r][:PREVIEW]), ("reasons", "semantic"), ("jaccard", None), ("jaccard_est", None),
                                ("cosine", round(p.cosine, 4)), ("overlap", p.overlap), ("verdict", p.why)):
                c[name].append(value)
            c["size"] += 1
    ordered = sorted(by_id.values(), key=lambda c: (-c["size"], c["cluster_id"]))
    outcome.clusters = pa.Table.from_pylist(ordered, schema=pa.schema([*CLUSTER_SCHEMA, *CLUSTER_EXTRA]))

    if contaminated:
        from curate.dedupe.decontam import REPORT_SCHEMA

        extra_rows = [{"eval_file": evals.item_file[p.other], "eval_id": evals.item_id[p.other],
                       "eval_turn": evals.item_turn[p.other], "eval_field": evals.item_field[p.other],
                       "eval_text": evals.item_text[p.other][:300], "train_id": ids[r], "train_row": row_of[r],
                       "match": "semantic", "score": round(p.cosine, 4),
                       "evidence": f"semantic match: cosine {p.cosine:.4f}, word overlap {p.overlap} ({p.why})"}
                      for r, p in sorted(contaminated.items())]
        outcome.decontamination = pa.concat_tables([outcome.decontamination,
                                                    pa.Table.from_pylist(extra_rows, schema=REPORT_SCHEMA)])
    s, c = outcome.summary, outcome.counts
    s["reasons"]["semantic"] = len(removed)
    s["reasons"]["contaminated"] += len(contaminated)
    s["clusters"] = outcome.clusters.num_rows
    s["largest_cluster"] = max((cl["size"] for cl in ordered), default=0)
    if contaminated:
        s["contaminated_eval_items"] = outcome.decontamination.select(["eval_file", "eval_id", "eval_turn"]) \
            .group_by(["eval_file", "eval_id", "eval_turn"]).aggregate([]).num_rows
    c["kept"] -= int(gone.sum())
    c["rejected"] += int(gone.sum())


def _row_numbers(outcome: Any, ids: list[str]) -> list[int | None]:
    """Input row number of each kept row: the input's rows minus the removed ones, in order."""
    removed_rows = outcome.removed_rows
    if removed_rows is None:  # the Ray engine's outcome does not carry them
        return [None] * len(ids)
    n = len(ids) + len(removed_rows)
    keep = np.ones(n, dtype=bool)
    keep[np.asarray(removed_rows, dtype=np.int64)] = False
    return np.flatnonzero(keep).tolist()


def dedupe_semantic(minhash: Callable[[bool], Any], output: str | Path | None, cfg: DedupeConfig,
                    against: list[str | Path], dry_run: bool, cache_dir: str | Path | None = None) -> Any:
    """The MinHash pass in memory (`minhash(dry_run)`), then the semantic pass, then the output set written.

    With dry_run, the outcome is the MinHash estimate plus the pairs the semantic pass would remove."""
    import json

    from curate.dedupe.result import output_paths
    from curate.outputs import OutputSet, write_table

    outcome = minhash(False)
    info = run(outcome, cfg, against, Path(cache_dir) if cache_dir is not None else None)
    outcome.summary["semantic"] = info
    if dry_run:
        estimate = minhash(True)
        estimate.summary["semantic"] = {k: v for k, v in info.items() if k not in ("pairs", "eval_pairs")}
        estimate.summary["semantic_pairs"] = [p for p in info["pairs"] + info["eval_pairs"] if p["removed"]]
        return estimate
    if output is None:
        return outcome
    paths = output_paths(output)
    if not against:
        del paths["decontamination"]
    outcome.outputs = {k: str(v) for k, v in paths.items()}
    with OutputSet(paths["kept"], paths.values()) as outs:
        for name in ("kept", "removed", "clusters", "decontamination"):
            if name in paths:
                write_table({"kept": outcome.kept, "removed": outcome.rejected, "clusters": outcome.clusters,
                             "decontamination": outcome.decontamination}[name], paths[name], outs)
        outs.tmp(paths["summary"]).write_text(json.dumps(outcome.to_dict(), indent=2, default=str) + "\n")
    outcome.kept = outcome.rejected = None  # written, as dedupe() returns them when it writes
    return outcome
