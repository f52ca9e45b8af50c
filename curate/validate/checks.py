"""The per-batch work of `curate validate`, done wherever the engine runs it (this process or a worker).

`setup(spec)` builds a Checker once per worker (the tokenizer loaded once, the schemas compiled once);
`check_raw(checker, items)` and `check_canonical(checker, batch)` check one batch and return a
BatchResult: every row's findings before and after the duplicate checks, token counts, compliance,
the keys the parent tracks duplicates by, and the batch's tallies. Nothing here depends on other
batches: what needs every row (duplicates, the first examples per code, mixed formats, the token
percentiles) is merged in input order by curate.validate.tally, so the outcome is the same for any
number of workers.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from curate.dataset import SCHEMA
from curate.validate.codes import Finding
from curate.validate.compliance import OutputCheck, replies, reply_style
from curate.validate.pairs import PairFacts, pair_findings
from curate.validate.structure import message_findings, schema_findings, text_findings
from curate.validate.tokens import Counted, TokenCheck

CANONICAL_READ = ["id", "messages", "tools", "rejected", "source", "meta"]  # the columns the checks read


@dataclass(frozen=True)
class Spec:
    """What a worker needs to build its Checker (picklable)."""

    tokenizer: Any  # a tokenizer name or folder, a loaded tokenizer, or None (no token check)
    max_tokens: int | None
    output_schema: Any
    output_regex: str | None
    allow_consecutive_user: bool
    schema: dict | None  # the raw format's JSON Schema document, or None
    # False: the tokenizer runs on one thread, so that --workers N is N cores (the workers share them; the
    # tokenizer's own threads on top of them only contend). validate() restores the variable in its own process.
    tokenizer_threads: bool = False
    show_mask: int = 0  # records whose loss mask a worker keeps as text for --show-mask (the first of each batch)


@dataclass
class RawItem:
    """One record of a raw file as the worker needs it (a Reject carries its finding already)."""

    fmt: str | None
    row: dict | None
    findings: list[Finding]
    obj: Any = None  # the record as read, for the schema check (None when there is no schema or no record)
    code: str | None = None  # the conversion's problem code and text (curate.ingest.convert.Converted)
    problem: str | None = None
    declared: Any = None  # the record's own `id`
    convertible: bool = False  # a readable record (not a Reject)


@dataclass
class BatchResult:
    """Per row: findings before the duplicate checks, whether the row reached them, findings after them."""

    first: list[list[Finding]]
    checked: list[bool]
    after: list[list[Finding]]
    ids: list[str | None]
    declared: list[str | None]  # str(declared id) where there is one the duplicate-id check can use
    tokens: list[Counted | None]
    compliant: list[bool | None]
    where: list[tuple[str | None, int | None]]  # (file, line) of each row
    rows: pa.RecordBatch | None = None  # raw input: the canonical rows of the rows that reached the checks
    remote: Any = None  # on Ray, instead of `rows`: a reference to them in the object store (stage._checked)
    base: int = 0  # rows before the block: `rows`' source.row still counts from its first (stage._blocks_done)
    labels: Counter | None = None  # raw input on Ray: the KTO labels of `rows`, counted where they are
    styles: Counter = field(default_factory=Counter)
    systems: Counter = field(default_factory=Counter)
    input_formats: Counter = field(default_factory=Counter)
    profiled: int = 0
    compliance: tuple[int, int, int, int] = (0, 0, 0, 0)  # records, compliant, replies, replies compliant
    pairs: list[PairFacts | None] | None = None  # per row, where the batch has preference pairs
    keys: list[int | None] | None = None  # digests of ids (tally.add_keys, on the worker)
    declared_keys: list[int | None] | None = None  # digests of declared ids


class Checker:
    """Everything that checks one row, built once per worker."""

    def __init__(self, spec: Spec):
        self.spec = spec
        self.tokens = None
        if spec.tokenizer is not None:
            if not spec.tokenizer_threads:
                import os

                os.environ["TOKENIZERS_PARALLELISM"] = "false"  # read by the tokenizers library at each batch
            tok = spec.tokenizer
            if isinstance(tok, str):
                from curate.embedded import load_tokenizer

                tok = load_tokenizer(tok)
            self.tokens = TokenCheck(tok, spec.max_tokens, spec.show_mask)
        self.out_check = OutputCheck(spec.output_schema, spec.output_regex)
        self.validator = self.fast = None
        if spec.schema is not None:
            from jsonschema import Draft202012Validator

            from curate.validate.fastschema import compile_schema

            self.validator = Draft202012Validator(spec.schema)
            self.fast = compile_schema(spec.schema)

    def schema_findings(self, obj: Any) -> list[Finding]:
        if self.fast is not None and self.fast(obj):
            return []  # valid: jsonschema would report nothing
        return schema_findings(self.validator, obj)


def setup(spec: Spec) -> Checker:
    return Checker(spec)


def check_raw(checker: Checker, items: list[RawItem]) -> BatchResult:
    """Check a batch of raw records (their conversion already done, in order, by the parent)."""
    first: list[list[Finding]] = []
    rows: list[dict | None] = []
    fmts: list[str | None] = []
    declared: list[Any] = []
    for it in items:
        found = list(it.findings)
        row = None
        if it.convertible:
            # a record of no known format that a schema checks is reported by the schema's findings
            if it.code == "format_mismatch" or (it.code == "unknown_format" and checker.validator is None):
                found.append(Finding(it.code, it.problem))
            if checker.validator is not None:
                found.extend(checker.schema_findings(it.obj))
            if not found:
                if it.row is not None:
                    row = it.row
                else:  # the schema passed, the converter did not
                    found.append(Finding(it.code, it.problem))
        first.append(found)
        rows.append(row)
        fmts.append(it.fmt)
        declared.append(it.declared)
    result = _check_rows(checker, first, rows, fmts, declared, [(None, None)] * len(items))
    kept = [r for r in rows if r is not None]
    result.rows = pa.RecordBatch.from_pylist(kept, schema=SCHEMA)
    return result


def check_canonical(checker: Checker, batch: pa.RecordBatch) -> BatchResult:
    """Check a batch of canonical rows (the columns of CANONICAL_READ)."""
    rows = batch.to_pylist()
    declared = [_declared_in_meta(r.get("meta")) for r in rows]
    where = [((r.get("source") or {}).get("file"), (r.get("source") or {}).get("line")) for r in rows]
    return _check_rows(checker, [[] for _ in rows], rows, [None] * len(rows), declared, where)


def _declared_in_meta(meta: Any) -> Any:
    if isinstance(meta, str) and '"id"' in meta:
        try:
            return json.loads(meta).get("id")
        except (json.JSONDecodeError, AttributeError):
            return None  # meta that is not a JSON object carries no declared id
    return None


def _check_rows(checker: Checker, first: list[list[Finding]], rows: list[dict | None], fmts: list[str | None],
                declared: list[Any], where: list[tuple[str | None, int | None]]) -> BatchResult:
    n = len(rows)
    checked = [row is not None and not found for row, found in zip(rows, first)]
    todo = [i for i in range(n) if checked[i]]
    tokens: list[Counted | None] = [None] * n
    if checker.tokens is not None and todo:
        for i, c in zip(todo, checker.tokens.count([(rows[i]["messages"], rows[i].get("tools")) for i in todo])):
            tokens[i] = c
    out = checker.out_check
    out.records = out.compliant = out.replies = out.replies_ok = 0
    res = BatchResult(first, checked, [[] for _ in range(n)], [None] * n, [None] * n, tokens, [None] * n, where)
    for i in todo:
        row = rows[i]
        msgs = row["messages"]
        first[i] = first[i] + message_findings(msgs, row.get("tools"), checker.spec.allow_consecutive_user)
        first[i] += text_findings(msgs + (row.get("rejected") or []))
        if row.get("rejected") is not None:
            if res.pairs is None:
                res.pairs = [None] * n
            found, res.pairs[i] = pair_findings(msgs, row["rejected"])
            first[i] += found
        res.ids[i] = row["id"]
        d = declared[i]
        if d is not None and not isinstance(d, (dict, list)):
            res.declared[i] = str(d)
        after = list(tokens[i].findings) if tokens[i] is not None else []
        found, res.compliant[i] = out.check(msgs)
        res.after[i] = after + found
        _profile(res, msgs, fmts[i])
    res.compliance = (out.records, out.compliant, out.replies, out.replies_ok)
    return res


def _profile(res: BatchResult, messages: list[dict], input_format: str | None) -> None:
    """The batch's share of curate.validate.compliance.FormatProfile (merged in input order by the parent)."""
    res.profiled += 1
    texts = replies(messages)
    if texts:
        res.styles[reply_style(texts[-1][1])] += 1
    system = next((m.get("content") for m in messages if m.get("role") == "system"), None)
    res.systems[system] += 1
    if input_format:
        res.input_formats[input_format] += 1


