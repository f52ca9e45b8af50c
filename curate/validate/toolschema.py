"""Tool calls checked against the `parameters` JSON Schema of the tool the record declares.

A record's `tools` column is a JSON list of OpenAI-style `{"type": "function", "function": {"name", "parameters"}}`
items or bare `{"name", "parameters"}` ones (ShareGPT / LLaMA-Factory). Each distinct `tools` text is parsed once
per worker, and each distinct `parameters` schema (by its JSON text) is checked with jsonschema's check_schema and
compiled once: most records of a file share one tools list, so a record pays for a cache lookup and its calls.
A schema names its draft with `$schema`; without one it is draft 2020-12, as the format schemas are.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from typing import Any

from curate.validate.codes import Finding

MAX_MESSAGE = 240


def _short(text: str) -> str:
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 3] + "..."


def _suffix(path: Any) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)


@dataclass
class _Schema:
    """One tool's compiled parameters schema, or why it is not a valid JSON Schema."""

    validator: Any = None
    fast: Any = None  # curate.validate.fastschema's yes/no check, where it covers the schema
    problem: str | None = None


@dataclass
class ToolSchemas:
    """The declared tools of one `tools` text: name -> compiled schema, and the tools whose schema is broken."""

    by_name: dict[str, _Schema] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)  # invalid_tool_schema, one per broken tool

    def call_findings(self, name: Any, arguments: Any, where: str) -> list[Finding]:
        """tool_arguments_schema_violation for one call; [] when valid, or when other codes already cover it."""
        schema = self.by_name.get(name) if isinstance(name, str) else None
        if schema is None or schema.validator is None:
            return []  # an unknown tool, a tool without parameters, or a broken schema (reported once, as such)
        if arguments in (None, ""):
            args: Any = {}  # no arguments: the schema's required properties are still required
        else:
            try:
                args = json.loads(arguments) if isinstance(arguments, str) else arguments
            except json.JSONDecodeError:
                return []  # invalid_tool_arguments
            if not isinstance(args, dict):
                return []  # invalid_tool_arguments
        if schema.fast is not None and schema.fast(args):
            return []
        from referencing.exceptions import Unresolvable

        try:
            errors = sorted(schema.validator.iter_errors(args), key=lambda e: ([str(p) for p in e.absolute_path], e.message))
        except Unresolvable as exc:
            return [Finding("invalid_tool_schema", _short(f"{where}: tool '{name}': parameters $ref cannot be resolved ({exc})"))]
        if not errors:
            return []
        e = errors[0]
        more = f"; {len(errors) - 1} more error(s)" if len(errors) > 1 else ""
        return [Finding("tool_arguments_schema_violation",
                        _short(f"{where}{_suffix(e.absolute_path)}: {e.message} (tool '{name}'{more})"))]


@functools.lru_cache(maxsize=256)
def tool_schemas(tools: str) -> ToolSchemas:
    """The declared tools' schemas of a record's `tools` JSON text (cached: records share their tools list)."""
    out = ToolSchemas()
    try:
        parsed = json.loads(tools)
    except json.JSONDecodeError:
        return out  # no tool is declared: calls are unknown_tool
    for k, t in enumerate(parsed if isinstance(parsed, list) else []):
        fn = t.get("function", t) if isinstance(t, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or fn.get("parameters") is None:
            continue  # no parameters declared (absent or null): the arguments are not checked
        name, params = fn["name"], fn["parameters"]
        schema = _compiled(json.dumps(params, sort_keys=True))
        out.by_name.setdefault(name, schema)
        if schema.problem is not None:
            out.findings.append(Finding("invalid_tool_schema", _short(f"tools[{k}] '{name}': parameters {schema.problem}")))
    return out


@functools.lru_cache(maxsize=1024)
def _compiled(text: str) -> _Schema:
    """A parameters schema (by its JSON text) checked and compiled once per worker."""
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError
    from jsonschema.validators import validator_for

    from curate.validate.fastschema import compile_schema

    doc = json.loads(text)
    if not isinstance(doc, (dict, bool)):
        kind = {str: "a string", list: "an array", int: "a number", float: "a number"}[type(doc)]
        return _Schema(problem=f"is {kind}, not a JSON Schema (an object)")
    if isinstance(doc, dict) and not isinstance(doc.get("$schema", ""), str):
        return _Schema(problem="is not a valid JSON Schema: $schema is not text")
    cls = validator_for(doc, default=Draft202012Validator) if isinstance(doc, dict) else Draft202012Validator
    try:
        cls.check_schema(doc)
    except SchemaError as exc:
        at = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in exc.absolute_path).lstrip(".")
        return _Schema(problem=f"is not a valid JSON Schema: {exc.message}" + (f" (at {at})" if at else ""))
    fast = compile_schema(doc) if cls is Draft202012Validator else None
    return _Schema(cls(doc), fast)
