"""Structure of one dataset (counts, turns, roles, tools, languages, token lengths) and KS / PSI between two."""

from __future__ import annotations

import json
import re
from collections import Counter, deque
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from curate.errors import InputError
from curate.inputs import Input

BATCH = 2_000  # records read, rendered and counted at a time
MIN_EXAMPLES = 500
RECOMMENDED = (2000, 5000)
# Per-record numeric features compared between two sets with KS and PSI.
FEATURES = ("turns", "prompt_tokens", "user_tokens", "assistant_tokens", "system_tokens", "total_tokens", "tool_calls")
QUANTILES = (50, 95, 99)

_ENGLISH = frozenset(
    ["the", "a", "an", "and", "or", "of", "to", "in", "is", "are", "was", "be", "it", "that", "this", "for", "on", "with", "as", "by", "at", "from", "you", "your", "i", "we", "can", "how", "what", "which", "who", "why", "when", "do", "does", "not", "have", "has", "will", "would", "should", "could", "please", "write", "give", "explain"]
)
_SCRIPTS = (
    ("ja", re.compile(r"[\u3040-\u30ff]")),
    ("ko", re.compile(r"[\uac00-\ud7af]")),
    ("zh", re.compile(r"[\u4e00-\u9fff]")),
    ("cyrillic", re.compile(r"[\u0400-\u04ff]")),
    ("arabic", re.compile(r"[\u0600-\u06ff]")),
    ("devanagari", re.compile(r"[\u0900-\u097f]")),
)
_WORD = re.compile(r"[A-Za-z']+")


def language_of(text: str) -> str:
    """A coarse language label from the script, and English stop words for Latin text (a heuristic, no model)."""
    if not text.strip():
        return "empty"
    sample = text[:2000]
    for name, pattern in _SCRIPTS:
        # a few CJK characters in an English prompt ("translate 你好") do not make it Chinese
        if len(pattern.findall(sample)) >= max(3, 0.2 * len(sample.strip()) / 2):
            return name
    words = [w.lower() for w in _WORD.findall(sample)]
    if not words:
        return "other"
    english = sum(w in _ENGLISH for w in words) / len(words)
    return "en" if english >= 0.12 or len(words) < 4 else "latin-other"


@dataclass
class Records:
    """Per-record features of one dataset, computed batch by batch, and the texts that coverage embeds.

    Between batches only per-row numbers (the features, an id hash) and counters are kept; user texts are kept
    only for the rows that are embedded: every row, or the seeded sample `sample` (row numbers, ascending).
    """

    name: str
    rows: int
    features: dict[str, np.ndarray]
    user_texts: list[str]  # of the embedded rows
    languages: Counter  # rows per language
    sample: np.ndarray | None = None  # row numbers of the embedded rows when they are a sample, else None
    unrenderable: int = 0
    stats: dict[str, Any] = field(default_factory=dict)


def user_text(messages: list[dict]) -> str:
    """The user turns of a conversation (what production requests look like); other content if none."""
    users = [m.get("content") or "" for m in messages if m["role"] == "user"]
    if not any(users):
        users = [m.get("content") or "" for m in messages if m["role"] != "assistant"]
    return "\n".join(u for u in users if u)


def embedded_rows(rows: int, limit: int, seed: int, stream: int) -> np.ndarray | None:
    """The rows whose texts are embedded: None (every row) when there are at most `limit`, else a sample of
    `limit` row numbers (ascending), drawn from `seed` and the set's own `stream` (train, production, baseline)."""
    if rows <= limit:
        return None
    return np.sort(np.random.default_rng([seed, stream]).choice(rows, size=limit, replace=False))


