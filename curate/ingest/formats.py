"""Record formats: detect which one a raw record is, convert it to canonical messages, export back.

Input formats: openai (messages, with tool calls), sharegpt (conversations of from/value),
alpaca (instruction/input/output, optional system and history), prompt-completion,
preference (chosen/rejected, several dialects), qa (question/answer), mtbench (turns),
self-instruct (instruction + instances), canonical (rows curate wrote itself), and production traces
(openai-batch, openai-completion, langfuse, langsmith: curate.ingest.traces).
Output formats: openai, sharegpt, alpaca.
"""

from __future__ import annotations

import json
import re
import typing
from collections.abc import Callable
from typing import Any

from curate.dataset import message
from curate.ingest.config import INPUT_FORMATS, ExportFormat  # noqa: F401 (the formats are named once, there)

EXPORT_FORMATS: tuple[str, ...] = typing.get_args(ExportFormat)


class RecordError(ValueError):
    """A record that does not fit its format; `field` names where."""

    def __init__(self, reason: str, field: str | None = None):
        self.field = field
        super().__init__(f"field '{field}': {reason}" if field else reason)


def detect(obj: dict[str, Any]) -> str | None:
    """The input format a record looks like, or None."""
    keys = obj.keys()
    if {"id", "messages", "source", "origin", "meta"} <= keys:
        return "canonical"
    trace = traces.detect(obj)  # before `messages`: a stored completion may carry its request messages
    if trace is not None:
        return trace
    if "chosen" in keys and "rejected" in keys:
        return "preference"
    if "messages" in keys:
        return "openai"
    if "conversations" in keys or "conversation" in keys:
        return "sharegpt"
    if "instruction" in keys and "instances" in keys:
        return "self-instruct"
    if "instruction" in keys and ("output" in keys or "response" in keys):
        return "alpaca"
    if "prompt" in keys and "completion" in keys:
        return "prompt-completion"
    if "question" in keys and ("answer" in keys or "response" in keys):
        return "qa"
    if "turns" in keys and isinstance(obj.get("turns"), list):
        return "mtbench"
    return None


# ---------------------------------------------------------------- input

# the keys a format reads (the others go to meta); sharegpt reads only one of conversations/conversation
FIELDS: dict[str, frozenset[str]] = {
    "openai": frozenset({"messages", "tools"}),
    "sharegpt": frozenset({"conversations", "conversation", "system", "tools"}),
    "alpaca": frozenset({"instruction", "input", "output", "response", "system", "history"}),
    "prompt-completion": frozenset({"prompt", "completion"}),
}

SHAREGPT_ROLES = {
    "human": "user",
    "user": "user",
    "prompter": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "chatgpt": "assistant",
    "bard": "assistant",
    "bing": "assistant",
    "model": "assistant",
    "bot": "assistant",
    "system": "system",
    "function_call": "assistant",
    "observation": "tool",
    "function": "tool",
    "tool": "tool",
}


def _text(value: Any, field: str) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, list) and all(isinstance(p, dict) for p in value):
        # OpenAI content parts: keep the text parts in order
        parts = [p.get("text") for p in value if p.get("type", "text") == "text"]
        if all(isinstance(p, str) for p in parts):
            return "".join(parts)
    raise RecordError(f"expected text, got {type(value).__name__}", field)


def _tool_calls(raw: Any, field: str) -> list[dict] | None:
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise RecordError("tool_calls must be a list", field)
    calls = []
    for i, call in enumerate(raw):
        if not isinstance(call, dict):
            raise RecordError("a tool call must be an object", f"{field}[{i}]")
        fn = call.get("function", call)
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise RecordError("a tool call needs function.name", f"{field}[{i}]")
        args = fn.get("arguments", "")
        if not isinstance(args, str):
            args = json.dumps(args, ensure_ascii=False)
        calls.append(
            {"id": call.get("id"), "type": call.get("type", "function"), "function": {"name": fn["name"], "arguments": args}}
        )
    return calls


def _openai_messages(raw: Any, field: str) -> list[dict]:
    if not isinstance(raw, list) or not raw:
        raise RecordError("expected a non-empty list of messages", field)
    out = []
    for i, m in enumerate(raw):
        f = f"{field}[{i}]"
        if not isinstance(m, dict):
            raise RecordError("a message must be an object", f)
        role = m.get("role")
        if not isinstance(role, str) or not role:
            raise RecordError("message has no role", f + ".role")
        if role == "function":  # the legacy name of the tool role
            role = "tool"
        calls = _tool_calls(m.get("tool_calls"), f + ".tool_calls")
        if calls is None and isinstance(m.get("function_call"), dict):
            calls = _tool_calls([{"function": m["function_call"]}], f + ".function_call")
        out.append(
            message(
                role,
                _text(m.get("content"), f + ".content") if m.get("content") is not None or not calls else None,
                name=m.get("name") if isinstance(m.get("name"), str) else None,
                tool_calls=calls,
                tool_call_id=m.get("tool_call_id"),
            )
        )
    return out


