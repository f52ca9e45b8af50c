"""The fast path of a JSONL block of an OpenAI chat file checked against the shipped openai-chat schema.

A line that msgspec decodes into the structs below is valid against that schema (tests/test_validate_fast.py
checks the structs against it): its messages have a role of the schema's enum, text or null content, a text
name and tool_call_id, and no other key (no tool calls, content parts or weight); its other top-level keys
are ones the schema leaves free. So jsonschema would report nothing, and is not asked. Such a line becomes a
canonical row through ingest's fast path (curate.ingest.fast.table_columns, the row the record path makes),
and its semantic checks (curate.validate.structure.message_findings) run once per shape of conversation,
not once per record: without tool calls or tools they read only each message's role, whether its content
is blank, and a tool message's tool_call_id. Encoding damage can only be in non-ASCII text, so only those
records are scanned (structure.text_findings). Every other line (tool calls or tools, content parts, a key
the schema does not know, bad JSON or UTF-8, a BOM) takes the record path (checks.check_raw) in its place.
The block's result is the record path's, row for row: the same findings, rows, raw texts and tallies.

Not for a token check (it reads whole messages): checks.check_block takes the record path then.
"""

from __future__ import annotations

import copy
import functools
import itertools
import json
import operator
from bisect import bisect_right
from collections import Counter
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
import pyarrow as pa
from msgspec import Meta, Raw, Struct

from curate.ingest import fast as ingest_fast
from curate.ingest.convert import Conversion, raw_text
from curate.ingest.formats import detect
from curate.ingest.readers import jsonl_item
from curate.validate.checks import BatchResult, BlockJob, Checker, RawItem, check_raw, take_line
from curate.validate.codes import Finding, is_error
from curate.validate.compliance import replies, reply_style
from curate.validate.structure import message_findings, text_findings


class _Message(Struct, forbid_unknown_fields=True, omit_defaults=True, gc=False, kw_only=True):
    """A message the schema accepts, without tool calls; fields in sorted order, as curate.ingest.fast._Message
    (ingest's id text). `name` and `tool_call_id` are absent or text: their None default is never decoded."""

    content: str | None
    name: str = None  # type: ignore[assignment]
    role: Literal["system", "user", "assistant", "tool", "function"]
    tool_call_id: str = None  # type: ignore[assignment]


Messages = Annotated[list[_Message], Meta(min_length=1)]


class _Chat(Struct, forbid_unknown_fields=True, gc=False):
    messages: Messages


_CHAT = msgspec.json.Decoder(_Chat)
_MESSAGES = msgspec.json.Decoder(Messages)
_KEYS = msgspec.json.Decoder(dict[str, Raw])
_CONSTRAINED = frozenset({"tools", "parallel_tool_calls"})  # the other top-level keys the schema has rules for


class _Slow(Exception):
    """This line takes the record path."""


@functools.lru_cache(maxsize=1)
def _shipped() -> dict:
    """The shipped openai-chat schema, as the structs mirror it (a copy: load_schema's is shared and mutable)."""
    from curate.recipe import load_schema

    return copy.deepcopy(load_schema("openai-chat"))


def applies(checker: Checker, job: BlockJob) -> bool:
    """Whether this block of an OpenAI chat file, checked against the shipped schema, can take the fast path."""
    return (job.format == "openai" and job.fmt in ("auto", "openai") and job.block.problem is None
            and checker.tokens is None and checker.spec.schema is not None and checker.spec.schema == _shipped())


def _strict(raw: bytes, fixed: bool, origin: str | None) -> tuple[list, str | None, Any, str | None, str | None]:
    """(messages, detected format, declared id, origin, meta) of a line the schema accepts; _Slow otherwise."""
    if b"<tool" in raw:  # Hermes-style tool tags: the record path turns them into tool calls (ingest.formats._hermes)
        raise _Slow
    try:
        return _CHAT.decode(raw).messages, "openai", None, None, None
    except msgspec.ValidationError:
        pass  # keys besides messages (meta), or a message the structs do not take
    obj = _KEYS.decode(raw)
    if "messages" not in obj or not _CONSTRAINED.isdisjoint(obj):
        raise _Slow
    detected = detect(obj)  # on its keys only
    if not fixed and detected != "openai":
        raise _Slow
    messages = _MESSAGES.decode(bytes(obj.pop("messages")))
    try:
        values = {k: json.loads(bytes(v).decode("utf-8")) for k, v in obj.items()}  # as the record path reads them
    except (ValueError, RecursionError) as exc:
        raise _Slow from exc
    declared = values.get("id")
    mine = origin or (values.pop("origin") if isinstance(values.get("origin"), str) else None)
    meta = json.dumps(values, ensure_ascii=False, sort_keys=True) if values else None
    return messages, detected, declared, mine, meta


