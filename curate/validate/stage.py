"""`validate()`: run every check over a raw file or a canonical dataset and split it into valid and quarantined rows.

Raw files are read record by record (curate.ingest.readers.iter_raw, so a parse error names file and
line), checked against their format's JSON Schema, converted to canonical rows as `curate ingest`
does, then checked like canonical data: messages, encoding, duplicates, tokens, output format.
Errors quarantine a row, warnings are counted and kept; counts balance: in = valid + quarantined.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from curate.console import progress
from curate.dataset import MESSAGE_TYPE, SOURCE_TYPE, canonical_parquet, make_row, read_dataset, rows_to_table
from curate.errors import ThresholdExceeded, UsageError
from curate.ingest import formats
from curate.ingest.readers import Record, file_problem, iter_raw
from curate.outputs import OutputSet, write_table
from curate.validate.codes import CODES, Finding, is_error
from curate.validate.compliance import FormatProfile, OutputCheck
from curate.validate.structure import (
    FORMAT_SCHEMAS,
    SCHEMA_FORMATS,
    message_findings,
    reject_code,
    schema_findings,
    text_findings,
)
from curate.validate.tokens import TokenCheck

SNIFF_RECORDS = 200
EXAMPLES_PER_CODE = 3
QUARANTINE_SCHEMA = pa.schema(
    [
        ("validate_row", pa.int64()),
        ("validate_codes", pa.list_(pa.string())),
        ("validate_errors", pa.list_(pa.string())),
        ("source", SOURCE_TYPE),
        ("id", pa.string()),
        ("messages", pa.list_(MESSAGE_TYPE)),
        ("tools", pa.string()),
        ("rejected", pa.list_(MESSAGE_TYPE)),
        ("origin", pa.string()),
        ("meta", pa.string()),
        ("validate_raw", pa.string()),
    ]
)
ADDED_COLUMNS = {
    "validate_codes": pa.list_(pa.string()),
    "validate_tokens": pa.int64(),
    "validate_assistant_tokens": pa.int64(),
    "validate_compliant": pa.bool_(),
}


@dataclass
class _Item:
    """One input record on its way through the checks."""

    row: int
    file: str | None
    line: int | None
    canonical: dict | None
    raw: str | None = None
    fmt: str | None = None
    findings: list[Finding] = field(default_factory=list)
    declared_id: Any = None


@dataclass
class ValidationResult:
    """Valid and quarantined rows, counts and examples per code, token statistics, compliance, mixed formats."""

    input: str
    format: str | None
    schema: str | None
    valid: pa.Table
    quarantine: pa.Table
    counts: dict[str, int]
    examples: dict[str, list[dict]]
    tokens: dict[str, Any] | None
    compliance: dict[str, Any] | None
    mixed_formats: list[dict]
    max_error_rate: float
    notes: list[str] = field(default_factory=list)
    output: str | None = None
    quarantine_path: str | None = None

    @property
    def total(self) -> int:
        return self.valid.num_rows + self.quarantine.num_rows

    @property
    def error_rate(self) -> float:
        return self.quarantine.num_rows / self.total if self.total else 0.0

    @property
    def passed(self) -> bool:
        return self.error_rate <= self.max_error_rate

    def check(self) -> None:
        """Raise ThresholdExceeded when the share of quarantined rows is over max_error_rate."""
        if not self.passed:
            raise ThresholdExceeded(
                f"{self.input}: {self.quarantine.num_rows}/{self.total} records have errors "
                f"({self.error_rate:.1%} > allowed {self.max_error_rate:.1%}); see the quarantine for each one's codes"
            )

    def summary(self) -> dict[str, Any]:
        codes = [
            {
                "code": c,
                "severity": CODES[c].severity,
                "count": n,
                "description": CODES[c].description,
                "examples": self.examples.get(c, []),
            }
            for c, n in sorted(self.counts.items(), key=lambda kv: (CODES[kv[0]].severity, -kv[1], kv[0]))
        ]
        return {
            "input": self.input,
            "format": self.format,
            "schema": self.schema,
            "records": self.total,
            "valid": self.valid.num_rows,
            "quarantined": self.quarantine.num_rows,
            "error_rate": self.error_rate,
            "max_error_rate": self.max_error_rate,
            "passed": self.passed,
            "errors": {c["code"]: c["count"] for c in codes if c["severity"] == "error"},
            "warnings": {c["code"]: c["count"] for c in codes if c["severity"] == "warning"},
            "codes": codes,
            "tokens": self.tokens,
            "compliance": self.compliance,
            "mixed_formats": self.mixed_formats,
            "notes": self.notes,
            "output": self.output,
            "quarantine": self.quarantine_path,
        }


def _resolve_tokenizer(tokenizer: Any) -> Any:
    if tokenizer is None or not isinstance(tokenizer, (str, Path)):
        return tokenizer
    from curate.embedded import load_tokenizer

    return load_tokenizer(str(tokenizer))


def _load_validator(schema: str | dict) -> tuple[Any, str]:
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError

    from curate.recipe import load_schema

    if isinstance(schema, dict):
        doc, name = schema, schema.get("title", "(given schema)")
    else:
        try:
            doc = load_schema(str(schema))
        except json.JSONDecodeError as exc:
            raise UsageError(f"--schema {schema}:{exc.lineno}: not valid JSON ({exc.msg})") from exc
        name = str(schema)
    try:
        Draft202012Validator.check_schema(doc)
    except SchemaError as exc:
        raise UsageError(f"schema {name} is not a valid JSON Schema: {exc.message}") from exc
    return Draft202012Validator(doc), name


def _raw_text(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, default=str)


def _raw_items(path: Path, schema: str | dict | None, origin: str | None, notes: list[str], info: dict) -> Iterator[_Item]:
    """Records of a raw file, schema-checked and converted to canonical rows where they can be."""
    records = iter_raw(path)
    head = []
    for item in records:
        head.append(item)
        if len(head) >= SNIFF_RECORDS:
            break
    fixed = SCHEMA_FORMATS.get(schema) if isinstance(schema, str) else None
    seen = Counter(formats.detect(r.obj) for r in head if isinstance(r, Record))
    seen.pop(None, None)
    fmt = fixed or (seen.most_common(1)[0][0] if seen else None)
    if schema is None and fmt is not None:
        schema = FORMAT_SCHEMAS.get(fmt)
        if schema is None:
            notes.append(f"no JSON Schema ships for format '{fmt}'; only the semantic checks ran")
    validator, info["schema"] = _load_validator(schema) if schema is not None else (None, None)
    info["format"] = fmt

    def chain() -> Iterator[Any]:
        yield from head
        yield from records

    for n, rec in enumerate(chain(), start=1):
        if not isinstance(rec, Record):
            notice = file_problem(rec)
            if notice and notice not in notes:
                notes.append(notice)
            yield _Item(n, rec.file, rec.line, None, rec.raw, findings=[Finding(reject_code(rec), rec.reason)])
            continue
        obj = rec.obj
        item = _Item(n, rec.file, rec.line, None, _raw_text(obj), declared_id=obj.get("id"))
        detected = item.fmt = formats.detect(obj)
        if detected is None and validator is None:
            keys = ", ".join(sorted(obj)[:8]) or "none"
            item.findings.append(Finding("unknown_format", f"record fits no known format (keys: {keys})"))
        elif fixed is None and detected is not None and detected != fmt:
            item.findings.append(Finding("format_mismatch", f"record is {detected} but the file is {fmt}"))
        if validator is not None:
            item.findings.extend(schema_findings(validator, obj))
        if not item.findings and fmt is not None:
            try:
                msgs, tools, rejected, meta = formats.to_messages(obj, fmt)
            except formats.RecordError as exc:
                item.findings.append(Finding("schema_violation", f"not valid {fmt}: {exc}"))
            else:
                # the same origin rule as `curate ingest`, so a valid row is the row ingest would write
                row_origin = origin or (meta.pop("origin") if isinstance(meta.get("origin"), str) else None) or "seed"
                source = {"file": rec.file, "line": rec.line, "row": rec.row}
                item.canonical = make_row(msgs, tools=tools, rejected=rejected, source=source, origin=row_origin, meta=meta)
        yield item


def _table_items(table: pa.Table) -> Iterator[_Item]:
    n = 0
    for batch in table.to_batches(max_chunksize=4096):
        for row in batch.to_pylist():
            n += 1
            src = row.get("source") or {}
            meta = row.get("meta")
            declared = None
            if isinstance(meta, str) and '"id"' in meta:
                try:
                    declared = json.loads(meta).get("id")
                except (json.JSONDecodeError, AttributeError):
                    declared = None  # meta that is not a JSON object carries no declared id
            yield _Item(n, src.get("file"), src.get("line"), row, declared_id=declared)


def validate(
    source: str | Path | pa.Table,
    *,
    schema: str | dict | None = None,
    tokenizer: Any = None,
    max_tokens: int | None = None,
    output_schema: str | Path | dict | None = None,
    output_regex: str | None = None,
    allow_consecutive_user: bool = False,
    output: str | Path | None = None,
    quarantine: str | Path | None = None,
    max_error_rate: float = 0.0,
    origin: str | None = None,
) -> ValidationResult:
    """Check every record; return (and write, when paths are given) the valid and the quarantined rows.

    source: a raw file of any format `curate ingest` reads, a canonical Parquet, or a canonical table.
    schema: a shipped format schema name (openai-chat, sharegpt, ...) or a path; raw files only.
    tokenizer: None (no token check), 'embedded', a local tokenizer folder, or a loaded tokenizer.
    """
    if max_tokens is not None and tokenizer is None:
        raise UsageError("--max-tokens needs a tokenizer (give --tokenizer embedded or a folder)")
    if max_tokens is not None and max_tokens < 1:
        raise UsageError(f"--max-tokens must be at least 1, got {max_tokens}")
    out_check = OutputCheck(output_schema, output_regex)
    tok = _resolve_tokenizer(tokenizer)
    tokens = TokenCheck(tok, max_tokens) if tok is not None else None
    notes: list[str] = []
    info: dict[str, Any] = {"format": "canonical", "schema": None}
    table: pa.Table | None = None
    if isinstance(source, pa.Table):
        table, name = source, "(table)"
    else:
        path = Path(source)
        name = str(path)
        if not path.exists():
            raise UsageError(f"no such file: {path}")
        if canonical_parquet(path):
            table = read_dataset(path)
    if table is not None:
        if schema is not None:
            raise UsageError("--schema checks raw files; a canonical dataset is checked on its messages (drop --schema)")
        items: Iterator[_Item] = _table_items(table)
    else:
        items = _raw_items(path, schema, origin, notes, info)

    run = _Run(tokens, out_check, allow_consecutive_user)
    with progress("validate") as advance:
        for item in items:
            run.add(item)
            advance()
    if table is not None:
        kept = table.drop_columns([c for c in table.column_names if c in ADDED_COLUMNS])
        valid = _with_columns(kept.filter(pa.array(run.mask, type=pa.bool_())), run)
    else:
        valid = _with_columns(rows_to_table([i.canonical for i in run.kept]), run)
    result = ValidationResult(
        input=name,
        format=info["format"],
        schema=info["schema"],
        valid=valid,
        quarantine=pa.Table.from_pylist(run.quarantined, schema=QUARANTINE_SCHEMA),
        counts=dict(run.counts),
        examples=run.examples,
        tokens=tokens.stats() if tokens is not None else None,
        compliance=out_check.summary(),
        mixed_formats=run.profile.findings(),
        max_error_rate=max_error_rate,
        notes=notes,
    )
    if output is not None or quarantine is not None:
        # valid rows and quarantine are one set: both appear together or neither does
        with OutputSet(output or quarantine, [quarantine] if output is not None and quarantine is not None else []) as outs:
            if output is not None:
                result.output = str(write_table(result.valid, output, outs))
            if quarantine is not None:
                result.quarantine_path = str(write_table(result.quarantine, quarantine, outs))
    return result


class _Run:
    """Accumulates per-record outcomes: kept rows with their warnings, quarantined rows, counts, examples."""

    def __init__(self, tokens: TokenCheck | None, out_check: OutputCheck, allow_consecutive_user: bool):
        self.tokens = tokens
        self.out_check = out_check
        self.allow_consecutive_user = allow_consecutive_user
        self.profile = FormatProfile()
        self.counts: Counter[str] = Counter()
        self.examples: dict[str, list[dict]] = {}
        self.kept: list[_Item] = []
        self.mask: list[bool] = []
        self.added: dict[str, list] = {k: [] for k in ADDED_COLUMNS}
        self.quarantined: list[dict] = []
        self.by_content: dict[str, int] = {}
        self.by_declared: dict[Any, tuple[str | None, int]] = {}

    def add(self, item: _Item) -> None:
        row = item.canonical
        n_tokens = n_trainable = compliant = None
        if row is not None and not item.findings:
            msgs = row["messages"]
            item.findings += message_findings(msgs, row.get("tools"), self.allow_consecutive_user)
            item.findings += text_findings(msgs + (row.get("rejected") or []))
            item.findings += self._duplicates(item)
            if self.tokens is not None:
                found, n_tokens, n_trainable = self.tokens.check(msgs, row.get("tools"))
                item.findings += found
            found, compliant = self.out_check.check(msgs)
            item.findings += found
            self.profile.add(msgs, item.fmt)
        findings = _first_per_code(item.findings)
        for f in findings:
            self.counts[f.code] += 1
            ex = self.examples.setdefault(f.code, [])
            if len(ex) < EXAMPLES_PER_CODE:
                ex.append({"row": item.row, "file": item.file, "line": item.line, "message": f.message})
        codes = [f.code for f in findings]
        ok = row is not None and not any(is_error(c) for c in codes)
        self.mask.append(ok)
        if ok:
            self.kept.append(item)
            for k, v in zip(ADDED_COLUMNS, (codes, n_tokens, n_trainable, compliant)):
                self.added[k].append(v)
            return
        row = row or {}
        self.quarantined.append(
            {
                "validate_row": item.row,
                "validate_codes": codes,
                "validate_errors": [f"{f.code}: {f.message}" for f in findings],
                "source": row.get("source") or {"file": item.file, "line": item.line, "row": None},
                **{k: row.get(k) for k in ("id", "messages", "tools", "rejected", "origin", "meta")},
                "validate_raw": item.raw,
            }
        )

    def _duplicates(self, item: _Item) -> list[Finding]:
        out = []
        cid = item.canonical["id"]
        if item.declared_id is not None and not isinstance(item.declared_id, (dict, list)):
            key = str(item.declared_id)
            first = self.by_declared.get(key)
            if first is None:
                self.by_declared[key] = (cid, item.row)
            elif first[0] != cid:
                out.append(Finding("duplicate_id", f"id {key!r} already used by a different record (row {first[1]})"))
        first_row = self.by_content.setdefault(cid, item.row)
        if first_row != item.row:
            out.append(Finding("duplicate_record", f"same content as row {first_row} (id {cid})"))
        return out


def _first_per_code(findings: list[Finding]) -> list[Finding]:
    """One finding per code per record (the first, which names the earliest place)."""
    seen: dict[str, Finding] = {}
    for f in findings:
        seen.setdefault(f.code, f)
    return list(seen.values())


def _with_columns(table: pa.Table, run: _Run) -> pa.Table:
    for name, typ in ADDED_COLUMNS.items():
        table = table.append_column(pa.field(name, typ), pa.array(run.added[name], type=typ))
    return table