def _sharegpt_messages(raw: Any, field: str) -> list[dict]:
    if not isinstance(raw, list) or not raw:
        raise RecordError("expected a non-empty list of turns", field)
    out = []
    for i, turn in enumerate(raw):
        f = f"{field}[{i}]"
        if not isinstance(turn, dict):
            raise RecordError("a turn must be an object", f)
        who = turn.get("from", turn.get("role"))
        if not isinstance(who, str):
            raise RecordError("turn has no 'from'", f + ".from")
        role = SHAREGPT_ROLES.get(who.strip().lower())
        if role is None:
            raise RecordError(f"unknown role '{who}' (known: {', '.join(sorted(SHAREGPT_ROLES))})", f + ".from")
        value = _text(turn.get("value", turn.get("content")), f + ".value")
        if who.lower() == "function_call":
            try:
                call = json.loads(value)
            except json.JSONDecodeError as exc:
                raise RecordError(f"function_call value is not JSON ({exc.msg})", f + ".value") from exc
            calls = call if isinstance(call, list) else [call]
            out.append(message("assistant", None, tool_calls=_tool_calls(calls, f + ".value")))
        else:
            out.append(message(role, value))
    return out


HERMES_CALL = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.DOTALL)
HERMES_RESPONSE = re.compile(r"\A\s*<tool_response>\s*(.*?)\s*</tool_response>\s*\Z", re.DOTALL)
HERMES_TOOLS = re.compile(r"<tools>\s*(.*?)\s*</tools>", re.DOTALL)


def _hermes(msgs: list[dict], tools: str | None, field: str) -> tuple[list[dict], str | None]:
    """Hermes-style tool use written into the text, as OpenAI's fields: `<tool_call>{"name", "arguments"}
    </tool_call>` in an assistant turn becomes its tool_calls (the text around the blocks stays its content),
    a tool turn that is one `<tool_response>` block loses the tags, and a system prompt's `<tools>[...]</tools>`
    becomes the record's tools when it has none (the block leaves the system text)."""
    for i, m in enumerate(msgs):
        text = m.get("content")
        if not isinstance(text, str):
            continue
        if m["role"] == "assistant" and not m.get("tool_calls") and "<tool_call>" in text:
            calls = []
            for k, block in enumerate(HERMES_CALL.findall(text)):
                try:
                    call = json.loads(block)
                except json.JSONDecodeError as exc:
                    raise RecordError(f"<tool_call> block {k + 1} is not JSON ({exc.msg})", f"{field}[{i}].content") \
                        from exc
                calls.append(call if isinstance(call, dict) else {})
            if calls:
                m["tool_calls"] = _tool_calls(calls, f"{field}[{i}].content")
                m["content"] = HERMES_CALL.sub("", text).strip() or None
        elif m["role"] == "tool" and (hit := HERMES_RESPONSE.match(text)):
            m["content"] = hit.group(1)
        elif m["role"] == "system" and tools is None and (hit := HERMES_TOOLS.search(text)):
            try:
                declared = json.loads(hit.group(1))
            except json.JSONDecodeError:
                continue  # not a JSON list of tools: the system prompt stays as written
            if isinstance(declared, dict):
                declared = [declared]
            if isinstance(declared, list) and all(isinstance(t, dict) for t in declared):
                tools = json.dumps([t if "function" in t else {"type": "function", "function": t} for t in declared],
                                   ensure_ascii=False)
                m["content"] = HERMES_TOOLS.sub("", text).strip()
    return msgs, tools


def _alpaca_messages(obj: dict) -> list[dict]:
    msgs = []
    if obj.get("system"):
        msgs.append(message("system", _text(obj["system"], "system")))
    history = obj.get("history") or []
    if not isinstance(history, list):
        raise RecordError("history must be a list of [prompt, reply] pairs", "history")
    for i, pair in enumerate(history):
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise RecordError("expected a [prompt, reply] pair", f"history[{i}]")
        msgs.append(message("user", _text(pair[0], f"history[{i}][0]")))
        msgs.append(message("assistant", _text(pair[1], f"history[{i}][1]")))
    instruction = _text(obj.get("instruction"), "instruction")
    extra = _text(obj.get("input"), "input")
    prompt = f"{instruction}\n\n{extra}" if instruction and extra else instruction or extra
    if not prompt:
        raise RecordError("instruction and input are both empty", "instruction")
    msgs.append(message("user", prompt))
    msgs.append(message("assistant", _text(obj.get("output", obj.get("response")), "output")))
    return msgs