def check_block(checker: Checker, job: BlockJob) -> tuple[list[tuple], BatchResult, list[str], int]:
    """checks.check_block's result for a block `applies` accepts: fast rows, and record-path rows in their places."""
    conv = Conversion(Path(job.file), job.fmt, job.origin)
    conv.format = job.format
    block = job.block
    data = block.read(job.where)
    lines = data.split(b"\n")
    if not lines[-1]:
        lines.pop()
    whole_last = not block.last or data.endswith(b"\n")
    fixed = conv.fmt != "auto"
    kept: list[tuple] = []  # the fast rows, as curate.ingest.fast keeps them
    facts: list[tuple[str | None, Any, int]] = []  # per fast row: detected format, declared id, index in lines
    order: list[int] = []  # per record: its index in kept, or ~ its index in the slow lists
    items: list[RawItem] = []
    held: list[tuple] = []
    objs: list[Any] = []
    notices: list[str] = []
    row = 0
    last = len(lines) - 1
    for k, raw in enumerate(lines):
        if not raw.strip():
            continue
        try:
            msgs, detected, declared, mine, meta = _strict(raw, fixed, conv.origin)
        except (_Slow, msgspec.DecodeError, RecursionError):  # msgspec gives up on deep nesting before Python does
            pass
        else:
            row += 1
            order.append(len(kept))
            kept.append((msgs, None, mine or conv.origin or "seed", meta, block.line + k + 1, row))
            facts.append((detected, declared, k))
            continue
        # the record path, as checks.check_block reads a line (blocks._texts, readers.jsonl_items)
        whole = k < last or whole_last
        text = raw.decode("utf-8", errors="surrogateescape") + ("\n" if whole else "")
        if block.line + k == 0:
            text = text.lstrip("\ufeff")
        if not text.strip():
            continue
        row += 1
        x = jsonl_item(job.file, block.line + k + 1, row, text, whole, lambda: None)
        order.append(~len(items))
        take_line(checker, conv, x, items, held, objs, notices)  # the shipped schema: checker.validator is set
    slow = check_raw(checker, items) if items or not kept else None
    if slow is not None:
        _raw_texts(slow, held, objs)
    if not kept:
        return held, slow, notices, row
    fast, fast_held, profile = _check_fast(checker, job.file, kept, facts, lines)
    if slow is None:
        _profiled(fast, profile)
        return fast_held, fast, notices, row
    held = [fast_held[o] if o >= 0 else held[~o] for o in order]
    return held, _merged_result(order, fast, profile, slow, items), notices, row


def _raw_texts(result: BatchResult, held: list[tuple], objs: list[Any]) -> None:
    """The raw text of the record-path rows that may be quarantined (checks.check_block's rule)."""
    for i, obj in enumerate(objs):
        if obj is None:
            continue
        risky = (not result.checked[i] or result.declared[i] is not None
                 or any(is_error(f.code) for f in result.first[i] + result.after[i]))
        if risky:
            file, line, _, _ = held[i]
            held[i] = (file, line, None, raw_text(obj, None))


def _shape(key: tuple, allow_consecutive_user: bool) -> tuple[list[Finding], bool, int | None, int | None]:
    """For a conversation of this shape: its findings, whether one is an error, the last reply's and the first
    system message's index."""
    msgs = []
    for piece in key:
        role, blank, ref = piece if isinstance(piece, tuple) else (piece, False, None)
        msgs.append({"role": role, "content": "" if blank else "x", "tool_calls": None, "tool_call_id": ref})
    found = message_findings(msgs, None, allow_consecutive_user)
    roles = [m["role"] for m in msgs]
    reply_at = len(roles) - 1 - roles[::-1].index("assistant") if "assistant" in roles else None
    system_at = roles.index("system") if "system" in roles else None
    return found, any(is_error(f.code) for f in found), reply_at, system_at


def _style(text: str) -> str:
    """compliance.reply_style: text that starts with none of `{`, `[`, a backtick or whitespace is prose."""
    if text and text[0] not in "{[`" and not text[0].isspace():
        return "prose"
    return reply_style(text)


