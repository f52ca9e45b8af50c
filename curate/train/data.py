"""Training data (any input curate reads) -> tokenized examples with assistant-only labels, a validation split, length limits."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from curate.embedded import render
from curate.errors import InputError, UsageError
from curate.inputs import Source, open_input

IGNORE = -100  # label value the loss skips


@dataclass
class TokenizedData:
    """Tokenized train / validation examples and the counts a run card reports."""

    train: list[dict[str, list[int]]]
    val: list[dict[str, list[int]]]
    max_length: int
    max_length_source: str  # "p95 of data" or "config"
    rows_in: int = 0
    dropped_too_long: int = 0
    dropped_no_assistant: int = 0
    val_source: str = "fraction"

    def summary(self) -> dict[str, Any]:
        return {
            "rows_in": self.rows_in,
            "train_rows": len(self.train),
            "val_rows": len(self.val),
            "dropped_too_long": self.dropped_too_long,
            "dropped_no_assistant": self.dropped_no_assistant,
            "max_length": self.max_length,
            "max_length_source": self.max_length_source,
            "val_source": self.val_source,
            "train_tokens": sum(len(e["input_ids"]) for e in self.train),
            "train_label_tokens": sum(sum(1 for x in e["labels"] if x != IGNORE) for e in self.train),
        }


def percentile(values: list[int], pct: float) -> int:
    """Nearest-rank percentile (an actual data value, so P95 of short data stays a real length)."""
    if not values:
        return 0
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def tokenize_table(table: pa.Table, tokenizer: Any, file: str) -> tuple[list[dict], int]:
    """Every row rendered with the chat template; labels are the assistant tokens only."""
    examples, no_assistant = [], 0
    messages_col = table.column("messages").to_pylist()
    tools_col = table.column("tools").to_pylist() if "tools" in table.column_names else [None] * table.num_rows
    for i, (messages, tools) in enumerate(zip(messages_col, tools_col)):
        try:
            r = render(tokenizer, messages, tools)
        except InputError as exc:
            raise InputError(f"row {i}: {exc}", file=file) from exc
        if not any(r.assistant_mask):
            no_assistant += 1  # nothing to learn from; counted, not silently lost
            continue
        labels = [t if m else IGNORE for t, m in zip(r.input_ids, r.assistant_mask)]
        examples.append({"input_ids": r.input_ids, "labels": labels, "row": i, "id": _row_key(messages, i)})
    return examples, no_assistant


def _row_key(messages: list[dict], i: int) -> str:
    # ids repeat for exact duplicates; the position keeps each row's split decision its own
    text = "".join((m.get("content") or "") for m in messages)
    return hashlib.sha256(f"{i}:{text}".encode()).hexdigest()


def _split(examples: list[dict], fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """Deterministic split by hashed row key: the same data and seed always give the same split."""
    if fraction <= 0:
        return examples, []
    ranked = sorted(examples, key=lambda e: hashlib.sha256(f"{seed}:{e['id']}".encode()).hexdigest())
    n_val = max(1, round(len(examples) * fraction)) if len(examples) > 1 else 0
    val_ids = {e["id"] for e in ranked[:n_val]}
    return [e for e in examples if e["id"] not in val_ids], [e for e in examples if e["id"] in val_ids]


def _read(source: Source) -> pa.Table:
    """The columns training reads (a table given in memory may lack `tools`)."""
    src = open_input(source)
    return src.read([c for c in ("messages", "tools") if c in src.schema.names])


def _name(source: Source) -> str:
    return "(table)" if isinstance(source, pa.Table) else str(source)


def prepare(
    data: Source,
    tokenizer: Any,
    *,
    val: Source | None = None,
    val_fraction: float = 0.1,
    max_length: int | None = None,
    length_percentile: float = 95.0,
    seed: int = 0,
) -> TokenizedData:
    """Load, tokenize, split and length-filter the training data (too-long rows are dropped and counted)."""
    table = _read(data)
    if table.num_rows == 0:
        raise InputError("no rows to train on", file=_name(data))
    examples, no_assistant = tokenize_table(table, tokenizer, _name(data))
    rows_in = table.num_rows
    if val is not None:
        val_table = _read(val)
        rows_in += val_table.num_rows
        val_examples, val_no_assistant = tokenize_table(val_table, tokenizer, _name(val))
        no_assistant += val_no_assistant
        train_ex, val_ex, val_source = examples, val_examples, f"file {_name(val)}"
    else:
        train_ex, val_ex = _split(examples, val_fraction, seed)
        val_source = f"{val_fraction:.0%} of data"
    if not train_ex:
        raise InputError("no row has an assistant reply to learn from", file=_name(data))
    if max_length is None:
        limit = percentile([len(e["input_ids"]) for e in train_ex], length_percentile)
        source = f"p{length_percentile:g} of data"
    else:
        limit, source = max_length, "config"
    kept_train = [e for e in train_ex if len(e["input_ids"]) <= limit]
    kept_val = [e for e in val_ex if len(e["input_ids"]) <= limit]
    dropped = len(train_ex) - len(kept_train) + len(val_ex) - len(kept_val)
    if not kept_train:
        raise UsageError(f"every training row is longer than max_length={limit} tokens; raise --max-length")
    return TokenizedData(
        train=[_strip(e) for e in kept_train],
        val=[_strip(e) for e in kept_val],
        max_length=limit,
        max_length_source=source,
        rows_in=rows_in,
        dropped_too_long=dropped,
        dropped_no_assistant=no_assistant,
        val_source=val_source,
    )


def _strip(e: dict) -> dict[str, list[int]]:
    return {"input_ids": e["input_ids"], "labels": e["labels"]}
