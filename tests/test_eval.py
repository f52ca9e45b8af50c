"""Tests of `curate eval`: format scoring (parse / schema / regex / exact match), P95 bucket, task metrics (per-field
accuracy, confusion, labels, collapse, chrF), bootstrap comparisons, examples, outputs, failures, the outcome and the
CLI. The fast ones replace generation by fixed replies; one slow test runs the embedded model on prose."""

from __future__ import annotations

import json
from typing import Any

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from curate.cli import cli
from curate.dataset import make_row, rows_to_table
from curate.errors import UsageError
from curate.evaluation import EvalConfig, evaluate
from curate.evaluation.compare import bootstrap, comparisons, pick_examples
from curate.evaluation.compliance import Checker, summarize
from curate.evaluation.stage import _failures, _long_table, adapter_dir, adapter_specs, split_prompt
from curate.evaluation.task import build_task, failure, reference_labels, score, summarize_task, train_labels

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


def test_without_schema_or_regex_any_reply_has_the_format():
    # prose is not JSON: with neither a schema nor a regex, only an empty reply fails the format
    ck = Checker.build(None, None)
    assert ck.check("[1, 2]", None).ok and ck.check("one, two", None).ok
    empty = ck.check(" \n", None)
    assert (empty.ok, empty.why, empty.parses) == (False, "empty reply", False)
    assert Checker.build(None, "(yes|no)").check("maybe", None).why == "does not match the regex"
    assert Checker.build(SCHEMA, None).check("{}", None).why == "$: 'name' is a required property"


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
    ref = '{"name": "B", "age": 1}'
    replies = {"base": ["x", "y", "z"], "run": [ref, "bad", '{"name": "B", "age": 2}']}
    results = {k: [ck.check(r, ref) for r in v] for k, v in replies.items()}
    task = build_task(SCHEMA, [ref] * 3, None, 32, 0.5)
    scores = {k: [score(task, r, c, i) for i, (r, c) in enumerate(zip(v, results[k]))] for k, v in replies.items()}
    verdicts = {k: [failure(task, c, s) for c, s in zip(results[k], scores[k])] for k in replies}
    long = _long_table(table, ["base", "run"], replies, results, [5, 6, 9], [False, False, True], scores, verdicts)
    assert long.num_rows == 6 and long.column("eval_ok").to_pylist() == [False] * 3 + [True, False, True]
    assert long.schema.names[:7] == table.schema.names  # canonical columns kept as they were
    assert long.column("eval_task_correct").to_pylist() == [False] * 3 + [True, False, False]
    assert long.column("eval_failure").to_pylist() == ["format: reply is not JSON"] * 3 + [
        None, "format: reply is not JSON", "wrong fields: age"]
    seeds = _failures(table, ["run"], replies, verdicts)
    # the adapter's failures only (format or task): the base failing everything is the expected starting point
    assert seeds.column("id").to_pylist() == [table.column("id")[i].as_py() for i in (1, 2)]
    assert [json.loads(x) for x in seeds.column("eval_failed_models").to_pylist()] == [["run"], ["run"]]
    assert seeds.column("eval_reply").to_pylist() == ["bad", '{"name": "B", "age": 2}']
    assert seeds.column("eval_failure").to_pylist() == ["format: reply is not JSON", "wrong fields: age"]
    # the base judged (evaluate does so when it is alone)
    alone = _failures(table, ["base"], replies, verdicts)
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
    for name in ("short_text", "examples", "seed"):
        assert isinstance(params[name].type, click.IntRange) and (params[name].type.min, params[name].type.max) == (0, None)
    sim = params["text_similarity"].type
    assert isinstance(sim, click.FloatRange) and (sim.min, sim.max) == (0.0, 1.0)
    assert isinstance(params["output_schema"].type, click.Path)
    shown = _flat(CliRunner().invoke(cli, ["eval", "--help"]))
    for flag in ("--base TEXT", "[default: embedded]", "--output-schema PATH", "--output-regex TEXT",
                 "--max-new-tokens INTEGER RANGE", "[default: 256]", "--limit INTEGER RANGE", "--batch-size INTEGER RANGE",
                 "[default: 8]", "--task-fields TEXT", "(','-separated)", "--short-text INTEGER RANGE", "[default: 32]",
                 "--text-similarity FLOAT RANGE", "[default: 0.5]", "--examples INTEGER RANGE", "[default: 5]",
                 "--seed INTEGER RANGE", "[default: 0]", "--train-data PATH", "--compare A:B", "NAME=FOLDER"):
        assert flag in shown, flag
    res = CliRunner().invoke(cli, ["eval", "--data", "d.jsonl", "--batch-size", "0"])
    assert res.exit_code == 2 and "0 is not in the range x>=1" in _flat(res)
    res = CliRunner().invoke(cli, ["eval", "--data", "d.jsonl", "--text-similarity", "1.5"])
    assert res.exit_code == 2 and "1.5 is not in the range 0.0<=x<=1.0" in _flat(res)


# ---------------------------------------------------------------- task metrics on hand-made replies

