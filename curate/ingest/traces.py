"""Production traces as input formats: OpenAI Batch files, OpenAI stored completions, Langfuse and LangSmith exports.

    openai-batch       a Batch API input line ({custom_id, method, url, body}) is a request; an output line
                       ({custom_id, response, error}) is its reply, paired by custom_id (curate.ingest.convert)
    openai-completion  a chat.completion object (stored completions as the API lists them), its request messages
                       in `messages` (or `input`) beside it, as GET /v1/chat/completions/{id}/messages gives them
    langfuse           a generation observation, a trace (table export), or a trace download holding observations
    langsmith          a run (run_type llm) with LangChain or OpenAI messages in `inputs` and `outputs`

A record that holds others (a Langfuse trace download, a LangSmith run with child_runs, a page of a list API) is
expanded into the records that are rows (`expand`): generations and llm runs; spans, chains and tools are not rows.
Roles and tool calls keep their canonical OpenAI form (LangChain `tool_calls` of {name, args, id} included).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from typing import Any

from curate.dataset import message
from curate.ingest.formats import RecordError, _openai_messages, _text, _tool_calls

FORMATS = ("openai-batch", "openai-completion", "langfuse", "langsmith")


class Failed(RecordError):
    """A record of a request that failed (an error reply, a status other than 200, an error level): no row."""


def detect(obj: dict[str, Any]) -> str | None:
    """The trace format a record looks like, from its keys alone (the fast path decodes values lazily), or None."""
    keys = obj.keys()
    if "custom_id" in keys and (("body" in keys and ("url" in keys or "method" in keys))
                                or ("response" in keys and "error" in keys)):
        return "openai-batch"
    if "run_type" in keys and ("inputs" in keys or "outputs" in keys):
        return "langsmith"
    if "traceId" in keys and "type" in keys:
        return "langfuse"
    if "choices" in keys and "object" in keys:
        return "openai-completion"
    if "observations" in keys and ("trace" in keys or ("id" in keys and "timestamp" in keys)):
        return "langfuse"
    if {"id", "timestamp", "input", "output"} <= keys and ("sessionId" in keys or "userId" in keys):
        return "langfuse"
    if {"object", "data", "has_more"} <= keys:  # a page of GET /v1/chat/completions
        return "openai-completion"
    return None


def is_reply(obj: dict[str, Any]) -> bool:
    """An OpenAI Batch output (or error file) line: a reply without its request."""
    return "custom_id" in obj and "body" not in obj and ("response" in obj or "error" in obj)


# ---------------------------------------------------------------- records that hold records


def expand(obj: dict[str, Any], fmt: str, raw: str | None = None) -> tuple[list[tuple[dict, int]], Counter] | None:
    """The records a container record holds, each with its character offset in `raw` (0 when unknown), and the
    kinds of records left out (not rows); None when `obj` is a record itself."""
    skipped: Counter = Counter()
    if fmt == "openai-completion" and isinstance(obj.get("data"), list) and "choices" not in obj:
        return [(x, at) for x, at in _elements(obj, "data", raw) if isinstance(x, dict)], skipped
    if fmt == "langfuse":
        trace = obj.get("trace") if isinstance(obj.get("trace"), dict) else obj
        observations = obj.get("observations")
        if "traceId" in obj:  # one observation (a line of the observations table export)
            if obj.get("type") == "GENERATION":
                return None
            skipped[f"Langfuse {obj.get('type')}"] += 1
            return [], skipped
        if not isinstance(observations, list) or not all(isinstance(o, dict) for o in observations):
            return None if trace is obj else ([(trace, 0)], skipped)  # a trace without its observations: its own io
        brief = {k: trace.get(k) for k in ("id", "name", "userId", "sessionId", "tags") if trace.get(k) is not None}
        out = []
        for o, at in _elements(obj, "observations", raw):
            if o.get("type") == "GENERATION":
                out.append(({**o, "trace": brief}, at))
            else:
                skipped[f"Langfuse {o.get('type')}"] += 1
        if not out:  # no generation: the trace's own input and output, when they are a chat
            whole = {k: v for k, v in trace.items() if k != "observations"}
            return [(whole, 0)], skipped
        return out, skipped
    if fmt == "langsmith":
        runs: list[dict] = []
        _llm_runs(obj, runs, skipped)
        if runs == [obj]:
            return None
        return [(r, 0) for r in runs], skipped
    return None


def _llm_runs(run: dict, out: list[dict], skipped: Counter) -> None:
    if run.get("run_type") == "llm":
        out.append(run)
    else:
        skipped[f"LangSmith {run.get('run_type')} run"] += 1
    for child in run.get("child_runs") or []:
        if isinstance(child, dict):
            _llm_runs(child, out, skipped)


_WS = re.compile(r"[ \t\r\n]*")
_DECODER = json.JSONDecoder()


def _elements(obj: dict, key: str, raw: str | None) -> list[tuple[Any, int]]:
    """obj[key]'s elements with the offset of each in `raw`, the object's JSON text (offsets 0 without it)."""
    values = obj[key]
    offsets = _offsets(raw, key) if raw else None
    if offsets is None or len(offsets) != len(values):
        offsets = [0] * len(values)
    return list(zip(values, offsets))


def _offsets(raw: str, key: str) -> list[int] | None:
    """Where each element of the top-level member `key` (a list) starts in the JSON object `raw`."""
    try:
        i = _WS.match(raw).end()
        if raw[i] != "{":
            return None
        i += 1
        while True:
            i = _WS.match(raw, i).end()
            if raw[i] != '"':
                return None
            name, i = json.decoder.scanstring(raw, i + 1)
            i = _WS.match(raw, i).end() + 1  # past the ':'
            i = _WS.match(raw, i).end()
            if name == key and raw[i] == "[":
                starts = []
                i = _WS.match(raw, i + 1).end()
                while raw[i] != "]":
                    starts.append(i)
                    _, i = _DECODER.raw_decode(raw, i)
                    i = _WS.match(raw, i).end()
                    if raw[i] == ",":
                        i = _WS.match(raw, i + 1).end()
                return starts
            _, i = _DECODER.raw_decode(raw, i)
            i = _WS.match(raw, i).end()
            if raw[i] != ",":
                return None
            i += 1
    except (IndexError, ValueError):
        return None


# ---------------------------------------------------------------- messages


_LC_ROLES = {"human": "user", "user": "user", "ai": "assistant", "assistant": "assistant", "system": "system",
             "tool": "tool", "function": "tool", "developer": "developer"}


def chat_messages(raw: Any, field: str) -> list[dict]:
    """OpenAI messages, or LangChain ones ({type, data}, a serialized {lc, id, kwargs}, or {type, content})."""
    if not isinstance(raw, list) or not raw:
        raise RecordError("expected a non-empty list of messages", field)
    out = []
    for i, m in enumerate(raw):
        f = f"{field}[{i}]"
        if isinstance(m, dict) and "role" not in m and ("type" in m or "lc" in m):
            out.append(_langchain(m, f))
        else:
            out += _openai_messages([_store_message(m)], f)
    return out


def _store_message(m: Any) -> Any:
    """A stored completion's message keeps its text in content_parts when it was sent as parts."""
    if isinstance(m, dict) and m.get("content") is None and isinstance(m.get("content_parts"), list):
        return {**m, "content": m["content_parts"]}
    return m