class _Tally:
    """What structure() needs of a set, gathered batch by batch: counters and a few numbers per row."""

    def __init__(self, columns: list[str]):
        self.roles: Counter = Counter()
        self.languages: Counter = Counter()
        # system prompt -> [rows, its first 200 characters], keyed by a hash: the top list shows only those
        # characters, and ordering by them (then count) shows the same entries as ordering by the whole text
        self.systems: dict[int, list] = {}
        self.records_with_system = self.with_tools = self.synthetic = self.passed = self.checked = 0
        self.id_hashes: list[np.ndarray] = []  # duplicates are counted from 8 bytes a row, not the ids
        self.synth_cols = [c for c in columns if c.startswith("synth_")]
        self.pairs = "rejected" in columns
        self.chosen_len: list[int] = []  # characters of the chosen and the rejected reply of each preference pair
        self.rejected_len: list[int] = []
        self.validate_cols = [c for c in columns if c.startswith("validate_")]
        self.scores: Any = None  # distributions of the score_* columns (curate score), from the first batch

    def add_scores(self, batch: pa.RecordBatch) -> None:
        from curate.score.distribution import Distributions

        if self.scores is None:
            self.scores = Distributions(batch.schema)
        if self.scores:
            self.scores.add(batch)

    def add(self, batch: pa.RecordBatch, msgs: list[list[dict]], tools: list, texts: list[str]) -> None:
        self.roles.update(m["role"] for ms in msgs for m in ms)
        self.languages.update(language_of(t) for t in texts)
        for ms in msgs:
            s = next((m.get("content") for m in ms if m["role"] == "system"), None)
            if s:
                self.records_with_system += 1
                entry = self.systems.setdefault(hash(s), [0, s[:200]])
                entry[0] += 1
        self.with_tools += sum(1 for x in tools if x and x not in ("[]", "null"))
        ids = batch.column("id").to_pylist()
        self.id_hashes.append(np.fromiter((hash(i) for i in ids), dtype=np.int64, count=len(ids)))
        n = batch.num_rows
        synthetic = np.zeros(n, dtype=bool)
        if "origin" in batch.schema.names:
            synthetic |= np.array([o == "synthetic" for o in batch.column("origin").to_pylist()], dtype=bool)
        for c in self.synth_cols:
            synthetic |= np.asarray(batch.column(c).is_valid(), dtype=bool)
        self.synthetic += int(synthetic.sum())
        if self.pairs:
            for ms, rej in zip(msgs, batch.column("rejected").to_pylist()):
                if rej:
                    self.chosen_len.append(len(next((m.get("content") or "" for m in reversed(ms)
                                                     if m["role"] == "assistant"), "")))
                    self.rejected_len.append(len("".join(m.get("content") or "" for m in rej
                                                         if m["role"] == "assistant")))
        if self.validate_cols:
            passed = np.ones(n, dtype=bool)
            checked = np.zeros(n, dtype=bool)
            for c in self.validate_cols:
                values = batch.column(c).to_pylist()
                if pa.types.is_boolean(batch.schema.field(c).type):
                    # null: the check did not run on the row (no --output-schema), which is neither pass nor fail
                    passed &= np.array([v is not False for v in values], dtype=bool)
                    checked |= np.array([v is not None for v in values], dtype=bool)
                elif c.endswith(("_errors", "_issues", "_reason", "_reasons")):
                    passed &= np.array([not v for v in values], dtype=bool)
                    checked[:] = True
            self.passed += int((passed & checked).sum())
            self.checked += int(checked.sum())

    def distinct_ids(self) -> int:
        return len(np.unique(np.concatenate(self.id_hashes))) if self.id_hashes else 0


def _reading(columns: list[str]) -> list[str]:
    """The columns structure and token lengths read (not `rejected`, `source`, `meta`: decoding them is waste)."""
    return [c for c in columns if c in ("id", "messages", "tools", "origin", "rejected")
            or c.startswith(("synth_", "validate_")) or (c.startswith("score_") and not c.endswith("_reason"))]


def extract(name: str, src: Input, tokenizer: Any, *, sample: np.ndarray | None = None,
            batch_size: int = BATCH, workers: int | None = 1, tokenizer_name: str | None = None) -> Records:
    """Token lengths per role (with the tokenizer's chat template), turns, tool calls and structure of every
    record, read batch by batch; user texts kept for the rows in `sample` (every row when None).

    The token lengths (the costly part) of each batch are counted on `workers` processes, or on the actors of
    a Ray cluster when that engine is in use (curate.engine): each worker loads `tokenizer_name` once (without a
    name, the batches are counted here with `tokenizer`). The counting is the same function either way, and batches come back in input order, so
    the records are the same for any engine and number of workers."""
    from curate.engine import current, make

    columns = _reading(src.schema.names)
    tally = _Tally(columns)
    parts: dict[str, list[np.ndarray]] = {f: [] for f in FEATURES}
    texts_kept: list[str] = []
    unrenderable = start = 0
    remote = tokenizer_name is not None and (current() == "ray" or (workers or 1) > 1) and (src.rows or 0) > batch_size
    held: deque[pa.RecordBatch] = deque()

    def feed() -> Iterator[pa.RecordBatch]:
        for b in src.batches(batch_size, columns):
            held.append(b)
            yield b.select([c for c in ("messages", "tools") if c in b.schema.names]) if remote else b

    with make(workers, _load, (tokenizer_name,), worth=remote) if remote else nullcontext() as engine:
        counted = engine.map(_lengths, feed()) if remote else (_lengths(tokenizer, b) for b in feed())
        for feats, bad in counted:
            batch = held.popleft()
            msgs_col = batch.column("messages").to_pylist()
            tools_col = batch.column("tools").to_pylist() if "tools" in columns else [None] * len(msgs_col)
            n = len(msgs_col)
            unrenderable += bad
            texts = [user_text(m) for m in msgs_col]
            tally.add(batch, msgs_col, tools_col, texts)
            tally.add_scores(batch)
            if sample is None:
                texts_kept.extend(texts)
            else:
                lo, hi = np.searchsorted(sample, [start, start + n])
                texts_kept.extend(texts[r - start] for r in sample[lo:hi].tolist())
            for f in FEATURES:
                parts[f].append(feats[f])
            start += n
    features = {f: np.concatenate(parts[f]) if parts[f] else np.zeros(0) for f in FEATURES}
    rec = Records(name, start, features, texts_kept, tally.languages, sample, unrenderable)
    rec.stats = structure(rec, tally)
    return rec