TICKET = {"type": "object", "required": ["category", "priority", "urgent", "summary"], "additionalProperties": False,
          "properties": {"category": {"enum": ["billing", "shipping", "account"]},
                         "priority": {"$ref": "#/$defs/priority"},
                         "urgent": {"type": "boolean"}, "summary": {"type": "string"}},
          "$defs": {"priority": {"enum": ["low", "medium", "high"]}}}
REFS = [
    {"category": "billing", "priority": "high", "urgent": True, "summary": "Duplicate payment for the Team renewal"},
    {"category": "shipping", "priority": "low", "urgent": False, "summary": "Parcel late"},
    {"category": "account", "priority": "medium", "urgent": False, "summary": "Cannot log in after the password reset email"},
    {"category": "billing", "priority": "low", "urgent": False, "summary": "Refund"},
]
LONG_SUMMARY = "Can't log in after password reset"


def _j(**kw) -> str:
    return json.dumps(kw)


def _scored(replies: list[str], refs=REFS, schema=TICKET, **settings):
    """Task metrics of one model's replies (the checks as eval makes them)."""
    ck = Checker.build(schema, None)
    ref_texts = [json.dumps(r) for r in refs]
    task = build_task(ck.replies.schema, ref_texts, settings.get("task_fields"), settings.get("short_text", 32),
                      settings.get("text_similarity", 0.5))
    checks = [ck.check(r, ref) for r, ref in zip(replies, ref_texts)]
    scores = [score(task, r, c, i) for i, (r, c) in enumerate(zip(replies, checks))]
    return task, checks, scores, summarize_task(task, scores, reference_labels(task))


def test_per_field_accuracy_confusion_and_labels():
    from sacrebleu import sentence_chrf

    replies = [
        json.dumps(REFS[0]),  # all right, the long summary identical
        "```json\n" + json.dumps(REFS[1]) + "\n```",  # fenced: not JSON, 0 on every field
        _j(category="account", priority="high", urgent=False, summary=LONG_SUMMARY),  # priority wrong
        "not json",
    ]
    task, checks, scores, m = _scored(replies)
    assert task.describe() == {"kind": "fields", "headline": "task_accuracy", "prompts": 4,
                               "fields": {"category": "enum", "priority": "enum", "urgent": "boolean", "summary": "text"},
                               "task_fields": ["category", "priority", "urgent"]}
    sim = round(sentence_chrf(LONG_SUMMARY, [REFS[2]["summary"]]).score / 100, 4)
    assert sim == 0.6061  # over the 0.5 threshold: the free-text summary counts as right
    assert m["task_accuracy"] == 0.25  # only prompt 0 has category, priority and urgent all right
    assert m["fields"] == {"category": {"accuracy": 0.5, "similarity": None},
                           "priority": {"accuracy": 0.25, "similarity": None},
                           "urgent": {"accuracy": 0.5, "similarity": None},
                           "summary": {"accuracy": 0.5, "similarity": round((1.0 + 0 + sim + 0) / 4, 4)}}
    assert m["confusion"] == {
        "category": {"billing": {"billing": 1, "(invalid)": 1}, "shipping": {"(invalid)": 1}, "account": {"account": 1}},
        "priority": {"low": {"(invalid)": 2}, "medium": {"high": 1}, "high": {"high": 1}}}
    assert m["labels"] == {"category": {"billing": 1, "shipping": 0, "account": 1, "(invalid)": 2},
                           "priority": {"low": 0, "medium": 0, "high": 2, "(invalid)": 2}}
    assert reference_labels(task) == {"category": {"billing": 2, "shipping": 1, "account": 1},
                                      "priority": {"low": 2, "medium": 1, "high": 1}}
    # category: the 2 valid predictions are split 1/1; priority: both are 'high' while the references are spread
    assert m["collapsed"] == {"priority": "high"}
    assert [failure(task, c, s) for c, s in zip(checks, scores)] == [
        None, "format: reply is not JSON", "wrong fields: priority", "format: reply is not JSON"]
    assert [s.correct for s in scores] == [True, False, False, False]


def test_short_strings_are_exact_and_long_ones_by_similarity():
    short_off = _j(category="shipping", priority="low", urgent=False, summary="Parcel late.")
    task, _, scores, m = _scored([json.dumps(REFS[0]), short_off], refs=REFS[:2], task_fields=["summary"])
    assert task.task_fields == ["summary"]
    assert scores[1].right["summary"] is False and scores[1].text["summary"] == 0.9728  # close, but not equal
    assert m["fields"]["summary"] == {"accuracy": 0.5, "similarity": round((1.0 + 0.9728) / 2, 4)}
    # a raised threshold makes the near miss of a long string wrong; short_text 0 compares every string by chrF
    _, _, scores, _ = _scored([json.dumps(REFS[0]), short_off], refs=REFS[:2], short_text=0, text_similarity=0.99)
    assert scores[1].right["summary"] is False
    _, _, scores, _ = _scored([json.dumps(REFS[0]), short_off], refs=REFS[:2], short_text=0, text_similarity=0.9)
    assert scores[1].right["summary"] is True