def _langchain(m: dict, field: str) -> dict:
    if "lc" in m and isinstance(m.get("kwargs"), dict):  # langchain_core.load.dumpd
        data = m["kwargs"]
        kind = data.get("type") or (m.get("id") or [""])[-1]
    elif isinstance(m.get("data"), dict):  # langchain_core.messages.message_to_dict
        data, kind = m["data"], m.get("type")
    else:
        data, kind = m, m.get("type")
    if not isinstance(kind, str):
        raise RecordError("message has no type", field + ".type")
    name = re.sub(r"(MessageChunk|Message|Chunk)$", "", kind).lower()
    role = data.get("role") if name == "chat" else _LC_ROLES.get(name)
    if not isinstance(role, str):
        raise RecordError(f"unknown LangChain message type '{kind}'", field + ".type")
    calls = None
    if data.get("tool_calls"):
        raw_calls = data["tool_calls"]
        if not isinstance(raw_calls, list):
            raise RecordError("tool_calls must be a list", field + ".tool_calls")
        calls = _tool_calls([_lc_call(c) for c in raw_calls], field + ".tool_calls")
    elif isinstance(data.get("additional_kwargs"), dict):
        extra = data["additional_kwargs"]
        calls = _tool_calls(extra.get("tool_calls"), field + ".additional_kwargs.tool_calls")
        if calls is None and isinstance(extra.get("function_call"), dict):
            calls = _tool_calls([{"function": extra["function_call"]}], field + ".additional_kwargs.function_call")
    content = _text(data.get("content"), field + ".content")
    return message(role, None if calls and not content else content,
                   name=data.get("name") if isinstance(data.get("name"), str) and role != "assistant" else None,
                   tool_calls=calls, tool_call_id=data.get("tool_call_id") if role == "tool" else None)


def _lc_call(call: Any) -> Any:
    """A LangChain tool call {name, args, id} as OpenAI's {id, type, function: {name, arguments}}."""
    if isinstance(call, dict) and "function" not in call and "args" in call:
        return {"id": call.get("id"), "type": "function", "function": {"name": call.get("name"), "arguments": call["args"]}}
    return call


