"""Eval-set decontamination: find training rows that contain evaluation items.

Each user turn of each evaluation row is one evaluation item. A training row (all of its turns) is
contaminated by an item when
  * `ngram`: it shares a word `long_ngram`-gram (13, as in GPT-3 and datatrove) with the item, or
  * `near`: it contains at least `containment` of the item's word trigrams (a near copy, edited
    or embedded in a longer prompt), for items with at least `min_trigrams` of them.
N-grams found in many training rows (`boilerplate_rows`) are boilerplate -- shared instructions,
licence headers, common code lines -- and never count as evidence.

An eval file of no known chat format (HumanEval, MMLU, MBPP, ...) is read by its text fields: every
string field of a record, or a list of strings, is one item (`fields`, `--against-field NAME`, chooses
them; a named field is read from every file, whatever its format). Its matches name the field.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from curate.dataset import canonical_parquet
from curate.dedupe.keys import extract
from curate.dedupe.shingle import Tokens, tokenize, word_shingles
from curate.dedupe.shingle import ranges as _ranges
from curate.errors import InputError

TRIGRAM = 3


@dataclass
class EvalSet:
    """Evaluation items and the sorted (hash, item) tables of their n-grams."""

    files: list[str]
    item_file: list[str]
    item_id: list[str]
    item_turn: list[int]
    item_text: list[str]
    item_field: list[str | None]  # the field an item was read from (None: a user turn of a chat record)
    tokens: Tokens
    long_ngram: int
    tables: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=dict)  # n -> (hash, item, pos)

    def __len__(self) -> int:
        return len(self.item_id)


def load_eval(paths: list[str | Path], fmt: str = "auto", long_ngram: int = 13,
              fields: list[str] | None = None) -> EvalSet:
    """Read evaluation files: a file in a format curate reads gives one item per user turn (or per row without
    one); a file whose records fit no known format, or any file when `fields` are named, one item per text field."""
    files, item_file, item_id, item_turn, texts, item_field = [], [], [], [], [], []
    for path in paths:
        files.append(str(path))
        for rid, turn, name, text in _items(Path(path), fmt, fields):
            item_file.append(str(path))
            item_id.append(rid)
            item_turn.append(turn)
            item_field.append(name)
            texts.append(text)
    tok = tokenize(pa.array(texts, pa.string()), np.arange(len(texts)), len(texts))
    ev = EvalSet(files, item_file, item_id, item_turn, texts, item_field, tok, long_ngram)
    for n in (long_ngram, TRIGRAM):
        ev.tables[n] = _ngram_table(tok, n)
    return ev


def _items(path: Path, fmt: str, fields: list[str] | None) -> Iterator[tuple[str, int, str | None, str]]:
    """(record id, turn or field number, field name or None, text) of every item of one eval file."""
    from curate.ingest.formats import detect
    from curate.ingest.readers import Reject, iter_raw
    from curate.inputs import open_input

    if not fields and (fmt != "auto" or canonical_parquet(path)):
        yield from _chat_items(open_input(path, fmt, origin="eval"))
        return
    records = []
    for rec in iter_raw(path):
        if isinstance(rec, Reject):
            raise InputError(f"cannot read the eval file: {rec.reason}", file=rec.file, line=rec.line)
        records.append(rec)
    if not fields and records and all(detect(r.obj) is not None for r in records):
        yield from _chat_items(open_input(path, fmt, origin="eval"))
        return
    for r in records:
        rid = _record_id(r.obj, path, r.row)
        texts = [(name, text) for name in fields or list(r.obj) for text in _texts(r.obj.get(name))]
        for k, (name, text) in enumerate(texts):
            yield rid, k, name, text
    if fields and records and not any(name in r.obj for r in records for name in fields):
        raise InputError(f"no record has the field(s) {', '.join(map(repr, fields))} "
                         f"(the first record has {', '.join(map(repr, records[0].obj))})", file=str(path),
                         field=fields[0])


def _chat_items(src: Any) -> Iterator[tuple[str, int, str | None, str]]:
    for b in src.batches(columns=["id", "messages"]):
        for row in b.to_pylist():
            turns = [m["content"] for m in row["messages"] if m["role"] == "user" and m["content"]]
            if not turns:
                turns = [m["content"] for m in row["messages"] if m["content"]]
            for t, text in enumerate(turns):
                yield row["id"], t, None, text


ID_FIELDS = ("id", "task_id", "question_id", "problem_id", "uid")


def _record_id(obj: dict, path: Path, row: int | None) -> str:
    for key in ID_FIELDS:
        if isinstance(obj.get(key), (str, int)) and not isinstance(obj.get(key), bool):
            return str(obj[key])
    return f"{path.name}#{row}"


def _texts(value: Any) -> list[str]:
    """A field's text: a string, or the strings of a list (MMLU's choices, MT-Bench's turns); nothing else."""
    if isinstance(value, str):
        return [value] if value.strip() else []
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str) and v.strip()]
    return []


def where(match: dict) -> str:
    """Where in its eval record a match's item is: "field 'prompt'" or "turn 0"."""
    return f"field '{match['eval_field']}'" if match.get("eval_field") else f"turn {match['eval_turn']}"


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
                    "eval_field": self.evals.item_field[item],
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
        ("eval_field", pa.string()),
        ("eval_text", pa.string()),
        ("train_id", pa.string()),
        ("train_row", pa.int64()),
        ("match", pa.string()),
        ("score", pa.float64()),
        ("evidence", pa.string()),
    ]
)