def test_numbers_booleans_and_schema_invalid_replies():
    # values compare as JSON: 3 == 3.0, true is not 1; a schema-invalid reply that parses is still scored per field
    schema = {"type": "object", "properties": {"n": {"type": "integer"}, "ok": {"type": "boolean"},
                                               "tags": {"type": "array"}}}
    refs = [{"n": 3, "ok": True, "tags": ["a"]}] * 3
    replies = [_j(n=3.0, ok=True, tags=["a"]), _j(n=3, ok=1, tags=["a"], extra=1), _j(n="3", ok=True)]
    task, checks, scores, m = _scored(replies, refs=refs, schema=schema)
    assert task.task_fields == ["n", "ok"] and task.describe()["fields"] == {"n": "number", "ok": "boolean",
                                                                             "tags": "value"}
    assert [s.right for s in scores] == [{"n": True, "ok": True, "tags": True}, {"n": True, "ok": False, "tags": True},
                                         {"n": False, "ok": True, "tags": False}]
    assert m["task_accuracy"] == 0.3333 and [c.schema_valid for c in checks] == [True, False, False]
    # schema of strings only: every field is a task field
    only_text = {"type": "object", "properties": {"name": {"type": "string"}}}
    assert build_task(only_text, ['{"name": "Bo"}'], None, 32, 0.5).task_fields == ["name"]


def test_task_kind_follows_schema_and_references():
    assert build_task(TICKET, [json.dumps(REFS[0]), None], None, 32, 0.5).kind == "fields"
    assert build_task(TICKET, ["plain words"], None, 32, 0.5).kind == "prose"  # references not JSON
    assert build_task(None, ['{"a": 1}'], None, 32, 0.5).kind == "prose"  # no schema: the reply is text
    assert build_task(TICKET, [None, None], None, 32, 0.5).kind == "format"
    with pytest.raises(UsageError, match=r"task_fields: colour not in the output schema's properties"):
        build_task(TICKET, [json.dumps(REFS[0])], ["colour"], 32, 0.5)
    with pytest.raises(UsageError, match="task_fields category cannot be scored: the references are not all JSON"):
        build_task(TICKET, ["plain words"], ["category"], 32, 0.5)


def test_a_constant_answer_is_collapsed_a_balanced_one_is_not():
    constant = [_j(category="shipping", priority="medium", urgent=False, summary="x")] * 4
    *_, m = _scored(constant)
    assert m["collapsed"] == {"category": "shipping", "priority": "medium"}
    assert m["labels"]["category"] == {"billing": 0, "shipping": 4, "account": 0}
    *_, right = _scored([json.dumps(r) for r in REFS])
    assert right["collapsed"] == {} and right["task_accuracy"] == 1.0
    # 9 of 10 valid predictions one label is collapsed; unparseable replies do not count as predictions
    refs = [dict(REFS[k % 3]) for k in range(12)]
    nine = [json.dumps({**r, "category": "billing"}) for r in refs[:9]] + [json.dumps(refs[10]), "x", "y"]
    *_, m = _scored(nine, refs=refs)
    assert m["collapsed"] == {"category": "billing"} and m["labels"]["category"]["(invalid)"] == 2
    # when the references themselves are mostly one label, answering it is not collapse
    mostly = [dict(REFS[0])] * 3 + [dict(REFS[1])]
    *_, m = _scored([json.dumps(REFS[0])] * 4, refs=mostly)
    assert m["collapsed"] == {}


def test_training_label_distribution():
    task, *_ = build_task(TICKET, [json.dumps(REFS[0])], None, 32, 0.5), None
    rows = [[{"role": "user", "content": "q"}, {"role": "assistant", "content": json.dumps(r)}] for r in REFS]
    rows.append([{"role": "user", "content": "q"}, {"role": "assistant", "content": "```json\n{}\n```"}])
    rows.append([{"role": "user", "content": "q"}, {"role": "assistant", "content": '{"category": "refunds"}'}])
    assert train_labels(task, rows) == {"category": {"billing": 2, "shipping": 1, "account": 1, "(invalid)": 2},
                                        "priority": {"low": 2, "medium": 1, "high": 1, "(invalid)": 2}}


# ---------------------------------------------------------------- comparisons and examples


def test_bootstrap_interval():
    assert bootstrap([1, 0, 1, 1], [1, 0, 1, 1], seed=0) == (0.0, [0.0, 0.0])
    assert bootstrap([1.0] * 30, [0.0] * 30, seed=0) == (1.0, [1.0, 1.0])
    a = [1, 1, 0, 1, 0, 1, 1, 1, 0, 1, 1, 0, 1, 1, 1, 0, 1, 1, 1, 1]
    b = [0, 1, 0, 0, 0, 1, 1, 0, 0, 1, 0, 0, 1, 0, 1, 0, 0, 1, 0, 1]
    diff, ci = bootstrap(a, b, seed=7)
    assert diff == 0.35 and bootstrap(a, b, seed=7) == (diff, ci)
    assert 0.0 < ci[0] < diff < ci[1] < 0.7  # b is never right where a is wrong: the difference is clearly positive
    sims_a = [0.91, 0.35, 0.62, 0.78, 0.44, 0.97, 0.58, 0.71, 0.66, 0.83]
    sims_b = [0.52, 0.41, 0.33, 0.70, 0.12, 0.88, 0.61, 0.45, 0.49, 0.60]
    assert bootstrap(sims_a, sims_b, seed=1) == bootstrap(sims_a, sims_b, seed=1)
    assert bootstrap(sims_a, sims_b, seed=1)[1] != bootstrap(sims_a, sims_b, seed=2)[1]  # another seed, other resamples
    with pytest.raises(UsageError, match="no prompt is scored"):
        bootstrap([], [], seed=0)


