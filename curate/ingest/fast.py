"""The fast path: JSONL lines of the common shapes straight to canonical Arrow columns and ids.

A line is decoded by msgspec into typed structs of its format (openai, sharegpt, alpaca,
prompt-completion) that admit exactly what the converters of curate.ingest.formats take as it is; the
id's text is msgspec's encoding of structs whose fields are the canonical keys in sorted order, byte for
byte what curate.dataset.make_id hashes (json.dumps escapes as msgspec does: tests check every code
point). Keys outside a format's fields go to meta through Python's json, so meta is the record path's.

Any line the fast path cannot take as it is goes through the record-by-record path instead (readers.
jsonl_item, then Conversion.convert), in its place: invalid JSON or UTF-8, a record of another format
than the file's, a tool call, content parts or a number where text goes, an unknown key inside a message
or turn, an empty prompt. Its row or reject, reason and line number are then the record path's own.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Callable
from operator import attrgetter
from typing import Annotated, Any

import msgspec
import numpy as np
import pyarrow as pa
from msgspec import UNSET, Meta, Raw, Struct, UnsetType, field

from curate.dataset import MESSAGE_TYPE, SCHEMA, SOURCE_TYPE
from curate.ingest.convert import Conversion, canonical
from curate.ingest.formats import FIELDS, SHAREGPT_ROLES, detect
from curate.ingest.readers import Record, Reject, jsonl_item

Text = str | None | UnsetType
_ABSENT = Raw(b"")


class _Slow(Exception):
    """This line takes the record-by-record path."""


class _Message(Struct, forbid_unknown_fields=True, omit_defaults=True, gc=False, kw_only=True):
    """An OpenAI message without tool calls; the fields in sorted order, so its encoding without the Nones is its
    text in the id once content None is "" and role function is tool (_table does both)."""

    content: str | None = None
    function_call: None = None
    name: str | None = None
    role: Annotated[str, Meta(min_length=1)]
    tool_call_id: str | None = None
    tool_calls: None = None


class _Canon(Struct, omit_defaults=True, gc=False):
    """A canonical message as make_id sees it: keys sorted, Nones left out."""

    content: str | None = None
    name: str | None = None
    role: str | None = None
    tool_call_id: str | None = None


class _IdText(Struct, gc=False):
    """make_id's payload: messages, rejected, tools, keys sorted."""

    m: list
    r: list
    t: str | None


class _OpenAI(Struct, forbid_unknown_fields=True, gc=False):
    messages: Annotated[list[_Message], Meta(min_length=1)] | UnsetType = UNSET
    tools: Raw = _ABSENT


class _OpenAIObject(_OpenAI):
    """The same, converted from a record Python's json decoded (a JSON array's element, a CSV row)."""

    tools: Any = UNSET


class _Turn(Struct, forbid_unknown_fields=True, gc=False):
    from_: Text = field(name="from", default=UNSET)
    role: Text = UNSET
    value: Text = UNSET
    content: Text = UNSET


class _ShareGPT(Struct, forbid_unknown_fields=True, gc=False):
    conversations: list[_Turn] | UnsetType = UNSET
    conversation: list[_Turn] | UnsetType = UNSET
    system: Text = UNSET
    tools: Raw = _ABSENT


class _ShareGPTObject(_ShareGPT):
    tools: Any = UNSET


class _Alpaca(Struct, forbid_unknown_fields=True, gc=False):
    instruction: Text = UNSET
    input: Text = UNSET
    output: Text = UNSET
    response: Text = UNSET
    system: Text = UNSET
    history: list[tuple[str | None, str | None]] | None | UnsetType = UNSET


class _PromptCompletion(Struct, forbid_unknown_fields=True, gc=False):
    prompt: Text = UNSET
    completion: Text = UNSET


