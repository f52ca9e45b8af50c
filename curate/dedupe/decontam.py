"""Eval-set decontamination: find training rows that contain evaluation items.

Each user turn of each evaluation row is one evaluation item. A training row (all of its turns) is
contaminated by an item when
  * `ngram`: it shares a word `long_ngram`-gram (13, as in GPT-3 and datatrove) with the item, or
  * `near`: it contains at least `containment` of the item's word trigrams (a near copy, edited
    or embedded in a longer prompt), for items with at least `min_trigrams` of them.
N-grams found in many training rows (`boilerplate_rows`) are boilerplate -- shared instructions,
licence headers, common code lines -- and never count as evidence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from curate.dedupe.keys import extract
from curate.dedupe.shingle import Tokens, tokenize, word_shingles
from curate.dedupe.shingle import ranges as _ranges

TRIGRAM = 3


@dataclass
class EvalSet:
    """Evaluation items and the sorted (hash, item) tables of their n-grams."""

    files: list[str]
    item_file: list[str]
    item_id: list[str]
    item_turn: list[int]
    item_text: list[str]
    tokens: Tokens
    long_ngram: int
    tables: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=dict)  # n -> (hash, item, pos)

    def __len__(self) -> int:
        return len(self.item_id)


def load_eval(paths: list[str | Path], fmt: str = "auto", long_ngram: int = 13) -> EvalSet:
    """Read evaluation files in any format curate reads; one item per user turn (or per row without one)."""
    from curate.inputs import open_input

    files, item_file, item_id, item_turn, texts = [], [], [], [], []
    for path in paths:
        files.append(str(path))
        rows = (row for b in open_input(path, fmt, origin="eval").batches(columns=["id", "messages"]) for row in b.to_pylist())
        for row in rows:
            turns = [m["content"] for m in row["messages"] if m["role"] == "user" and m["content"]]
            if not turns:
                turns = [m["content"] for m in row["messages"] if m["content"]]
            for t, text in enumerate(turns):
                item_file.append(str(path))
                item_id.append(row["id"])
                item_turn.append(t)
                texts.append(text)
    tok = tokenize(pa.array(texts, pa.string()), np.arange(len(texts)), len(texts))
    ev = EvalSet(files, item_file, item_id, item_turn, texts, tok, long_ngram)
    for n in (long_ngram, TRIGRAM):
        ev.tables[n] = _ngram_table(tok, n)
    return ev


def _ngram_table(tok: Tokens, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    sh = word_shingles(tok, n, whole_if_short=False)
    item = sh.doc
    counts = tok.counts
    tstart = np.concatenate([[0], np.cumsum(counts)])
    pos = tstart[item] + (np.arange(len(item)) - sh.offsets[item])
    order = np.lexsort((pos, item, sh.hashes))
    h, it, ps = sh.hashes[order], item[order], pos[order]
    first = np.ones(len(h), dtype=bool)
    first[1:] = (h[1:] != h[:-1]) | (it[1:] != it[:-1])
    return h[first], it[first], ps[first]


class Matcher:
    """Collects, batch by batch, which training rows share n-grams with which evaluation items."""

    def __init__(self, evals: EvalSet):
        self.evals = evals
        self.hits: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {n: [] for n in evals.tables}
        self.rows = 0

    def add_batch(self, batch: pa.Table | pa.RecordBatch, first_row: int) -> None:
        keys = extract(batch, "conversation", None)
        tok = tokenize(keys.texts, keys.doc, keys.nrows)
        self.rows += keys.nrows
        for n, (hashes, _, _) in self.evals.tables.items():
            sh = word_shingles(tok, n, whole_if_short=False)
            hit = np.isin(sh.hashes, hashes)
            if hit.any():
                rows = sh.doc[hit] + first_row
                hh = sh.hashes[hit]
                key = np.unique(np.stack([rows.astype(np.uint64), hh], axis=1), axis=0)
                self.hits[n].append((key[:, 0].astype(np.int64), key[:, 1]))

    def boilerplate_limit(self, boilerplate_rows: int | None) -> int:
        return boilerplate_rows if boilerplate_rows else max(20, math.ceil(0.002 * self.rows))

    def matches(self, containment: float = 0.7, min_trigrams: int = 5, boilerplate_rows: int | None = None) -> list[dict]:
        """One dict per (training row, evaluation item) found contaminated, with its evidence."""
        limit = self.boilerplate_limit(boilerplate_rows)
        found: dict[tuple[int, int], dict] = {}
        for n, parts in self.hits.items():
            if not parts:
                continue
            rows = np.concatenate([p[0] for p in parts])
            hashes = np.concatenate([p[1] for p in parts])
            uh, inv, df = np.unique(hashes, return_inverse=True, return_counts=True)
            ok = df[inv] < limit
            rows, hashes = rows[ok], hashes[ok]
            table_h, table_item, table_pos = self.evals.tables[n]
            boiler = uh[df >= limit]
            lo = np.searchsorted(table_h, hashes, side="left")
            hi = np.searchsorted(table_h, hashes, side="right")
            reps = hi - lo
            idx = _ranges(lo, reps)
            r, it, ps = np.repeat(rows, reps), table_item[idx], table_pos[idx]
            if n == self.evals.long_ngram:
                for row, item, pos in zip(r.tolist(), it.tolist(), ps.tolist()):
                    if (row, item) not in found:
                        found[(row, item)] = {"match": "ngram", "score": 1.0, "evidence": self.evals.tokens.text(pos, pos + n)}
            else:
                useful = ~np.isin(table_h, boiler)
                denom = np.bincount(table_item[useful], minlength=len(self.evals))
                pair = r * len(self.evals) + it
                up, cnt = np.unique(pair, return_counts=True)
                rr, ii = up // len(self.evals), up % len(self.evals)
                score = cnt / np.maximum(denom[ii], 1)
                hit = (score >= containment) & (denom[ii] >= min_trigrams)
                for row, item, sc, c in zip(rr[hit].tolist(), ii[hit].tolist(), score[hit].tolist(), cnt[hit].tolist()):
                    if (row, item) not in found:
                        found[(row, item)] = {
                            "match": "near",
                            "score": round(sc, 4),
                            "evidence": f"contains {c}/{denom[item]} of the item's word trigrams",
                        }
        out = []
        for (row, item), m in sorted(found.items()):
            out.append(
                {
                    "row": row,
                    "eval_file": self.evals.item_file[item],
                    "eval_id": self.evals.item_id[item],
                    "eval_turn": self.evals.item_turn[item],
                    "eval_text": self.evals.item_text[item][:300],
                    **m,
                }
            )
        return out


REPORT_SCHEMA = pa.schema(
    [
        ("eval_file", pa.string()),
        ("eval_id", pa.string()),
        ("eval_turn", pa.int64()),
        ("eval_text", pa.string()),
        ("train_id", pa.string()),
        ("train_row", pa.int64()),
        ("match", pa.string()),
        ("score", pa.float64()),
        ("evidence", pa.string()),
    ]
)