def test_comparisons_adapters_against_base_then_named_pairs():
    per = {"base": [0, 0, 0, 0], "raw": [1, 0, 0, 0], "curated": [1, 1, 1, 1]}
    out = comparisons(per, ["base", "raw", "curated"], [("curated", "raw")], "task_accuracy", seed=0)
    assert [(c["a"], c["b"], c["difference"], c["prompts"]) for c in out] == [
        ("raw", "base", 0.25, 4), ("curated", "base", 1.0, 4), ("curated", "raw", 0.75, 4)]
    assert out[1]["ci95"] == [1.0, 1.0] and out[0]["metric"] == "task_accuracy"
    with pytest.raises(UsageError, match=r"compare: \['curated', 'gold'\] is not a pair of evaluated models"):
        comparisons(per, list(per), [["curated", "gold"]], "task_accuracy", seed=0)


def test_examples_show_disagreements_first():
    replies = {"base": ["a", "b", "c", "d", "e"], "run": ["a", "x", "c", "y", "e"]}
    right = {"base": [True, True, False, False, True], "run": [True, False, False, True, True]}
    # 1 and 3: right/wrong differ; 2: both wrong, same reply; 0 and 4: same and right
    assert pick_examples(3, replies, right) == [1, 3, 2]
    assert pick_examples(10, replies, right) == [1, 3, 2, 0, 4]
    assert pick_examples(0, replies, right) == []


def test_adapter_names_on_the_command_line(tmp_path):
    assert adapter_specs(["runs/a", "runs/b/adapter"]) == {"a": "runs/a", "b": "runs/b/adapter"}
    assert adapter_specs(["raw=runs/1", "curated=runs/2"]) == {"raw": "runs/1", "curated": "runs/2"}
    odd = tmp_path / "x=y"
    odd.mkdir()
    assert adapter_specs([str(odd)]) == {"x=y": str(odd)}  # an existing folder is a folder, whatever its name
    with pytest.raises(UsageError, match="the name 'base' is reserved"):
        adapter_specs(["base=runs/1"])
    with pytest.raises(UsageError, match="the name 'raw' is given twice"):
        adapter_specs(["raw=runs/1", "raw=runs/2"])


# ---------------------------------------------------------------- evaluate() with generation replaced


GOOD = '{"name": "B", "age": 1}'


class Calls(list):
    """The fake model's calls, and the replies it gives per adapter (None: the base)."""

    replies: dict
    real_generate: Any


@pytest.fixture
def fake_model(monkeypatch):
    """The embedded tokenizer for real; the model, its generation and its reference losses replaced."""
    from curate import embedded
    from curate.evaluation import model
    from curate.train import threads

    calls = Calls()
    replies = {None: ["x", GOOD, "z"], "a0": [GOOD, "bad", GOOD]}

    def generate(model, tokenizer, prompts, adapter, max_new_tokens, batch_size, advance):
        calls.append((adapter, max_new_tokens, batch_size, len(prompts)))
        advance(len(prompts))
        return replies[adapter][: len(prompts)]

    def reference_loss(model, examples, adapter, batch_size, pad, advance):
        calls.append(("loss", adapter, len(examples)))
        # labelled tokens per example are real (the reference's tokens); the summed loss is made up
        n = [sum(1 for x in e["labels"] if x != -100) for e in examples]
        per_token = {None: 2.0, "a0": 1.0, "a1": 0.5}[adapter]
        return [(per_token * k, k) for k in n]

    monkeypatch.setattr(embedded, "resolve_model", lambda name: str(embedded.embedded_tokenizer_dir()))
    monkeypatch.setattr(model, "load", lambda model_path, dirs: object())
    calls.real_generate = model.generate
    monkeypatch.setattr(model, "generate", generate)
    monkeypatch.setattr(model, "reference_loss", reference_loss)
    # the thread rule on a known machine: two cores, one kept busy elsewhere
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    monkeypatch.setattr(threads, "other_load", lambda: 1.0)
    for name in threads.ENV:
        monkeypatch.delenv(name, raising=False)
    calls.replies = replies
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


KEYS = ["stage", "counts", "balanced", "outputs", "passed", "failure", "config", "models", "checks", "p95_input_tokens",
        "summary", "task", "variants", "comparisons", "examples", "threads", "seconds"]