def _preference(obj: dict) -> tuple[list[dict], list[dict]]:
    """Prompt + chosen as messages, the rejected reply apart. Handles the common dialects."""
    if "conversations" in obj:
        prompt = _sharegpt_messages(obj["conversations"], "conversations")
    elif isinstance(obj.get("prompt"), list):
        prompt = _openai_messages(obj["prompt"], "prompt")
    elif isinstance(obj.get("prompt"), str):
        prompt = [message("user", obj["prompt"])]
    elif "instruction" in obj:
        prompt = _alpaca_messages({**obj, "output": ""})[:-1]
    else:
        prompt = []

    def side(key: str) -> list[dict]:
        value = obj[key]
        if isinstance(value, dict):
            return _sharegpt_messages([value], key)
        if isinstance(value, list):
            return (_sharegpt_messages if value and "from" in value[0] else _openai_messages)(value, key)
        return [message("assistant", _text(value, key))]

    chosen, rejected = side("chosen"), side("rejected")
    # TRL's implicit-prompt dialect: chosen/rejected are whole conversations sharing the prompt
    if not prompt and len(chosen) > 1:
        n = 0
        while n < min(len(chosen), len(rejected)) - 1 and chosen[n] == rejected[n]:
            n += 1
        prompt, chosen, rejected = chosen[:n], chosen[n:], rejected[n:]
    if not prompt:
        raise RecordError("preference pair has no prompt", "prompt")
    return prompt + chosen, rejected


def to_messages(obj: dict[str, Any], fmt: str) -> tuple[list[dict], str | None, list[dict] | None, dict]:
    """(messages, tools JSON, rejected, meta) for a raw record of format `fmt`; raises RecordError."""
    used: set[str] | frozenset[str]
    tools = None
    rejected = None
    if fmt == "openai":
        msgs = _openai_messages(obj.get("messages"), "messages")
        if obj.get("tools") is not None:
            tools = obj["tools"] if isinstance(obj["tools"], str) else json.dumps(obj["tools"], ensure_ascii=False)
        msgs, tools = _hermes(msgs, tools, "messages")
        used = FIELDS["openai"]
    elif fmt == "sharegpt":
        key = "conversations" if "conversations" in obj else "conversation"
        msgs = _sharegpt_messages(obj.get(key), key)
        if obj.get("system"):
            msgs.insert(0, message("system", _text(obj["system"], "system")))
        if obj.get("tools"):
            tools = obj["tools"] if isinstance(obj["tools"], str) else json.dumps(obj["tools"], ensure_ascii=False)
        msgs, tools = _hermes(msgs, tools, key)
        used = {key, "system", "tools"}
    elif fmt == "alpaca":
        msgs = _alpaca_messages(obj)
        used = FIELDS["alpaca"]
    elif fmt == "prompt-completion":
        prompt, completion = obj.get("prompt"), obj.get("completion")
        msgs = (
            _openai_messages(prompt, "prompt") if isinstance(prompt, list) else [message("user", _text(prompt, "prompt"))]
        )
        msgs += (
            _openai_messages(completion, "completion")
            if isinstance(completion, list)
            else [message("assistant", _text(completion, "completion"))]
        )
        used = FIELDS["prompt-completion"]
    elif fmt == "preference":
        msgs, rejected = _preference(obj)
        used = {"conversations", "prompt", "chosen", "rejected", "instruction", "input", "system", "history"}
    elif fmt == "qa":
        answer = obj.get("answer", obj.get("response"))
        msgs = [message("user", _text(obj.get("question"), "question"))]
        if answer is not None:
            msgs.append(message("assistant", _text(answer, "answer")))
        used = {"question", "answer", "response"}
    elif fmt == "mtbench":
        turns = obj.get("turns")
        if not turns or not all(isinstance(t, str) for t in turns):
            raise RecordError("expected a non-empty list of strings", "turns")
        msgs = [message("user", t) for t in turns]
        used = {"turns"}
    elif fmt == "self-instruct":
        instances = obj.get("instances") or [{}]
        if not isinstance(instances, list) or not isinstance(instances[0], dict):
            raise RecordError("expected a list of {input, output}", "instances")
        msgs = _alpaca_messages({"instruction": obj.get("instruction"), **instances[0]})
        used = {"instruction"} | ({"instances"} if len(instances) == 1 else set())
    elif fmt in traces.FORMATS:
        msgs, tools, meta = traces.convert(obj, fmt)
        return msgs, tools, None, meta
    else:
        raise RecordError(f"unknown format '{fmt}' (known: {', '.join(INPUT_FORMATS)})")
    meta = {k: v for k, v in obj.items() if k not in used}
    return msgs, tools, rejected, meta


