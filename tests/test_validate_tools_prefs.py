"""Tool calls against their declared schemas, and the preference-pair lint (issue 20), on planted rows and real data."""

from __future__ import annotations

import difflib
import json
import statistics
from pathlib import Path

import pytest

from curate.validate import validate
from curate.validate.pairs import NEAR_RATIO, normalized, similarity

DPO = "hiyouga__LLaMA-Factory__dpo_en_demo.json"
WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}, "units": {"enum": ["c", "f"]}},
    "required": ["city"], "additionalProperties": False}}}


def write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def codes(out) -> dict[str, int]:
    return {**out.summary["errors"], **out.summary["warnings"]}


def messages_of(out, code: str) -> list[str]:
    return [e["message"] for c in out.summary["codes"] if c["code"] == code for e in c["examples"]]


def tool_chat(args: str | None, tools: list | str = (WEATHER,), name: str = "get_weather") -> dict:
    return {"messages": [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Weather in Oslo?"},
        {"role": "assistant", "content": None,
         "tool_calls": [{"id": "c1", "type": "function", "function": {"name": name, "arguments": args}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "12C"},
        {"role": "assistant", "content": "12C in Oslo."}], "tools": tools if isinstance(tools, str) else list(tools)}


@pytest.mark.parametrize(("args", "want"), [
    ('{"city": 3}', "messages[2].tool_calls[0].function.arguments.city: 3 is not of type 'string' (tool 'get_weather')"),
    ('{"units": "c"}', "messages[2].tool_calls[0].function.arguments: 'city' is a required property (tool 'get_weather')"),
    ('{"city": "Oslo", "unit": "c"}', ("messages[2].tool_calls[0].function.arguments: Additional properties are not "
                                      "allowed ('unit' was unexpected) (tool 'get_weather')")),
    ("", "messages[2].tool_calls[0].function.arguments: 'city' is a required property (tool 'get_weather')"),
])
def test_a_call_that_breaks_its_tools_schema_is_quarantined(tmp_path: Path, args: str | None, want: str) -> None:
    out = validate(write(tmp_path / "in.jsonl", [tool_chat('{"city": "Oslo"}'), tool_chat(args)]), tokens=False)
    assert codes(out) == {"tool_arguments_schema_violation": 1}
    assert messages_of(out, "tool_arguments_schema_violation") == [want]
    assert out.counts == {"in": 2, "kept": 1, "rejected": 1}
    assert out.rejected.column("validate_errors").to_pylist() == [[f"tool_arguments_schema_violation: {want}"]]


def test_valid_calls_and_bare_sharegpt_tools_have_no_findings(tmp_path: Path) -> None:
    bare = json.dumps([WEATHER["function"]])  # LLaMA-Factory's ShareGPT tools: a JSON text of bare functions
    sharegpt = {"conversations": [{"from": "human", "value": "Weather in Oslo?"},
                                  {"from": "function_call", "value": json.dumps({"name": "get_weather",
                                                                                 "arguments": {"city": "Oslo"}})},
                                  {"from": "observation", "value": "12C"}, {"from": "gpt", "value": "12C."}],
                "system": "Be brief.", "tools": bare}
    assert codes(validate(write(tmp_path / "a.jsonl", [tool_chat('{"city": "Oslo", "units": "c"}')]), tokens=False)) == {}
    assert codes(validate(write(tmp_path / "b.jsonl", [sharegpt]), tokens=False)) == {}
    wrong = json.loads(json.dumps(sharegpt))
    wrong["conversations"][1]["value"] = json.dumps({"name": "get_weather", "arguments": {"city": ["Oslo"]}})
    out = validate(write(tmp_path / "c.jsonl", [sharegpt, wrong]), tokens=False)
    assert codes(out) == {"tool_arguments_schema_violation": 1}
    assert "arguments.city: ['Oslo'] is not of type 'string'" in messages_of(out, "tool_arguments_schema_violation")[0]


def test_not_json_arguments_keep_their_own_code_only(tmp_path: Path) -> None:
    out = validate(write(tmp_path / "in.jsonl", [tool_chat('{"city": Oslo}'), tool_chat('["Oslo"]')]), tokens=False)
    assert codes(out) == {"invalid_tool_arguments": 2}


def test_a_tool_whose_parameters_are_not_a_json_schema_is_reported(tmp_path: Path) -> None:
    broken = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "strin"}}}
    out = validate(write(tmp_path / "in.jsonl", [tool_chat('{"city": "Oslo"}'),
                                                 tool_chat('{"city": "Oslo"}', tools=[WEATHER, broken])]), tokens=False)
    assert codes(out) == {"invalid_tool_schema": 1}
    msg = messages_of(out, "invalid_tool_schema")[0]
    assert msg.startswith("tools[1] 'get_time': parameters is not a valid JSON Schema: 'strin' is not valid")
    assert msg.endswith("(at type)")
    assert out.counts["rejected"] == 1