def test_evaluate_outcome_and_outputs(fake_model, heldout, tmp_path):
    data, run_dir, schema = heldout
    rows, fails = tmp_path / "eval.parquet", tmp_path / "fail.parquet"
    out = evaluate(data, [run_dir], rows, {"output_schema": str(schema), "limit": 3}, failures=fails, max_new_tokens=7)
    assert fake_model == [(None, 7, 8, 3), ("a0", 7, 8, 3)]  # no reference losses for a JSON task
    d = out.to_dict()
    assert list(d) == KEYS
    assert (d["stage"], d["counts"], d["balanced"], d["passed"], d["failure"]) == (
        "eval", {"in": 3, "ok": 2, "failed": 1}, True, True, None)
    assert d["outputs"] == {"rows": str(rows), "failures": str(fails)}
    assert d["config"] == {"base": "embedded", "output_schema": str(schema), "output_regex": None, "max_new_tokens": 7,
                           "limit": 3, "batch_size": 8, "task_fields": None, "short_text": 32, "text_similarity": 0.5,
                           "examples": 5, "seed": 0, "threads": "auto"}
    assert d["models"] == ["base", "run"] and d["checks"] == ["parses", "schema_valid"]
    assert d["threads"] == {"count": 1, "why": "2 usable cores, other processes keeping 1.00 of a core busy: 1 thread"}
    assert list(d["seconds"]) == ["generate"] and isinstance(d["seconds"]["generate"], float)
    base, run = d["summary"]
    assert (base["model"], base["rows"], base["parse_rate"], base["schema_valid_rate"], base["exact_match_rate"]) == (
        "base", 3, 0.3333, 0.3333, 0.3333)
    assert (run["model"], run["ok_rate"], run["p95_rows"], run["p95_ok_rate"], run["regex_rate"]) == ("run", 0.6667, 1, 1.0, None)
    assert d["task"] == {"kind": "fields", "headline": "task_accuracy", "prompts": 3,
                         "fields": {"name": "text", "age": "number"}, "task_fields": ["age"],
                         "labels": {"references": {}, "train": None}}
    vb, vr = d["variants"]
    assert vr == {"model": "run", "data": "run", "round": 1, "task_accuracy": 0.6667, "format_rate": 0.6667,
                  "fields": {"name": {"accuracy": 0.6667, "similarity": 0.6667}, "age": {"accuracy": 0.6667, "similarity": None}},
                  "confusion": {}, "labels": {}, "collapsed": {}, "similarity": vr["similarity"], "loss": None,
                  "perplexity": None}
    assert (vb["model"], vb["data"], vb["task_accuracy"], vb["format_rate"]) == ("base", "base", 0.3333, 0.3333)
    [c] = d["comparisons"]
    assert (c["a"], c["b"], c["metric"], c["difference"], c["prompts"]) == ("run", "base", "task_accuracy", 0.3333, 3)
    # examples: the prompts where base and run disagree on being right come first, then the rest
    assert [e["prompt"] for e in d["examples"]] == ["q", "tell me about Bo", prompts_2 := d["examples"][2]["prompt"]]
    assert prompts_2.startswith("a much longer question")
    assert d["examples"][0] == {"id": d["examples"][0]["id"], "prompt": "q", "reference": GOOD,
                                "replies": {"base": "x", "run": GOOD}, "correct": {"base": False, "run": True}}
    t = pq.read_table(rows)
    assert t.num_rows == 6 and t.column("eval_model").to_pylist() == ["base"] * 3 + ["run"] * 3
    lengths = t.column("eval_input_tokens").to_pylist()[:3]
    assert lengths[0] < lengths[1] < lengths[2] and d["p95_input_tokens"] == lengths[2]
    assert t.column("eval_p95_bucket").to_pylist() == [False, False, True] * 2
    assert t.column("eval_schema_error").to_pylist() == ["reply is not JSON", None, "reply is not JSON", None,
                                                          "reply is not JSON", None]
    assert t.column("eval_task_correct").to_pylist() == [False, True, False, True, False, True]
    seeds = pq.read_table(fails)
    assert seeds.column("id").to_pylist() == [t.column("id")[1].as_py()] and seeds.column("eval_reply").to_pylist() == ["bad"]
    assert seeds.column("eval_failure").to_pylist() == ["format: reply is not JSON"]


def _tickets(tmp_path, n=4):
    data = tmp_path / "tickets.jsonl"
    data.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"ticket {i}"},
                                                     {"role": "assistant", "content": json.dumps(REFS[i])}]}) + "\n"
                            for i in range(n)))
    schema = tmp_path / "ticket.schema.json"
    schema.write_text(json.dumps(TICKET))
    for name in ("raw", "curated"):
        (tmp_path / name / "adapter").mkdir(parents=True)
        (tmp_path / name / "adapter" / "adapter_config.json").write_text("{}")
    return data, schema