def _reply(completion: Any, field: str) -> dict:
    """The assistant message of a chat.completion object (its first choice)."""
    if not isinstance(completion, dict):
        raise RecordError("expected a chat.completion object", field)
    choices = completion.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise RecordError("expected a non-empty list of choices", field + ".choices")
    m = choices[0].get("message")
    if not isinstance(m, dict):
        raise RecordError("the choice has no message", field + ".choices[0].message")
    if m.get("content") is None and not m.get("tool_calls") and not m.get("function_call") and m.get("refusal"):
        m = {**m, "content": m["refusal"]}  # a refusal is what the model answered
    return _openai_messages([{**m, "role": m.get("role") or "assistant"}], field + ".choices[0].message")[0]


def _tools(value: Any, functions: Any = None) -> str | None:
    if not value and isinstance(functions, list) and functions:
        value = [{"type": "function", "function": f} for f in functions]  # the legacy `functions` parameter
    if not value:
        return None
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _meta(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None and v != {} and v != []}


def _dict(obj: dict, key: str) -> dict:
    value = obj.get(key)
    return value if isinstance(value, dict) else {}


# ---------------------------------------------------------------- formats


def convert(obj: dict[str, Any], fmt: str) -> tuple[list[dict], str | None, dict]:
    """(messages, tools JSON, meta) of a trace record; raises RecordError (Failed for a failed request)."""
    return {"openai-batch": _batch, "openai-completion": _completion, "langfuse": _langfuse,
            "langsmith": _langsmith}[fmt](obj)


def _batch(obj: dict) -> tuple[list[dict], str | None, dict]:
    if "body" not in obj:
        raise RecordError("an OpenAI Batch output line holds a reply, not its request: give the batch input file "
                          "with it (curate ingest INPUT.jsonl OUTPUT.jsonl)", "body")
    url = obj.get("url")
    if isinstance(url, str) and not url.rstrip("/").endswith("/chat/completions"):
        raise RecordError(f"only /v1/chat/completions requests hold chat messages (this one is {url})", "url")
    body = obj["body"]
    if not isinstance(body, dict):
        raise RecordError("expected the request body object", "body")
    msgs = _openai_messages(body.get("messages"), "body.messages")
    params = {k: v for k, v in body.items() if k not in ("messages", "tools", "functions", "model")}
    meta = _meta(custom_id=obj.get("custom_id"), model=body.get("model"), params=params)
    if "response" in obj or "error" in obj:  # paired with its output line
        error, response = obj.get("error"), obj.get("response")
        if error:
            what = error.get("message") if isinstance(error, dict) else error
            code = error.get("code") if isinstance(error, dict) else None
            raise Failed(f"{code}: {what}" if code else str(what), "error")
        if not isinstance(response, dict):
            raise Failed("the output line has neither a response nor an error", "response")
        status = response.get("status_code")
        reply = response.get("body")
        if status != 200:
            err = _dict(reply, "error") if isinstance(reply, dict) else {}
            raise Failed(f"status {status}" + (f": {err.get('message')}" if err.get("message") else ""),
                         "response.status_code")
        msgs.append(_reply(reply, "response.body"))
        choice = reply["choices"][0]
        meta.update(_meta(request_id=response.get("request_id"), response_id=reply.get("id"),
                          response_model=reply.get("model"), created=reply.get("created"),
                          finish_reason=choice.get("finish_reason"), usage=reply.get("usage")))
    return msgs, _tools(body.get("tools"), body.get("functions")), meta


def _completion(obj: dict) -> tuple[list[dict], str | None, dict]:
    if obj.get("object") != "chat.completion":
        raise RecordError(f"expected 'chat.completion', got {obj.get('object')!r}", "object")
    key = next((k for k in ("messages", "input") if obj.get(k) is not None), None)
    if key is None:
        raise RecordError("a stored completion holds only its reply; add the request messages as 'messages' "
                          "(GET /v1/chat/completions/{id}/messages)", "messages")
    raw = obj[key]
    if isinstance(raw, dict) and isinstance(raw.get("data"), list):  # the messages endpoint's page as it is
        raw = raw["data"]
    msgs = chat_messages(raw, key)
    reply = _reply(obj, "")
    if not (msgs[-1]["role"] == "assistant" and msgs[-1] == reply):  # the list may end with the reply itself
        msgs.append(reply)
    choice = obj["choices"][0]
    meta = _meta(completion_id=obj.get("id"), model=obj.get("model"), created=obj.get("created"),
                 metadata=obj.get("metadata"), finish_reason=choice.get("finish_reason"), usage=obj.get("usage"),
                 request_id=obj.get("request_id"))
    return msgs, _tools(obj.get("tools")), meta


