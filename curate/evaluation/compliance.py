"""Format compliance of generated replies (JSON parses, schema-valid, regex) and exact match with the reference.

The checks are curate.replies.ReplyCheck's, the one checker validate and synth use too. By its fence
rule a reply wrapped in a code fence is not JSON: a trained model's reply must be JSON as it stands.
With neither a schema nor a regex the format asks only for a reply (not empty): prose is not JSON.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from curate.replies import ReplyCheck


@dataclass
class RowCheck:
    """The verdicts for one reply; None where the check does not apply."""

    parses: bool
    schema_valid: bool | None
    schema_error: str | None
    regex_match: bool | None
    exact_match: bool | None
    ok: bool  # every format check that applies passed (schema, regex; a reply that is not empty when neither)
    why: str | None = None  # why the format fails: the schema error, "does not match the regex", "empty reply"


class Checker:
    """The checks an eval applies: a JSON Schema, a regex over the whole reply, or plain JSON parsing."""

    def __init__(self, replies: ReplyCheck):
        self.replies = replies
        self._plain = ReplyCheck()  # references are only parsed

    @classmethod
    def build(cls, schema: str | Path | dict | None, regex: str | None) -> Checker:
        """A checker for a schema (a file or a dict), a regex, or neither; a bad one is a UsageError."""
        return cls(ReplyCheck(schema, regex))

    @property
    def schema(self) -> bool:
        return self.replies.validator is not None

    @property
    def regex(self) -> bool:
        return self.replies.regex is not None

    def names(self) -> list[str]:
        return ["parses"] + (["schema_valid"] if self.schema else []) + (["regex_match"] if self.regex else [])

    def check(self, reply: str, reference: str | None) -> RowCheck:
        text = reply.strip()
        v = self.replies.check(text)
        schema_valid = schema_error = None
        if self.schema:
            if not v.parses:
                schema_valid, schema_error = False, "reply is not JSON"
            else:
                schema_valid = not v.schema_errors
                if v.schema_errors:
                    # the first error in the schema's own order (Verdict.schema_errors is sorted by path)
                    err = next(iter(self.replies.validator.iter_errors(v.value)))
                    schema_error = f"{'/'.join(map(str, err.absolute_path)) or '$'}: {err.message}"
        exact = None
        if reference is not None:
            ref = self._plain.check(reference.strip())
            exact = v.value == ref.value if v.parses and ref.parses else text == reference.strip()
        if self.schema:
            ok, why = bool(schema_valid), schema_error
        elif self.regex:
            ok, why = bool(v.regex_match), "does not match the regex"
        else:
            ok, why = bool(text), "empty reply"
        return RowCheck(v.parses, schema_valid, schema_error, v.regex_match, exact, ok, None if ok else why)


def _rate(values: list[bool | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return round(sum(vals) / len(vals), 4) if vals else None


def summarize(name: str, checks: list[RowCheck], in_bucket: list[bool], checker: Checker, has_refs: bool) -> dict:
    """Rates for one model over all rows and over the rows at or above the P95 input length."""
    out: dict[str, Any] = {"model": name}
    for prefix, rows in (("", checks), ("p95_", [c for c, b in zip(checks, in_bucket) if b])):
        out[f"{prefix}rows"] = len(rows)
        out[f"{prefix}parse_rate"] = _rate([c.parses for c in rows])
        out[f"{prefix}schema_valid_rate"] = _rate([c.schema_valid for c in rows]) if checker.schema else None
        out[f"{prefix}regex_rate"] = _rate([c.regex_match for c in rows]) if checker.regex else None
        out[f"{prefix}exact_match_rate"] = _rate([c.exact_match for c in rows]) if has_refs else None
        out[f"{prefix}ok_rate"] = _rate([c.ok for c in rows])
    return out