def test_each_distinct_schema_is_compiled_once(tmp_path: Path) -> None:
    from curate.validate.toolschema import _compiled, tool_schemas

    tool_schemas.cache_clear()
    _compiled.cache_clear()
    validate(write(tmp_path / "in.jsonl", [tool_chat(f'{{"city": "c{i}"}}') for i in range(50)]), tokens=False,
             workers=1)
    assert _compiled.cache_info().misses == 1 and tool_schemas.cache_info().misses == 1


def pair(prompt: str, chosen: str, rejected: str, **extra) -> dict:
    return {"conversations": [{"from": "system", "value": "Be brief."}, {"from": "human", "value": prompt}],
            "chosen": {"from": "gpt", "value": chosen},
            "rejected": {"from": "gpt", "value": rejected}, **extra}


GOOD = pair("Name a prime number.", "7 is a prime number.", "Eight.")
LONG_PROMPT = "Summarise the causes of the French Revolution in three sentences."


@pytest.mark.parametrize(("row", "code", "message"), [
    (pair("Hi", "Hello there.", "Hello there."), "preference_identical", "chosen and rejected are the same 12 characters"),
    (pair("Hi", "Hello  there.", "hello there."), "preference_near_identical",
     "chosen and rejected differ only in case and spacing"),
    (pair("Hi", " ".join(f"w{i}" for i in range(40)), " ".join(f"w{i}" for i in range(39)) + " other"),
     "preference_near_identical", "chosen and rejected are 0.975 similar (difflib ratio over words, >= 0.95)"),
    (pair("Hi", "Hello.", "  "), "preference_empty_side", "rejected: no reply text"),
    (pair(LONG_PROMPT, "Debt, bread prices and new ideas.", f"{LONG_PROMPT}\nDebt."), "preference_prompt_leak",
     ("rejected contains the last user turn (messages[1], 65 characters) word for word: "
     "'Summarise the causes of the French Revolution in three se...'")),
])
def test_a_broken_pair_gets_its_code(tmp_path: Path, row: dict, code: str, message: str) -> None:
    out = validate(write(tmp_path / "in.jsonl", [GOOD, row]), tokens=False)
    assert codes(out) == {code: 1}
    assert messages_of(out, code) == [message]
    assert out.counts["rejected"] == (1 if code in ("preference_identical", "preference_empty_side") else 0)


def test_an_empty_chosen_side_is_an_empty_side(tmp_path: Path) -> None:
    out = validate(write(tmp_path / "in.jsonl", [GOOD, pair("Hi", "", "Hello.")]), tokens=False)
    assert codes(out) == {"preference_empty_side": 1, "empty_content": 1}
    assert messages_of(out, "preference_empty_side") == ["chosen: no reply text"]


def test_a_short_prompt_repeated_in_a_reply_is_no_leak(tmp_path: Path) -> None:
    out = validate(write(tmp_path / "in.jsonl", [GOOD, pair("more verses", "Here are more verses: ...", "No.")]),
                   tokens=False)
    assert codes(out) == {}


def test_several_pairs_per_prompt_are_a_summary_not_a_finding(tmp_path: Path) -> None:
    rows = [pair("Name a prime number.", f"{p} is prime.", "Eight.") for p in (2, 3, 5)]
    rows += [pair("Name a colour.", "Red.", "Seven."), pair("Name a colour.", "Blue.", "Nine."), GOOD]
    out = validate(write(tmp_path / "in.jsonl", rows), tokens=False)
    assert codes(out) == {}
    pref = out.summary["preferences"]
    assert (pref["pairs"], pref["prompts"], pref["prompts_with_several_pairs"], pref["pairs_sharing_a_prompt"],
            pref["max_pairs_per_prompt"]) == (6, 2, 2, 6, 4)
    assert [(e["row"], e["line"], e["first_row"], e["pairs"]) for e in pref["several_pairs_examples"]] == [
        (2, 2, 1, 4), (5, 5, 4, 2)]
    assert (pref["chosen_longer"], pref["rejected_longer"], pref["equal_length"]) == (4, 1, 1)  # Blue. / Nine.: equal


def test_kto_labels_are_counted_on_the_record_and_the_fast_path(tmp_path: Path) -> None:
    chat = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]
    fast = [{"messages": chat, "label": v} for v in (True, True, False)] + [{"messages": chat, "label": "yes"}]
    out = validate(write(tmp_path / "a.jsonl", fast), tokens=False)
    assert out.summary["kto"] == {"records": 3, "desirable": 2, "undesirable": 1, "desirable_share": 2 / 3}
    assert out.summary["preferences"] is None
    tagged = [{"conversations": [{"from": "human", "value": f"Hi {i}"}, {"from": "gpt", "value": "Hello."}],
               "kto_tag": i % 4 == 0} for i in range(8)]
    out = validate(write(tmp_path / "b.jsonl", tagged), tokens=False)
    assert out.summary["kto"] == {"records": 8, "desirable": 2, "undesirable": 6, "desirable_share": 0.25}


