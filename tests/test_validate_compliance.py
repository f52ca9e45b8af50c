"""Output-format compliance on planted replies, and mixed-format detection across a dataset."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from curate.dataset import make_row, rows_to_table
from curate.errors import UsageError
from curate.outcome import StageOutcome
from curate.validate import reply_style
from curate.validate import validate as run_validate

TASK_SCHEMA = Path(__file__).resolve().parents[1] / "examples" / "validate" / "task.schema.json"


def validate(*args, **kwargs) -> StageOutcome:
    return run_validate(*args, tokens=False, **kwargs)


def codes(out: StageOutcome) -> dict[str, int]:
    return {**out.summary["errors"], **out.summary["warnings"]}


def chat(reply: str, system: str | None = "Label the review as JSON.") -> dict:
    msgs = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": f"review {reply[:20]}"},
        {"role": "assistant", "content": reply},
    ]
    return make_row(msgs, source={"file": "planted", "line": None, "row": None})


@pytest.fixture
def planted():
    """100 records: 80 JSON replies (75 valid under the task schema, 5 with a bad label), 20 prose."""
    rows = [chat(json.dumps({"label": "positive", "confidence": i / 100})) for i in range(75)]
    rows += [chat(json.dumps({"label": "ecstatic", "confidence": 0.5, "n": i})) for i in range(5)]
    rows += [chat(f"I think review {i} is positive.") for i in range(20)]
    return rows_to_table(rows)


def test_compliance_rate_on_planted_80_json_20_prose(planted) -> None:
    r = validate(planted, output_schema=TASK_SCHEMA, max_error_rate=0.3)
    assert r.summary["compliance"] == {"mode": "schema", "pattern": None, "records_checked": 100,
                                       "records_compliant": 75, "rate": 0.75, "replies_checked": 100,
                                       "replies_compliant": 75}
    assert codes(r) == {"output_schema_violation": 5, "output_not_json": 20}
    assert r.counts == {"in": 100, "kept": 75, "rejected": 25} and r.failure is None
    assert r.kept.column("validate_compliant").to_pylist() == [True] * 75
    messages = {c["code"]: c["examples"][0]["message"] for c in r.summary["codes"]}
    assert messages == {
        "output_schema_violation": "messages[2].content at (top): Additional properties are not allowed ('n' was "
                                   "unexpected) (+1 more)",
        "output_not_json": "messages[2].content: not JSON (Expecting value at column 1): 'I think review 0 is positive.'"}
    styles = {m["kind"]: m for m in r.summary["mixed_formats"]}["reply_formats"]
    assert styles["counts"] == {"json": 80, "prose": 20}
    assert "80% json, 20% prose" in styles["message"]


def test_mixed_reply_formats_are_reported_without_an_output_schema(planted) -> None:
    r = validate(planted)
    assert r.summary["compliance"] is None
    assert [m["kind"] for m in r.summary["mixed_formats"]] == ["reply_formats"]
    assert codes(r) == {}


def test_regex_compliance(planted) -> None:
    r = validate(planted, output_regex=r"I think review \d+ is (positive|negative)\.", max_error_rate=1.0)
    assert r.summary["compliance"]["rate"] == pytest.approx(0.2)
    assert codes(r) == {"output_regex_mismatch": 80}
    assert next(c for c in r.summary["codes"])["examples"][0]["message"] == (
        "messages[2].content: '{\"label\": \"positive\", \"confidence\": 0.0}' does not match "
        "/I think review \\d+ is (positive|negative)\\./")
    assert codes(validate(planted, output_regex=r".*")) == {}  # every reply matches


def test_several_system_prompts_and_missing_ones_are_detected() -> None:
    rows = [chat("ok", "You are a pirate.") for _ in range(6)]
    rows += [chat("ok", "You are a lawyer.") for _ in range(3)]
    rows += [chat("ok", None)]
    r = validate(rows_to_table(rows))
    kinds = {m["kind"]: m for m in r.summary["mixed_formats"]}
    assert kinds["system_prompts"]["counts"] == {"You are a pirate.": 6, "You are a lawyer.": 3}
    assert kinds["system_prompt_presence"]["counts"] == {"with": 9, "without": 1}
    assert "reply_formats" not in kinds
    single = validate(rows_to_table([chat("ok", "You are a pirate.") for _ in range(4)]))
    assert single.summary["mixed_formats"] == []


@pytest.mark.parametrize(
    "text, style",
    [('{"a": 1}', "json"), ("[1, 2]", "json"), ('```json\n{"a": 1}\n```', "fenced json"), ("42", "prose"),
     ("{not json}", "prose"), ("Sure! Here it is.", "prose")],
)
def test_reply_style(text: str, style: str) -> None:
    assert reply_style(text) == style


def test_bad_output_options_are_usage_errors(tmp_path: Path, planted) -> None:
    with pytest.raises(UsageError, match="not both"):
        validate(planted, output_schema=TASK_SCHEMA, output_regex="x")
    with pytest.raises(UsageError, match="regular expression"):
        validate(planted, output_regex="(")
    bad = tmp_path / "bad.json"
    bad.write_text('{"type": "objekt"}')
    with pytest.raises(UsageError, match="not a valid JSON Schema"):
        validate(planted, output_schema=bad)
    with pytest.raises(UsageError, match="no such file"):
        validate(planted, output_schema=tmp_path / "missing.json")


def test_a_fenced_json_reply_is_not_json() -> None:
    """The fence rule of curate.replies: a training reply is learnt as written, so a fenced one is not JSON."""
    fenced = '```json\n{"label": "positive", "confidence": 0.5}\n```'
    r = validate(rows_to_table([chat(fenced), chat('{"label": "positive", "confidence": 0.5}')]),
                 output_schema=TASK_SCHEMA, max_error_rate=0.5)
    assert r.counts == {"in": 2, "kept": 1, "rejected": 1} and r.failure is None
    assert r.rejected.column("validate_errors").to_pylist() == [
        [("output_not_json: messages[2].content: not JSON (Expecting value at column 1): '```json\\n{\"label\": "
          "\"positive\", \"confidence\": 0.5}\\n```'")]]
    assert {m["kind"]: m["counts"] for m in r.summary["mixed_formats"]} == {"reply_formats": {"fenced json": 1, "json": 1}}