@dataclass
class BlockJob:
    """A block of a UTF-8 JSONL file for a worker to read, convert and check (curate.ingest.blocks.Block)."""

    file: str
    fmt: str  # the conversion's setting (auto, mixed or a format)
    format: str | None  # the file's format, decided by the parent from its first records
    origin: str | None
    block: Any
    where: str  # the file's absolute path (`file` names it in rows and findings)


def take_line(checker: Checker, conv: Any, x: Any, items: list[RawItem], held: list[tuple], objs: list[Any],
              notices: list[str]) -> None:
    """One JSONL line of a block on the record path: its reject (and the file problem it tells of), or its
    converted record, appended to what check_raw reads (items), to where it came from (held) and to its
    parsed object (objs)."""
    from curate.ingest.readers import Reject, file_problem
    from curate.validate.structure import reject_code

    if isinstance(x, Reject):
        notice = file_problem(x)
        if notice and notice not in notices:
            notices.append(notice)
        items.append(RawItem(None, None, [Finding(reject_code(x), x.reason)]))
        held.append((x.file, x.line, None, x.raw))
        objs.append(None)
        return
    c = conv.convert(x)
    rec = c.record
    obj = rec.obj if checker.validator is not None else None
    items.append(RawItem(c.detected, c.row, [], obj, c.code, c.problem, rec.obj.get("id"), True))
    held.append((rec.file, rec.line, None, None))
    objs.append(rec.obj)


