"""curate report on small planted tables (TF-IDF embeddings): structure, gates, JSON schema, HTML, gaps, drift."""

from __future__ import annotations

import json
import random
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from curate.cli import cli
from curate.dataset import CANONICAL_COLUMNS, make_row, rows_to_table, write_table
from curate.errors import UsageError
from curate.recipe import load_schema
from curate.report import ReportConfig, report
from curate.report.features import language_of, psi
from curate.report.gates import parse_gate

TOPICS = {
    "cooking": (["How do I bake", "What is a good recipe for", "How long should I roast", "Can I freeze"],
                ["sourdough bread", "chocolate cake", "roast chicken", "vegetable soup", "banana muffins", "lasagna"]),
    "travel": (["What should I pack for a trip to", "Is it safe to visit", "What is the best season to visit",
                "Plan a weekend itinerary for"], ["Lisbon", "Kyoto", "Patagonia", "Iceland", "Morocco", "Vancouver"]),
    "code": (["Write a Python function that", "Fix the bug in this JavaScript code that",
              "Write a SQL query that", "Implement a recursive algorithm that"],
             ["reverses a linked list", "sorts an array of integers", "parses a JSON string",
              "counts distinct values in a table column", "computes fibonacci numbers", "merges two sorted arrays"]),
}


def planted(topics: dict[str, int], seed: int, system: str | None = None, tools: bool = False) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for topic, n in topics.items():
        heads, tails = TOPICS[topic]
        for i in range(n):
            q = f"{rng.choice(heads)} {rng.choice(tails)}? (variant {rng.randint(0, 10_000)})"
            msgs = ([{"role": "system", "content": system}] if system else []) + [
                {"role": "user", "content": q},
                {"role": "assistant", "content": " ".join([f"Step {j}: {topic} answer." for j in range(1 + i % 7)])},
            ]
            if tools and i % 4 == 0:
                msgs.insert(-1, {"role": "assistant", "content": None, "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": "{\"q\": 1}"}}]})
                msgs.insert(-1, {"role": "tool", "content": "42", "tool_call_id": "c1"})
            rows.append(make_row(msgs, tools='[{"type": "function", "function": {"name": "lookup"}}]' if tools else None,
                                 origin="production"))
    return rows


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("report")
    sets = {
        "train": planted({"cooking": 120, "travel": 120}, seed=1, system="You are a helpful assistant."),
        "prod": planted({"cooking": 80, "travel": 80, "code": 90}, seed=2, tools=True),
        "half": None,
    }
    out = {}
    for name, rows in sets.items():
        if rows is None:
            continue
        out[name] = write_table(rows_to_table(rows), d / f"{name}.parquet")
    prod = pq.read_table(out["prod"])
    pick = np.sort(np.random.default_rng(0).permutation(prod.num_rows)[: prod.num_rows // 2])
    out["half"] = write_table(prod.take(pick), d / "half.parquet")
    return out


@pytest.fixture(scope="module")
def rep(files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory):
    d = tmp_path_factory.mktemp("out")
    return report(files["train"], files["prod"], embedder="tfidf", html=d / "r.html", gaps=d / "gaps.parquet"), d


def run(*args: str):
    return CliRunner().invoke(cli, ["report", *args], catch_exceptions=False)


def doc(outcome) -> dict:
    """The report document (schemas/report.schema.json) inside the outcome."""
    return outcome.to_dict()["report"]


def test_gate_parsing():
    g = parse_gate(" uncovered_share >= 10% ")
    assert (g.metric, g.op, g.threshold) == ("uncovered_share", ">=", 0.1)
    assert parse_gate("p95_ratio>1.5").check({"p95_ratio": 2.0})["failed"] is True
    assert parse_gate("p95_ratio>1.5").check({"p95_ratio": 1.5})["failed"] is False
    for bad in ("p95_ratio>>1", "p95_ratio", "__import__('os')>1", "p95_ratio>1 or 1", "nope>1"):
        with pytest.raises(UsageError):
            parse_gate(bad)
    with pytest.raises(UsageError, match="not computed"):
        parse_gate("drift_max_psi>0.2").check({"drift_max_psi": None})


def test_psi_and_language():
    rng = np.random.default_rng(0)
    a = rng.normal(100, 10, 2000)
    assert psi(a, rng.normal(100, 10, 2000)) < 0.05
    assert psi(a, rng.normal(140, 10, 2000)) > 1.0
    assert language_of("How do I bake sourdough bread at home?") == "en"
    assert language_of("如何在家里烤面包？我想学习做酸面包。") == "zh"
    assert language_of("Как испечь хлеб дома? Подскажите рецепт.") == "cyrillic"
    assert language_of("   ") == "empty"


def test_structure_counts(rep):
    r, _ = rep
    s = doc(r)["structure"]
    assert s["train"]["count"] == 240 and s["production"]["count"] == 250
    assert s["train"]["system_prompts"] == {"records_with_system": 240, "distinct": 1,
                                             "top": [{"text": "You are a helpful assistant.", "count": 240}]}
    assert s["production"]["tool_use"]["records_with_tool_calls"] == sum(n // 4 + (n % 4 > 0) for n in (80, 80, 90))
    assert s["production"]["roles"]["tool"] == s["production"]["tool_use"]["tool_calls"]
    toks = s["train"]["tokens"]["assistant_tokens"]
    assert 0 < toks["p50"] <= toks["p95"] <= toks["p99"] <= toks["max"]
    assert s["train"]["tokens"]["system_tokens"]["p50"] > 0 and s["production"]["tokens"]["system_tokens"]["max"] == 0
    assert any("under 500" in w for w in doc(r)["warnings"])


def test_planted_code_cluster_is_the_gap(rep, files):
    r, d = rep
    gaps = pq.read_table(d / "gaps.parquet")
    texts = [m[0]["content"] for m in gaps.column("messages").to_pylist()]
    code_heads = tuple(TOPICS["code"][0])
    assert gaps.num_rows >= 80 and sum(t.startswith(code_heads) for t in texts) / len(texts) >= 0.9
    assert gaps.column_names[: len(CANONICAL_COLUMNS)] == list(CANONICAL_COLUMNS)
    assert {"report_cluster", "report_cluster_label", "report_nn_distance", "report_coverage_ratio"} <= set(gaps.column_names)
    prod = pq.read_table(files["prod"])
    assert set(gaps.column("id").to_pylist()) <= set(prod.column("id").to_pylist())
    m = doc(r)["metrics"]
    assert 0.3 <= m["uncovered_share"] <= 0.45  # 90 of 250 production rows are code
    # code (36% of production) is perfectly separable, the rest is not: AUC about 0.5 + 0.36 / 2
    assert 0.6 < m["domain_auc"] < 0.8
    assert r.counts["gap_rows"] == gaps.num_rows == r.gap_table.num_rows


def test_json_matches_schema_and_is_deterministic(rep, files):
    from jsonschema import Draft202012Validator

    r, _ = rep
    schema = load_schema("report")
    Draft202012Validator.check_schema(schema)
    Draft202012Validator(schema).validate(doc(r))
    again = report(files["train"], files["prod"], {"embedder": "tfidf"})  # a recipe's mapping
    assert json.dumps(doc(again), sort_keys=True) == json.dumps(doc(r), sort_keys=True)
    # `curate report --json` prints exactly that document
    res = run(str(files["train"]), "--production", str(files["prod"]), "--embedder", "tfidf", "--json")
    assert res.exit_code == 0
    Draft202012Validator(schema).validate(json.loads(res.stdout))
    assert json.loads(res.stdout) == json.loads(json.dumps(doc(r)))


def test_outcome_to_dict(rep, files):
    r, d = rep
    out = r.to_dict()
    assert list(out) == ["stage", "counts", "balanced", "outputs", "passed", "failure", "config", "report"]
    assert (out["stage"], out["balanced"], out["passed"], out["failure"]) == ("report", True, True, None)
    assert out["counts"] == {"train": 240, "production": 250, "gap_rows": r.gap_table.num_rows}
    assert out["outputs"] == {"html": str(d / "r.html"), "gaps": str(d / "gaps.parquet")}
    assert out["config"] == {"tokenizer": "embedded", "fail_on": [], "embedder": "tfidf", "k": None,
                             "gap_ratio": 0.25, "seed": 0, "redact": False, "workers": None,
                             "embed_sample": 20_000}
    assert out["report"]["settings"]["tokenizer"] == "embedded" and out["report"]["settings"]["gap_ratio"] == 0.25
    assert out["report"]["inputs"]["train"] == {"path": str(files["train"]), "sha256": out["report"]["inputs"]["train"]["sha256"],
                                                "rows": 240}
    assert len(out["report"]["inputs"]["train"]["sha256"]) == 64 and out["report"]["inputs"]["baseline"] is None
    json.dumps(out)  # JSON-able as it is


def test_failed_gates_are_the_failure(files):
    r = report(files["train"], files["prod"], embedder="tfidf", fail_on=["uncovered_share>10%", "p95_ratio>5", "gap_clusters>=1"])
    assert r.failure == "2 gate(s) failed: uncovered_share>10%, gap_clusters>=1"
    assert r.to_dict()["passed"] is False and doc(r)["passed"] is False
    assert [g["failed"] for g in doc(r)["gates"]] == [True, False, True]
    assert r.outputs == {} and r.counts["gap_rows"] == r.gap_table.num_rows


def test_settings_are_checked_before_any_work(files, tmp_path):
    for bad, where in (({"k": 0}, "k:"), ({"gap_ratio": 0}, "gap_ratio:"), ({"gap_ratio": 1.5}, "gap_ratio:"),
                       ({"seed": -1}, "seed:"), ({"embedder": "bert"}, "embedder:"), ({"fail_on": ["nope>1"]}, "unknown metric"),
                       ({"gap_ratoi": 0.3}, "did you mean 'gap_ratio'")):
        with pytest.raises(UsageError, match=where):
            report(files["train"], files["prod"], bad, gaps=tmp_path / "g.parquet")
    assert not (tmp_path / "g.parquet").exists()
    with pytest.raises(UsageError, match="no such file"):
        report(tmp_path / "missing.parquet", files["prod"], embedder="tfidf")


def test_cli_options_follow_the_config():
    import click

    cmd = cli.commands["report"]
    params = {p.name: p for p in cmd.params}
    for name, info in ReportConfig.model_fields.items():
        p = params[name]
        assert "--" + name.replace("_", "-") in p.opts and p.default is None, name
        assert p.help.startswith(info.description), name
    assert params["k"].opts == ["--k", "-k"] and (params["k"].type.min, params["k"].type.max) == (1, None)
    assert (params["gap_ratio"].type.min, params["gap_ratio"].type.max, params["gap_ratio"].type.min_open) == (0, 1, True)
    assert (params["seed"].type.min, params["seed"].type.max) == (0, None)
    assert tuple(params["embedder"].type.choices) == ("auto", "minilm", "tfidf")
    assert params["fail_on"].multiple is True and params["fail_on"].metavar == "EXPR"
    assert isinstance(params["tokenizer"].type, click.types.StringParamType)
    shown = " ".join(CliRunner().invoke(cli, ["report", "--help"]).output.split())
    for flag in ("--tokenizer", "--fail-on EXPR", "--embedder [auto|minilm|tfidf]", "-k, --k INTEGER RANGE",
                 "--gap-ratio FLOAT RANGE", "[0<x<=1]", "--seed INTEGER RANGE", "[default: embedded]"):
        assert flag in shown, flag
    for args, problem in ((["-k", "0"], "0 is not in the range x>=1"), (["--gap-ratio", "0"], "0 is not in the range 0<x<=1"),
                          (["--embedder", "bert"], "'bert' is not one of")):
        res = run("--production", "p.parquet", *args)
        assert res.exit_code == 2 and problem in res.output, res.output


class _Collector(HTMLParser):
    def __init__(self):
        super().__init__()
        self.imgs, self.external = [], []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.imgs.append(a.get("src", ""))
        if tag in ("script", "link") or (tag == "img" and not a.get("src", "").startswith("data:")):
            self.external.append(tag)


def test_html_parses_and_holds_its_plots(rep):
    _, d = rep
    text = (d / "r.html").read_text()
    p = _Collector()
    p.feed(text)
    p.close()
    assert len(p.imgs) == 3 and all(s.startswith("data:image/png;base64,") and len(s) > 5000 for s in p.imgs)
    assert p.external == []
    assert "GAP" in text and "Fix the bug in this JavaScript code" in text


def test_half_of_production_covers_it(files):
    r = report(files["half"], files["prod"], embedder="tfidf")
    assert doc(r)["metrics"]["uncovered_share"] == 0.0 and doc(r)["gaps"] == []
    assert doc(r)["metrics"]["domain_auc"] < 0.7
    assert r.counts["gap_rows"] == 0 and r.gap_table.num_rows == 0


def test_cli_gates_exit_codes_and_json(files, tmp_path):
    base = [str(files["train"]), "--production", str(files["prod"]), "--embedder", "tfidf", "--json"]
    ok = run(*base, "--fail-on", "uncovered_share>0.9", "--fail-on", "p95_ratio>5")
    assert ok.exit_code == 0, ok.output
    doc = json.loads(ok.stdout)
    assert doc["passed"] is True and [g["failed"] for g in doc["gates"]] == [False, False]
    bad = run(*base, "--fail-on", "uncovered_share>10%")
    assert bad.exit_code == 1 and json.loads(bad.stdout)["passed"] is False
    assert "1 gate(s) failed: uncovered_share>10%" in bad.stderr
    malformed = run(*base, "--fail-on", "uncovered_share => 1")
    assert malformed.exit_code == 2 and "METRIC OP NUMBER" in malformed.stderr
    unknown = run(*base, "--fail-on", "coverage<1")
    assert unknown.exit_code == 2 and "unknown metric" in unknown.stderr
    assert run(str(files["train"]), "--gaps", str(tmp_path / "g.parquet")).exit_code == 2
    assert run("--baseline", str(files["train"])).exit_code == 2


def test_cli_terminal_summary(files, tmp_path):
    gaps = tmp_path / "g.parquet"
    res = run(str(files["train"]), "--production", str(files["prod"]), "--embedder", "tfidf", "--gaps", str(gaps))
    assert res.exit_code == 0
    assert "coverage:" in res.stderr and "GAP" in res.stderr and "train vs production" in res.stderr
    assert f"{pq.read_metadata(gaps).num_rows} gap rows -> {gaps}" in " ".join(res.stderr.split())


def test_drift_names_what_moved(files, tmp_path):
    new = write_table(rows_to_table(planted({"cooking": 60, "travel": 60, "code": 100}, seed=5)), tmp_path / "new.parquet")
    old = write_table(rows_to_table(planted({"cooking": 110, "travel": 110}, seed=6)), tmp_path / "old.parquet")
    res = run("--production", str(new), "--baseline", str(old), "--embedder", "tfidf", "--json",
              "--fail-on", "drift_emerged_share>0.2", "-o", str(tmp_path / "drift.html"))
    assert res.exit_code == 1
    doc = json.loads(res.stdout)
    dr = doc["drift"]
    assert doc["coverage"] is None and doc["structure"].keys() == {"production", "baseline"}
    assert 0.35 <= dr["emerged_share"] <= 0.55 and dr["vanished_share"] == 0.0
    assert any(m.startswith("new kind of request") and any(w in m for w in ("python", "sql", "code", "write"))
               for m in dr["moved"]), dr["moved"]
    same = run("--production", str(old), "--baseline", str(old), "--embedder", "tfidf", "--json")
    assert json.loads(same.stdout)["drift"]["moved"] == []


def test_reply_less_production_is_compared_on_what_both_sides_have(files, tmp_path):
    """Production samples usually hold only the request: no false alarm from the missing replies."""
    import pyarrow as pa

    rows = planted({"cooking": 80, "travel": 80, "code": 90}, seed=2)
    table = rows_to_table(rows)  # validated without an output format: the compliance column is all null
    train = write_table(table.append_column("validate_compliant", pa.nulls(table.num_rows, pa.bool_())),
                        tmp_path / "train.parquet")
    for row in rows:  # the same requests, without the replies
        row["messages"] = [m for m in row["messages"] if m["role"] != "assistant"]
    bare = write_table(rows_to_table(rows), tmp_path / "bare.parquet")
    d = doc(report(train, bare, embedder="tfidf"))
    compared = {f["feature"] for f in d["comparison"]["features"]}
    skipped = {s["feature"]: s["why"] for s in d["comparison"]["skipped"]}
    assert "assistant_tokens" not in compared and "total_tokens" not in compared and "prompt_tokens" in compared
    assert skipped["assistant_tokens"] == "production has no assistant messages"
    assert skipped["total_tokens"].startswith("production has no assistant replies")
    assert skipped["system_tokens"] == "train has no system messages"
    assert d["metrics"]["max_ks"] == 0.0 and d["metrics"]["max_psi"] == 0.0  # the requests are the same
    assert d["metrics"]["p95_ratio_total"] is None
    # never validated for format: "not checked", not 0%
    assert d["structure"]["train"]["format_compliance"] is None


def test_preference_pairs_length_bias(shared_data, tmp_path):
    """LLaMA-Factory's DPO demo: the chosen reply is the longer one in 43.7% of 300 pairs (validate agrees)."""
    out = report(shared_data / "hiyouga__LLaMA-Factory__dpo_en_demo.json", embedder="tfidf", html=tmp_path / "r.html")
    pref = doc(out)["structure"]["train"]["preference"]
    assert (pref["pairs"], pref["chosen_longer_share"], pref["rejected_longer_share"]) == (300, 0.4367, 0.56)
    assert pref["median_length_ratio"] == 0.9114 and pref["ratio_histogram"]["pairs"] == [36, 26, 69, 78, 52, 20, 19]
    assert "Length bias of preference pairs" not in (tmp_path / "r.html").read_text()  # a plot: its title is drawn
    assert (tmp_path / "r.html").read_text().count("data:image/png") == 2  # lengths, then the pairs' length bias
    assert doc(report(files_rows(tmp_path), embedder="tfidf"))["structure"]["train"]["preference"] is None


def files_rows(tmp_path):
    return write_table(rows_to_table(planted({"cooking": 10}, seed=4)), tmp_path / "plain.parquet")


def test_history_of_dated_snapshots(files, tmp_path):
    """Three monthly snapshots, oldest first, then production: one drift step each, and a trend plot."""
    from jsonschema import Draft202012Validator

    months = {"2026-09.parquet": {"cooking": 80, "travel": 80}, "2026-10.parquet": {"cooking": 70, "travel": 70, "code": 20},
              "2026-11.parquet": {"cooking": 50, "travel": 50, "code": 60}}
    snaps = [write_table(rows_to_table(planted(t, seed=10 + k)), tmp_path / name) for k, (name, t) in enumerate(months.items())]
    res = CliRunner().invoke(cli, ["report", str(files["train"]), "--production", str(files["prod"]), "--embedder", "tfidf",
                                   *[a for s in snaps for a in ("--baseline", str(s))], "-o", str(tmp_path / "r.html"),
                                   "--json"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout)
    Draft202012Validator(load_schema("report")).validate(d)
    steps = d["history"]
    assert [(Path(s["from"]).name, Path(s["to"]).name) for s in steps] == [
        ("2026-09.parquet", "2026-10.parquet"), ("2026-10.parquet", "2026-11.parquet"), ("2026-11.parquet", "prod.parquet")]
    # code requests appear in October (12%) and grow in November (38%): that step finds them as a new kind of request
    assert steps[1]["emerged_share"] > 0.15 and steps[1]["emerged_share"] == max(s["emerged_share"] for s in steps)
    assert steps[0]["moved"] >= 1
    assert d["inputs"]["baseline"]["path"] == str(snaps[-1]) and d["drift"] is not None  # drift: the last snapshot
    assert "History: drift from snapshot to snapshot" in (tmp_path / "r.html").read_text()
    one = json.loads(CliRunner().invoke(cli, ["report", str(files["train"]), "--production", str(files["prod"]),
                                              "--embedder", "tfidf", "--baseline", str(snaps[0]), "--json"]).stdout)
    assert one["history"] is None and one["drift"] is not None