def test_named_variants_round_pairs_and_training_labels(fake_model, tmp_path):
    data, schema = _tickets(tmp_path)
    constant = _j(category="shipping", priority="medium", urgent=False, summary="Parcel late")
    fake_model.replies.update({None: ["no"] * 4, "a0": [constant] * 4, "a1": [json.dumps(r) for r in REFS]})
    train = rows_to_table([make_row([{"role": "user", "content": "q"}, {"role": "assistant", "content": constant}])] * 3)
    out = evaluate(data, {"raw": tmp_path / "raw", "curated": tmp_path / "curated"}, config={"output_schema": str(schema)},
                   train_data=train, round=2, compare=[("curated", "raw")])
    d = out.to_dict()
    assert d["models"] == ["base", "raw", "curated"]
    assert [(v["model"], v["data"], v["round"], v["task_accuracy"], v["format_rate"], v["collapsed"])
            for v in d["variants"]] == [("base", "base", 2, 0.0, 0.0, {}),
                                        ("raw", "raw", 2, 0.0, 1.0, {"category": "shipping", "priority": "medium"}),
                                        ("curated", "curated", 2, 1.0, 1.0, {})]
    assert d["task"]["labels"]["train"] == {"category": {"billing": 0, "shipping": 3, "account": 0},
                                            "priority": {"low": 0, "medium": 3, "high": 0}}
    assert [(c["a"], c["b"], c["difference"], c["ci95"]) for c in d["comparisons"]] == [
        ("raw", "base", 0.0, [0.0, 0.0]), ("curated", "base", 1.0, [1.0, 1.0]), ("curated", "raw", 1.0, [1.0, 1.0])]
    assert d["counts"] == {"in": 4, "ok": 0, "failed": 4}  # raw gets every ticket wrong
    # the seeds can be one model's failures: curated gets every ticket right
    only = evaluate(data, {"raw": tmp_path / "raw", "curated": tmp_path / "curated"},
                    config={"output_schema": str(schema)}, failures_of=["curated"])
    assert only.counts == {"in": 4, "ok": 4, "failed": 0}
    with pytest.raises(UsageError, match=r"failures_of: \['gold'\] must name evaluated models \(base, raw\)"):
        evaluate(data, {"raw": tmp_path / "raw"}, config={"output_schema": str(schema)}, failures_of=["gold"])
    # an unknown pair is refused before any model loads
    with pytest.raises(UsageError, match="is not a pair of evaluated models"):
        evaluate(data, {"raw": tmp_path / "raw"}, config={"output_schema": str(schema)}, compare=[("curated", "raw")])


def test_prose_gets_loss_and_similarity_not_json_failures(fake_model, tmp_path):
    data = tmp_path / "prose.jsonl"
    ref = "Air scatters short blue wavelengths more than red ones, so the sky looks blue."
    data.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"Why is the sky blue? ({i})"},
                                                     {"role": "assistant", "content": ref}]}) + "\n" for i in range(3)))
    (tmp_path / "run" / "adapter").mkdir(parents=True)
    (tmp_path / "run" / "adapter" / "adapter_config.json").write_text("{}")
    near = "The sky is blue because air scatters blue light more."
    fake_model.replies.update({None: ["", "Because of the ocean.", ref], "a0": [ref, ref, near]})
    fails = tmp_path / "fail.parquet"
    d = evaluate(data, [tmp_path / "run"], failures=fails).to_dict()
    n = d["task"]["prompts"]
    assert (d["task"]["kind"], d["task"]["headline"], n) == ("prose", "similarity", 3)
    assert [c for c in fake_model if c[0] == "loss"] == [("loss", None, 3), ("loss", "a0", 3)]
    assert list(d["seconds"]) == ["generate", "reference_loss"]
    base, run = d["variants"]
    assert (base["loss"], base["perplexity"], run["loss"], run["perplexity"]) == (2.0, 7.3891, 1.0, 2.7183)
    assert base["task_accuracy"] is None and base["fields"] == {} and base["format_rate"] == 0.6667  # the empty reply
    assert run["similarity"] == round((1 + 1 + 0.3008) / 3, 4) and run["format_rate"] == 1.0
    [c] = d["comparisons"]
    assert (c["metric"], c["difference"]) == ("similarity", round(run["similarity"] - base["similarity"], 4))
    # not JSON is no failure: the adapter fails only the prompt whose reply is far from the reference
    seeds = pq.read_table(fails)
    assert seeds.num_rows == 1 == d["counts"]["failed"]
    assert seeds.column("eval_failure").to_pylist() == ["similarity 0.30 < 0.5"]
    # without references only the format is measured: nothing prose fails but an empty reply
    bare = tmp_path / "bare.jsonl"
    bare.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"q{i}"}]}) + "\n" for i in range(3)))
    d = evaluate(bare, [tmp_path / "run"], failures=fails).to_dict()
    assert (d["task"]["kind"], d["task"]["headline"], d["counts"]) == ("format", "format_rate", {"in": 3, "ok": 3, "failed": 0})
    assert d["variants"][0]["loss"] is None and d["comparisons"][0]["metric"] == "format_rate"


