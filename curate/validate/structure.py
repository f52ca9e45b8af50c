"""Record checks: JSON Schema errors mapped to named codes, and semantic checks on canonical messages."""

from __future__ import annotations

import json
import re
from typing import Any

from curate.dataset import ROLES
from curate.validate.codes import Finding
from curate.validate.toolschema import tool_schemas

# the format's JSON Schema under schemas/, by curate's input-format name
FORMAT_SCHEMAS = {
    "openai": "openai-chat",
    "sharegpt": "sharegpt",
    "alpaca": "alpaca",
    "prompt-completion": "prompt-completion",
    "preference": "preference",
}
SCHEMA_FORMATS = {v: k for k, v in FORMAT_SCHEMAS.items()}
CONTAINERS = ("messages", "conversations", "conversation")
ROLE_KEYS = ("role", "from")
CONTENT_KEYS = ("content", "value")
MAX_MESSAGE = 240


def _short(text: str) -> str:
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 3] + "..."


def _path(parts: list[Any]) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(record)"


def schema_findings(validator: Any, obj: Any) -> list[Finding]:
    """Every JSON Schema violation of one record, each under the most specific code it fits."""
    out = []
    for e in sorted(validator.iter_errors(obj), key=lambda e: [str(p) for p in e.absolute_path]):
        path = list(e.absolute_path)
        code = _schema_code(e.validator, path, e.instance, e.validator_value)
        if e.validator == "required" and isinstance(e.instance, dict):
            missing = [k for k in e.validator_value if k not in e.instance]
            msg = f"{_path(path)}: missing key {', '.join(repr(k) for k in missing)}"
        elif e.validator == "additionalProperties" and isinstance(e.instance, dict):
            extra = sorted(set(e.instance) - set(e.schema.get("properties", {})))
            msg = f"{_path(path)}: unrecognized key {', '.join(repr(k) for k in extra)}"
        else:
            msg = f"{_path(path)}: {e.message}"
        out.append(Finding(code, _short(msg)))
    return out


def _schema_code(validator: str, path: list[Any], instance: Any, value: Any) -> str:
    if not path:
        if validator == "type":
            return "data_type"
        if validator == "required" and isinstance(instance, dict):
            missing = [k for k in value if k not in instance]
            return "missing_messages_list" if any(k in CONTAINERS for k in missing) else "message_missing_key"
        return "schema_violation"
    if len(path) == 1 and path[0] in CONTAINERS:
        return "missing_messages_list"
    in_turn = len(path) >= 2 and path[0] in CONTAINERS and isinstance(path[1], int)
    if in_turn and len(path) == 2:
        return {"required": "message_missing_key", "additionalProperties": "message_unrecognized_key"}.get(
            validator, "schema_violation"
        )
    if in_turn and len(path) == 3 and path[2] in ROLE_KEYS:
        return "unrecognized_role"
    if in_turn and len(path) == 3 and path[2] in CONTENT_KEYS:
        return "missing_content"
    if len(path) == 1 and validator == "type" and instance is None:
        return "missing_content"  # e.g. alpaca "output": null
    return "schema_violation"


def message_findings(messages: list[dict], tools: str | None, allow_consecutive_user: bool = False) -> list[Finding]:
    """Semantic checks on canonical messages: roles, content, order, tool calls."""
    out: list[Finding] = []
    roles = [m.get("role") for m in messages]
    declared = _tool_names(tools)
    schemas = tool_schemas(tools) if declared else None
    if schemas is not None:
        out.extend(schemas.findings)
    call_ids: set[str] = set()
    open_calls = 0  # calls without an id can only be answered positionally
    for i, m in enumerate(messages):
        role, content, calls = m.get("role"), m.get("content"), m.get("tool_calls") or []
        where = f"messages[{i}]"
        if role not in ROLES:
            out.append(Finding("unrecognized_role", f"{where}.role: {role!r} is not one of {', '.join(ROLES)}"))
        if content is None and not calls:
            out.append(Finding("missing_content", f"{where}.content: null without tool calls"))
        elif isinstance(content, str) and not content.strip() and not calls:
            out.append(Finding("empty_content", f"{where}.content: empty ({role})"))
        for j, call in enumerate(calls):
            fn = call.get("function") or {}
            name = fn.get("name")
            if declared is not None and name not in declared:
                known = ", ".join(sorted(declared)) or "none"
                out.append(Finding("unknown_tool", f"{where}.tool_calls[{j}]: '{name}' is not in tools ({known})"))
            elif declared is None:
                out.append(Finding("unknown_tool", f"{where}.tool_calls[{j}]: calls '{name}' but the record defines no tools"))
            args_where = f"{where}.tool_calls[{j}].function.arguments"
            bad_args = _argument_findings(fn.get("arguments"), args_where)
            out.extend(bad_args)
            if schemas is not None and not bad_args:
                out.extend(schemas.call_findings(name, fn.get("arguments"), args_where))
            if call.get("id"):
                call_ids.add(call["id"])
            else:
                open_calls += 1
        if role == "tool":
            ref = m.get("tool_call_id")
            if ref is not None and ref not in call_ids:
                out.append(Finding("orphan_tool_result", f"{where}: tool_call_id '{ref}' answers no earlier tool call"))
            elif ref is None and open_calls == 0 and not call_ids:
                out.append(Finding("orphan_tool_result", f"{where}: a tool result with no tool call before it"))
            elif ref is None and open_calls:
                open_calls -= 1
        if role == "user" and i and roles[i - 1] == "user" and not allow_consecutive_user:
            out.append(Finding("consecutive_user_turns", f"{where}: a user turn right after another user turn"))
    if "assistant" not in roles:
        out.append(Finding("example_missing_assistant_message", "no message has role 'assistant'"))
    elif roles[-1] != "assistant":
        out.append(Finding("last_turn_not_assistant", f"messages[{len(roles) - 1}]: the last turn is from '{roles[-1]}'"))
    if "system" not in roles:
        out.append(Finding("no_system_message", "no message has role 'system'"))
    if "user" not in roles:
        out.append(Finding("no_user_message", "no message has role 'user'"))
    return out


