"""Distributions of score_* columns, gathered batch by batch: what `curate score` and `curate report` show.

A number column keeps one float a row (never the text); a text column (score_language) a count per value.
Free text (columns ending in `_reason`) is left out. Missing means null, or not a finite number.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import pyarrow as pa

PERCENTILES = (5, 25, 50, 75, 95)
BINS = 10
TOP = 10  # values of a text column shown


def score_columns(schema: pa.Schema) -> list[str]:
    """The score_* columns of a schema that have a distribution (numbers, true/false and short text)."""
    out = []
    for f in schema:
        if not f.name.startswith("score_") or f.name.endswith("_reason"):
            continue
        if pa.types.is_integer(f.type) or pa.types.is_floating(f.type) or pa.types.is_boolean(f.type) \
                or pa.types.is_string(f.type) or pa.types.is_large_string(f.type):
            out.append(f.name)
    return out


class Distributions:
    """Per score column: the values seen so far; `result()` the summary of each."""

    def __init__(self, schema: pa.Schema):
        self.numbers: dict[str, list[np.ndarray]] = {}
        self.texts: dict[str, Counter] = {}
        self.missing: dict[str, int] = {}
        for name in score_columns(schema):
            tp = schema.field(name).type
            if pa.types.is_string(tp) or pa.types.is_large_string(tp):
                self.texts[name] = Counter()
            else:
                self.numbers[name] = []
            self.missing[name] = 0

    def __bool__(self) -> bool:
        return bool(self.missing)

    def add(self, batch: pa.RecordBatch | pa.Table) -> None:
        for name, parts in self.numbers.items():
            col = batch.column(name)
            v = np.asarray(col.cast(pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)
            ok = np.isfinite(v)  # null arrives as NaN
            self.missing[name] += int((~ok).sum())
            parts.append(v[ok])
        for name, counter in self.texts.items():
            values = batch.column(name).to_pylist()
            counter.update(v for v in values if v is not None)
            self.missing[name] += sum(v is None for v in values)

    def result(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for name in self.missing:
            if name in self.numbers:
                v = np.concatenate(self.numbers[name]) if self.numbers[name] else np.zeros(0)
                out[name] = number_summary(v, self.missing[name])
            else:
                c = self.texts[name]
                n = sum(c.values())
                top = sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP]
                out[name] = {"kind": "text", "count": n, "missing": self.missing[name], "distinct": len(c),
                             "values": {k: round(x / n, 4) for k, x in top}}
        return out


def number_summary(v: np.ndarray, missing: int) -> dict[str, Any]:
    """Count, mean, percentiles (nearest rank: a value some row has) and a histogram of finite values."""
    if v.size == 0:
        return {"kind": "number", "count": 0, "missing": missing, "mean": None, "min": None, "max": None,
                **{f"p{q}": None for q in PERCENTILES}, "histogram": {"scale": "linear", "edges": [], "counts": []}}
    out: dict[str, Any] = {"kind": "number", "count": int(v.size), "missing": missing,
                           "mean": _round(v.mean()), "min": _round(v.min()), "max": _round(v.max())}
    for q in PERCENTILES:
        out[f"p{q}"] = _round(np.percentile(v, q, method="inverted_cdf"))
    scale, edges = _edges(v)
    counts = np.histogram(v, bins=edges)[0]
    out["histogram"] = {"scale": scale, "edges": [_round(e) for e in edges], "counts": counts.astype(int).tolist()}
    return out


def _round(x: float) -> float:
    return float(f"{float(x):.6g}")


def _edges(v: np.ndarray) -> tuple[str, np.ndarray]:
    """Unit bins for small whole numbers (a 1-5 judge), log bins for a long positive tail, else equal widths."""
    lo, hi = float(v.min()), float(v.max())
    if np.all(v == np.round(v)) and hi - lo <= 20:
        return "unit", np.arange(lo - 0.5, hi + 1.5)
    mid = float(np.median(v))
    if lo >= 0 and mid > 0 and hi / mid > 50:
        edges = np.geomspace(float(v[v > 0].min()), hi, BINS + 1)
        return "log", np.concatenate([[0.0], edges]) if lo == 0 else edges  # zeros get a bin of their own
    if hi == lo:
        return "linear", np.array([lo - 0.5, hi + 0.5])
    return "linear", np.linspace(lo, hi, BINS + 1)