# ---------------------------------------------------------------- output


def _openai_out(row: dict) -> dict:
    msgs = []
    for m in row["messages"]:
        out = {"role": m["role"], "content": m["content"]}
        for key in ("name", "tool_call_id"):
            if m.get(key) is not None:
                out[key] = m[key]
        if m.get("tool_calls"):
            out["tool_calls"] = m["tool_calls"]
        msgs.append(out)
    rec: dict[str, Any] = {"messages": msgs}
    if row.get("tools"):
        rec["tools"] = json.loads(row["tools"])
    return rec


def _hermes_out(row: dict) -> dict:
    """OpenAI messages with tool use in Hermes tags (what `_hermes` reads back): the tools in a `<tools>` block at the
    end of the system prompt (a system message is added when there is none), each call as `<tool_call>{"name",
    "arguments"}</tool_call>` after the turn's text, and a tool result inside `<tool_response>`."""
    msgs = []
    for m in row["messages"]:
        text = m["content"] or ""
        if m.get("tool_calls"):
            calls = [f"<tool_call>\n{json.dumps({'name': c['function']['name'], 'arguments': _arguments(c)}, ensure_ascii=False)}"
                     "\n</tool_call>" for c in m["tool_calls"]]
            text = "\n".join(([text] if text else []) + calls)
        elif m["role"] == "tool":
            text = f"<tool_response>\n{text}\n</tool_response>"
        msgs.append({"role": m["role"], "content": text})
    if row.get("tools"):
        block = f"<tools>\n{json.dumps(json.loads(row['tools']), ensure_ascii=False)}\n</tools>"
        if msgs and msgs[0]["role"] == "system":
            msgs[0]["content"] = f"{msgs[0]['content']}\n\n{block}" if msgs[0]["content"] else block
        else:
            msgs.insert(0, {"role": "system", "content": block})
    return {"messages": msgs}


def _arguments(call: dict) -> Any:
    """A call's arguments as JSON, as Hermes writes them (the text as it is when it is not JSON)."""
    args = call["function"].get("arguments") or "{}"
    try:
        return json.loads(args)
    except json.JSONDecodeError:
        return args


_SHAREGPT_FROM = {"user": "human", "assistant": "gpt", "system": "system", "tool": "observation"}


def _sharegpt_out(row: dict) -> dict:
    turns = []
    for i, m in enumerate(row["messages"]):
        if m.get("tool_calls"):
            if m.get("content"):
                raise RecordError("ShareGPT cannot hold text and a tool call in one turn", f"messages[{i}]")
            calls = [c["function"] for c in m["tool_calls"]]
            turns.append({"from": "function_call", "value": json.dumps(calls[0] if len(calls) == 1 else calls)})
            continue
        who = _SHAREGPT_FROM.get(m["role"])
        if who is None:
            raise RecordError(f"role '{m['role']}' has no ShareGPT name", f"messages[{i}].role")
        turns.append({"from": who, "value": m["content"] or ""})
    rec: dict[str, Any] = {"id": row["id"], "conversations": turns}
    if row.get("tools"):
        rec["tools"] = row["tools"]
    return rec


def _alpaca_out(row: dict) -> dict:
    msgs = list(row["messages"])
    system = None
    if msgs and msgs[0]["role"] == "system":
        system = msgs.pop(0)["content"]
    if len(msgs) % 2 or not msgs:
        raise RecordError("Alpaca needs user/assistant pairs ending with the assistant", "messages")
    pairs = []
    for i in range(0, len(msgs), 2):
        user, reply = msgs[i], msgs[i + 1]
        if user["role"] != "user" or reply["role"] != "assistant" or user.get("tool_calls") or reply.get("tool_calls"):
            raise RecordError("Alpaca needs alternating user/assistant turns without tool calls", f"messages[{i}]")
        pairs.append([user["content"] or "", reply["content"] or ""])
    last = pairs.pop()
    rec: dict[str, Any] = {"instruction": last[0], "input": "", "output": last[1]}
    if system is not None:
        rec["system"] = system
    if pairs:
        rec["history"] = pairs
    return rec


EXPORTERS: dict[str, Callable[[dict], dict]] = {"openai": _openai_out, "sharegpt": _sharegpt_out, "alpaca": _alpaca_out,
                                                "hermes": _hermes_out}

# production traces (curate.ingest.traces) build on the converters above, so they are imported last
from curate.ingest import traces