def test_no_pairs_and_no_labels_give_none(shared_data: Path) -> None:
    out = validate(shared_data / "openai__openai-cookbook__toy_chat_fine_tuning.jsonl", tokens=False)
    assert out.summary["preferences"] is None and out.summary["kto"] is None


@pytest.fixture(scope="module")
def dpo(shared_data: Path):
    return validate(shared_data / DPO, tokens=False, workers=1)


def test_dpo_demo_findings(dpo) -> None:
    """What the lint measures on LLaMA-Factory's dpo_en_demo.json (300 ShareGPT pairs, one reply a side)."""
    assert dpo.summary["errors"] == {"mojibake": 1}
    assert dpo.summary["warnings"] == {"no_system_message": 220, "duplicate_record": 5, "preference_prompt_leak": 1}
    leak = next(c for c in dpo.summary["codes"] if c["code"] == "preference_prompt_leak")["examples"]
    assert [(e["row"], e["line"]) for e in leak] == [(140, 3394)]
    assert leak[0]["message"] == ("rejected contains the last user turn (messages[0], 60 characters) word for word: "
                                  "'Islamic Banking profit distribution in Pakistan case studies'")


def test_dpo_demo_length_bias_and_prompts(dpo, shared_data: Path) -> None:
    raw = json.loads((shared_data / DPO).read_text())
    lengths = [(len(r["chosen"]["value"]), len(r["rejected"]["value"])) for r in raw]
    pref = dpo.summary["preferences"]
    assert (pref["pairs"], pref["chosen_longer"], pref["rejected_longer"], pref["equal_length"]) == (300, 131, 168, 1)
    assert pref["chosen_longer"] == sum(c > r for c, r in lengths)
    assert round(pref["chosen_longer_share"], 4) == 0.4367  # chosen is the shorter reply more often than not
    assert pref["median_length_ratio"] == pytest.approx(statistics.median(c / r for c, r in lengths))
    assert round(pref["median_length_ratio"], 3) == 0.911
    assert [b["pairs"] for b in pref["length_ratio_histogram"]] == [36, 26, 69, 78, 52, 20, 19]
    # the 5 prompts with two pairs are the 5 exact duplicate records, at the rows duplicate_record names
    assert (pref["prompts"], pref["prompts_with_several_pairs"], pref["pairs_sharing_a_prompt"],
            pref["max_pairs_per_prompt"]) == (295, 5, 10, 2)
    dup = next(c for c in dpo.summary["codes"] if c["code"] == "duplicate_record")["examples"]
    assert [e["row"] for e in pref["several_pairs_examples"]] == [e["row"] for e in dup]
    assert dpo.summary["kto"] is None


def test_dpo_demo_has_no_near_identical_pair(shared_data: Path) -> None:
    """The closest pair (row 44: one place name dropped, one word's case changed) stays under the threshold."""
    raw = json.loads((shared_data / DPO).read_text())
    words = [(normalized(r["chosen"]["value"]).split(), normalized(r["rejected"]["value"]).split()) for r in raw]
    scores = [difflib.SequenceMatcher(None, a, b, autojunk=False).ratio() for a, b in words]
    best = max(range(len(raw)), key=scores.__getitem__)
    assert best == 43 and round(scores[best], 3) == 0.931 < NEAR_RATIO
    assert similarity(" ".join(words[best][0]), " ".join(words[best][1])) < NEAR_RATIO


def test_one_and_two_workers_give_the_same_outputs(dpo, shared_data: Path, tmp_path: Path) -> None:
    two = validate(shared_data / DPO, tokens=False, workers=2, batch_size=64)
    drop = ("config",)
    assert {k: v for k, v in two.to_dict().items() if k not in drop} == {
        k: v for k, v in dpo.to_dict().items() if k not in drop}
    assert two.kept.equals(dpo.kept) and two.rejected.equals(dpo.rejected)
    # a canonical Parquet of the same pairs, across batches on two workers
    from curate.ingest import ingest

    ingest([shared_data / DPO], tmp_path / "dpo.parquet")
    one = validate(tmp_path / "dpo.parquet", tokens=False, workers=1)
    two = validate(tmp_path / "dpo.parquet", tokens=False, workers=2, batch_size=64)
    assert {k: v for k, v in two.to_dict().items() if k not in drop} == {
        k: v for k, v in one.to_dict().items() if k not in drop}
    assert one.summary["preferences"] == dpo.summary["preferences"]
    assert codes(one) == codes(dpo)