def _loads(raw: Raw) -> Any:
    """A raw JSON value as Python's json reads it (what the record path holds)."""
    try:
        return json.loads(bytes(raw).decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise _Slow from exc


def _tools(value: Any) -> Any:
    """A record's tools value (UNSET when it has none)."""
    if isinstance(value, Raw):
        return _loads(value) if value else UNSET
    return value


def _text(value: str | None | UnsetType) -> str:
    return value if isinstance(value, str) else ""


def _openai(rec: _OpenAI) -> tuple[list, str | None]:
    if rec.messages is UNSET:
        raise _Slow
    value = _tools(rec.tools)
    if value is UNSET or value is None:
        return rec.messages, None
    return rec.messages, value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _sharegpt(rec: _ShareGPT) -> tuple[list, str | None]:
    turns = rec.conversations if rec.conversations is not UNSET else rec.conversation
    if not turns or (rec.conversations is not UNSET and rec.conversation is not UNSET):
        raise _Slow  # both keys: the other one is meta
    msgs = [_Canon(_text(rec.system), role="system")] if rec.system else []
    for t in turns:
        who = t.from_ if t.from_ is not UNSET else t.role
        if not isinstance(who, str) or who.lower() == "function_call":
            raise _Slow
        role = SHAREGPT_ROLES.get(who.strip().lower())
        if role is None:
            raise _Slow
        msgs.append(_Canon(_text(t.value if t.value is not UNSET else t.content), role=role))
    tools = None
    value = _tools(rec.tools)
    if value:  # UNSET is false
        tools = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return msgs, tools


def _alpaca(rec: _Alpaca) -> tuple[list, str | None]:
    msgs = [_Canon(_text(rec.system), role="system")] if rec.system else []
    for prompt, reply in rec.history or ():
        msgs.append(_Canon(_text(prompt), role="user"))
        msgs.append(_Canon(_text(reply), role="assistant"))
    instruction, extra = _text(rec.instruction), _text(rec.input)
    prompt = f"{instruction}\n\n{extra}" if instruction and extra else instruction or extra
    if not prompt:
        raise _Slow
    msgs.append(_Canon(prompt, role="user"))
    msgs.append(_Canon(_text(rec.output if rec.output is not UNSET else rec.response), role="assistant"))
    return msgs, None


def _prompt_completion(rec: _PromptCompletion) -> tuple[list, str | None]:
    return [_Canon(_text(rec.prompt), role="user"), _Canon(_text(rec.completion), role="assistant")], None


class _Shape:
    """One format's struct, its converter, and the format formats.detect gives a record it decoded
    (tests check `detected` against formats.detect for every set of its keys)."""

    def __init__(self, format: str, struct: type, convert: Callable[[Any], tuple[list, str | None]],
                 detected: Callable[[Any], str | None], objects: type | None = None):
        self.format = format
        self.decoder = msgspec.json.Decoder(struct)
        self.struct = struct
        self.objects = objects or struct  # the struct msgspec.convert makes of a decoded record
        self.convert = convert
        self.detected = detected


SHAPES: dict[str, _Shape] = {
    "openai": _Shape("openai", _OpenAI, _openai, lambda r: "openai" if r.messages is not UNSET else None,
                     _OpenAIObject),
    "sharegpt": _Shape("sharegpt", _ShareGPT, _sharegpt, lambda r: "sharegpt" if r.conversations is not UNSET
                       or r.conversation is not UNSET else None, _ShareGPTObject),
    "alpaca": _Shape("alpaca", _Alpaca, _alpaca, lambda r: "alpaca" if r.instruction is not UNSET
                     and (r.output is not UNSET or r.response is not UNSET) else None),
    "prompt-completion": _Shape("prompt-completion", _PromptCompletion, _prompt_completion, lambda r: "prompt-completion"
                                if r.prompt is not UNSET and r.completion is not UNSET else None),
}
_ANY_KEYS = msgspec.json.Decoder(dict[str, Raw])
_ENCODE = msgspec.json.Encoder().encode
_NO_MESSAGES: list = []


def _table(file: str, kept: list[tuple]) -> pa.Table:
    """The canonical table of the rows the fast path kept: (messages, tools, origin, meta, line, row) each."""
    return table_columns(file, kept)[0]


def table_columns(file: str, kept: list[tuple]) -> tuple[pa.Table, list[str], list[str], list[str], list[int]]:
    """_table's table, with its ids, its messages' roles and contents (all rows' messages in a row) and each row's
    first message's index among them (one more at the end): what validate's checks read."""
    msgs, tools, origins, metas, lines, rows = (list(c) for c in zip(*kept))
    flat = list(itertools.chain.from_iterable(msgs))
    roles, contents = list(map(_ROLE, flat)), list(map(_CONTENT, flat))
    if None in contents or "function" in roles:  # OpenAI messages as formats._openai_messages has them
        for m in flat:
            if m.content is None:
                m.content = ""
            if m.role == "function":  # the legacy name of the tool role
                m.role = "tool"
        roles, contents = list(map(_ROLE, flat)), list(map(_CONTENT, flat))
    ids = [hashlib.sha256(_ENCODE(_IdText(m, _NO_MESSAGES, t))).hexdigest()[:16] for m, t in zip(msgs, tools)]
    n, k = len(kept), len(flat)
    offsets = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(list(map(len, msgs)), out=offsets[1:])
    message = pa.StructArray.from_arrays(
        [pa.array(roles, pa.string()), _strings(contents), _maybe(list(map(_NAME, flat))),
         pa.nulls(k, MESSAGE_TYPE.field("tool_calls").type), _maybe(list(map(_CALL_ID, flat)))],
        fields=list(MESSAGE_TYPE))
    source = pa.StructArray.from_arrays(
        [_same([file] * n), pa.array(lines, pa.int64()), pa.array(rows, pa.int64())], fields=list(SOURCE_TYPE))
    columns = [
        pa.array(ids, pa.string()),
        pa.ListArray.from_arrays(pa.array(offsets), message, type=SCHEMA.field("messages").type),
        _maybe(tools),
        pa.nulls(n, SCHEMA.field("rejected").type),
        source,
        _same(origins),
        _maybe(metas),
    ]
    table = pa.Table.from_batches([pa.RecordBatch.from_arrays(columns, schema=SCHEMA)])
    return table, ids, roles, contents, offsets.tolist()


_ROLE, _CONTENT, _NAME, _CALL_ID = (attrgetter(a) for a in ("role", "content", "name", "tool_call_id"))


def _maybe(values: list[str | None]) -> pa.Array:
    if values.count(None) == len(values):
        return pa.nulls(len(values), pa.string())
    return pa.array(values, pa.string())


def _same(values: list[str]) -> pa.Array:
    if values and values.count(values[0]) == len(values):
        return pa.repeat(values[0], len(values)).cast(pa.string())
    return pa.array(values, pa.string())


def _strings(values: list[str]) -> pa.Array:
    """A string array from Python strings, through one joined buffer (a faster copy than pa.array's)."""
    text = "".join(values)
    data = text.encode("utf-8")
    if len(data) >= 1 << 31:
        return pa.array(values, pa.string())
    sizes = list(map(len, values)) if text.isascii() else [len(v) if v.isascii() else len(v.encode("utf-8"))
                                                          for v in values]
    offsets = np.zeros(len(values) + 1, dtype=np.int32)
    np.cumsum(sizes, out=offsets[1:])
    return pa.StringArray.from_buffers(len(values), pa.py_buffer(offsets), pa.py_buffer(data))


def _use(conv: Conversion, detected: str | None) -> str:
    """The format a record of format `detected` is converted as, if the fast path can (Conversion.convert's rule)."""
    use = detected if conv.fmt == "mixed" else conv.format
    if use is None or (conv.fmt == "auto" and detected != use) or use not in SHAPES:
        raise _Slow
    return use


def _with_meta(conv: Conversion, line: bytes) -> tuple[str, Any, dict[str, Any]]:
    """(format, record, meta) of a record with keys its format does not read: those go to meta."""
    obj = _ANY_KEYS.decode(line)
    use = _use(conv, detect(obj))  # its values are Raw: only mtbench (never fast) looks at one
    fields = FIELDS[use]
    if use == "sharegpt" and "conversations" in obj and "conversation" in obj:
        raise _Slow
    known = b",".join(_ENCODE(k) + b":" + bytes(v) for k, v in obj.items() if k in fields)
    return use, SHAPES[use].decoder.decode(b"{" + known + b"}"), {k: _loads(v) for k, v in obj.items() if k not in fields}


def convert_lines(conv: Conversion, lines: list[bytes], line: int, whole_last: bool
                  ) -> tuple[pa.Table | None, list[Reject], int]:
    """(canonical rows, rejects, rows read) of JSONL lines (without their newlines) that follow line `line`, for a
    Conversion whose format is decided (or mixed); rows are numbered from 1 (the caller adds the rows before);
    `whole_last`: the last line ended with a newline."""
    file = str(conv.path)
    fixed = conv.fmt not in ("auto", "mixed")
    shape = SHAPES.get(conv.format) if conv.format is not None else None  # the struct tried first
    origin = conv.origin or "seed"
    kept: list[tuple] = []
    slow: list[dict] = []
    slow_at: list[int] = []  # where the record path's rows go among the rows kept
    rejects: list[Reject] = []
    row = 0
    last = len(lines) - 1
    for k, raw in enumerate(lines):
        if not raw.strip():
            continue
        try:
            try:
                rec = shape.decoder.decode(raw) if shape is not None else None
            except msgspec.ValidationError:
                rec = None  # other keys (meta), another format, or values the record path must judge
            if rec is not None:
                if not (fixed or shape.detected(rec)):
                    raise _Slow
                use, meta, mine = shape.format, None, origin
                msgs, tools = shape.convert(rec)
            else:
                use, rec, values = _with_meta(conv, raw)
                if conv.fmt == "mixed":
                    shape = SHAPES[use]
                mine = conv.origin or (values.pop("origin") if isinstance(values.get("origin"), str) else None) or "seed"
                meta = json.dumps(values, ensure_ascii=False, sort_keys=True) if values else None
                msgs, tools = SHAPES[use].convert(rec)
            if _tool_tags(msgs):
                raise _Slow
        except (_Slow, msgspec.DecodeError, RecursionError):  # msgspec gives up on deep nesting before Python does
            pass
        else:
            row += 1
            conv.per_format[use] += 1
            kept.append((msgs, tools, mine, meta, line + k + 1, row))
            continue
        whole = k < last or whole_last
        text = raw.decode("utf-8", errors="surrogateescape") + ("\n" if whole else "")
        if line + k == 0:
            text = text.lstrip("\ufeff")
        if not text.strip():
            continue
        row += 1
        item = jsonl_item(file, line + k + 1, row, text, whole, lambda: None)
        got = canonical(conv.convert(item) if isinstance(item, Record) else item)
        if isinstance(got, Reject):
            rejects.append(got)
        else:
            slow_at.append(len(kept) + len(slow))
            slow.append(got)
    return _merge(file, kept, slow, slow_at), rejects, row


def convert_records(conv: Conversion, items: list[Record | Reject]) -> tuple[pa.Table | None, list[Reject]]:
    """(canonical rows, rejects) of records Python's json decoded (JSON arrays, CSV, Parquet), for a Conversion
    whose format is decided (or mixed): msgspec.convert checks them against the same structs, and a record it
    does not take goes through Conversion.convert, in its place."""
    file = str(conv.path)
    kept: list[tuple] = []
    slow: list[dict] = []
    slow_at: list[int] = []
    rejects: list[Reject] = []
    origin = conv.origin or "seed"
    for item in items:
        if isinstance(item, Reject):
            rejects.append(item)
            continue
        obj = item.obj
        try:
            use = _use(conv, detect(obj))
            shape = SHAPES[use]
            try:
                rec, meta, mine = msgspec.convert(obj, shape.objects), None, origin
            except msgspec.ValidationError:  # keys its format does not read: those go to meta
                fields = FIELDS[use]
                if use == "sharegpt" and "conversations" in obj and "conversation" in obj:
                    raise _Slow from None
                rec = msgspec.convert({k: v for k, v in obj.items() if k in fields}, shape.objects)
                values = {k: v for k, v in obj.items() if k not in fields}
                mine = conv.origin or (values.pop("origin") if isinstance(values.get("origin"), str) else None) or "seed"
                meta = json.dumps(values, ensure_ascii=False, sort_keys=True) if values else None
            msgs, tools = shape.convert(rec)
            if _tool_tags(msgs):
                raise _Slow
        except (_Slow, msgspec.ValidationError):
            got = canonical(conv.convert(item))
            if isinstance(got, Reject):
                rejects.append(got)
            else:
                slow_at.append(len(kept) + len(slow))
                slow.append(got)
            continue
        conv.per_format[use] += 1
        kept.append((msgs, tools, mine, meta, item.line, item.row))
    return _merge(file, kept, slow, slow_at), rejects


def _tool_tags(msgs: list) -> bool:
    """Whether a message's text holds Hermes-style tool tags, which the record path turns into tool calls
    (curate.ingest.formats._hermes)."""
    return any(isinstance(c, str) and "<tool" in c for c in map(_CONTENT, msgs))


def _merge(file: str, kept: list[tuple], slow: list[dict], slow_at: list[int]) -> pa.Table | None:
    """The rows of the fast path and of the record path as one table, each where it was in the input."""
    tables = ([_table(file, kept)] if kept else []) + ([pa.Table.from_pylist(slow, schema=SCHEMA)] if slow else [])
    if len(tables) < 2:
        return tables[0] if tables else None
    order, taken, at = [], 0, iter(slow_at)  # take() indices: the fast rows come first in the concatenation
    nxt = next(at)
    for p in range(len(kept) + len(slow)):
        if p == nxt:
            order.append(len(kept) + len(order) - taken)
            nxt = next(at, -1)
        else:
            order.append(taken)
            taken += 1
    return pa.concat_tables(tables).take(order)