def _load(name: str) -> Any:
    from curate.embedded import load_tokenizer

    return load_tokenizer(name)


def _lengths(tokenizer: Any, batch: pa.RecordBatch) -> tuple[dict[str, np.ndarray], int]:
    """Turns, tool calls and token lengths per role of a batch's records (NaN lengths for a record the chat
    template cannot render), and how many could not be rendered."""
    from curate.embedded import render

    msgs_col = batch.column("messages").to_pylist()
    tools_col = batch.column("tools").to_pylist() if "tools" in batch.schema.names else [None] * len(msgs_col)
    n = len(msgs_col)
    feats = {f: np.zeros(n, dtype=np.float64) for f in FEATURES}
    unrenderable = 0
    for i, (messages, tools) in enumerate(zip(msgs_col, tools_col)):
        feats["turns"][i] = sum(m["role"] == "user" for m in messages)
        feats["tool_calls"][i] = sum(len(m.get("tool_calls") or []) for m in messages)
        try:
            counts = render(tokenizer, messages, tools).counts()
        except (InputError, ValueError, TypeError, json.JSONDecodeError):
            # a record the chat template cannot render still counts; its lengths are NaN and it is reported
            unrenderable += 1
            for f in FEATURES[1:-1]:
                feats[f][i] = np.nan
            continue
        total = sum(counts.values())
        assistant = counts.get("assistant", 0)
        feats["user_tokens"][i] = counts.get("user", 0)
        feats["assistant_tokens"][i] = assistant
        feats["system_tokens"][i] = counts.get("system", 0)
        feats["total_tokens"][i] = total
        feats["prompt_tokens"][i] = total - assistant
    return feats, unrenderable


def _quantiles(values: np.ndarray) -> dict[str, float]:
    v = values[~np.isnan(values)]
    if v.size == 0:
        return {"mean": 0.0, "p50": 0.0, "p95": 0.0, "p99": 0.0, "max": 0.0}
    out = {"mean": round(float(v.mean()), 2)}
    for q in QUANTILES:
        # nearest rank, as validate and train count it: a percentile of lengths is a length some record has
        out[f"p{q}"] = round(float(np.percentile(v, q, method="inverted_cdf")), 2)
    out["max"] = float(v.max())
    return out


def _preference(tally: _Tally) -> dict[str, Any] | None:
    """Length bias of preference pairs (chosen vs rejected reply, characters), None for a set without pairs."""
    if not tally.chosen_len:
        return None
    c, r = np.asarray(tally.chosen_len, dtype=float), np.asarray(tally.rejected_len, dtype=float)
    ratio = (c + 1) / (r + 1)
    counts = np.histogram(ratio, bins=[0, *RATIO_EDGES, np.inf])[0]
    return {"pairs": int(c.size), "chosen_longer_share": round(float((c > r).mean()), 4),
            "rejected_longer_share": round(float((c < r).mean()), 4),
            "median_length_ratio": round(float(np.median(ratio)), 4),
            "ratio_histogram": {"edges": list(RATIO_EDGES), "pairs": counts.astype(int).tolist()}}


RATIO_EDGES = (0.25, 0.5, 0.8, 1.25, 2.0, 4.0)  # chosen / rejected length; the bins validate's summary uses


def _shares(counter: Counter, total: int, top: int = 10) -> dict[str, float]:
    return {k: round(v / total, 4) for k, v in sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))[:top]} if total else {}


