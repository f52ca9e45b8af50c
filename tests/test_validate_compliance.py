"""Output-format compliance on planted replies, and mixed-format detection across a dataset."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from curate.dataset import make_row, rows_to_table
from curate.errors import UsageError
from curate.validate import reply_style, validate

TASK_SCHEMA = Path(__file__).resolve().parents[1] / "examples" / "validate" / "task.schema.json"


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
    assert r.compliance["rate"] == pytest.approx(0.75)
    assert (r.compliance["records_checked"], r.compliance["records_compliant"]) == (100, 75)
    assert r.counts == {"output_schema_violation": 5, "output_not_json": 20}
    assert r.valid.num_rows == 75 and r.quarantine.num_rows == 25 and r.passed
    assert r.valid.column("validate_compliant").to_pylist() == [True] * 75
    styles = {m["kind"]: m for m in r.mixed_formats}["reply_formats"]
    assert styles["counts"] == {"json": 80, "prose": 20}
    assert "80% json, 20% prose" in styles["message"]


def test_mixed_reply_formats_are_reported_without_an_output_schema(planted) -> None:
    r = validate(planted)
    assert r.compliance is None
    assert [m["kind"] for m in r.mixed_formats] == ["reply_formats"]
    assert r.counts == {}


def test_regex_compliance(planted) -> None:
    r = validate(planted, output_regex=r"I think review \d+ is (positive|negative)\.", max_error_rate=1.0)
    assert r.compliance["rate"] == pytest.approx(0.2)
    assert r.counts == {"output_regex_mismatch": 80}
    assert not validate(planted, output_regex=r".*").counts  # every reply matches


def test_several_system_prompts_and_missing_ones_are_detected() -> None:
    rows = [chat("ok", "You are a pirate.") for _ in range(6)]
    rows += [chat("ok", "You are a lawyer.") for _ in range(3)]
    rows += [chat("ok", None)]
    r = validate(rows_to_table(rows))
    kinds = {m["kind"]: m for m in r.mixed_formats}
    assert kinds["system_prompts"]["counts"] == {"You are a pirate.": 6, "You are a lawyer.": 3}
    assert kinds["system_prompt_presence"]["counts"] == {"with": 9, "without": 1}
    assert "reply_formats" not in kinds
    single = validate(rows_to_table([chat("ok", "You are a pirate.") for _ in range(4)]))
    assert single.mixed_formats == []


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
