"""Tool-call dialects on ingest and export: OpenAI tools/tool_calls, ShareGPT function_call/observation (as
LLaMA-Factory writes them) and Hermes-style tags in the text, each normalised to the canonical fields and back."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from curate.ingest import export, ingest
from curate.validate import validate

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city now",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
HERMES = {"messages": [
    {"role": "system", "content": "You are a function calling AI model.\n\n<tools>\n" + json.dumps([WEATHER]) + "\n</tools>"},
    {"role": "user", "content": "Weather in Paris and Oslo?"},
    {"role": "assistant", "content": "Let me look.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": "
                                     "\"Paris\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": "
                                     "{\"city\": \"Oslo\"}}\n</tool_call>"},
    {"role": "tool", "content": "<tool_response>\n{\"temp\": 18}\n</tool_response>"},
    {"role": "tool", "content": "<tool_response>\n{\"temp\": 4}\n</tool_response>"},
    {"role": "assistant", "content": "Paris 18, Oslo 4 degrees."},
]}
OPENAI = {"messages": [
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": "{\"temp\": 18}"},
    {"role": "assistant", "content": "18 degrees."},
], "tools": [WEATHER]}
# LLaMA-Factory's ShareGPT tool dialect (data/glaive_toolcall_en_demo.json): function_call / observation turns
SHAREGPT = {"conversations": [
    {"from": "human", "value": "Weather in Paris?"},
    {"from": "function_call", "value": "{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}"},
    {"from": "observation", "value": "{\"temp\": 18}"},
    {"from": "gpt", "value": "18 degrees."},
], "tools": json.dumps([WEATHER["function"]])}


def _rows(path: Path) -> list[dict]:
    return [{k: r[k] for k in ("messages", "tools")} for r in pq.read_table(path).to_pylist()]


def _ingest(tmp: Path, name: str, record: dict) -> Path:
    src = tmp / f"{name}.jsonl"
    src.write_text(json.dumps(record) + "\n")
    out = tmp / f"{name}.parquet"
    ingest([src], out)
    return out


def test_hermes_tags_become_tool_calls(tmp_path):
    row = _rows(_ingest(tmp_path, "hermes", HERMES))[0]
    msgs = row["messages"]
    assert json.loads(row["tools"]) == [WEATHER]
    assert msgs[0]["content"] == "You are a function calling AI model."  # the <tools> block moved to `tools`
    assert msgs[2]["content"] == "Let me look."
    assert [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in msgs[2]["tool_calls"]] == [
        ("get_weather", {"city": "Paris"}), ("get_weather", {"city": "Oslo"})]
    assert [m["content"] for m in msgs[3:5]] == ["{\"temp\": 18}", "{\"temp\": 4}"]
    # the normalised row is a valid tool conversation: no unknown tool, orphan result or bad arguments
    res = validate(tmp_path / "hermes.parquet", tokens=False)
    assert res.counts["rejected"] == 0, res.summary


@pytest.mark.parametrize("to, record", [("hermes", HERMES), ("openai", OPENAI), ("sharegpt", SHAREGPT)])
def test_round_trip_through_each_dialect(tmp_path, to, record):
    first = _ingest(tmp_path, "in", record)
    out = tmp_path / f"out.{to}.{'json' if to == 'sharegpt' else 'jsonl'}"
    export(first, out, to=to)
    again = tmp_path / "again.parquet"
    ingest([out], again)
    assert _rows(again) == _rows(first)


def test_hermes_export_writes_the_tags(tmp_path):
    first = _ingest(tmp_path, "openai", OPENAI)
    out = tmp_path / "h.jsonl"
    export(first, out, to="hermes")
    msgs = json.loads(out.read_text())["messages"]
    assert msgs[0]["role"] == "system" and msgs[0]["content"].startswith("<tools>\n")
    assert msgs[2]["content"] == "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>"
    assert msgs[3] == {"role": "tool", "content": "<tool_response>\n{\"temp\": 18}\n</tool_response>"}


def test_a_broken_tool_call_block_is_one_reject_naming_the_field(tmp_path):
    bad = json.loads(json.dumps(HERMES))
    bad["messages"][2]["content"] = "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": }\n</tool_call>"
    src = tmp_path / "bad.jsonl"
    src.write_text(json.dumps(HERMES) + "\n" + json.dumps(bad) + "\n")
    res = ingest([src], tmp_path / "bad.parquet", max_reject_rate=1)
    assert (res.counts["kept"], res.counts["rejected"]) == (1, 1)
    reject = json.loads((tmp_path / "bad.rejects.jsonl").read_text().splitlines()[0])
    assert reject["line"] == 2 and "messages[2].content" in reject["reason"] and "<tool_call> block 1" in reject["reason"]


def test_validate_reads_hermes_lines_as_ingest_does(tmp_path):
    """validate's fast path for plain chat lines leaves Hermes-tagged lines to the record path, which normalises."""
    src = tmp_path / "mixed.jsonl"
    plain = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]}
    src.write_text("".join(json.dumps(r) + "\n" for r in (plain, HERMES, plain)))
    res = validate(src, tmp_path / "v.parquet", tokens=False)
    assert res.counts == {"in": 3, "kept": 3, "rejected": 0}
    rows = pq.read_table(tmp_path / "v.parquet").to_pylist()
    assert rows[1]["messages"][2]["tool_calls"] and json.loads(rows[1]["tools"]) == [WEATHER]
    ingest([src], tmp_path / "i.parquet")
    assert [r["messages"] for r in rows] == [r["messages"] for r in pq.read_table(tmp_path / "i.parquet").to_pylist()]