def test_cli_eval_json_and_table(fake_model, heldout, tmp_path):
    data, run_dir, schema = heldout
    args = ["eval", "--data", str(data), "--adapter", f"tuned={run_dir}", "--output-schema", str(schema), "--limit", "3",
            "--batch-size", "2", "--failures", str(tmp_path / "f.parquet"), "--examples", "2"]
    res = CliRunner().invoke(cli, [*args, "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["counts"] == {"in": 3, "ok": 2, "failed": 1} and doc["outputs"] == {"failures": str(tmp_path / "f.parquet")}
    assert doc["config"]["batch_size"] == 2 and fake_model[0] == (None, 256, 2, 3)
    assert [v["model"] for v in doc["variants"]] == ["base", "tuned"] and len(doc["examples"]) == 2
    assert [(c["a"], c["b"], c["difference"]) for c in doc["comparisons"]] == [("tuned", "base", 0.3333)]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0
    shown = _flat(res)
    assert f"1 failing prompt(s) written to {tmp_path / 'f.parquet'} (seeds for `curate synth`)" in shown
    assert f"3 prompts; P95 input length {doc['p95_input_tokens']} tokens (1 rows at or above)" in shown
    lo, hi = doc["comparisons"][0]["ci95"]
    assert f"tuned vs base: task accuracy +33.3 pts (95% CI {lo * 100:+.1f} pts to {hi * 100:+.1f} pts, 3 prompts" in shown
    lines = res.output.splitlines()
    cells = [[c.strip() for c in line.split("│")[1:-1]] for line in lines if line.startswith("│")]
    heads = [[c.strip() for c in line.split("┃")[1:-1]] for line in lines if line.startswith("┃")]
    # the headline first: task accuracy, then per-field accuracy; then the format rates as before
    assert "3 prompts with a reference; task accuracy: age all right" in shown
    assert heads[0] == ["model", "task accuracy", "name", "age", "format"]
    assert cells[:2] == [["base", "33.3%", "33.3%", "33.3%", "33.3%"], ["tuned", "66.7%", "66.7%", "66.7%", "66.7%"]]
    assert heads[1] == ["model", "parses", "schema", "exact", "parses P95", "schema P95", "exact P95"]
    assert cells[2:4] == [["base", "33.3%", "33.3%", "33.3%", "0.0%", "0.0%", "0.0%"],
                          ["tuned", "66.7%", "66.7%", "66.7%", "100.0%", "100.0%", "100.0%"]]
    # side by side: prompt, reference, each model's reply (✗ marks a wrong one); disagreements first
    assert heads[2] == ["prompt", "reference", "base", "tuned"]  # no label table: the schema has no enum
    assert [c[0] for c in cells[4:] if c[0]] == ["q", "tell me about Bo"]
    first, second = [c[2:] for c in cells[4:] if c[0]]
    assert first[0] == "✗ x" and second[1] == "✗ bad" and first[1].startswith('{"name"') and second[0].startswith('{"name"')


def _table_after(output: str, title: str) -> tuple[list[str], list[list[str]]]:
    """The header cells and the row cells of the rich table printed under `title`."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == title)
    head, rows = None, []
    for line in lines[start + 1:]:
        if line.startswith("┃"):
            head = [c.strip() for c in line.split("┃")[1:-1]]
        elif line.startswith("│"):
            rows.append([c.strip() for c in line.split("│")[1:-1]])
        elif line.startswith("└"):
            return head, rows
    raise AssertionError(f"no table under {title!r}")


def test_cli_prints_collapse_in_red(fake_model, tmp_path, monkeypatch):
    import io

    from rich.console import Console

    from curate.evaluation import render

    data, schema = _tickets(tmp_path)
    constant = _j(category="shipping", priority="medium", urgent=False, summary="Parcel late")
    fake_model.replies.update({None: ["no"] * 4, "a0": [constant] * 4})
    train = tmp_path / "train.jsonl"
    train.write_text(json.dumps({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": constant}]})
                     + "\n")
    res = CliRunner().invoke(cli, ["eval", "--data", str(data), "--adapter", f"raw={tmp_path / 'raw'}",
                                   "--output-schema", str(schema), "--train-data", str(train)])
    assert res.exit_code == 0, res.output
    shown = _flat(res)
    # label counts per enum field: the training data's, the references', each model's
    head, rows = _table_after(res.output, "category: label counts")
    assert head == ["category", "billing", "shipping", "account", "(invalid)"]
    assert rows == [["training data", "0", "1", "0", "0"], ["references", "2", "1", "1", "0"],
                    ["base", "0", "0", "0", "4"], ["raw", "0", "4", "0", "0"]]
    assert _table_after(res.output, "priority: label counts")[1][-1] == ["raw", "0", "4", "0", "0"]
    assert "raw collapsed on category: answers 'shipping' to nearly every prompt" in shown
    assert "raw collapsed on priority: answers 'medium' to nearly every prompt" in shown
    assert "base collapsed" not in shown  # no valid prediction at all is not a collapse
    # the same lines on a colour terminal are bold red
    term = Console(file=io.StringIO(), force_terminal=True, color_system="standard", width=200)
    monkeypatch.setattr(render, "console", term)
    render.render_eval(evaluate(data, {"raw": tmp_path / "raw"}, output_schema=str(schema)))
    red = [line for line in term.file.getvalue().splitlines() if "collapsed on category" in line]
    assert len(red) == 1 and red[0].startswith("\x1b[1;31m")


# ---------------------------------------------------------------- the real embedded model on prose

PROSE = [
    ("Why is the sky blue?", "Air scatters short blue wavelengths of sunlight more than red ones, so the sky looks blue."),
    ("What does a bee make?", "Bees make honey from the nectar of flowers, and wax for their combs."),
    ("Name a planet with rings.", "Saturn is the best-known planet with rings."),
]


@pytest.mark.slow
def test_prose_loss_and_similarity_with_the_embedded_model(tmp_path):
    """Reference loss as training computes it, equal under the base and a zero-initialised LoRA adapter."""
    import math

    import torch
    from peft import LoraConfig, get_peft_model
    from sacrebleu import sentence_chrf
    from transformers import AutoModelForCausalLM

    from curate.embedded import load_tokenizer, resolve_model
    from curate.inputs import open_input
    from curate.train.data import tokenize_table

    before = torch.get_num_threads()
    torch.set_num_threads(1)  # two OpenMP threads on a busy 2-core machine wait on each other
    try:
        data = tmp_path / "prose.jsonl"
        data.write_text("".join(json.dumps({"messages": [{"role": "system", "content": "Answer in one sentence."},
                                                         {"role": "user", "content": q},
                                                         {"role": "assistant", "content": a}]}) + "\n" for q, a in PROSE))
        path = resolve_model("embedded")
        base = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
        # LoRA's B starts at zero: this adapter changes nothing, so it must score exactly as the base
        get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")).save_pretrained(
            tmp_path / "zero" / "adapter")
        fails = tmp_path / "fail.parquet"
        d = evaluate(data, {"zero": tmp_path / "zero"}, failures=fails, max_new_tokens=24, examples=3).to_dict()
        assert (d["task"]["kind"], d["task"]["headline"], d["checks"]) == ("prose", "similarity", ["parses"])
        b, z = d["variants"]
        assert b["loss"] == z["loss"] and b["perplexity"] == z["perplexity"] and b["similarity"] == z["similarity"]
        assert [(c["a"], c["b"], c["metric"], c["difference"], c["ci95"]) for c in d["comparisons"]] == [
            ("zero", "base", "similarity", 0.0, [0.0, 0.0])]
        # the loss is training's: the assistant reply's tokens only (tokenize_table's labels), token-weighted
        tok = load_tokenizer(path)
        examples, _ = tokenize_table(open_input(data).read(), tok, "prose")
        base = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
        total = tokens = 0.0
        with torch.no_grad():
            for e in examples:
                n = sum(1 for x in e["labels"][1:] if x != -100)
                total += base(input_ids=torch.tensor([e["input_ids"]]), labels=torch.tensor([e["labels"]])).loss.item() * n
                tokens += n
        assert b["loss"] == pytest.approx(total / tokens, abs=2e-4)
        assert b["perplexity"] == pytest.approx(math.exp(b["loss"]), rel=1e-3) and b["loss"] > 0.5
        # similarity is chrF of each reply against its reference
        sims = {e["id"]: sentence_chrf(e["replies"]["base"].strip(), [e["reference"]]).score / 100 for e in d["examples"]}
        assert len(sims) == 3 and b["similarity"] == pytest.approx(sum(sims.values()) / 3, abs=2e-4)
        # prose is not JSON, and that fails nothing: only a reply far from its reference does
        seeds = pq.read_table(fails).column("eval_failure").to_pylist()
        assert sorted(seeds) == sorted(f"similarity {s:.2f} < 0.5" for s in sims.values() if s < 0.5)
    finally:
        torch.set_num_threads(before)


def test_progress_advances_per_batch_and_names_the_model(fake_model, heldout, tmp_path, monkeypatch):
    """lm.generate advances the bar once per batch; evaluate() names the model replying on the bar."""
    from contextlib import contextmanager, nullcontext

    import torch

    from curate.embedded import embedded_tokenizer_dir, load_tokenizer
    from curate.evaluation import stage

    real_generate = fake_model.real_generate
    shown: list[tuple] = []

    @contextmanager
    def fake_progress(description, total=None, unit="records"):
        shown.append(("open", description, total, unit))
        yield lambda n=1, **fields: shown.append((n, fields))

    monkeypatch.setattr(stage, "progress", fake_progress)
    data, run_dir, _ = heldout
    evaluate(data, [run_dir], limit=3)
    assert shown == [("open", "generating", 6, "replies"), (0, {"description": "generating: base"}), (3, {}),
                     (0, {"description": "generating: run"}), (3, {}),
                     # no schema: a prose task, whose reference replies are scored too
                     ("open", "scoring references", 6, "replies"), (0, {"description": "scoring references: base"}),
                     (0, {"description": "scoring references: run"})]

    class TwoTokens:
        """Replies with two tokens after each prompt."""

        def parameters(self):
            yield torch.zeros(1)

        def disable_adapter(self):
            return nullcontext()

        def generate(self, input_ids, attention_mask, max_new_tokens, **kw):
            return torch.cat([input_ids, torch.full((input_ids.shape[0], 2), 28)], dim=1)

    steps: list[int] = []
    tok = load_tokenizer(str(embedded_tokenizer_dir()))
    replies = real_generate(TwoTokens(), tok, [[1, 2, 3], [1], [1, 2], [4, 5, 6, 7], [8]], None, 2, 2, steps.append)
    assert steps == [2, 2, 1] and replies == [tok.decode([28, 28])] * 5
