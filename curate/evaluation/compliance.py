"""Format-compliance checks for generated replies: JSON parses, schema-valid, regex, exact match."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from curate.errors import UsageError

_NOT_JSON = object()


@dataclass
class RowCheck:
    """The verdicts for one reply; None where the check does not apply."""

    parses: bool
    schema_valid: bool | None
    schema_error: str | None
    regex_match: bool | None
    exact_match: bool | None
    ok: bool  # every format check that applies passed (schema, regex; JSON parse when neither is given)


@dataclass
class Checker:
    """The checks an eval applies: a JSON Schema, a regex over the whole reply, or plain JSON parsing."""

    schema: dict | None = None
    regex: re.Pattern | None = None
    validator: Any = None

    @classmethod
    def build(cls, schema: str | Path | dict | None, regex: str | None) -> Checker:
        validator = None
        if schema is not None and not isinstance(schema, dict):
            path = Path(schema)
            if not path.is_file():
                raise UsageError(f"--output-schema: no such file: {path}")
            try:
                schema = json.loads(path.read_text())
            except json.JSONDecodeError as exc:
                raise UsageError(f"--output-schema {path}: not valid JSON (line {exc.lineno}: {exc.msg})") from exc
        if schema is not None:
            import jsonschema

            cls_ = jsonschema.validators.validator_for(schema)
            try:
                cls_.check_schema(schema)
            except jsonschema.SchemaError as exc:
                raise UsageError(f"--output-schema is not a valid JSON Schema: {exc.message}") from exc
            validator = cls_(schema)
        pattern = None
        if regex is not None:
            try:
                pattern = re.compile(regex, re.DOTALL)
            except re.error as exc:
                raise UsageError(f"--output-regex is not a valid regular expression: {exc}") from exc
        return cls(schema=schema, regex=pattern, validator=validator)

    def names(self) -> list[str]:
        return ["parses"] + (["schema_valid"] if self.validator else []) + (["regex_match"] if self.regex else [])

    def check(self, reply: str, reference: str | None) -> RowCheck:
        text = reply.strip()
        value = _json(text)
        parses = value is not _NOT_JSON
        schema_valid = schema_error = None
        if self.validator is not None:
            if not parses:
                schema_valid, schema_error = False, "reply is not JSON"
            else:
                err = next(iter(self.validator.iter_errors(value)), None)
                schema_valid = err is None
                schema_error = None if err is None else f"{'/'.join(map(str, err.absolute_path)) or '$'}: {err.message}"
        # the whole reply must match: exact format compliance, not "contains"
        regex_match = bool(self.regex.fullmatch(text)) if self.regex else None
        exact = None
        if reference is not None:
            ref_value = _json(reference.strip())
            exact = value == ref_value if parses and ref_value is not _NOT_JSON else text == reference.strip()
        applicable = [v for v in (schema_valid, regex_match) if v is not None]
        ok = all(applicable) if applicable else parses
        return RowCheck(parses, schema_valid, schema_error, regex_match, exact, ok)


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except (json.JSONDecodeError, ValueError):
        return _NOT_JSON


def _rate(values: list[bool | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return round(sum(vals) / len(vals), 4) if vals else None


def summarize(name: str, checks: list[RowCheck], in_bucket: list[bool], checker: Checker, has_refs: bool) -> dict:
    """Rates for one model over all rows and over the rows at or above the P95 input length."""
    out: dict[str, Any] = {"model": name}
    for prefix, rows in (("", checks), ("p95_", [c for c, b in zip(checks, in_bucket) if b])):
        out[f"{prefix}rows"] = len(rows)
        out[f"{prefix}parse_rate"] = _rate([c.parses for c in rows])
        out[f"{prefix}schema_valid_rate"] = _rate([c.schema_valid for c in rows]) if checker.validator else None
        out[f"{prefix}regex_rate"] = _rate([c.regex_match for c in rows]) if checker.regex else None
        out[f"{prefix}exact_match_rate"] = _rate([c.exact_match for c in rows]) if has_refs else None
        out[f"{prefix}ok_rate"] = _rate([c.ok for c in rows])
    return out
