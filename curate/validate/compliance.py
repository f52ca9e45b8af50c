"""Output-format compliance (--output-schema / --output-regex) and mixed-format detection across a dataset."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

from curate.replies import ReplyCheck
from curate.validate.codes import Finding

MIN_SHARE = 0.05  # a reply style or system prompt under this share of records is noise, not a second format
_FENCED_JSON = re.compile(r"^\s*```(?:json)?\s*\n(.*)\n\s*```\s*$", re.DOTALL)


def replies(messages: list[dict]) -> list[tuple[int, str]]:
    """(index, text) of every assistant reply that is text rather than a tool call."""
    return [
        (i, m["content"])
        for i, m in enumerate(messages)
        if m.get("role") == "assistant" and not m.get("tool_calls") and isinstance(m.get("content"), str)
    ]


class OutputCheck:
    """Every assistant reply must be JSON valid against a schema, or fully match a regex (curate.replies.ReplyCheck).

    A reply wrapped in a ``` fence is not JSON here: a training reply is learnt as it is written.
    """

    def __init__(self, output_schema: str | Path | dict | None = None, output_regex: str | None = None):
        self.checker = ReplyCheck(output_schema, output_regex)
        self.records = self.compliant = self.replies = self.replies_ok = 0

    @property
    def active(self) -> bool:
        return self.checker.active

    def check(self, messages: list[dict]) -> tuple[list[Finding], bool | None]:
        """(findings, whether every reply complies); (.., None) when the record has no reply."""
        if not self.active:
            return [], None
        found: list[Finding] = []
        texts = replies(messages)
        if not texts:
            return [], None
        for i, text in texts:
            f = self._one(i, text)
            self.replies += 1
            self.replies_ok += f is None
            if f is not None:
                found.append(f)
        self.records += 1
        self.compliant += not found
        return found, not found

    def _one(self, i: int, text: str) -> Finding | None:
        where = f"messages[{i}].content"
        verdict = self.checker.check(text)
        if self.checker.regex is not None:
            if not verdict.regex_match:
                return Finding("output_regex_mismatch",
                               f"{where}: {_head(text)!r} does not match /{self.checker.regex.pattern}/")
            return None
        if not verdict.parses:
            exc = verdict.json_error
            return Finding("output_not_json", f"{where}: not JSON ({exc.msg} at column {exc.colno}): {_head(text)!r}")
        errors = verdict.schema_errors
        if errors:
            more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
            return Finding("output_schema_violation",
                           f"{where} at {verdict.schema_path() or '(top)'}: {errors[0].message}{more}")
        return None

    def summary(self) -> dict[str, Any] | None:
        if not self.active:
            return None
        regex = self.checker.regex
        return {
            "mode": "regex" if regex is not None else "schema",
            "pattern": regex.pattern if regex is not None else None,
            "records_checked": self.records,
            "records_compliant": self.compliant,
            "rate": self.compliant / self.records if self.records else None,
            "replies_checked": self.replies,
            "replies_compliant": self.replies_ok,
        }


def _head(text: str, n: int = 60) -> str:
    return text if len(text) <= n else text[:n] + "..."


def reply_style(text: str) -> str:
    """json (an object or array), fenced json (the same inside a ``` block), or prose."""
    m = _FENCED_JSON.match(text)
    body, style = (m.group(1), "fenced json") if m else (text, "json")
    stripped = body.strip()
    if stripped[:1] in ("{", "["):
        try:
            json.loads(stripped)
            return style
        except json.JSONDecodeError:
            pass  # looks like JSON but is not: prose
    return "prose"


class FormatProfile:
    """Tallies reply styles, system prompts and input formats to say when a dataset mixes formats."""

    def __init__(self) -> None:
        self.records = 0
        self.styles: Counter[str] = Counter()
        self.systems: Counter[str | None] = Counter()
        self.input_formats: Counter[str] = Counter()

    def add(self, messages: list[dict], input_format: str | None = None) -> None:
        self.records += 1
        texts = replies(messages)
        if texts:
            self.styles[reply_style(texts[-1][1])] += 1
        system = next((m.get("content") for m in messages if m.get("role") == "system"), None)
        self.systems[system] += 1
        if input_format:
            self.input_formats[input_format] += 1

    def findings(self, min_share: float = MIN_SHARE) -> list[dict[str, Any]]:
        """Dataset-level warnings, each {kind, message, counts}."""
        out = []
        n = sum(self.styles.values())
        big = {k: v for k, v in self.styles.items() if n and v / n >= min_share}
        if len(big) > 1:
            parts = ", ".join(f"{v / n:.0%} {k}" for k, v in self.styles.most_common())
            out.append(_finding("reply_formats", f"assistant replies mix formats: {parts} (of {n} records)", self.styles))
        prompts = {k: v for k, v in self.systems.items() if k is not None}
        without = self.systems.get(None, 0)
        if len(prompts) > 1:
            top = "; ".join(f"{_head(k, 40)!r} x{v}" for k, v in Counter(prompts).most_common(3))
            out.append(
                _finding("system_prompts", f"{len(prompts)} distinct system prompts across {self.records} records: {top}", prompts)
            )
        if prompts and without:
            out.append(
                _finding(
                    "system_prompt_presence",
                    f"{self.records - without} of {self.records} records have a system prompt, {without} have none",
                    {"with": self.records - without, "without": without},
                )
            )
        if len(self.input_formats) > 1:
            parts = ", ".join(f"{k} {v}" for k, v in self.input_formats.most_common())
            out.append(_finding("input_formats", f"records of several input formats: {parts}", self.input_formats))
        return out


def _finding(kind: str, message: str, counts: dict) -> dict[str, Any]:
    return {"kind": kind, "message": message, "counts": {str(k): v for k, v in counts.items()}}