def _tool_names(tools: str | None) -> set[str] | None:
    if not tools:
        return None
    try:
        parsed = json.loads(tools)
    except json.JSONDecodeError:
        return set()
    names = set()
    for t in parsed if isinstance(parsed, list) else []:
        fn = t.get("function", t) if isinstance(t, dict) else None
        if isinstance(fn, dict) and isinstance(fn.get("name"), str):
            names.add(fn["name"])
    return names


def _argument_findings(args: Any, where: str) -> list[Finding]:
    if args in (None, ""):
        return []  # a call without arguments is legal
    try:
        parsed = json.loads(args) if isinstance(args, str) else args
    except json.JSONDecodeError as exc:
        return [Finding("invalid_tool_arguments", f"{where}: not valid JSON ({exc.msg} at column {exc.colno})")]
    if not isinstance(parsed, dict):
        return [Finding("invalid_tool_arguments", f"{where}: JSON {type(parsed).__name__}, expected an object")]
    return []


# A UTF-8 lead byte read as cp1252/latin-1, followed by continuation bytes read the same way.
_CP1252_CONT = "\u0080-\u00bf\u0152\u0153\u0160\u0161\u0178\u017d\u017e\u0192\u02c6\u02dc\u2013\u2014\u2018\u2019\u201a\u201c\u201d\u201e\u2020\u2021\u2022\u2026\u2030\u2039\u203a\u20ac\u2122"
_MOJIBAKE = re.compile(f"[\u00c2-\u00f4][{_CP1252_CONT}]{{1,3}}")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _redecodes(s: str) -> str | None:
    """The text `s` was before a UTF-8 -> cp1252 mix-up, or None if it is not such a mix-up."""
    for enc in ("cp1252", "latin-1"):
        try:
            fixed = s.encode(enc).decode("utf-8")
        except (UnicodeEncodeError, UnicodeDecodeError):
            continue
        if fixed != s:
            return fixed
    return None


def text_findings(messages: list[dict]) -> list[Finding]:
    """Encoding damage in message text: mojibake, replacement characters, lone surrogates."""
    out = []
    for i, m in enumerate(messages):
        text = m.get("content") or ""
        where = f"messages[{i}].content"
        if _SURROGATE.search(text):
            out.append(Finding("invalid_utf8", f"{where}: undecodable bytes (lone surrogates)"))
        for match in _MOJIBAKE.finditer(text):
            fixed = _redecodes(match.group())
            if fixed:
                out.append(Finding("mojibake", f"{where}: {match.group()!r} looks like a mis-decoded {fixed!r}"))
                break
        if "\ufffd" in text:
            n = text.count("\ufffd")
            out.append(Finding("replacement_character", f"{where}: {n} U+FFFD replacement character(s)"))
    return out


def reject_code(reject: Any) -> str:
    """The code for a reader Reject (a record, or a stretch of the file, that could not be read at all)."""
    from curate.ingest import readers

    return {
        readers.UTF8: "invalid_utf8",
        readers.NOT_OBJECT: "data_type",
        readers.TRUNCATED: "truncated_file",
        readers.UNREADABLE: "unreadable_file",
    }.get(reject.kind, "json_parse_error")
