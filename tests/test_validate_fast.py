"""validate's fast path for OpenAI chat JSONL (curate.validate.fastpath) gives exactly what the record path gives.

The reference is the same validate() with the fast path turned off (every line read, converted and checked
against the schema by jsonschema, record by record). Equal means the whole outcome: counts, the summary with
its codes, examples and profile, every valid row and every quarantine row, on real files exported to OpenAI
JSONL and on crafted lines (missing content, null name, odd roles, tool calls, meta keys, bad JSON or UTF-8,
blank lines, a BOM, encoding damage), also cut into small blocks so fast and record-path lines share a block.
"""

from __future__ import annotations

import copy
import gc
import json
import random
import typing
from pathlib import Path

import msgspec
import pyarrow.parquet as pq
import pytest
from jsonschema import Draft202012Validator

from curate.ingest import blocks
from curate.recipe import load_schema
from curate.validate import fastpath, validate


def outcome(src: Path, work: Path, **settings) -> tuple:
    work.mkdir(parents=True, exist_ok=True)
    out = validate(src, work / "v.parquet", quarantine=work / "q.parquet", workers=1, **settings)
    summary = {k: v for k, v in out.to_dict().items() if k not in ("config", "outputs")}
    valid, quarantine = pq.read_table(work / "v.parquet"), pq.read_table(work / "q.parquet")
    return json.dumps(summary, sort_keys=True, default=str), valid, quarantine


def assert_fast_equals_record_path(src: Path, tmp: Path, monkeypatch, **settings) -> int:
    """The outcomes with and without the fast path are equal; the number of rows the fast path took."""
    taken = []
    check = fastpath._check_fast

    def counted(checker, file, kept, *rest):
        taken.append(len(kept))
        return check(checker, file, kept, *rest)

    with monkeypatch.context() as m:
        m.setattr(fastpath, "_check_fast", counted)
        fast = outcome(src, tmp / "fast", **settings)
    with monkeypatch.context() as m:
        m.setattr(fastpath, "applies", lambda checker, job: False)
        slow = outcome(src, tmp / "slow", **settings)
    assert fast[0] == slow[0]
    for got, want in zip(fast[1:], slow[1:]):
        assert got.schema.equals(want.schema)
        assert got.to_pylist() == want.to_pylist()
    return sum(taken)


def message(role, content=..., **extra) -> dict:
    m = {"role": role}
    if content is not ...:
        m["content"] = content
    return {**m, **extra}


def chat(*msgs, **top) -> dict:
    return {"messages": list(msgs), **top}


