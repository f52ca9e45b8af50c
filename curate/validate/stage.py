"""`validate()`: run every check over a raw file or a canonical dataset and split it into valid and quarantined rows.

Raw files go through the conversion `curate ingest` uses (curate.ingest.convert.Conversion, so a parse
error names file and line and a valid row is the row ingest would write); each record is also checked
against its format's JSON Schema, and a record that breaks it is reported for that only. Canonical
Parquet and tables come through curate.inputs.open_input. Every converted row is then checked the same
way: messages, encoding, duplicates, tokens, output format. Errors quarantine a row, warnings are
counted and kept; counts balance: in = kept (valid) + rejected (quarantined).
"""

from __future__ import annotations

import itertools
import json
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from curate.console import progress
from curate.dataset import MESSAGE_TYPE, SOURCE_TYPE, rows_to_table
from curate.errors import MissingDependency, UsageError
from curate.ingest.convert import Conversion, Converted, raw_text
from curate.ingest.readers import Reject, file_problem
from curate.inputs import Input, open_input
from curate.outcome import StageOutcome, over_rate
from curate.outputs import OutputSet, write_table
from curate.validate.codes import CODES, Finding, is_error
from curate.validate.compliance import FormatProfile, OutputCheck
from curate.validate.config import ValidateConfig
from curate.validate.structure import (
    FORMAT_SCHEMAS,
    SCHEMA_FORMATS,
    message_findings,
    reject_code,
    schema_findings,
    text_findings,
)
from curate.validate.tokens import TokenCheck

BATCH = 4096
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


def validate(source: str | Path | pa.Table, output: str | Path | None = None,
             config: ValidateConfig | Mapping[str, Any] | None = None, *, quarantine: str | Path | None = None,
             tokenizer_object: Any = None, **overrides: Any) -> StageOutcome:
    """Check every record; return (and write, when paths are given) the valid and the quarantined rows.

    source: a raw file of any format `curate ingest` reads, a canonical Parquet, or a canonical table.
    output / quarantine: Parquet files for the valid and the quarantined rows (one output set).
    tokenizer_object: a tokenizer already loaded, used instead of the `tokenizer` setting.
    The outcome's counts are in = kept (valid) + rejected (quarantined); `failure` is set when the
    share of quarantined records is over max_error_rate, or when no record was read.
    """
    cfg = ValidateConfig.build(config, **overrides)
    out_check = OutputCheck(cfg.output_schema, cfg.output_regex)
    src = open_input(source, origin=cfg.origin)
    if not src.raw and cfg.schema is not None:
        raise UsageError("--schema checks raw files; a canonical dataset is checked on its messages (drop --schema)")
    notes: list[str] = []
    tok = _tokenizer(cfg, tokenizer_object, notes)
    tokens = TokenCheck(tok, cfg.max_tokens) if tok is not None else None
    run = _Run(tokens, out_check, cfg.allow_consecutive_user, keep_rows=src.raw)
    info: dict[str, Any] = {"format": "canonical", "schema": None}
    with progress("validate") as advance:
        if src.raw:
            for item in _raw_items(src, cfg, notes, info):
                run.add(item)
                advance()
            valid = _with_columns(rows_to_table([i.canonical for i in run.kept]), run)
        else:
            valid = _with_columns(_check_canonical(src, run, advance), run)
    rejected = pa.Table.from_pylist(run.quarantined, schema=QUARANTINE_SCHEMA)
    outputs: dict[str, str] = {}
    if output is not None or quarantine is not None:
        # valid rows and quarantine are one set: both appear together or neither does
        with OutputSet(output or quarantine, [quarantine] if output is not None and quarantine is not None else []) as outs:
            if output is not None:
                outputs["valid"] = str(write_table(valid, output, outs))
            if quarantine is not None:
                outputs["quarantine"] = str(write_table(rejected, quarantine, outs))
    total = valid.num_rows + rejected.num_rows
    failure = "no records read" if total == 0 else over_rate(rejected.num_rows, total, cfg.max_error_rate,
                                                               "records with errors")
    summary = {"config": cfg.to_dict(), "input": src.name, "format": info["format"], "schema": info["schema"],
               "error_rate": rejected.num_rows / total if total else 0.0,
               **_codes(run), "tokens": tokens.stats() if tokens is not None else None,
               "compliance": out_check.summary(), "mixed_formats": run.profile.findings(), "notes": notes}
    return StageOutcome("validate", {"in": total, "kept": valid.num_rows, "rejected": rejected.num_rows}, outputs,
                        summary, kept=valid, rejected=rejected, failure=failure)