def _check_fast(checker: Checker, file: str, kept: list[tuple], facts: list[tuple[str | None, Any, int]],
                lines: list[bytes]) -> tuple[BatchResult, list[tuple], list[tuple]]:
    """The fast rows' BatchResult (its profile not yet counted), held rows and (reply style, system prompt, input
    format) per row."""
    table, ids, roles, contents, offsets = ingest_fast.table_columns(file, kept)
    n = len(kept)
    # a message's piece of its conversation's shape: its role, or (role, blank, tool_call_id) when more matters
    pieces: list[Any] = roles
    blank = list(map(operator.not_, map(str.strip, contents)))
    if True in blank or "tool" in roles:
        pieces = list(roles)
        refs = list(map(operator.attrgetter("tool_call_id"), itertools.chain.from_iterable(k[0] for k in kept)))
        for i, role in enumerate(roles):
            if blank[i] or role == "tool":
                pieces[i] = (role, blank[i], refs[i] if role == "tool" else None)
    texty: set[int] = set()  # rows with non-ASCII text: the only ones encoding damage can be in
    if not all(map(str.isascii, contents)):
        texty = {bisect_right(offsets, i) - 1 for i, c in enumerate(contents) if not c.isascii()}
    out = checker.out_check
    out.records = out.compliant = out.replies = out.replies_ok = 0
    active = out.active
    allow = checker.spec.allow_consecutive_user
    shapes: dict[tuple, tuple] = {}
    first: list[list[Finding]] = []
    after: list[list[Finding]] = [[] for _ in range(n)]
    declared: list[str | None] = [None] * n
    compliant: list[bool | None] = [None] * n
    held: list[tuple] = []
    profile: list[tuple[str | None, str | None, str | None]] = []
    for j in range(n):
        a, b = offsets[j], offsets[j + 1]
        key = tuple(pieces[a:b])
        shape = shapes.get(key)
        if shape is None:
            shape = shapes[key] = _shape(key, allow)
        found, risky, reply_at, system_at = shape
        if j in texty:
            found = found + text_findings([{"content": c} for c in contents[a:b]])
            risky = risky or any(is_error(f.code) for f in found)
        first.append(found)
        if active:
            after[j], compliant[j] = out.check([{"role": r, "content": c} for r, c in zip(roles[a:b], contents[a:b])])
            risky = risky or any(is_error(f.code) for f in after[j])
        detected, d, k = facts[j]
        if d is not None:
            risky = True
            if not isinstance(d, (dict, list)):
                declared[j] = str(d)
        line = kept[j][4]
        held.append((file, line, None, raw_text(json.loads(lines[k].decode("utf-8")), None) if risky else None))
        profile.append((_style(contents[a + reply_at]) if reply_at is not None else None,
                        contents[a + system_at] if system_at is not None else None, detected))
    res = BatchResult(first, [True] * n, after, ids, declared, [None] * n, compliant, [(None, None)] * n,
                      table.to_batches()[0], compliance=(out.records, out.compliant, out.replies, out.replies_ok))
    return res, held, profile


def _merged_result(order: list[int], fast: BatchResult, profile: list[tuple], slow: BatchResult,
                   items: list[RawItem]) -> BatchResult:
    """One BatchResult of the fast and the record-path rows, in record order, as check_raw gives it for all."""
    def pick(name: str) -> list:
        mine, theirs = getattr(fast, name), getattr(slow, name)
        return [mine[o] if o >= 0 else theirs[~o] for o in order]

    res = BatchResult(pick("first"), pick("checked"), pick("after"), pick("ids"), pick("declared"), pick("tokens"),
                      pick("compliant"), pick("where"))
    # the rows that reached the checks, in record order (the fast rows come first in the concatenation)
    slow_at = list(itertools.accumulate(slow.checked))  # a checked slow row's index in slow.rows, plus one
    n_fast = fast.rows.num_rows
    take = [o if o >= 0 else n_fast + slow_at[~o] - 1 for o in order if o >= 0 or slow.checked[~o]]
    both = pa.Table.from_batches([fast.rows, slow.rows])
    res.rows = both.take(pa.array(take, type=pa.int64())).combine_chunks().to_batches()[0]
    # the profile in record order: its counts' keys come in order of first appearance (the report's order)
    rows = []
    for o in order:
        if o >= 0:
            rows.append(profile[o])
        elif slow.checked[~o]:
            it = items[~o]
            msgs = it.row["messages"]
            texts = replies(msgs)
            system = next((m.get("content") for m in msgs if m.get("role") == "system"), None)
            rows.append((reply_style(texts[-1][1]) if texts else None, system, it.fmt))
    _profiled(res, rows)
    res.compliance = tuple(x + y for x, y in zip(fast.compliance, slow.compliance))  # type: ignore[assignment]
    return res


def _profiled(res: BatchResult, rows: list[tuple[str | None, str | None, str | None]]) -> None:
    """A batch's profile (checks._profile's counts) from (reply style, system prompt, input format) per checked row."""
    res.profiled = len(rows)
    res.styles = Counter(style for style, _, _ in rows if style is not None)
    res.systems = Counter(system for _, system, _ in rows)
    res.input_formats = Counter(fmt for _, _, fmt in rows if fmt)
