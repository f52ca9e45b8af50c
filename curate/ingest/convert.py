"""Raw records to canonical rows: the one conversion `curate ingest`, `curate validate` and every stage's input share.

A file's format is the one most of its first SNIFF_RECORDS records have (unless given). A record of
another format, one that fits no format, or one its format's converter refuses, comes out with the
reason and the validate code for it; a record that could not be read at all comes out as the
reader's Reject. Counts are the caller's: every raw item yields exactly one item here.
"""

from __future__ import annotations

import itertools
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from curate.dataset import SCHEMA, make_row
from curate.errors import UsageError
from curate.ingest import formats
from curate.ingest.readers import Record, Reject, iter_raw

SNIFF_RECORDS = 200
FORMAT_CHOICES = ("auto", "mixed", *formats.INPUT_FORMATS)


@dataclass
class Converted:
    """One readable record: its own format, and its canonical row or why it cannot be one."""

    record: Record
    detected: str | None
    row: dict[str, Any] | None = None
    problem: str | None = None
    code: str | None = None  # the validate code of the problem: unknown_format, format_mismatch, schema_violation


@dataclass
class Conversion:
    """The items of one file in order (Converted or Reject), and what the file turned out to be."""

    path: Path
    fmt: str = "auto"
    origin: str | None = None
    format: str | None = None  # the file's format (known once iteration starts)
    per_format: Counter = field(default_factory=Counter)
    warnings: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.fmt not in FORMAT_CHOICES:
            raise UsageError(f"unknown format '{self.fmt}'; choose auto, mixed or one of {', '.join(formats.INPUT_FORMATS)}")

    def __iter__(self) -> Iterator[Converted | Reject]:
        for item in self.records():
            yield item if isinstance(item, Reject) else self.convert(item)

    def records(self) -> Iterator[Record | Reject]:
        """The file's raw items, its format decided from the first ones before the first is out."""
        raw = iter_raw(self.path)
        head: list[Record | Reject] = []
        self.format = None if self.fmt in ("auto", "mixed") else self.fmt
        if self.fmt == "auto":
            for item in raw:
                head.append(item)
                if len(head) >= SNIFF_RECORDS:
                    break
            self.decide(head)
        yield from itertools.chain(head, raw)

    def decide(self, head: list[Record | Reject]) -> None:
        """The file's format (format auto): the one most of its first SNIFF_RECORDS items have."""
        # mixed formats confuse training: a record of another format than most is rejected
        seen = Counter(formats.detect(r.obj) for r in head if isinstance(r, Record))
        seen.pop(None, None)
        self.format = seen.most_common(1)[0][0] if seen else None
        if len(seen) > 1:
            self.warnings.append(f"{self.path}: records of several formats ({dict(seen)}); treating it as {self.format}")

    def convert(self, rec: Record) -> Converted:
        """One readable record of this file (its format decided) as a canonical row, or why it cannot be one."""
        obj = rec.obj
        detected = formats.detect(obj)
        use = detected if self.fmt == "mixed" else self.format
        if use is None or (self.fmt == "auto" and detected is None):
            keys = ", ".join(sorted(obj)[:8]) or "none"
            return Converted(rec, detected, problem=f"record fits no known format (keys: {keys})", code="unknown_format")
        if self.fmt == "auto" and detected != use:
            return Converted(rec, detected, problem=f"record is {detected} but the file is {use}", code="format_mismatch")
        if use == "canonical":
            self.per_format[use] += 1
            return Converted(rec, detected, row={k: obj.get(k) for k in SCHEMA.names})
        try:
            msgs, tools, rejected, meta = formats.to_messages(obj, use)
        except formats.RecordError as exc:
            return Converted(rec, detected, problem=f"not valid {use}: {exc}", code="schema_violation")
        origin = self.origin or (meta.pop("origin") if isinstance(meta.get("origin"), str) else None) or "seed"
        self.per_format[use] += 1
        source = {"file": rec.file, "line": rec.line, "row": rec.row}
        return Converted(rec, detected, row=make_row(msgs, tools=tools, rejected=rejected, source=source,
                                                       origin=origin, meta=meta))


def canonical(item: Converted | Reject) -> dict[str, Any] | Reject:
    """What ingest keeps of an item: its canonical row, or a Reject that says why it has none."""
    if isinstance(item, Reject):
        return item
    if item.row is not None:
        return item.row
    r = item.record
    hint = " (use --format mixed to accept both)" if item.code == "format_mismatch" else ""
    return Reject(r.file, r.line, r.row, (item.problem or "") + hint, raw_text(r.obj))


def raw_text(obj: Any, limit: int | None = 300) -> str:
    """A record as JSON for a reject or quarantine row (cut to `limit` characters)."""
    text = json.dumps(obj, ensure_ascii=False, default=str)
    return text if limit is None or len(text) <= limit else text[:limit] + "..."
