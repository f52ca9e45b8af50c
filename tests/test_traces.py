"""Production traces as ingest formats: OpenAI Batch files, stored completions, Langfuse and LangSmith exports.

The sample files are written by hand to look like the documented exports (each cites its source); roles, tool
calls, meta, rejects and their line numbers are checked, and `curate report` runs with them as production.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from curate.cli import cli
from curate.dataset import read_dataset
from curate.errors import UsageError
from curate.ingest import export, ingest, ingest_table
from curate.ingest.formats import detect

# https://platform.openai.com/docs/guides/batch (the input file) and
# https://platform.openai.com/docs/api-reference/batch/request-input
WEATHER_TOOL = {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                                                  "parameters": {"type": "object",
                                                                 "properties": {"city": {"type": "string"}}}}}
BATCH_INPUT = [
    {"custom_id": "request-1", "method": "POST", "url": "/v1/chat/completions",
     "body": {"model": "gpt-4o-mini", "messages": [{"role": "system", "content": "You are a helpful assistant."},
                                                   {"role": "user", "content": "Hello world!"}], "max_tokens": 1000}},
    {"custom_id": "request-2", "method": "POST", "url": "/v1/chat/completions",
     "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Weather in Paris?"}],
              "tools": [WEATHER_TOOL]}},
    {"custom_id": "request-3", "method": "POST", "url": "/v1/chat/completions",
     "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Write a poem"}],
              "max_tokens": -1}},
    {"custom_id": "request-4", "method": "POST", "url": "/v1/chat/completions",
     "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Still waiting"}]}},
]


def _completion(cid: str, message: dict, finish: str = "stop") -> dict:
    """A chat.completion object (https://platform.openai.com/docs/api-reference/chat/object)."""
    return {"id": cid, "object": "chat.completion", "created": 1711652795, "model": "gpt-4o-mini-2024-07-18",
            "choices": [{"index": 0, "message": {"refusal": None, "annotations": [], **message}, "logprobs": None,
                         "finish_reason": finish}],
            "usage": {"prompt_tokens": 22, "completion_tokens": 2, "total_tokens": 24},
            "system_fingerprint": "fp_3ba"}


CALL = {"id": "call_abc", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}
# https://platform.openai.com/docs/guides/batch#5-retrieve-the-results (output and error file lines:
# https://platform.openai.com/docs/api-reference/batch/request-output)
BATCH_OUTPUT = [
    {"id": "batch_req_2", "custom_id": "request-2",
     "response": {"status_code": 200, "request_id": "req_2",
                  "body": _completion("chatcmpl-2", {"role": "assistant", "content": None, "tool_calls": [CALL]},
                                      "tool_calls")}, "error": None},
    {"id": "batch_req_1", "custom_id": "request-1",
     "response": {"status_code": 200, "request_id": "req_1",
                  "body": _completion("chatcmpl-1", {"role": "assistant", "content": "Hello! How can I help?"})},
     "error": None},
    {"id": "batch_req_3", "custom_id": "request-3",
     "response": {"status_code": 400, "request_id": "req_3",
                  "body": {"error": {"message": "Invalid 'max_tokens': integer below minimum value.",
                                     "type": "invalid_request_error", "param": "max_tokens", "code": None}}},
     "error": None},
    {"id": "batch_req_9", "custom_id": "request-9",
     "response": {"status_code": 200, "request_id": "req_9",
                  "body": _completion("chatcmpl-9", {"role": "assistant", "content": "Orphan"})}, "error": None},
]


def jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def rows(path: Path, **kw) -> tuple[list[dict], list[dict]]:
    table, rejects = ingest_table([path] if isinstance(path, Path) else path, **kw)
    return table.to_pylist(), rejects


def test_detection():
    assert detect(BATCH_INPUT[0]) == detect(BATCH_OUTPUT[0]) == "openai-batch"
    assert detect(_completion("c", {"role": "assistant", "content": "x"})) == "openai-completion"
    assert detect({**_completion("c", {"role": "assistant", "content": "x"}), "messages": []}) == "openai-completion"
    assert detect(LANGFUSE_TRACE) == detect(LANGFUSE_OBSERVATIONS[0]) == "langfuse"
    assert detect(LANGSMITH_RUNS[0]) == "langsmith"
    assert detect({"messages": [], "custom_id": "x"}) == "openai"  # a custom_id alone is not a batch line


def test_batch_input_alone(tmp_path):
    got, rejects = rows(jsonl(tmp_path / "batch_input.jsonl", BATCH_INPUT), origin="production")
    assert not rejects and len(got) == 4
    first = got[0]
    assert [(m["role"], m["content"]) for m in first["messages"]] == [
        ("system", "You are a helpful assistant."), ("user", "Hello world!")]
    assert first["origin"] == "production" and first["source"]["line"] == 1
    assert json.loads(first["meta"]) == {"custom_id": "request-1", "model": "gpt-4o-mini",
                                         "params": {"max_tokens": 1000}}
    assert json.loads(got[1]["tools"]) == [WEATHER_TOOL]


def test_batch_input_and_output_paired(tmp_path):
    src = jsonl(tmp_path / "batch_input.jsonl", BATCH_INPUT)
    out = jsonl(tmp_path / "batch_output.jsonl", BATCH_OUTPUT)
    s = ingest([src, out], tmp_path / "prod.parquet", origin="production", max_reject_rate=1)
    assert s.counts == {"in": 5, "kept": 3, "rejected": 2}
    got = read_dataset(tmp_path / "prod.parquet").to_pylist()
    assert [r["source"]["line"] for r in got] == [1, 2, 4]
    hello, weather, waiting = got
    assert [(m["role"], m["content"]) for m in hello["messages"]][-1] == ("assistant", "Hello! How can I help?")
    meta = json.loads(hello["meta"])
    assert meta["request_id"] == "req_1" and meta["response_id"] == "chatcmpl-1" and meta["finish_reason"] == "stop"
    reply = weather["messages"][-1]
    assert reply["role"] == "assistant" and reply["content"] is None
    assert reply["tool_calls"] == [CALL]
    assert [m["role"] for m in waiting["messages"]] == ["user"]  # no reply in the output: the request alone
    rejects = [json.loads(line) for line in Path(s.outputs["rejects"]).read_text().splitlines()]
    failed, orphan = rejects
    assert (failed["file"], failed["line"]) == (str(src), 3)
    assert failed["reason"] == (f"openai-batch request failed (reply at {out} line 3): field 'response.status_code': "
                                "status 400: Invalid 'max_tokens': integer below minimum value.")
    assert (orphan["file"], orphan["line"]) == (str(out), 4)
    assert orphan["reason"] == "no request with custom_id 'request-9' in the batch input files given"
    warnings = " ".join(s.summary["warnings"])
    assert "1 OpenAI Batch requests have no reply" in warnings and "paired by custom_id" in warnings


def test_batch_error_line_and_output_alone(tmp_path):
    src = jsonl(tmp_path / "batch_input.jsonl", BATCH_INPUT[:1])
    # an error file line (https://platform.openai.com/docs/api-reference/batch/request-output): response null
    errors = jsonl(tmp_path / "batch_errors.jsonl", [
        {"id": "batch_req_1", "custom_id": "request-1", "response": None,
         "error": {"code": "batch_expired", "message": "This request could not be executed before the completion "
                                                       "window expired."}}])
    got, rejects = rows([src, errors])
    assert not got and len(rejects) == 1
    assert rejects[0]["line"] == 1 and "field 'error': batch_expired: This request could not" in rejects[0]["reason"]
    with pytest.raises(UsageError, match="holds the replies, not the requests"):
        rows(errors)
    res = CliRunner().invoke(cli, ["ingest", str(errors), "-o", str(tmp_path / "x.parquet")])
    assert res.exit_code == 2 and "give the batch input file with it" in res.output


# https://platform.openai.com/docs/api-reference/chat/list (a page of stored completions) and
# https://platform.openai.com/docs/api-reference/chat/getMessages (their request messages), saved together
STORE_MESSAGES = {"object": "list", "data": [
    {"id": "chatcmpl-AyPNinnUqUDYo9SAdA52NobMflmj2-0", "role": "user", "content": "write a haiku about ai",
     "name": None, "content_parts": None}], "first_id": "chatcmpl-AyPNinnUqUDYo9SAdA52NobMflmj2-0",
    "last_id": "chatcmpl-AyPNinnUqUDYo9SAdA52NobMflmj2-0", "has_more": False}
STORED = {"object": "list", "data": [
    {**_completion("chatcmpl-AyPNinnUqUDYo9SAdA52NobMflmj2", {"role": "assistant", "content": "Silent circuits hum"}),
     "metadata": {"topic": "poetry"}, "request_id": "req_ded8ab984ec4bf840f37566c1011c417",
     "messages": STORE_MESSAGES},
    {**_completion("chatcmpl-2", {"role": "assistant", "content": "Paris: 18C"}), "metadata": {},
     "messages": [{"role": "user", "content": "Weather in Paris?"},
                  {"role": "assistant", "content": None, "tool_calls": [CALL]},
                  {"role": "tool", "tool_call_id": "call_abc", "content": "18C"}]},
    _completion("chatcmpl-3", {"role": "assistant", "content": "no request kept"}),
], "first_id": "chatcmpl-AyPNinnUqUDYo9SAdA52NobMflmj2", "last_id": "chatcmpl-3", "has_more": False}


def test_stored_completions(tmp_path):
    path = tmp_path / "stored.json"
    path.write_text(json.dumps(STORED, indent=2))
    got, rejects = rows(path, origin="production")
    assert len(got) == 2 and len(rejects) == 1
    haiku, weather = got
    assert [(m["role"], m["content"]) for m in haiku["messages"]] == [
        ("user", "write a haiku about ai"), ("assistant", "Silent circuits hum")]
    meta = json.loads(haiku["meta"])
    assert meta["completion_id"] == "chatcmpl-AyPNinnUqUDYo9SAdA52NobMflmj2" and meta["metadata"] == {"topic": "poetry"}
    assert [m["role"] for m in weather["messages"]] == ["user", "assistant", "tool", "assistant"]
    assert weather["messages"][1]["tool_calls"] == [CALL] and weather["messages"][2]["tool_call_id"] == "call_abc"
    text = path.read_text().splitlines()
    assert [r["source"]["line"] for r in got] == [i + 1 for i, t in enumerate(text) if t == "    {"][:2]
    assert rejects[0]["line"] == [i + 1 for i, t in enumerate(text) if t == "    {"][2]
    assert "field 'messages': a stored completion holds only its reply" in rejects[0]["reason"]


# https://langfuse.com/faq/all/export-single-trace-or-session: the trace download (trace-<traceId>.json) holds
# the trace, its observations and its scores; fields as in the public API's TraceWithFullDetails / Observation
# (https://api.reference.langfuse.com)
LANGFUSE_TRACE = {
    "trace": {"id": "tr-1", "timestamp": "2025-03-01T10:00:00.000Z", "name": "support-chat", "userId": "user-7",
              "sessionId": "sess-3", "tags": ["prod"], "input": {"question": "refund?"}, "output": "done",
              "metadata": {}, "release": None, "version": None, "public": False},
    "observations": [
        {"id": "obs-span", "traceId": "tr-1", "type": "SPAN", "name": "retrieve", "startTime":
         "2025-03-01T10:00:00.100Z", "endTime": "2025-03-01T10:00:00.300Z", "parentObservationId": None,
         "input": {"query": "refund"}, "output": ["doc-1"], "level": "DEFAULT", "model": None},
        {"id": "obs-gen-1", "traceId": "tr-1", "type": "GENERATION", "name": "plan",
         "startTime": "2025-03-01T10:00:00.400Z", "endTime": "2025-03-01T10:00:01.000Z",
         "parentObservationId": "obs-span", "model": "gpt-4o", "modelParameters": {"temperature": 0},
         "input": {"messages": [{"role": "system", "content": "You are support."},
                                {"role": "user", "content": "Can I get a refund for order 42?"}],
                   "tools": [{"type": "function", "function": {"name": "lookup_order", "parameters": {}}}]},
         "output": {"role": "assistant", "content": None, "tool_calls": [
             {"id": "call_1", "type": "function", "function": {"name": "lookup_order", "arguments": "{\"id\": 42}"}}]},
         "usage": {"input": 30, "output": 12, "total": 42, "unit": "TOKENS"}, "level": "DEFAULT"},
        {"id": "obs-gen-2", "traceId": "tr-1", "type": "GENERATION", "name": "answer",
         "startTime": "2025-03-01T10:00:01.200Z", "endTime": "2025-03-01T10:00:02.000Z", "model": "gpt-4o",
         "input": [{"role": "user", "content": "Can I get a refund for order 42?"},
                   {"role": "assistant", "content": None, "tool_calls": [
                       {"id": "call_1", "type": "function",
                        "function": {"name": "lookup_order", "arguments": "{\"id\": 42}"}}]},
                   {"role": "tool", "tool_call_id": "call_1", "content": "{\"status\": \"shipped\"}"}],
         "output": "Yes: order 42 shipped, so you can return it within 30 days.", "level": "DEFAULT"},
    ],
    "scores": [{"id": "sc-1", "traceId": "tr-1", "name": "helpful", "value": 1}],
}


def test_langfuse_trace_download(tmp_path):
    path = tmp_path / "trace-tr-1.json"
    path.write_text(json.dumps(LANGFUSE_TRACE, indent=2))
    s = ingest([path], tmp_path / "o.parquet", origin="production")
    assert s.counts == {"in": 2, "kept": 2, "rejected": 0}
    assert "1 trace records are not chat turns and are not rows (Langfuse SPAN 1)" in " ".join(s.summary["warnings"])
    plan, answer = read_dataset(tmp_path / "o.parquet").to_pylist()
    assert [m["role"] for m in plan["messages"]] == ["system", "user", "assistant"]
    assert plan["messages"][-1]["tool_calls"][0]["function"] == {"name": "lookup_order", "arguments": "{\"id\": 42}"}
    assert json.loads(plan["tools"])[0]["function"]["name"] == "lookup_order"
    meta = json.loads(plan["meta"])
    assert meta["trace_id"] == "tr-1" and meta["observation_id"] == "obs-gen-1" and meta["model"] == "gpt-4o"
    assert meta["user_id"] == "user-7" and meta["session_id"] == "sess-3"
    assert meta["start_time"] == "2025-03-01T10:00:00.400Z" and meta["end_time"] == "2025-03-01T10:00:01.000Z"
    assert [m["role"] for m in answer["messages"]] == ["user", "assistant", "tool", "assistant"]
    assert answer["messages"][2]["tool_call_id"] == "call_1"
    text = path.read_text().splitlines()
    starts = [i + 1 for i, t in enumerate(text) if t == "    {"]  # the observations' opening braces
    assert [plan["source"]["line"], answer["source"]["line"]] == starts[1:3]  # the scores come after
    assert [plan["source"]["row"], answer["source"]["row"]] == [1, 2]


# the observations table's export as JSONL (https://langfuse.com/docs/api-and-data-platform/features/export-from-ui)
LANGFUSE_OBSERVATIONS = [
    {"id": "o1", "traceId": "t1", "type": "GENERATION", "name": "chat", "startTime": "2025-03-02T09:00:00Z",
     "endTime": "2025-03-02T09:00:01Z", "model": "gpt-4o-mini", "userId": "u1", "sessionId": "s1",
     "input": [{"role": "user", "content": "Translate 'cat' to French"}],
     "output": _completion("chatcmpl-x", {"role": "assistant", "content": "chat"}), "level": "DEFAULT"},
    {"id": "o2", "traceId": "t1", "type": "EVENT", "name": "log", "startTime": "2025-03-02T09:00:01Z",
     "input": None, "output": None, "level": "DEFAULT"},
    {"id": "o3", "traceId": "t2", "type": "GENERATION", "name": "chat", "startTime": "2025-03-02T09:01:00Z",
     "model": "gpt-4o-mini", "input": "Summarise: the sky is blue", "output": {"content": "Blue sky."},
     "level": "DEFAULT"},
    {"id": "o4", "traceId": "t3", "type": "GENERATION", "name": "chat", "startTime": "2025-03-02T09:02:00Z",
     "input": {"prompt": 3}, "output": None, "level": "DEFAULT"},
    {"id": "o5", "traceId": "t4", "type": "GENERATION", "name": "chat", "startTime": "2025-03-02T09:03:00Z",
     "input": [{"role": "user", "content": "hi"}], "output": None, "level": "ERROR",
     "statusMessage": "Rate limit reached"},
]


def test_langfuse_observations_export(tmp_path):
    path = jsonl(tmp_path / "observations.jsonl", LANGFUSE_OBSERVATIONS)
    got, rejects = rows(path, origin="production")
    assert [(m["role"], m["content"]) for m in got[0]["messages"]] == [
        ("user", "Translate 'cat' to French"), ("assistant", "chat")]
    assert json.loads(got[0]["meta"])["user_id"] == "u1"
    assert [(m["role"], m["content"]) for m in got[1]["messages"]] == [
        ("user", "Summarise: the sky is blue"), ("assistant", "Blue sky.")]
    assert [r["source"]["line"] for r in got] == [1, 3]
    assert [(r["line"], r["reason"]) for r in rejects] == [
        (4, "not valid langfuse: field 'input': expected chat messages (a list, or {messages: [...]}) or a text"),
        (5, "langfuse request failed: field 'level': level ERROR: Rate limit reached")]


# LangSmith runs as the API and SDK give them (https://docs.langchain.com/langsmith/run-data-format): LangChain
# messages serialized by langchain_core.load.dumpd in `inputs.messages` (a batch: a list of lists) and
# `outputs.generations`; an llm run traced by langsmith.wrappers.wrap_openai holds OpenAI's shapes
def _lc(kind: str, **kwargs) -> dict:
    return {"lc": 1, "type": "constructor", "id": ["langchain", "schema", "messages", kind],
            "kwargs": {"type": kind.removesuffix("Message").lower(), **kwargs}}


LANGSMITH_RUNS = [
    {"id": "run-chain", "name": "AgentExecutor", "run_type": "chain", "trace_id": "run-chain",
     "start_time": "2025-03-03T12:00:00", "end_time": "2025-03-03T12:00:03", "inputs": {"input": "weather?"},
     "outputs": {"output": "sunny"}, "error": None, "tags": [], "session_id": "proj-1",
     "child_runs": [
         {"id": "run-llm-1", "name": "ChatOpenAI", "run_type": "llm", "trace_id": "run-chain",
          "parent_run_id": "run-chain", "start_time": "2025-03-03T12:00:00.5", "end_time": "2025-03-03T12:00:01",
          "extra": {"invocation_params": {"model_name": "gpt-4o", "tools": [WEATHER_TOOL]},
                    "metadata": {"ls_model_name": "gpt-4o"}},
          "inputs": {"messages": [[_lc("SystemMessage", content="Use tools."),
                                   _lc("HumanMessage", content="Weather in Paris?")]]},
          "outputs": {"generations": [[{"text": "", "type": "ChatGeneration", "generation_info": {},
                                        "message": _lc("AIMessage", content="", tool_calls=[
                                            {"name": "get_weather", "args": {"city": "Paris"}, "id": "call_9",
                                             "type": "tool_call"}])}]],
                      "llm_output": {"model_name": "gpt-4o"}},
          "error": None, "tags": ["agent"], "session_id": "proj-1", "child_runs": []},
         {"id": "run-tool", "name": "get_weather", "run_type": "tool", "inputs": {"city": "Paris"},
          "outputs": {"output": "sunny"}, "error": None, "child_runs": []},
     ]},
    {"id": "run-llm-2", "name": "ChatOpenAI", "run_type": "llm", "trace_id": "run-llm-2",
     "start_time": "2025-03-03T12:05:00", "end_time": "2025-03-03T12:05:01",
     "inputs": {"messages": [{"role": "user", "content": "Name a colour"}], "model": "gpt-4o-mini"},
     "outputs": _completion("chatcmpl-c", {"role": "assistant", "content": "Teal"}), "error": None,
     "extra": {"invocation_params": {"model": "gpt-4o-mini"}}},
    {"id": "run-llm-3", "name": "ChatOpenAI", "run_type": "llm", "trace_id": "run-llm-3",
     "inputs": {"messages": [[{"type": "human", "data": {"content": "hello", "type": "human"}}]]},
     "outputs": None, "error": "RateLimitError('Rate limit reached for gpt-4o')\nTraceback ..."},
]


def test_langsmith_runs(tmp_path):
    path = tmp_path / "runs.json"
    path.write_text(json.dumps(LANGSMITH_RUNS, indent=2))
    s = ingest([path], tmp_path / "o.parquet", origin="production", max_reject_rate=1)
    assert s.counts == {"in": 3, "kept": 2, "rejected": 1}
    assert "LangSmith chain run 1, LangSmith tool run 1" in " ".join(s.summary["warnings"])
    agent, colour = read_dataset(tmp_path / "o.parquet").to_pylist()
    assert [(m["role"], m["content"]) for m in agent["messages"]] == [
        ("system", "Use tools."), ("user", "Weather in Paris?"), ("assistant", None)]
    assert agent["messages"][-1]["tool_calls"] == [
        {"id": "call_9", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]
    assert json.loads(agent["tools"]) == [WEATHER_TOOL]
    meta = json.loads(agent["meta"])
    assert meta["run_id"] == "run-llm-1" and meta["trace_id"] == "run-chain" and meta["model"] == "gpt-4o"
    assert [(m["role"], m["content"]) for m in colour["messages"]] == [("user", "Name a colour"), ("assistant", "Teal")]
    rejected = [json.loads(line) for line in Path(s.outputs["rejects"]).read_text().splitlines()]
    text = path.read_text().splitlines()
    assert rejected[0]["line"] == [i + 1 for i, t in enumerate(text) if t == "  {"][2]
    assert rejected[0]["reason"] == ("langsmith request failed: field 'error': RateLimitError('Rate limit reached "
                                     "for gpt-4o')")


def test_traces_take_the_record_path(tmp_path):
    """The msgspec fast path knows none of these formats: their lines go through the record converter."""
    from curate.ingest import blocks, fast

    assert not set(fast.SHAPES) & {"openai-batch", "openai-completion", "langfuse", "langsmith"}
    path = jsonl(tmp_path / "observations.jsonl", LANGFUSE_OBSERVATIONS)
    fast_rows, fast_rejects = rows(path)
    blocks.FAST = False
    try:
        slow_rows, slow_rejects = rows(path)
    finally:
        blocks.FAST = True
    assert fast_rows == slow_rows and fast_rejects == slow_rejects
    mixed, _ = rows(path, fmt="mixed")
    assert mixed == fast_rows


def test_export_round_trip(tmp_path):
    """Rows from traces export to OpenAI JSONL and read back the same."""
    path = tmp_path / "trace.json"
    path.write_text(json.dumps(LANGFUSE_TRACE, indent=2))
    ingest([path], tmp_path / "a.parquet", origin="production")
    export(tmp_path / "a.parquet", tmp_path / "a.jsonl", to="openai")
    again, _ = rows(tmp_path / "a.jsonl")
    first = read_dataset(tmp_path / "a.parquet").to_pylist()
    assert [(r["id"], r["messages"], r["tools"]) for r in again] == [(r["id"], r["messages"], r["tools"]) for r in first]


def test_report_with_traces_as_production(tmp_path):
    train = jsonl(tmp_path / "train.jsonl", [
        {"messages": [{"role": "user", "content": f"Question {i} about refunds and orders"},
                      {"role": "assistant", "content": f"Answer {i}"}]} for i in range(12)])
    src = jsonl(tmp_path / "batch_input.jsonl", BATCH_INPUT)
    out = jsonl(tmp_path / "batch_output.jsonl", BATCH_OUTPUT)
    trace = tmp_path / "trace-tr-1.json"
    trace.write_text(json.dumps(LANGFUSE_TRACE, indent=2))
    runner = CliRunner()
    res = runner.invoke(cli, ["ingest", str(src), str(out), str(trace), "-o", str(tmp_path / "prod.parquet"),
                              "--origin", "production", "--max-reject-rate", "1"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(cli, ["report", str(train), "--production", str(tmp_path / "prod.parquet"),
                              "--embedder", "tfidf", "-k", "2", "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)  # the report document
    assert doc["metrics"]["production_count"] == 5
    obs = jsonl(tmp_path / "observations.jsonl", LANGFUSE_OBSERVATIONS[:3])
    res = runner.invoke(cli, ["report", str(train), "--production", str(obs), "--embedder", "tfidf", "-k", "1",
                              "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["metrics"]["production_count"] == 2
