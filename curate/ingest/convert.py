"""Raw records to canonical rows: the one conversion `curate ingest`, `curate validate` and every stage's input share.

A file's format is the one most of its first SNIFF_RECORDS records have (unless given). A record of
another format, one that fits no format, or one its format's converter refuses, comes out with the
reason and the validate code for it; a record that could not be read at all comes out as the
reader's Reject. Counts are the caller's: every raw item yields exactly one item here, except a trace record
that holds others (a Langfuse trace download, say: curate.ingest.traces.expand), which yields those.

OpenAI Batch output files hold replies without their requests: `batch_replies` reads them by custom_id, and
each request of a batch input file is converted together with its reply (a failed one is rejected).
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
from curate.ingest import formats, traces
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
    replies: Replies | None = None  # OpenAI Batch replies to pair with this file's requests
    skipped: Counter = field(default_factory=Counter)  # trace records that are not rows (spans, chain runs)
    unanswered: int = 0  # batch requests with no reply among the replies given

    def __post_init__(self) -> None:
        if self.fmt not in FORMAT_CHOICES:
            raise UsageError(f"unknown format '{self.fmt}'; choose auto, mixed or one of {', '.join(formats.INPUT_FORMATS)}")

    def __iter__(self) -> Iterator[Converted | Reject]:
        for item in self.records():
            yield item if isinstance(item, Reject) else self.convert(item)
        self.finish()

    def finish(self) -> None:
        """Once every record is out: warnings for the trace records that are not rows and unanswered requests."""
        if self.skipped:
            kinds = ", ".join(f"{k} {n}" for k, n in sorted(self.skipped.items()))
            self.warnings.append(f"{self.path}: {sum(self.skipped.values())} trace records are not chat turns and "
                                 f"are not rows ({kinds})")
        if self.unanswered:
            self.warnings.append(f"{self.path}: {self.unanswered} OpenAI Batch requests have no reply in the output "
                                 "files given; they are rows without a reply")

    def records(self) -> Iterator[Record | Reject]:
        """The file's raw items, its format decided from the first ones before the first is out."""
        raw = self._expanded(iter_raw(self.path))
        head: list[Record | Reject] = []
        self.format = None if self.fmt in ("auto", "mixed") else self.fmt
        if self.fmt == "auto":
            for item in raw:
                head.append(item)
                if len(head) >= SNIFF_RECORDS:
                    break
            self.decide(head)
        yield from itertools.chain(head, raw)

    def _expanded(self, items: Iterator[Record | Reject]) -> Iterator[Record | Reject]:
        """Trace records that hold records (curate.ingest.traces.expand) as those, numbered in order; rows after
        them are numbered after them."""
        shift = 0
        for item in items:
            if isinstance(item, Reject):
                if item.row is not None:
                    item.row += shift
                yield item
                continue
            raw, item.raw = item.raw, None
            fmt = formats.detect(item.obj) if self.fmt in ("auto", "mixed") else self.fmt
            got = traces.expand(item.obj, fmt, raw) if fmt in traces.FORMATS else None
            if got is None:
                item.row += shift
                yield item
                continue
            objs, skipped = got
            self.skipped.update(skipped)
            for k, (obj, at) in enumerate(objs):
                line = item.line + raw.count("\n", 0, at) if item.line is not None and raw and at else item.line
                yield Record(item.file, line, item.row + shift + k, obj)
            shift += len(objs) - 1

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
        where = ""
        if use == "openai-batch" and self.replies is not None and not traces.is_reply(obj):
            reply = self.replies.take(obj.get("custom_id"))
            if reply is None:
                self.unanswered += 1
            else:  # the request with its output line's response and error
                obj = {**obj, "response": reply.obj.get("response"), "error": reply.obj.get("error")}
                where = f" (reply at {reply.file} line {reply.line})"
        try:
            msgs, tools, rejected, meta = formats.to_messages(obj, use)
        except traces.Failed as exc:
            return Converted(rec, detected, problem=f"{use} request failed{where}: {exc}", code="schema_violation")
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


@dataclass
class Replies:
    """OpenAI Batch output lines (replies) by custom_id, taken by the requests they answer."""

    files: list[Path]
    by_id: dict[str, Record] = field(default_factory=dict)
    bad: list[Reject] = field(default_factory=list)  # lines of the output files that pair with nothing

    def take(self, custom_id: Any) -> Record | None:
        return self.by_id.pop(custom_id, None) if isinstance(custom_id, str) else None

    def left(self, path: Path) -> list[Reject]:
        """A reply file's lines that answered no request given, and those that are no reply, in file order."""
        file = str(path)
        out = [r for r in self.bad if r.file == file]
        out += [Reject(r.file, r.line, r.row, f"no request with custom_id '{cid}' in the batch input files given",
                       raw_text(r.obj)) for cid, r in self.by_id.items() if r.file == file]
        return sorted(out, key=lambda r: (r.row is None, r.row or 0))


def _batch_kind(path: Path, fmt: str) -> str | None:
    """'reply' for an OpenAI Batch output file, 'request' for a batch input file, else None (from its first record)."""
    items = iter_raw(path)
    try:
        for item in items:
            if isinstance(item, Record):
                if fmt != "openai-batch" and formats.detect(item.obj) != "openai-batch":
                    return None
                return "reply" if traces.is_reply(item.obj) else "request"
    finally:
        items.close()
    return None


def batch_replies(paths: list[Path], fmt: str) -> Replies | None:
    """The replies of the OpenAI Batch output files among `paths` (None when there are none); a reply file
    without a batch input file to pair it with is a usage error."""
    if fmt not in ("auto", "mixed", "openai-batch"):
        return None
    kinds = {p: _batch_kind(p, fmt) for p in paths}
    files = [p for p, k in kinds.items() if k == "reply"]
    if not files:
        return None
    if "request" not in kinds.values():
        raise UsageError(f"{files[0]} is an OpenAI Batch output file: it holds the replies, not the requests; give "
                         "the batch input file with it (curate ingest INPUT.jsonl OUTPUT.jsonl), which pairs them "
                         "by custom_id")
    replies = Replies(files)
    for p in files:
        for item in iter_raw(p):
            if isinstance(item, Reject):
                replies.bad.append(item)
            elif not traces.is_reply(item.obj):
                keys = ", ".join(sorted(item.obj)[:8]) or "none"
                replies.bad.append(Reject(item.file, item.line, item.row, f"not an OpenAI Batch output line (keys: "
                                          f"{keys}) in a batch output file", raw_text(item.obj)))
            elif (first := replies.by_id.get(item.obj.get("custom_id"))) is not None:
                replies.bad.append(Reject(item.file, item.line, item.row, f"custom_id '{item.obj['custom_id']}' "
                                          f"is answered twice (first at {first.file} line {first.line})",
                                          raw_text(item.obj)))
            else:
                replies.by_id[str(item.obj.get("custom_id"))] = item
    return replies
