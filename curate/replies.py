"""One checker for model replies (JSON, a JSON Schema, a regular expression), shared by validate, synth and eval.

The rule about fences: a reply is JSON only when the whole reply, surrounding whitespace aside,
parses. A reply wrapped in a Markdown code fence (```json ... ```) does not parse. The checker still
reads the value inside one fence (`Verdict.value` with `fenced=True`): synth uses it to build a clean
training row from a teacher's fenced reply (the row's assistant message is written without the
fence), while validate (a training reply) and eval (a trained model's reply) count it as not JSON.

A schema is checked with the draft its `$schema` names, else draft 2020-12. A regex must match the
whole reply.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from curate.errors import UsageError

_FENCE = re.compile(r"^\s*```[A-Za-z0-9_-]*[ \t]*\n(.*?)\n?[ \t]*```\s*$", re.DOTALL)


@dataclass
class Verdict:
    """What one reply is: JSON or not (and why), fenced or not, schema and regex results."""

    parses: bool  # the whole reply is JSON
    fenced: bool  # JSON inside one ``` fence (so it does not parse as it stands)
    value: Any  # the JSON value, also of a fenced reply; None when there is none
    json_error: json.JSONDecodeError | None  # why the reply as it stands is not JSON
    schema_errors: list[Any]  # jsonschema errors of the value, sorted by path; [] when valid or no schema
    regex_match: bool | None  # None without a regex

    @property
    def has_value(self) -> bool:
        return self.parses or self.fenced

    def schema_path(self) -> str:
        """Where the first schema error is, as a/b/0 (empty at the top)."""
        return "/".join(str(p) for p in self.schema_errors[0].absolute_path) if self.schema_errors else ""


class ReplyCheck:
    """The checks for replies: a JSON Schema, a whole-reply regex, or neither (then only JSON parsing)."""

    def __init__(self, schema: str | Path | dict | None = None, regex: str | None = None):
        if schema is not None and regex is not None:
            raise UsageError("give --output-schema or --output-regex, not both")
        self.schema = load_schema(schema) if schema is not None else None
        self.validator = _validator(self.schema) if self.schema is not None else None
        self.regex = None
        if regex is not None:
            try:
                self.regex = re.compile(regex, re.DOTALL)
            except re.error as exc:
                raise UsageError(f"--output-regex is not a valid regular expression: {exc}") from exc

    @property
    def active(self) -> bool:
        return self.validator is not None or self.regex is not None

    def check(self, text: str) -> Verdict:
        parses, fenced, value, error = _parse(text)
        errors: list[Any] = []
        if self.validator is not None and (parses or fenced):
            errors = sorted(self.validator.iter_errors(value), key=lambda e: list(map(str, e.absolute_path)))
        regex = bool(self.regex.fullmatch(text.strip())) if self.regex is not None else None
        return Verdict(parses, fenced, value, error, errors, regex)


def _parse(text: str) -> tuple[bool, bool, Any, json.JSONDecodeError | None]:
    try:
        return True, False, json.loads(text), None
    except json.JSONDecodeError as exc:
        error = exc
    except ValueError as exc:  # e.g. a number too long to convert
        error = json.JSONDecodeError(str(exc), text, 0)
    m = _FENCE.match(text)
    if m:
        try:
            return False, True, json.loads(m.group(1)), error
        except ValueError:
            pass
    return False, False, None, error


def load_schema(schema: str | Path | dict) -> dict:
    """A JSON Schema from a dict or a JSON file, checked to be a valid schema."""
    if not isinstance(schema, dict):
        path = Path(schema)
        if not path.is_file():
            raise UsageError(f"--output-schema: no such file: {path}")
        try:
            schema = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise UsageError(f"--output-schema {path}:{exc.lineno}: not valid JSON ({exc.msg})") from exc
    from jsonschema.exceptions import SchemaError

    try:
        _validator(schema).check_schema(schema)
    except SchemaError as exc:
        raise UsageError(f"--output-schema is not a valid JSON Schema: {exc.message}") from exc
    return schema


def _validator(schema: dict) -> Any:
    from jsonschema import Draft202012Validator
    from jsonschema.validators import validator_for

    return validator_for(schema, default=Draft202012Validator)(schema)
