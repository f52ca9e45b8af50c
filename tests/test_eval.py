"""Fast tests of `curate eval`: scoring (parse / schema / regex / exact match), P95 bucket, outputs, failures,
the outcome and the CLI, with generation replaced by fixed replies (the real model runs in test_train_lora)."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from curate.cli import cli
from curate.dataset import make_row, rows_to_table
from curate.errors import UsageError
from curate.evaluation import EvalConfig, evaluate
from curate.evaluation.compliance import Checker, summarize
from curate.evaluation.stage import _failures, _long_table, adapter_dir, split_prompt

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
    assert c.schema_error == "age: 'x' is not of type 'integer'" and c.exact_match is None
    assert Checker.build(SCHEMA, None).check("[1]", None).schema_error == "$: [1] is not of type 'object'"
    assert Checker.build(SCHEMA, None).check("```json\n{}\n```", None).schema_error == "reply is not JSON"


def test_schema_error_is_the_first_in_schema_order():
    # properties before required: the property's error is reported, as eval always has (not the root's)
    schema = {"properties": {"name": {"type": "string"}, "age": {"minimum": 0}}, "required": ["name", "age", "city"]}
    c = Checker.build(schema, None).check('{"name": 1, "age": -1}', None)
    assert (c.parses, c.schema_valid, c.schema_error) == (True, False, "name: 1 is not of type 'string'")


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
    with pytest.raises(UsageError, match=r"s\.json:1: not valid JSON"):
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


def test_outputs_and_failure_seeds():
    table = rows_to_table([make_row([{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": '{"name": "B", "age": 1}'}])
                           for i in range(3)])
    ck = Checker.build(SCHEMA, None)
    replies = {"base": ["x", "y", "z"], "run": ['{"name": "B", "age": 1}', "bad", '{"name": "B", "age": 1}']}
    results = {k: [ck.check(r, '{"name": "B", "age": 1}') for r in v] for k, v in replies.items()}
    long = _long_table(table, ["base", "run"], replies, results, [5, 6, 9], [False, False, True])
    assert long.num_rows == 6 and long.column("eval_ok").to_pylist() == [False] * 3 + [True, False, True]
    assert long.schema.names[:7] == table.schema.names  # canonical columns kept as they were
    seeds = _failures(table, ["base", "run"], replies, results)
    # the adapter's failures only: the base failing everything is the expected starting point
    assert seeds.column("id").to_pylist() == [table.column("id")[1].as_py()]
    assert json.loads(seeds.column("eval_failed_models")[0].as_py()) == ["run"]
    assert seeds.column("eval_reply").to_pylist() == ["bad"]
    # alone, the base is judged
    alone = _failures(table, ["base"], replies, results)
    assert alone.num_rows == 3 and json.loads(alone.column("eval_failed_models")[2].as_py()) == ["base"]


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
    assert res.exit_code == 2 and "output_regex: not a valid regular expression" in _flat(res)
    res = CliRunner().invoke(cli, ["eval", "--data", str(data), "--output-regex", "x", "--output-schema", str(data)])
    assert res.exit_code == 2 and "give output_schema or output_regex, not both" in _flat(res)
    res = CliRunner().invoke(cli, ["eval", "--data", str(tmp_path / "missing.jsonl")])
    assert res.exit_code == 2 and "no such file" in _flat(res)


def test_cli_options_follow_the_config():
    import click

    cmd = cli.commands["eval"]
    params = {p.name: p for p in cmd.params}
    for name, info in EvalConfig.model_fields.items():
        p = params[name]
        assert "--" + name.replace("_", "-") in p.opts and p.default is None, name
        assert p.help.startswith(info.description), name
    for name in ("max_new_tokens", "limit", "batch_size"):
        assert isinstance(params[name].type, click.IntRange) and (params[name].type.min, params[name].type.max) == (1, None)
    assert isinstance(params["output_schema"].type, click.Path)
    shown = _flat(CliRunner().invoke(cli, ["eval", "--help"]))
    for flag in ("--base TEXT", "[default: embedded]", "--output-schema PATH", "--output-regex TEXT",
                 "--max-new-tokens INTEGER RANGE", "[default: 256]", "--limit INTEGER RANGE", "--batch-size INTEGER RANGE",
                 "[default: 8]"):
        assert flag in shown, flag
    res = CliRunner().invoke(cli, ["eval", "--data", "d.jsonl", "--batch-size", "0"])
    assert res.exit_code == 2 and "0 is not in the range x>=1" in _flat(res)


GOOD = '{"name": "B", "age": 1}'


@pytest.fixture
def fake_model(monkeypatch):
    """The embedded tokenizer for real; the model and its generation replaced by fixed replies per adapter."""
    from curate import embedded
    from curate.evaluation import stage

    calls = []
    replies = {None: ["x", GOOD, "z"], "a0": [GOOD, "bad", GOOD]}

    def generate(model, tokenizer, prompts, adapter, max_new_tokens, batch_size, advance):
        calls.append((adapter, max_new_tokens, batch_size, len(prompts)))
        advance(len(prompts))
        return replies[adapter][: len(prompts)]

    monkeypatch.setattr(embedded, "resolve_model", lambda name: str(embedded.embedded_tokenizer_dir()))
    monkeypatch.setattr(stage, "_load", lambda model_path, dirs: object())
    monkeypatch.setattr(stage, "_generate", generate)
    return calls


@pytest.fixture
def heldout(tmp_path):
    data = tmp_path / "heldout.jsonl"
    prompts = ["q", "tell me about Bo", "a much longer question about Bo, his age, his city and his job, in detail", "unused"]
    data.write_text("".join(json.dumps({"messages": [{"role": "user", "content": p}, {"role": "assistant", "content": GOOD}]}) + "\n"
                            for p in prompts))
    (tmp_path / "run" / "adapter").mkdir(parents=True)
    (tmp_path / "run" / "adapter" / "adapter_config.json").write_text("{}")
    schema = tmp_path / "s.json"
    schema.write_text(json.dumps(SCHEMA))
    return data, tmp_path / "run", schema


def test_evaluate_outcome_and_outputs(fake_model, heldout, tmp_path):
    data, run_dir, schema = heldout
    rows, fails = tmp_path / "eval.parquet", tmp_path / "fail.parquet"
    out = evaluate(data, [run_dir], rows, {"output_schema": str(schema), "limit": 3}, failures=fails, max_new_tokens=7)
    assert fake_model == [(None, 7, 8, 3), ("a0", 7, 8, 3)]
    d = out.to_dict()
    assert list(d) == ["stage", "counts", "balanced", "outputs", "passed", "failure", "config", "models", "checks",
                       "p95_input_tokens", "summary"]
    assert (d["stage"], d["counts"], d["balanced"], d["passed"], d["failure"]) == (
        "eval", {"in": 3, "ok": 2, "failed": 1}, True, True, None)
    assert d["outputs"] == {"rows": str(rows), "failures": str(fails)}
    assert d["config"] == {"base": "embedded", "output_schema": str(schema), "output_regex": None, "max_new_tokens": 7,
                           "limit": 3, "batch_size": 8}
    assert d["models"] == ["base", "run"] and d["checks"] == ["parses", "schema_valid"]
    base, run = d["summary"]
    assert (base["model"], base["rows"], base["parse_rate"], base["schema_valid_rate"], base["exact_match_rate"]) == (
        "base", 3, 0.3333, 0.3333, 0.3333)
    assert (run["model"], run["ok_rate"], run["p95_rows"], run["p95_ok_rate"], run["regex_rate"]) == ("run", 0.6667, 1, 1.0, None)
    t = pq.read_table(rows)
    assert t.num_rows == 6 and t.column("eval_model").to_pylist() == ["base"] * 3 + ["run"] * 3
    lengths = t.column("eval_input_tokens").to_pylist()[:3]
    assert lengths[0] < lengths[1] < lengths[2] and d["p95_input_tokens"] == lengths[2]
    assert t.column("eval_p95_bucket").to_pylist() == [False, False, True] * 2
    assert t.column("eval_schema_error").to_pylist() == ["reply is not JSON", None, "reply is not JSON", None,
                                                          "reply is not JSON", None]
    seeds = pq.read_table(fails)
    assert seeds.column("id").to_pylist() == [t.column("id")[1].as_py()] and seeds.column("eval_reply").to_pylist() == ["bad"]


def test_cli_eval_json_and_table(fake_model, heldout, tmp_path):
    data, run_dir, schema = heldout
    args = ["eval", "--data", str(data), "--adapter", str(run_dir), "--output-schema", str(schema), "--limit", "3",
            "--batch-size", "2", "--failures", str(tmp_path / "f.parquet")]
    res = CliRunner().invoke(cli, [*args, "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["counts"] == {"in": 3, "ok": 2, "failed": 1} and doc["outputs"] == {"failures": str(tmp_path / "f.parquet")}
    assert doc["config"]["batch_size"] == 2 and fake_model[0] == (None, 256, 2, 3)
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0
    shown = _flat(res)
    assert f"1 failing prompt(s) written to {tmp_path / 'f.parquet'} (seeds for `curate synth`)" in shown
    assert f"3 prompts; P95 input length {doc['p95_input_tokens']} tokens (1 rows at or above)" in shown
    cells = [[c.strip() for c in line.split("│")[1:-1]] for line in res.output.splitlines() if line.startswith("│")]
    assert "┃ model ┃ parses ┃ schema ┃ exact ┃ parses P95 ┃ schema P95 ┃ exact P95 ┃" in res.output
    assert cells == [["base", "33.3%", "33.3%", "33.3%", "0.0%", "0.0%", "0.0%"],
                     ["run", "66.7%", "66.7%", "66.7%", "100.0%", "100.0%", "100.0%"]]