CALL = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
TOOLS = [{"type": "function", "function": {"name": "f"}}]
CASES = [
    chat(message("system", "be brief"), message("user", "q"), message("assistant", "a")),
    chat(message("user", "q"), message("assistant", "a")),
    chat(message("user"), message("assistant", "a")),  # content missing: message_missing_key
    chat(message("user", None), message("assistant", "a")),  # null content: empty
    chat(message("user", "q", name=None), message("assistant", "a")),  # null name breaks the schema
    chat(message("user", "q", name="ann"), message("assistant", "a", name="bot")),
    chat(message("bob", "q"), message("assistant", "a")),
    chat(message("", "q"), message("assistant", "a")),
    chat(message("user", 5), message("assistant", "a")),
    chat(message("user", "q"), message("function", "result"), message("assistant", "a")),
    chat(message("user", "q"), message("tool", "result", tool_call_id="c9"), message("assistant", "a")),
    chat(message("user", "q"), message("tool", "result"), message("assistant", "a")),
    chat(message("user", "q"), message("assistant", None, tool_calls=[CALL]), message("tool", "r", tool_call_id="c1"),
         message("assistant", "done"), tools=TOOLS),
    chat(message("user", "q"), message("assistant", None, tool_calls=[{**CALL, "function": {"name": "g", "arguments": "[1]"}}])),
    chat(message("user", "q"), message("assistant", "a"), tools=TOOLS),
    chat(message("user", "q"), message("assistant", "a"), parallel_tool_calls=True),
    chat(message("user", "q"), message("assistant", "a"), parallel_tool_calls="yes"),
    chat(message("user", "q"), message("assistant", "a"), id="same-id"),
    chat(message("user", "other"), message("assistant", "a"), id="same-id"),
    chat(message("user", "q2"), message("assistant", "a"), id=7),
    chat(message("user", "q3"), message("assistant", "a"), id={"nested": 1}),
    chat(message("user", "q4"), message("assistant", "a"), origin="synth", extra=[1, {"b": None}]),
    chat(message("user", "q5"), message("assistant", "a"), origin=3),
    chat(message("user", "  "), message("assistant", "\t")),
    chat(message("user", "a"), message("user", "b"), message("assistant", "c")),
    chat(message("user", "a"), message("assistant", "b"), message("user", "c")),
    chat(message("system", "s"), message("user", "a")),
    chat(message("assistant", "only")),
    chat(message("user", "caf\u00c3\u00a9"), message("assistant", "a")),
    chat(message("user", "lost \ufffd"), message("assistant", "a\ufffd")),
    chat(message("user", "\u00e9t\u00e9 \U0001f600"), message("assistant", "\u3000{\"a\": 1}")),
    chat(message("user", "q"), message("assistant", '{"a": 1}')),
    chat(message("user", "q"), message("assistant", '```json\n{"a": 1}\n```')),
    chat(message("user", "q"), message("assistant", "  [1, 2]")),
    chat(message("user", "q"), message("assistant", "{not json")),
    chat(message("user", "q"), message("assistant", "")),
    chat(message("user", [{"type": "text", "text": "parts"}]), message("assistant", "a")),
    chat(message("user", "q", weight=1), message("assistant", "a", weight=0)),
    chat(message("user", "q", unknown=1), message("assistant", "a")),
    chat(),
    {"messages": "not a list"},
    {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}]},
    {"id": "x", "messages": [message("user", "q"), message("assistant", "a")], "source": {}, "origin": "seed", "meta": None},
    chat(message("user", "q"), message("assistant", "a"), chosen="c", rejected="r"),
    {"prompt": "p", "completion": "c"},
    [1, 2],
]
RAW_LINES = [
    "",
    "   ",
    '{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "v": NaN}',
    '{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]',  # cut JSON
    ('{"messages": [{"role": "user", "content": "x"}], "messages": [{"role": "user", "content": "q"}, '
     '{"role": "assistant", "content": "a"}]}'),  # a repeated key: the last one counts
    '{"messages": [{"role": "user", "content": "q", "content": null}, {"role": "assistant", "content": "a"}]}',
    "[" * 3000 + "]" * 3000,
    '{"messages": [{"role": "user", "content": "q\\u0000"}, {"role": "assistant", "content": "a"}], "n": 1e400}',
]


def crafted(path: Path, seed: int, n: int = 1500, bom: bool = False, last_newline: bool = True) -> Path:
    """Mostly good chats, each case of CASES and RAW_LINES scattered among them, some lines of invalid UTF-8."""
    rng = random.Random(seed)
    lines: list[bytes] = []
    for i in range(n):
        rec = CASES[rng.randrange(len(CASES))] if rng.random() < 0.5 else chat(
            message("system", f"prompt {i % 3}"), message("user", f"question {i % 400}"), message("assistant", f"a {i}"))
        lines.append(json.dumps(rec, ensure_ascii=rng.random() < 0.5).encode())
        x = rng.random()
        if x < 0.05:
            lines.append(RAW_LINES[rng.randrange(len(RAW_LINES))].encode())
        elif x < 0.06:
            lines.append(b'{"messages": [{"role": "user", "content": "\xff"}, {"role": "assistant", "content": "a"}]}')
    data = b"\n".join(lines) + (b"\n" if last_newline else b"")
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + data)
    return path


def test_the_structs_take_no_record_the_schema_rejects() -> None:
    schema = load_schema("openai-chat")
    checker = Draft202012Validator(schema)
    role = schema["$defs"]["message"]["properties"]["role"]["enum"]
    assert list(typing.get_args(typing.get_type_hints(fastpath._Message)["role"])) == role
    taken = 0
    for rec in CASES:
        line = json.dumps(rec).encode()
        try:
            fastpath._strict(line, False, None)
        except (fastpath._Slow, msgspec.DecodeError):  # the record path takes it
            refused = True
        else:
            refused = False
        if not refused:
            taken += 1
            assert not list(checker.iter_errors(rec)), rec
    assert taken >= 15


