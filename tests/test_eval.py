"""Fast tests of `curate eval`'s scoring: parse / schema / regex / exact match, P95 bucket, outputs, failures."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from curate.cli import cli
from curate.dataset import make_row, rows_to_table
from curate.errors import UsageError
from curate.evaluation.compliance import Checker, summarize
from curate.evaluation.stage import _long_table, _write_failures, adapter_dir, split_prompt

SCHEMA = {"type": "object", "required": ["name", "age"], "additionalProperties": False,
          "properties": {"name": {"type": "string"}, "age": {"type": "integer"}}}


def _flat(res) -> str:
    """CLI output with rich's line wrapping undone."""
    return " ".join(res.output.split())


@pytest.mark.parametrize(
    "reply, parses, valid, exact",
    [
        ('{"name": "Bo", "age": 3}', True, True, True),
        ('  {"age": 3, "name": "Bo"}\n', True, True, True),  # key order and whitespace do not matter
        ('{"name": "Bo", "age": "3"}', True, False, False),
        ('{"name": "Bo"}', True, False, False),
        ('Sure! {"name": "Bo", "age": 3}', False, False, False),  # chatter around JSON is a format failure
        ('```json\n{"name": "Bo", "age": 3}\n```', False, False, False),
    ],
)
def test_schema_checks(reply, parses, valid, exact):
    c = Checker.build(SCHEMA, None).check(reply, '{"name": "Bo", "age": 3}')
    assert (c.parses, c.schema_valid, c.exact_match, c.ok) == (parses, valid, exact, valid)
    assert (c.schema_error is None) == valid


def test_schema_error_names_the_field():
    c = Checker.build(SCHEMA, None).check('{"name": "Bo", "age": "x"}', None)
    assert c.schema_error.startswith("age:") and c.exact_match is None


def test_regex_must_match_the_whole_reply():
    ck = Checker.build(None, r"(yes|no)")
    assert ck.check("yes", None).regex_match is True
    assert ck.check(" no \n", None).ok is True
    assert ck.check("yes, definitely", None).regex_match is False
    assert ck.names() == ["parses", "regex_match"]
    # a plain-text reference is compared as text
    assert ck.check("no", "no").exact_match is True and ck.check("no", "yes").exact_match is False


def test_without_schema_or_regex_ok_means_parses():
    ck = Checker.build(None, None)
    assert ck.check("[1, 2]", None).ok and not ck.check("one, two", None).ok


def test_bad_schema_and_regex_are_usage_errors(tmp_path):
    with pytest.raises(UsageError, match="not a valid regular expression"):
        Checker.build(None, "(unclosed")
    with pytest.raises(UsageError, match="not a valid JSON Schema"):
        Checker.build({"type": "banana"}, None)
    bad = tmp_path / "s.json"
    bad.write_text("{oops")
    with pytest.raises(UsageError, match="line 1"):
        Checker.build(bad, None)
    with pytest.raises(UsageError, match="no such file"):
        Checker.build(tmp_path / "missing.json", None)


def test_summary_rates_and_p95_bucket():
    ck = Checker.build(SCHEMA, None)
    ref = '{"name": "Bo", "age": 3}'
    replies = [ref, '{"name": "Bo", "age": 4}', "nope", '{"name": 1}']
    checks = [ck.check(r, ref) for r in replies]
    s = summarize("m", checks, [False, False, True, True], ck, has_refs=True)
    assert (s["rows"], s["parse_rate"], s["schema_valid_rate"], s["exact_match_rate"]) == (4, 0.75, 0.5, 0.25)
    assert (s["p95_rows"], s["p95_parse_rate"], s["p95_schema_valid_rate"]) == (2, 0.5, 0.0)
    assert s["regex_rate"] is None


def test_split_prompt_uses_the_last_assistant_reply_as_reference():
    msgs = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
            {"role": "user", "content": "c"}, {"role": "assistant", "content": "d"}]
    prompt, ref = split_prompt(msgs)
    assert [m["content"] for m in prompt] == ["a", "b", "c"] and ref == "d"
    assert split_prompt(msgs[:1]) == (msgs[:1], None)


def test_outputs_and_failure_seeds(tmp_path):
    table = rows_to_table([make_row([{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": '{"name": "B", "age": 1}'}])
                           for i in range(3)])
    ck = Checker.build(SCHEMA, None)
    replies = {"base": ["x", "y", "z"], "run": ['{"name": "B", "age": 1}', "bad", '{"name": "B", "age": 1}']}
    results = {k: [ck.check(r, '{"name": "B", "age": 1}') for r in v] for k, v in replies.items()}
    long = _long_table(table, ["base", "run"], replies, results, [5, 6, 9], [False, False, True])
    assert long.num_rows == 6 and long.column("eval_ok").to_pylist() == [False] * 3 + [True, False, True]
    assert long.schema.names[:7] == table.schema.names  # canonical columns kept as they were
    n = _write_failures(table, ["base", "run"], replies, results, tmp_path / "f.parquet")
    seeds = pq.read_table(tmp_path / "f.parquet")
    # the adapter's failures only: the base failing everything is the expected starting point
    assert n == 1 and seeds.column("id").to_pylist() == [table.column("id")[1].as_py()]
    assert json.loads(seeds.column("eval_failed_models")[0].as_py()) == ["run"]


def test_adapter_dir_accepts_run_or_adapter_folder(tmp_path):
    (tmp_path / "r" / "adapter").mkdir(parents=True)
    (tmp_path / "r" / "adapter" / "adapter_config.json").write_text("{}")
    assert adapter_dir(tmp_path / "r") == adapter_dir(tmp_path / "r" / "adapter") == tmp_path / "r" / "adapter"
    with pytest.raises(UsageError, match="holds no adapter"):
        adapter_dir(tmp_path)


def test_cli_eval_usage_errors(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}]}) + "\n")
    res = CliRunner().invoke(cli, ["eval", "--data", str(data), "--adapter", str(tmp_path)])
    assert res.exit_code == 2 and "holds no adapter" in _flat(res)
    res = CliRunner().invoke(cli, ["eval", "--data", str(data), "--output-regex", "("])
    assert res.exit_code == 2 and "--output-regex" in _flat(res)
