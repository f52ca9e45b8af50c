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
from curate.report import report
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
    s = r.json()["structure"]
    assert s["train"]["count"] == 240 and s["production"]["count"] == 250
    assert s["train"]["system_prompts"] == {"records_with_system": 240, "distinct": 1,
                                             "top": [{"text": "You are a helpful assistant.", "count": 240}]}
    assert s["production"]["tool_use"]["records_with_tool_calls"] == sum(n // 4 + (n % 4 > 0) for n in (80, 80, 90))
    assert s["production"]["roles"]["tool"] == s["production"]["tool_use"]["tool_calls"]
    toks = s["train"]["tokens"]["assistant_tokens"]
    assert 0 < toks["p50"] <= toks["p95"] <= toks["p99"] <= toks["max"]
    assert s["train"]["tokens"]["system_tokens"]["p50"] > 0 and s["production"]["tokens"]["system_tokens"]["max"] == 0
    assert any("under 500" in w for w in r.json()["warnings"])


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
    assert 0.3 <= r.metrics["uncovered_share"] <= 0.45  # 90 of 250 production rows are code
    # code (36% of production) is perfectly separable, the rest is not: AUC about 0.5 + 0.36 / 2
    assert 0.6 < r.metrics["domain_auc"] < 0.8


def test_json_matches_schema_and_is_deterministic(rep, files):
    from jsonschema import Draft202012Validator

    r, _ = rep
    schema = load_schema("report")
    Draft202012Validator.check_schema(schema)
    Draft202012Validator(schema).validate(r.json())
    again = report(files["train"], files["prod"], embedder="tfidf")
    assert json.dumps(again.json(), sort_keys=True) == json.dumps(r.json(), sort_keys=True)


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
    assert r.metrics["uncovered_share"] == 0.0 and r.json()["gaps"] == []
    assert r.metrics["domain_auc"] < 0.7


def test_cli_gates_exit_codes_and_json(files, tmp_path):
    base = [str(files["train"]), "--production", str(files["prod"]), "--embedder", "tfidf", "--json"]
    ok = run(*base, "--fail-on", "uncovered_share>0.9", "--fail-on", "p95_ratio>5")
    assert ok.exit_code == 0, ok.output
    doc = json.loads(ok.stdout)
    assert doc["passed"] is True and [g["failed"] for g in doc["gates"]] == [False, False]
    bad = run(*base, "--fail-on", "uncovered_share>10%")
    assert bad.exit_code == 1 and json.loads(bad.stdout)["passed"] is False
    assert "gate(s) failed" in bad.stderr
    malformed = run(*base, "--fail-on", "uncovered_share => 1")
    assert malformed.exit_code == 2 and "METRIC OP NUMBER" in malformed.stderr
    unknown = run(*base, "--fail-on", "coverage<1")
    assert unknown.exit_code == 2 and "unknown metric" in unknown.stderr
    assert run(str(files["train"]), "--gaps", str(tmp_path / "g.parquet")).exit_code == 2
    assert run("--baseline", str(files["train"])).exit_code == 2


def test_cli_terminal_summary(files):
    res = run(str(files["train"]), "--production", str(files["prod"]), "--embedder", "tfidf")
    assert res.exit_code == 0
    assert "coverage:" in res.stderr and "GAP" in res.stderr and "train vs production" in res.stderr


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