def _codes(run: _Run) -> dict[str, Any]:
    """errors and warnings (count per code), and codes: each with severity, description and examples."""
    codes = [
        {"code": c, "severity": CODES[c].severity, "count": n, "description": CODES[c].description,
         "examples": run.examples.get(c, [])}
        for c, n in sorted(run.counts.items(), key=lambda kv: (CODES[kv[0]].severity, -kv[1], kv[0]))
    ]
    return {"errors": {c["code"]: c["count"] for c in codes if c["severity"] == "error"},
            "warnings": {c["code"]: c["count"] for c in codes if c["severity"] == "warning"},
            "codes": codes}


def _tokenizer(cfg: ValidateConfig, loaded: Any, notes: list[str]) -> Any:
    """The tokenizer of the token check, or None (tokens off, or `auto` without the embedded one: a note says so)."""
    if not cfg.tokens:
        return None
    if loaded is not None:
        return loaded
    from curate.embedded import load_tokenizer

    if cfg.tokenizer != "auto":
        return load_tokenizer(cfg.tokenizer)
    try:
        return load_tokenizer("embedded")
    except MissingDependency as exc:
        if cfg.max_tokens is not None:
            raise UsageError(f"--max-tokens needs a tokenizer (give --tokenizer embedded or a folder): {exc}") from exc
        notes.append(f"token check skipped: {exc}")
        return None


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


def _raw_items(src: Input, cfg: ValidateConfig, notes: list[str], info: dict) -> Iterator[_Item]:
    """Records of a raw file: schema-checked, and converted to canonical rows where they can be."""
    schema = cfg.schema
    fixed = SCHEMA_FORMATS.get(schema) if isinstance(schema, str) else None  # a shipped schema's name fixes the format
    conversion = Conversion(src.path, fixed or "auto", cfg.origin)
    items = iter(conversion)
    first = next(items, None)  # the conversion knows the file's format once the first item is out
    fmt = info["format"] = conversion.format
    if schema is None and fmt is not None:
        schema = FORMAT_SCHEMAS.get(fmt)
        if schema is None:
            notes.append(f"no JSON Schema ships for format '{fmt}'; only the semantic checks ran")
    validator, info["schema"] = _load_validator(schema) if schema is not None else (None, None)
    if first is None:
        return
    for n, x in enumerate(itertools.chain([first], items), start=1):
        if isinstance(x, Reject):
            notice = file_problem(x)
            if notice and notice not in notes:
                notes.append(notice)
            yield _Item(n, x.file, x.line, None, x.raw, findings=[Finding(reject_code(x), x.reason)])
        else:
            yield _converted_item(n, x, validator)


def _converted_item(n: int, x: Converted, validator: Any) -> _Item:
    """A readable record's findings: its format's problem, then its schema's; the row when there are none."""
    rec = x.record
    item = _Item(n, rec.file, rec.line, None, raw_text(rec.obj, None), fmt=x.detected, declared_id=rec.obj.get("id"))
    # a record of no known format that a schema checks is reported by the schema's findings
    if x.code == "format_mismatch" or (x.code == "unknown_format" and validator is None):
        item.findings.append(Finding(x.code, x.problem))
    if validator is not None:
        item.findings.extend(schema_findings(validator, rec.obj))
    if not item.findings:
        if x.row is not None:
            item.canonical = x.row
        else:  # the schema passed, the converter did not
            item.findings.append(Finding(x.code, x.problem))
    return item


def _check_canonical(src: Input, run: _Run, advance: Any) -> pa.Table:
    """Check a canonical Parquet or table batch by batch; its valid rows, with every column but old validate_ ones."""
    kept: list[pa.RecordBatch] = []
    schema = src.schema
    drop = [c for c in schema.names if c in ADDED_COLUMNS]
    n = 0
    for batch in src.batches(BATCH):
        start = len(run.mask)
        for row in batch.to_pylist():
            n += 1
            run.add(_canonical_item(n, row))
            advance()
        batch = batch.drop_columns(drop) if drop else batch
        kept.append(batch.filter(pa.array(run.mask[start:], type=pa.bool_())))
    if not kept:
        return pa.schema([f for f in schema if f.name not in drop]).empty_table()
    return pa.Table.from_batches(kept)


def _canonical_item(n: int, row: dict) -> _Item:
    src = row.get("source") or {}
    meta = row.get("meta")
    declared = None
    if isinstance(meta, str) and '"id"' in meta:
        try:
            declared = json.loads(meta).get("id")
        except (json.JSONDecodeError, AttributeError):
            declared = None  # meta that is not a JSON object carries no declared id
    return _Item(n, src.get("file"), src.get("line"), row, declared_id=declared)


class _Run:
    """Accumulates per-record outcomes: kept rows with their warnings, quarantined rows, counts, examples."""

    def __init__(self, tokens: TokenCheck | None, out_check: OutputCheck, allow_consecutive_user: bool,
                 keep_rows: bool = True):
        self.keep_rows = keep_rows  # a canonical input keeps its rows in its batches; only converted rows are held
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
            if self.keep_rows:
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
