"""`curate repair`: safe, named fixes, each counted, every changed row keeping its original.

The fixes (curate/repair/fixes.py) run on the content of every message of `messages` and `rejected`, in the
order of FIXES; `code_fence` only on the assistant messages of `messages` (a rejected reply's cut-off code may
be why it was rejected), `tool_arguments` on the arguments of every tool call. A changed row keeps its id (its
lineage, not a hash of the new text) and gets `repair_original` (JSON {"messages", "rejected"} as they were) and
`repair_fixes` (the fixes that changed it); other rows get nulls, and are written as they were. A second run
keeps the first run's original and adds to its fixes. Counts balance: in = changed + unchanged = out.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

from curate.inputs import Source, open_input
from curate.outcome import StageOutcome
from curate.outputs import ParquetSink
from curate.repair import fixes as fx
from curate.repair.config import FIXES, RepairConfig

REPAIR_COLUMNS = [pa.field("repair_original", pa.string()), pa.field("repair_fixes", pa.list_(pa.string()))]
TEXT_FIXES: dict[str, Callable[[str], str]] = {
    "mojibake": fx.mojibake, "control_characters": fx.control_characters, "whitespace": fx.whitespace,
    "code_fence": fx.code_fence,
}
TEXT_LEFT: dict[str, Callable[[str], bool]] = {
    "mojibake": fx.mojibake_left, "control_characters": fx.control_characters_left,
}


class Tally:
    """Per fix: rows and texts it changed, the first change as an example, and texts it left as they are."""

    def __init__(self, chosen: Sequence[str]):
        self.fixes = {name: {"rows": 0, "texts": 0, "left": 0, "example": None} for name in chosen}
        self.rows = 0  # rows any fix changed

    def changed(self, name: str, row_id: str | None, where: str, before: str, after: str) -> None:
        f = self.fixes[name]
        f["texts"] += 1
        if f["example"] is None:
            f["example"] = {"id": row_id, "where": where, **snippets(before, after)}


def snippets(before: str, after: str, context: int = 24) -> dict[str, str]:
    """Where `before` and `after` first differ, with a little context on each side (a long change is cut)."""
    p = 0
    while p < min(len(before), len(after)) and before[p] == after[p]:
        p += 1
    s = 0
    while s < min(len(before), len(after)) - p and before[-1 - s] == after[-1 - s]:
        s += 1
    start = max(0, p - context)

    def cut(t: str) -> str:
        end = min(len(t), len(t) - s + context, p + 2 * context)
        return ("…" if start else "") + t[start:end] + ("…" if end < len(t) else "")

    return {"before": cut(before), "after": cut(after)}


def _repair_messages(msgs: list[dict[str, Any]], side: str, chosen: Sequence[str], row_id: str | None,
                     tally: Tally, applied: set[str]) -> list[dict[str, Any]] | None:
    """The repaired copy of one message list, or None when no fix changed it."""
    out, changed = [], False
    for i, m in enumerate(msgs):
        m = dict(m)
        content = m.get("content")
        if isinstance(content, str):
            for name in chosen:
                fix = TEXT_FIXES.get(name)
                if fix is None or (name == "code_fence" and (side != "messages" or m.get("role") != "assistant")):
                    continue
                new = fix(content)
                if new != content:
                    tally.changed(name, row_id, f"{side}[{i}].content", content, new)
                    applied.add(name)
                    content, changed = new, True
            m["content"] = content
            for name, left in TEXT_LEFT.items():
                if name in tally.fixes and left(content):
                    tally.fixes[name]["left"] += 1
        if "tool_arguments" in tally.fixes and m.get("tool_calls"):
            calls = []
            for j, call in enumerate(m["tool_calls"]):
                fn = call.get("function") or {}
                args = fn.get("arguments")
                new = fx.tool_arguments(args) if isinstance(args, str) else args
                if new != args:
                    where = f"{side}[{i}].tool_calls[{j}].function.arguments"
                    tally.changed("tool_arguments", row_id, where, args, new)
                    applied.add("tool_arguments")
                    call, changed = {**call, "function": {**fn, "arguments": new}}, True
                elif fx.tool_arguments_left(args):
                    tally.fixes["tool_arguments"]["left"] += 1
                calls.append(call)
            m["tool_calls"] = calls
        out.append(m)
    return out if changed else None


def _repair_batch(batch: pa.RecordBatch, schema: pa.Schema, chosen: Sequence[str], tally: Tally) -> pa.RecordBatch:
    n = batch.num_rows
    names = batch.schema.names
    ids = batch.column("id").to_pylist() if "id" in names else [None] * n
    messages = batch.column("messages").to_pylist()
    rejected = batch.column("rejected").to_pylist() if "rejected" in names else [None] * n
    originals = batch.column("repair_original").to_pylist() if "repair_original" in names else [None] * n
    applied_col = batch.column("repair_fixes").to_pylist() if "repair_fixes" in names else [None] * n
    touched = {"messages": False, "rejected": False}
    for r in range(n):
        applied: set[str] = set()
        new_m = _repair_messages(messages[r] or [], "messages", chosen, ids[r], tally, applied)
        new_r = _repair_messages(rejected[r], "rejected", chosen, ids[r], tally, applied) if rejected[r] else None
        if not applied:
            continue
        tally.rows += 1
        for name in applied:
            tally.fixes[name]["rows"] += 1
        if originals[r] is None:  # a second run keeps the first run's original
            originals[r] = json.dumps({"messages": messages[r], "rejected": rejected[r]}, ensure_ascii=False)
        before = applied_col[r] or []
        applied_col[r] = before + [f for f in FIXES if f in applied and f not in before]
        if new_m is not None:
            messages[r], touched["messages"] = new_m, True
        if new_r is not None:
            rejected[r], touched["rejected"] = new_r, True
    arrays = []
    for field in schema:
        if touched.get(field.name):
            arrays.append(pa.array(messages if field.name == "messages" else rejected, type=field.type))
        elif field.name == "repair_original":
            arrays.append(pa.array(originals, type=field.type))
        elif field.name == "repair_fixes":
            arrays.append(pa.array(applied_col, type=field.type))
        else:
            arrays.append(batch.column(field.name))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def repair(data: Source, output: str | Path, fixes: Sequence[str] | None = None, *,
           batch_size: int = 2_000) -> StageOutcome:
    """Apply the named `fixes` (default: all of FIXES) to `data`, streamed in batches; write `output`."""
    cfg = RepairConfig.build(fix=list(fixes) if fixes is not None else None)
    chosen = [f for f in FIXES if f in cfg.fix]
    if "mojibake" in chosen:
        fx.load_mojibake()
    src = open_input(data)
    schema = src.schema
    for f in REPAIR_COLUMNS:
        if f.name not in schema.names:
            schema = schema.append(f)
    tally = Tally(chosen)
    with ParquetSink(output, schema) as sink:
        for batch in src.batches(batch_size):
            sink.write_table(pa.Table.from_batches([_repair_batch(batch, schema, chosen, tally)]))
    counts = {"in": sink.rows, "changed": tally.rows, "unchanged": sink.rows - tally.rows, "out": sink.rows}
    return StageOutcome("repair", counts, {"data": str(output)},
                        {"input": src.name, "fixes": tally.fixes, "config": cfg.to_dict()},
                        parts=("changed", "unchanged"))