def check_block(checker: Checker, job: BlockJob) -> tuple[list[tuple], BatchResult, list[str], int]:
    """Read, convert and check one block of JSONL on a worker: (held, result, notices, rows spanned).

    `held` is (file, line, None, raw text) per record, the raw text only where the record may be quarantined
    (a finding, or a declared id the parent's duplicate check may reject): the rest never leaves the worker.
    The canonical rows' `source.row` count from the block's first record; the parent shifts them.
    """
    from pathlib import Path

    from curate.ingest.blocks import _lines, _texts
    from curate.ingest.convert import Conversion, raw_text
    from curate.ingest.readers import jsonl_items
    from curate.validate import fastpath
    from curate.validate.codes import is_error

    if fastpath.applies(checker, job):
        return fastpath.check_block(checker, job)
    conv = Conversion(Path(job.file), job.fmt, job.origin)
    conv.format = job.format
    block = job.block
    data = block.read(job.where)
    texts = _texts(_lines(data), block.last and not data.endswith(b"\n"))
    items: list[RawItem] = []
    held: list[tuple] = []
    objs: list[Any] = []
    notices: list[str] = []
    spanned = 0
    for x in jsonl_items(job.file, texts, lambda: block.problem, block.line, 0, end=block.last):
        spanned += x.row is not None
        take_line(checker, conv, x, items, held, objs, notices)
    result = check_raw(checker, items)
    for i, obj in enumerate(objs):
        if obj is None:
            continue
        risky = (not result.checked[i] or result.declared[i] is not None
                 or any(is_error(f.code) for f in result.first[i] + result.after[i]))
        if risky:
            file, line, _, _ = held[i]
            held[i] = (file, line, None, raw_text(obj, None))
    return held, result, notices, spanned