@pytest.mark.parametrize("line", [
    chat(message("user"), message("assistant", "a")),
    chat(message("user", "q", name=None), message("assistant", "a")),
    chat(message("bob", "q"), message("assistant", "a")),
    chat(message("user", "q"), message("assistant", None, tool_calls=[CALL])),
    chat(message("user", "q"), message("assistant", "a"), tools=TOOLS),
    chat(message("user", "q"), message("assistant", "a"), parallel_tool_calls=True),
    chat(message("user", [{"type": "text", "text": "parts"}]), message("assistant", "a")),
])
def test_lines_the_structs_refuse_take_the_record_path(line: dict) -> None:
    with pytest.raises((fastpath._Slow, msgspec.DecodeError)):
        fastpath._strict(json.dumps(line).encode(), False, None)


@pytest.mark.parametrize("seed, bom, last_newline", [(0, False, True), (1, True, False), (2, False, False)])
def test_crafted_lines_give_the_record_paths_outcome(tmp_path: Path, monkeypatch, seed: int, bom: bool,
                                                     last_newline: bool) -> None:
    src = crafted(tmp_path / "crafted.jsonl", seed, bom=bom, last_newline=last_newline)
    assert assert_fast_equals_record_path(src, tmp_path, monkeypatch, tokens=False) > 500


def test_small_blocks_mix_fast_and_record_path_lines(tmp_path: Path, monkeypatch) -> None:
    src = crafted(tmp_path / "crafted.jsonl", 3)
    monkeypatch.setattr(blocks, "BLOCK_BYTES", 2048)
    assert assert_fast_equals_record_path(src, tmp_path, monkeypatch, tokens=False) > 500


@pytest.mark.parametrize("settings", [
    {"allow_consecutive_user": True},
    {"output_regex": "[a-z].*"},
    {"schema": "openai-chat", "origin": "mine"},
])
def test_settings_give_the_record_paths_outcome(tmp_path: Path, monkeypatch, settings: dict) -> None:
    src = crafted(tmp_path / "crafted.jsonl", 4)
    assert assert_fast_equals_record_path(src, tmp_path, monkeypatch, tokens=False, **settings) > 500


@pytest.mark.parametrize("name", ["openai__openai-cookbook__toy_chat_fine_tuning.jsonl",
                                  "lm-sys__FastChat__dummy_conversation.json", "hiyouga__LLaMA-Factory__lima.json",
                                  "hiyouga__LLaMA-Factory__alpaca_en_demo.json", "hiyouga__LLaMA-Factory__identity.json"])
def test_real_files_as_openai_jsonl_give_the_record_paths_outcome(shared_data: Path, tmp_path: Path, monkeypatch,
                                                                   name: str) -> None:
    from curate.ingest import export, ingest

    src = shared_data / name
    if src.suffix != ".jsonl":  # a JSON array: made OpenAI JSONL, the format the fast path reads
        ingest([src], tmp_path / "canonical.parquet")
        export(tmp_path / "canonical.parquet", tmp_path / "chat.jsonl", to="openai")
        src = tmp_path / "chat.jsonl"
    assert assert_fast_equals_record_path(src, tmp_path, monkeypatch, tokens=False) > 0


def test_a_users_own_schema_takes_the_record_path(tmp_path: Path, monkeypatch) -> None:
    """The structs prove the shipped schema only: a changed copy of it is checked by jsonschema, record by record."""
    schema = copy.deepcopy(load_schema("openai-chat"))  # load_schema's documents are shared
    schema["$defs"]["message"]["properties"]["content"] = {"type": "string", "minLength": 3}
    (tmp_path / "mine.json").write_text(json.dumps(schema))
    src = crafted(tmp_path / "crafted.jsonl", 5)
    assert assert_fast_equals_record_path(src, tmp_path, monkeypatch, tokens=False,
                                          schema=str(tmp_path / "mine.json")) == 0


def test_validate_leaves_the_garbage_collectors_thresholds_as_they_were(tmp_path: Path) -> None:
    before = gc.get_threshold()
    validate(crafted(tmp_path / "crafted.jsonl", 6, n=50), tokens=False, workers=1)
    assert gc.get_threshold() == before
