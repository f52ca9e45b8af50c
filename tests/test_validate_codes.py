"""Hand-built bad records, one for every code in the taxonomy: the code fires, and errors quarantine the row."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from curate.embedded import load_tokenizer
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
    "output_not_json": ([GOOD], {"output_schema": EXAMPLES / "task.schema.json"}),
    "output_schema_violation": ([msgs(SYS, ("user", "Hi"), ("assistant", '{"label": "happy", "confidence": 1}'))],
                                {"output_schema": EXAMPLES / "task.schema.json"}),
    "output_regex_mismatch": ([GOOD], {"output_regex": r"[A-Z]+"}),
}


# whole-file damage (a corrupt Parquet, UTF-16 without a BOM) has no line; tests/test_damaged_inputs.py covers it
FILE_LEVEL = {"unreadable_file"}


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
        kwargs["tokenizer"] = broken
    elif "max_tokens" in kwargs:
        kwargs["tokenizer"] = tok
    r = validate(write_raw(tmp_path / "in.jsonl", lines), **kwargs)
    assert code in r.counts, r.counts
    bad_line = r.examples[code][0]["line"]
    assert bad_line == len(lines)  # each case plants its bad record last
    assert r.total == len(lines) == r.valid.num_rows + r.quarantine.num_rows
    quarantined_lines = [q["source"]["line"] for q in r.quarantine.to_pylist() if code in q["validate_codes"]]
    if CODES[code].severity == "error":
        assert quarantined_lines == [bad_line]
    else:
        assert quarantined_lines == []
        kept = [v for v in r.valid.to_pylist() if code in v["validate_codes"]]
        assert [v["source"]["line"] for v in kept] == [bad_line]


def test_good_records_have_no_findings(tmp_path: Path, tok) -> None:
    r = validate(write_raw(tmp_path / "in.jsonl", [GOOD, tool_chat()]), tokenizer=tok, max_tokens=200)
    assert r.counts == {}
    assert r.valid.column("validate_codes").to_pylist() == [[], []]


def test_consecutive_user_turns_can_be_allowed(tmp_path: Path) -> None:
    lines, _ = CASES["consecutive_user_turns"]
    r = validate(write_raw(tmp_path / "in.jsonl", lines), allow_consecutive_user=True)
    assert r.counts == {}


def test_parse_error_names_the_line_and_reading_resumes(tmp_path: Path) -> None:
    r = validate(write_raw(tmp_path / "in.jsonl", [GOOD, "{oops", msgs(SYS, ("user", "a"), ("assistant", "b"))]))
    assert r.counts == {"json_parse_error": 1}
    assert r.examples["json_parse_error"][0]["line"] == 2
    assert r.quarantine.column("validate_raw").to_pylist() == ["{oops"]
    assert r.valid.num_rows == 2


def test_a_users_own_schema_works_like_a_shipped_one(tmp_path: Path) -> None:
    schema = json.loads((Path(__file__).resolve().parents[1] / "schemas" / "openai-chat.schema.json").read_text())
    schema["properties"]["messages"]["maxItems"] = 2  # this user's trainer takes single-turn chats only
    path = tmp_path / "mine.schema.json"
    path.write_text(json.dumps(schema))
    r = validate(write_raw(tmp_path / "in.jsonl", [GOOD, msgs(("user", "Hi"), ("assistant", "x"))]), schema=str(path))
    assert r.schema == str(path)
    assert r.counts == {"missing_messages_list": 1, "no_system_message": 1}
    assert r.quarantine.column("source").to_pylist()[0]["line"] == 1


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
    r = validate(path)
    assert r.counts == {"json_parse_error": 1}
    assert r.examples["json_parse_error"][0]["line"] == 3
    assert r.valid.num_rows == 2 and r.total == 3