def _io_messages(value: Any, field: str) -> tuple[list[dict], str | None]:
    """A Langfuse input: chat messages, {messages, tools?}, or a prompt text."""
    if isinstance(value, str):
        return [message("user", value)], None
    if isinstance(value, dict) and "messages" in value:
        return chat_messages(value["messages"], field + ".messages"), _tools(value.get("tools"), value.get("functions"))
    if isinstance(value, list):
        return chat_messages(value, field), None
    raise RecordError("expected chat messages (a list, or {messages: [...]}) or a text", field)


def _output_message(value: Any, field: str) -> list[dict]:
    """A Langfuse output or LangSmith outputs: a message, a text, a chat completion, or none."""
    if value is None:
        return []
    if isinstance(value, str):
        return [message("assistant", value)]
    if isinstance(value, dict) and "choices" in value:
        return [_reply(value, field)]
    if isinstance(value, dict) and ("role" in value or "type" in value or "lc" in value):
        return chat_messages([value], field)
    if isinstance(value, dict) and "content" in value:
        return chat_messages([{**value, "role": "assistant"}], field)
    if isinstance(value, list):
        return chat_messages(value, field)
    raise RecordError("expected a message, a text or a chat completion", field)


def _langfuse(obj: dict) -> tuple[list[dict], str | None, dict]:
    if obj.get("level") == "ERROR":
        raise Failed(f"level ERROR: {obj.get('statusMessage') or 'no status message'}", "level")
    if "traceId" in obj and obj.get("type") != "GENERATION":
        raise RecordError(f"a {obj.get('type')} observation is not a chat turn (only GENERATION is)", "type")
    msgs, tools = _io_messages(obj.get("input"), "input")
    msgs += _output_message(obj.get("output"), "output")
    trace = _dict(obj, "trace")
    observation = "traceId" in obj
    meta = _meta(trace_id=obj.get("traceId") or trace.get("id") if observation else obj.get("id"),
                 observation_id=obj.get("id") if observation else None, name=obj.get("name"),
                 trace_name=trace.get("name"), model=obj.get("model") or obj.get("providedModelName"),
                 start_time=obj.get("startTime") or obj.get("timestamp"), end_time=obj.get("endTime"),
                 user_id=obj.get("userId") or trace.get("userId"),
                 session_id=obj.get("sessionId") or trace.get("sessionId"),
                 tags=obj.get("tags") or trace.get("tags"), metadata=obj.get("metadata"), usage=obj.get("usage"))
    return msgs, tools, meta


def _langsmith(obj: dict) -> tuple[list[dict], str | None, dict]:
    if obj.get("run_type") != "llm":
        raise RecordError(f"a {obj.get('run_type')} run is not a chat turn (only llm is)", "run_type")
    if obj.get("error") and not obj.get("outputs"):
        raise Failed(str(obj["error"]).strip().splitlines()[0], "error")
    inputs, outputs, extra = _dict(obj, "inputs"), obj.get("outputs"), _dict(obj, "extra")
    params = _dict(extra, "invocation_params")
    if "messages" in inputs:
        raw = inputs["messages"]
        if isinstance(raw, list) and raw and isinstance(raw[0], list):  # a batch of prompts: the run's first
            raw = raw[0]
        msgs = chat_messages(raw, "inputs.messages")
    elif isinstance(inputs.get("prompts"), list) and inputs["prompts"]:
        msgs = [message("user", _text(inputs["prompts"][0], "inputs.prompts[0]"))]
    else:
        raise RecordError("expected inputs.messages or inputs.prompts", "inputs")
    if isinstance(outputs, dict) and "generations" in outputs:
        gens = outputs["generations"]
        gen = gens[0][0] if gens and isinstance(gens[0], list) and gens[0] else (gens[0] if gens else None)
        if not isinstance(gen, dict):
            raise RecordError("expected a list of generations", "outputs.generations")
        msgs += (_output_message(gen["message"], "outputs.generations[0][0].message") if gen.get("message") is not None
                 else [message("assistant", _text(gen.get("text"), "outputs.generations[0][0].text"))])
    elif isinstance(outputs, dict) and outputs:
        msgs += _output_message(outputs.get("output", outputs) if "choices" not in outputs else outputs, "outputs")
    metadata = _dict(extra, "metadata")
    meta = _meta(run_id=obj.get("id"), trace_id=obj.get("trace_id"), parent_run_id=obj.get("parent_run_id"),
                 name=obj.get("name"), session_id=obj.get("session_id"),
                 model=params.get("model") or params.get("model_name") or metadata.get("ls_model_name"),
                 start_time=obj.get("start_time"), end_time=obj.get("end_time"), tags=obj.get("tags"))
    return msgs, _tools(inputs.get("tools") or params.get("tools"), params.get("functions")), meta
