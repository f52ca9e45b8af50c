"""Hand-built bad records, one for every code in the taxonomy: the code fires, and errors quarantine the row."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from curate.embedded import load_tokenizer
from curate.outcome import StageOutcome
from curate.validate import CODES, COOKBOOK_CODES, validate

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "validate"


class Cut(str):
    """A last line written without its newline: the file stops inside it."""


def msgs(*pairs: tuple[str, str], **extra) -> dict:
    return {"messages": [{"role": r, "content": c} for r, c in pairs], **extra}


SYS = ("system", "Be brief.")
GOOD = msgs(SYS, ("user", "Hi"), ("assistant", "Hello."))
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]


def call(name: str, args: str, cid: str = "c1") -> dict:
    return {"role": "assistant", "content": None,
            "tool_calls": [{"id": cid, "type": "function", "function": {"name": name, "arguments": args}}]}


def tool_chat(name: str = "get_weather", args: str = '{"city": "Oslo"}', answer_id: str = "c1") -> dict:
    return {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Weather in Oslo?"},
                         call(name, args),
                         {"role": "tool", "tool_call_id": answer_id, "content": "12C"},
                         {"role": "assistant", "content": "12C in Oslo."}], "tools": TOOLS}


def with_params(chat: dict, parameters: dict) -> dict:
    return {**chat, "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": parameters}}]}


def pair(chosen: str, rejected: str, prompt: str = "Name a prime number.") -> dict:
    return {"conversations": [{"from": "system", "value": "Be brief."}, {"from": "human", "value": prompt}],
            "chosen": {"from": "gpt", "value": chosen}, "rejected": {"from": "gpt", "value": rejected}}


PAIR = pair("7 is a prime number.", "Eight.")
LEAKY = "Summarise the causes of the French Revolution in three sentences."


def sharegpt(id_: str, text: str) -> dict:
    return {"id": id_, "system": "Be brief.", "conversations": [{"from": "human", "value": text}, {"from": "gpt", "value": "ok"}]}


# code -> (the lines of a raw file: dicts are JSON-encoded, bytes/str written as they are; validate() kwargs)
CASES: dict[str, tuple[list, dict]] = {
    "data_type": ([GOOD, [1, 2]], {}),
    "missing_messages_list": ([GOOD, {"messages": "Hi"}], {}),
    "message_missing_key": ([GOOD, {"messages": [{"role": "user"}, {"role": "assistant", "content": "x"}]}], {}),
    "message_unrecognized_key": ([GOOD, {"messages": [{"role": "user", "content": "Hi", "mood": "ok"},
                                                      {"role": "assistant", "content": "x"}]}], {}),
    "unrecognized_role": ([GOOD, msgs(("developer", "Be brief."), ("user", "Hi"), ("assistant", "x"))], {}),
    "missing_content": ([GOOD, {"messages": [{"role": "user", "content": 5}, {"role": "assistant", "content": "x"}]}], {}),
    "example_missing_assistant_message": ([GOOD, msgs(SYS, ("user", "Hi"))], {}),
    "no_system_message": ([GOOD, msgs(("user", "Hi"), ("assistant", "x"))], {}),
    "no_user_message": ([GOOD, msgs(SYS, ("assistant", "x"))], {}),
    "json_parse_error": ([GOOD, '{"messages": [{"role": "user"'], {}),
    "invalid_utf8": ([GOOD, b'{"messages": [{"role": "user", "content": "caf\xe9"}]}'], {}),
    "truncated_file": ([GOOD, Cut('{"messages": [{"role": "user", "content": "Hi"}, {"role": "assis')], {}),
    "unknown_format": ([{"text": "a"}], {}),  # in an openai file the schema names it: missing_messages_list
    "format_mismatch": ([GOOD, GOOD, {"instruction": "Hi", "output": "x"}], {}),
    "schema_violation": ([GOOD, {**GOOD, "tools": "get_weather"}], {}),
    "unknown_tool": ([GOOD, tool_chat(name="get_time")], {}),
    "orphan_tool_result": ([GOOD, tool_chat(answer_id="c9")], {}),
    "invalid_tool_arguments": ([GOOD, tool_chat(args='{"city": Oslo}')], {}),
    "tool_arguments_schema_violation": ([GOOD, with_params(tool_chat(), {"properties": {"city": {"type": "integer"}}})],
                                        {}),
    "invalid_tool_schema": ([GOOD, with_params(tool_chat(), {"type": "strin"})], {}),
    "preference_identical": ([PAIR, pair("Seven.", "Seven.")], {}),
    "preference_near_identical": ([PAIR, pair("Seven is prime.", "seven  is prime.")], {}),
    "preference_empty_side": ([PAIR, pair("Seven.", " ")], {}),
    "preference_prompt_leak": ([PAIR, pair("Debt and bread.", f"{LEAKY} Debt.", prompt=LEAKY)], {}),
    "last_turn_not_assistant": ([GOOD, msgs(SYS, ("user", "Hi"), ("assistant", "x"), ("user", "and?"))], {}),
    "consecutive_user_turns": ([GOOD, msgs(SYS, ("user", "Hi"), ("user", "there"), ("assistant", "x"))], {}),
    "empty_content": ([GOOD, msgs(SYS, ("user", "Hi"), ("assistant", "  \n"))], {}),
    "duplicate_id": ([sharegpt("a1", "Hi"), sharegpt("a1", "Bye")], {}),
    "duplicate_record": ([GOOD, GOOD], {}),
    "mojibake": ([GOOD, msgs(SYS, ("user", "Say it in French"), ("assistant", "CafÃ© au lait, fiancÃ©."))], {}),
    "replacement_character": ([GOOD, msgs(SYS, ("user", "Hi"), ("assistant", "caf\ufffd"))], {}),
    "token_limit_exceeded": ([GOOD, msgs(SYS, ("user", "Hi"), ("assistant", "word " * 40))], {"max_tokens": 30}),
    "template_error": ([GOOD], {"tokenizer": "raising"}),
    "assistant_truncated": ([GOOD, msgs(SYS, ("user", "word " * 40), ("assistant", "x"))], {"max_tokens": 30}),
    # the trained-token audit (more cases, and templates that cause them, in tests/test_validate_mask.py)
    "cut_before_eos": ([GOOD, msgs(SYS, ("user", "Hi"), ("assistant", "word " * 40))], {"max_tokens": 30}),
    "eos_not_trained": ([GOOD], {"tokenizer": "template",
                                 "template": "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"}),
    "template_drift": ([GOOD], {"tokenizer": "template", "template": (
        "{% for m in messages %}{% if m['role'] != 'system' %}{{ m['role'] }}: {{ m['content'] }}{{ eos_token }}\n"
        "{% endif %}{% endfor %}")}),
    "output_not_json": ([GOOD], {"output_schema": EXAMPLES / "task.schema.json"}),
    "output_schema_violation": ([msgs(SYS, ("user", "Hi"), ("assistant", '{"label": "happy", "confidence": 1}'))],
                                {"output_schema": EXAMPLES / "task.schema.json"}),
    "output_regex_mismatch": ([GOOD], {"output_regex": r"[A-Z]+"}),
}


# whole-file damage (a corrupt Parquet, UTF-16 without a BOM) has no line; tests/test_damaged_inputs.py covers it
FILE_LEVEL = {"unreadable_file"}


def codes(out: StageOutcome) -> dict[str, int]:
    """Records per code, errors and warnings together."""
    return {**out.summary["errors"], **out.summary["warnings"]}


def examples(out: StageOutcome, code: str) -> list[dict]:
    return next(c["examples"] for c in out.summary["codes"] if c["code"] == code)


def write_raw(path: Path, lines: list) -> Path:
    with open(path, "wb") as f:
        for line in lines:
            data = line if isinstance(line, bytes) else (line if isinstance(line, str) else json.dumps(line)).encode()
            f.write(data + (b"" if isinstance(line, Cut) else b"\n"))
    return path


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer("embedded")


def test_every_code_has_a_case_and_the_cookbooks_names_are_kept() -> None:
    assert set(CASES) | FILE_LEVEL == set(CODES)
    assert COOKBOOK_CODES == ("data_type", "missing_messages_list", "message_missing_key", "message_unrecognized_key",
                              "unrecognized_role", "missing_content", "example_missing_assistant_message",
                              "no_system_message", "no_user_message")


@pytest.mark.parametrize("code", sorted(CASES))
def test_bad_record_gets_its_code(code: str, tmp_path: Path, tok) -> None:
    lines, kwargs = CASES[code]
    kwargs = dict(kwargs)
    if kwargs.get("tokenizer") == "raising":
        broken = copy.copy(tok)
        broken.chat_template = "{{ raise_exception('roles must alternate user/assistant') }}"
        del kwargs["tokenizer"]
        kwargs["tokenizer_object"] = broken
    elif kwargs.get("tokenizer") == "template":  # the embedded tokenizer with another chat template
        other = copy.copy(tok)
        other.chat_template = kwargs.pop("template")
        del kwargs["tokenizer"]
        kwargs["tokenizer_object"] = other
    elif "max_tokens" in kwargs:
        kwargs["tokenizer_object"] = tok
    else:
        kwargs["tokens"] = False
    r = validate(write_raw(tmp_path / "in.jsonl", lines), **kwargs)
    assert code in codes(r), codes(r)
    bad_line = examples(r, code)[0]["line"]
    assert bad_line == len(lines)  # each case plants its bad record last
    assert r.counts["in"] == len(lines) and r.balanced
    assert (r.kept.num_rows, r.rejected.num_rows) == (r.counts["kept"], r.counts["rejected"])
    quarantined_lines = [q["source"]["line"] for q in r.rejected.to_pylist() if code in q["validate_codes"]]
    if CODES[code].severity == "error":
        assert quarantined_lines == [bad_line]
    else:
        assert quarantined_lines == []
        kept = [v for v in r.kept.to_pylist() if code in v["validate_codes"]]
        assert [v["source"]["line"] for v in kept] == [bad_line]


def test_good_records_have_no_findings(tmp_path: Path, tok) -> None:
    r = validate(write_raw(tmp_path / "in.jsonl", [GOOD, tool_chat()]), tokenizer_object=tok, max_tokens=200)
    assert codes(r) == {}
    assert r.counts == {"in": 2, "kept": 2, "rejected": 0}
    assert r.kept.column("validate_codes").to_pylist() == [[], []]


def test_consecutive_user_turns_can_be_allowed(tmp_path: Path) -> None:
    lines, _ = CASES["consecutive_user_turns"]
    r = validate(write_raw(tmp_path / "in.jsonl", lines), allow_consecutive_user=True, tokens=False)
    assert codes(r) == {}


def test_parse_error_names_the_line_and_reading_resumes(tmp_path: Path) -> None:
    r = validate(write_raw(tmp_path / "in.jsonl", [GOOD, "{oops", msgs(SYS, ("user", "a"), ("assistant", "b"))]),
                 tokens=False)
    assert codes(r) == {"json_parse_error": 1}
    assert examples(r, "json_parse_error")[0]["line"] == 2
    assert r.rejected.column("validate_raw").to_pylist() == ["{oops"]
    assert r.counts == {"in": 3, "kept": 2, "rejected": 1}


def test_a_users_own_schema_works_like_a_shipped_one(tmp_path: Path) -> None:
    schema = json.loads((Path(__file__).resolve().parents[1] / "schemas" / "openai-chat.schema.json").read_text())
    schema["properties"]["messages"]["maxItems"] = 2  # this user's trainer takes single-turn chats only
    path = tmp_path / "mine.schema.json"
    path.write_text(json.dumps(schema))
    r = validate(write_raw(tmp_path / "in.jsonl", [GOOD, msgs(("user", "Hi"), ("assistant", "x"))]), schema=path,
                 tokens=False)
    assert r.summary["schema"] == str(path)
    assert codes(r) == {"missing_messages_list": 1, "no_system_message": 1}
    assert r.rejected.column("source").to_pylist()[0]["line"] == 1


@pytest.mark.parametrize("name", ["openai-chat", "sharegpt", "alpaca", "prompt-completion", "preference"])
def test_shipped_schemas_are_draft_2020_12(name: str) -> None:
    from jsonschema import Draft202012Validator

    schema = json.loads((Path(__file__).resolve().parents[1] / "schemas" / f"{name}.schema.json").read_text())
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(schema)


def test_parse_error_in_a_json_array_names_the_elements_line(tmp_path: Path) -> None:
    good = json.dumps(sharegpt("a", "Hi"))
    path = tmp_path / "in.json"
    path.write_text(f"[\n  {good},\n  {{\"id\": \"b\", \"conversations\": [}},\n  {json.dumps(sharegpt('c', 'Yo'))}\n]\n")
    r = validate(path, tokens=False)
    assert codes(r) == {"json_parse_error": 1}
    assert examples(r, "json_parse_error")[0]["line"] == 3
    assert r.counts == {"in": 3, "kept": 2, "rejected": 1}


def test_a_shipped_schemas_name_fixes_the_format(shared_data: Path) -> None:
    """ShareGPT records checked as openai-chat break that schema, and are reported for that only."""
    r = validate(shared_data / "lm-sys__FastChat__dummy_conversation.json", schema="openai-chat", tokens=False)
    assert (r.summary["format"], r.summary["schema"]) == ("openai", "openai-chat")
    assert codes(r) == {"missing_messages_list": 500}
    assert examples(r, "missing_messages_list")[0]["message"] == "(record): missing key 'messages'"
    assert r.counts == {"in": 500, "kept": 0, "rejected": 500}


def test_format_problems_come_before_the_schemas_findings(tmp_path: Path) -> None:
    """A record of another format gets format_mismatch and its schema findings; one of no format only the latter."""
    alpaca = {"instruction": "Hi", "output": "x"}
    r = validate(write_raw(tmp_path / "in.jsonl", [GOOD, GOOD, alpaca, {"text": "a"}]), tokens=False)
    rows = r.rejected.to_pylist()
    assert [q["validate_errors"] for q in rows] == [
        ["format_mismatch: record is alpaca but the file is openai", "missing_messages_list: (record): missing key 'messages'"],
        ["missing_messages_list: (record): missing key 'messages'"]]
    assert [q["source"]["line"] for q in rows] == [3, 4]


def test_the_converters_refusal_is_a_schema_violation_when_the_schema_passes(tmp_path: Path) -> None:
    bad_call = msgs(SYS, ("user", "Hi"))
    bad_call["messages"].append({"role": "assistant", "tool_calls": "get_weather"})
    r = validate(write_raw(tmp_path / "in.jsonl", [GOOD, bad_call]), schema={"type": "object"}, tokens=False)
    assert r.summary["schema"] == "(given schema)"
    assert [q["validate_errors"] for q in r.rejected.to_pylist()] == [
        ["schema_violation: not valid openai: field 'messages[2].tool_calls': tool_calls must be a list"]]


def test_rows_curate_wrote_itself_are_checked_as_they_are(tmp_path: Path) -> None:
    """A canonical JSONL goes through the same conversion as `curate ingest`: its rows are kept unchanged."""
    from curate.dataset import make_row

    rows = [make_row([{"role": "system", "content": "S"}, {"role": "user", "content": f"q{i}"},
                      {"role": "assistant", "content": "a"}], source={"file": "orig.jsonl", "line": i + 1, "row": i},
                     origin="production") for i in range(3)]
    r = validate(write_raw(tmp_path / "canonical.jsonl", rows), tokens=False)
    assert r.summary["format"] == "canonical" and codes(r) == {}
    assert r.kept.select(["id", "source", "origin"]).to_pylist() == [
        {"id": x["id"], "source": x["source"], "origin": "production"} for x in rows]
    assert r.summary["notes"] == ["no JSON Schema ships for format 'canonical'; only the semantic checks ran"]