def structure(rec: Records, tally: _Tally) -> dict[str, Any]:
    """The structure section of the report for one dataset."""
    n = rec.rows
    top = sorted(tally.systems.values(), key=lambda e: (-e[0], e[1]))[:5]
    return {
        "count": n,
        "turns": _quantiles(rec.features["turns"]),
        "roles": dict(sorted(tally.roles.items())),
        "tool_use": {
            "records_with_tools": tally.with_tools,
            "records_with_tool_calls": int((rec.features["tool_calls"] > 0).sum()),
            "tool_calls": int(rec.features["tool_calls"].sum()),
        },
        "system_prompts": {
            "records_with_system": tally.records_with_system,
            "distinct": len(tally.systems),
            "top": [{"text": text, "count": c} for c, text in top],
        },
        "languages": _shares(tally.languages, n),
        "tokens": {f: _quantiles(rec.features[f]) for f in FEATURES if f.endswith("_tokens")},
        "unrenderable": rec.unrenderable,
        "duplicate_share": round((n - tally.distinct_ids()) / n, 4) if n else 0.0,
        "synthetic_share": round(tally.synthetic / n, 4) if n else 0.0,
        # None when no row was checked: data validated without an output format is "not checked", not 0%
        "preference": _preference(tally),
        "format_compliance": ({"columns": tally.validate_cols, "pass_share": round(tally.passed / tally.checked, 4),
                               "checked": tally.checked} if tally.validate_cols and tally.checked else None),
        # distributions of the score_* columns `curate score` added; None for a set without them
        "scores": tally.scores.result() if tally.scores else None,
    }


def psi(reference: np.ndarray, target: np.ndarray, bins: int = 10) -> float:
    """Population stability index with bins at the reference's quantiles (0.1 moderate, 0.25 large shift)."""
    ref, tgt = reference[~np.isnan(reference)], target[~np.isnan(target)]
    if ref.size == 0 or tgt.size == 0:
        return 0.0
    edges = np.unique(np.percentile(ref, np.linspace(0, 100, bins + 1)[1:-1]))
    r = np.bincount(np.searchsorted(edges, ref, side="right"), minlength=edges.size + 1) / ref.size
    t = np.bincount(np.searchsorted(edges, tgt, side="right"), minlength=edges.size + 1) / tgt.size
    r, t = np.clip(r, 1e-4, None), np.clip(t, 1e-4, None)
    return float(np.sum((t - r) * np.log(t / r)))


def compare(reference: Records, target: Records) -> dict[str, Any]:
    """KS statistic, PSI and quantiles of every per-record feature, reference vs target."""
    from scipy.stats import ks_2samp

    rows, skipped = [], []
    replies = {side.name: bool((side.features["assistant_tokens"] > 0).any()) for side in (reference, target)}
    for f in FEATURES:
        a, b = reference.features[f], target.features[f]
        a, b = a[~np.isnan(a)], b[~np.isnan(b)]
        if f in PRESENCE:  # lengths of a role are compared where both sides have it, not against its absence
            a, b = a[a > 0], b[b > 0]
        why = _skip_reason(f, a, b, reference.name, target.name, replies)
        if why:
            skipped.append({"feature": f, "why": why})
            continue
        ks = ks_2samp(a, b, method="asymp")  # exact p-values are slow and fail on ties
        qa, qb = _quantiles(a), _quantiles(b)
        rows.append(
            {
                "feature": f,
                "ks": round(float(ks.statistic), 4),
                "ks_pvalue": float(ks.pvalue),
                "psi": round(psi(a, b), 4),
                "reference": qa,
                "target": qb,
                "p95_ratio": round(qb["p95"] / qa["p95"], 4) if qa["p95"] else None,
            }
        )
    langs_a, langs_b = reference.languages, target.languages
    na, nb = max(reference.rows, 1), max(target.rows, 1)
    lang = {k: {"reference": round(langs_a[k] / na, 4), "target": round(langs_b[k] / nb, 4)} for k in sorted(langs_a | langs_b)}
    return {"features": rows, "languages": lang, "skipped": skipped}


# features compared over the records that have the role: production samples usually carry no assistant reply
# and many records no system prompt, and comparing a length with its absence raised false alarms (KS 1.0)
PRESENCE = ("assistant_tokens", "system_tokens")


def _skip_reason(f: str, a: np.ndarray, b: np.ndarray, ref: str, tgt: str, replies: dict[str, bool]) -> str | None:
    """Why feature `f` is not compared (None: it is)."""
    without = [name for name, has in replies.items() if not has]
    if f == "total_tokens" and len(without) == 1:
        return (f"{without[0]} has no assistant replies: the totals would compare prompts with whole "
                "conversations (prompt_tokens compares what both have)")
    for values, name in ((a, ref), (b, tgt)):
        if values.size == 0:
            role = f.removesuffix("_tokens")
            return f"{name} has no {role} messages" if f in PRESENCE else f"{name} has no renderable records"
    return None
