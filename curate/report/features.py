"""Structure of one dataset (counts, turns, roles, tools, languages, token lengths) and KS / PSI between two."""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from curate.errors import InputError

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
    """Per-record features of one dataset, plus the texts that coverage embeds."""

    name: str
    table: pa.Table
    features: dict[str, np.ndarray]
    user_texts: list[str]
    languages: list[str]
    system_prompts: list[str | None]
    unrenderable: int = 0
    stats: dict[str, Any] = field(default_factory=dict)


def user_text(messages: list[dict]) -> str:
    """The user turns of a conversation (what production requests look like); other content if none."""
    users = [m.get("content") or "" for m in messages if m["role"] == "user"]
    if not any(users):
        users = [m.get("content") or "" for m in messages if m["role"] != "assistant"]
    return "\n".join(u for u in users if u)


def extract(name: str, table: pa.Table, tokenizer: Any) -> Records:
    """Token lengths per role (with the tokenizer's chat template), turns, tool calls and texts of every record."""
    from curate.embedded import render

    msgs_col = table.column("messages").to_pylist()
    tools_col = table.column("tools").to_pylist() if "tools" in table.column_names else [None] * len(msgs_col)
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
    texts = [user_text(m) for m in msgs_col]
    systems = [next((m.get("content") for m in ms if m["role"] == "system"), None) for ms in msgs_col]
    rec = Records(name, table, feats, texts, [language_of(t) for t in texts], systems, unrenderable)
    rec.stats = structure(rec)
    return rec


def _quantiles(values: np.ndarray) -> dict[str, float]:
    v = values[~np.isnan(values)]
    if v.size == 0:
        return {"mean": 0.0, "p50": 0.0, "p95": 0.0, "p99": 0.0, "max": 0.0}
    out = {"mean": round(float(v.mean()), 2)}
    for q in QUANTILES:
        out[f"p{q}"] = round(float(np.percentile(v, q)), 2)
    out["max"] = float(v.max())
    return out


def _shares(counter: Counter, total: int, top: int = 10) -> dict[str, float]:
    return {k: round(v / total, 4) for k, v in sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))[:top]} if total else {}


def structure(rec: Records) -> dict[str, Any]:
    """The structure section of the report for one dataset."""
    t = rec.table
    n = t.num_rows
    msgs = t.column("messages").to_pylist()
    roles = Counter(m["role"] for ms in msgs for m in ms)
    ids = t.column("id").to_pylist()
    origins = t.column("origin").to_pylist() if "origin" in t.column_names else [None] * n
    synth_cols = [c for c in t.column_names if c.startswith("synth_")]
    synthetic = sum(
        1
        for i in range(n)
        if origins[i] == "synthetic" or any(t.column(c)[i].is_valid for c in synth_cols)
    )
    tools = t.column("tools").to_pylist() if "tools" in t.column_names else [None] * n
    systems = Counter(s for s in rec.system_prompts if s)
    return {
        "count": n,
        "turns": _quantiles(rec.features["turns"]),
        "roles": dict(sorted(roles.items())),
        "tool_use": {
            "records_with_tools": sum(1 for x in tools if x and x not in ("[]", "null")),
            "records_with_tool_calls": int((rec.features["tool_calls"] > 0).sum()),
            "tool_calls": int(rec.features["tool_calls"].sum()),
        },
        "system_prompts": {
            "records_with_system": sum(1 for s in rec.system_prompts if s),
            "distinct": len(systems),
            "top": [{"text": s[:200], "count": c} for s, c in sorted(systems.items(), key=lambda kv: (-kv[1], kv[0]))[:5]],
        },
        "languages": _shares(Counter(rec.languages), n),
        "tokens": {f: _quantiles(rec.features[f]) for f in FEATURES if f.endswith("_tokens")},
        "unrenderable": rec.unrenderable,
        "duplicate_share": round((n - len(set(ids))) / n, 4) if n else 0.0,
        "synthetic_share": round(synthetic / n, 4) if n else 0.0,
        "format_compliance": format_compliance(t),
    }


def format_compliance(table: pa.Table) -> dict[str, Any] | None:
    """The share of rows `curate validate` passed, when its columns are present (None otherwise)."""
    cols = [c for c in table.column_names if c.startswith("validate_")]
    if not cols or table.num_rows == 0:
        return None
    passed = np.ones(table.num_rows, dtype=bool)
    for c in cols:
        values = table.column(c).to_pylist()
        if pa.types.is_boolean(table.schema.field(c).type):
            passed &= np.array([bool(v) for v in values])
        elif c.endswith(("_errors", "_issues", "_reason", "_reasons")):
            passed &= np.array([not v for v in values])
    return {"columns": cols, "pass_share": round(float(passed.mean()), 4)}


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

    rows = []
    for f in FEATURES:
        a, b = reference.features[f], target.features[f]
        a, b = a[~np.isnan(a)], b[~np.isnan(b)]
        if a.size == 0 or b.size == 0:
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
    langs_a, langs_b = Counter(reference.languages), Counter(target.languages)
    na, nb = max(len(reference.languages), 1), max(len(target.languages), 1)
    lang = {k: {"reference": round(langs_a[k] / na, 4), "target": round(langs_b[k] / nb, 4)} for k in sorted(langs_a | langs_b)}
    return {"features": rows, "languages": lang}
