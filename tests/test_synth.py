"""curate synth against the fault-injecting fake server: no row lost or duplicated, bounded retries, cache, budget."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from curate.cli import cli
from curate.dataset import read_dataset
from curate.errors import RecipeError, UsageError
from curate.synth import RetryPolicy, load_synth_recipe, synthesize
from tests.fakeserver import FakeServer, reply_content

FAST = RetryPolicy(max_retries=4, base=0.01, cap=0.05)
ROOT = Path(__file__).resolve().parents[1]


def write_seeds(path: Path, n: int, marker_at: int | None = None) -> Path:
    with path.open("w") as f:
        for i in range(n):
            text = f"Seed question number {i}: explain topic {i}." + (" FAILME" if i == marker_at else "")
            f.write(json.dumps({"messages": [{"role": "user", "content": text}], "topic": f"t{i}"}) + "\n")
    return path


def recipe(**over) -> dict:
    r = {"name": "t", "prompt": "Answer: {{ prompt }} ({{ topic }}) #{{ index }}", "max_tokens": 50,
         "temperature": 0.5, "examples_per_seed": 2}
    r.update(over)
    return r


@pytest.fixture
def server():
    with FakeServer() as srv:
        yield srv


def run(rec, srv, tmp_path, seeds, **kw):
    kw.setdefault("retry", FAST)
    kw.setdefault("show_progress", False)
    return synthesize(rec, teacher="fake-model", base_url=srv.base_url, seeds=seeds,
                      output=kw.pop("output", tmp_path / "out.parquet"), **kw)


def test_rows_are_canonical_with_provenance(server, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-value")
    s = run(recipe(), server, tmp_path, write_seeds(tmp_path / "s.jsonl", 3))
    assert (s.requested, s.succeeded, s.failed, s.skipped_budget) == (6, 6, 0, 0)
    t = read_dataset(tmp_path / "out.parquet")  # canonical: what validate and dedupe read
    rows = t.to_pylist()
    assert {r["origin"] for r in rows} == {"synthetic"}
    r = rows[0]
    assert r["synth_teacher"] == "fake-model" and r["synth_base_url_host"] == f"127.0.0.1:{server.port}"
    assert r["synth_recipe"] == "t" and len(r["synth_recipe_hash"]) == 16 and r["synth_prompt_tokens"] > 0
    assert r["messages"][0]["content"].startswith("Answer: Seed question number 0")
    assert r["messages"][1]["content"].startswith("Echo: Answer: Seed question number 0")
    assert "sk-secret-value" not in json.dumps(rows, default=str)
    assert Counter((r["synth_seed_id"], r["synth_sample"]) for r in rows).most_common(1)[0][1] == 1


def test_faults_lose_and_duplicate_nothing_and_retries_are_bounded(tmp_path):
    faults = {"429": 0.15, "500": 0.15, "drop": 0.1, "malformed": 0.1, "slow": 0.05, "badjson": 0.1}
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}
    rec = recipe(reply={"schema": schema, "max_attempts": 3}, output={"assistant": "{{ json.answer }} {{ prompt }}"})
    seeds = write_seeds(tmp_path / "s.jsonl", 30, marker_at=7)
    with FakeServer(faults, fail_marker="FAILME", slow_s=1.0, retry_after="0.02", seed=3) as srv:
        s = run(rec, srv, tmp_path, seeds, concurrency=8, timeout=0.5)
        assert sum(srv.faults_given.get(k, 0) for k in faults) > 20  # every fault kind really happened
        assert all(srv.faults_given.get(k, 0) > 0 for k in faults)
        failed_keys = {r["key"] for r in srv.requests if r["fault"] == "500" and "FAILME" in json.dumps(r["messages"])}
        assert len(failed_keys) == 2
        for key in failed_keys:  # bounded: first try + max_retries, then recorded as failed
            assert srv.count(key) == FAST.max_retries + 1
        per_key = Counter(r["key"] for r in srv.requests)
        assert max(per_key.values()) <= FAST.max_retries + 1
    assert (s.requested, s.succeeded, s.failed, s.skipped_budget) == (60, 58, 2, 0)
    assert s.retries > 0 and s.invalid_replies > 0
    rows = pq.read_table(tmp_path / "out.parquet").to_pylist()
    pairs = Counter((r["synth_seed_id"], r["synth_sample"]) for r in rows)
    assert len(pairs) == 58 and set(pairs.values()) == {1}
    assert all(r["messages"][1]["content"].startswith("text") for r in rows)  # valid JSON only
    fails = pq.read_table(tmp_path / "out.failures.parquet").to_pylist()
    assert len(fails) == 2 and all("HTTP 500" in f["reason"] and "FAILME" in f["request"] for f in fails)
    assert {f["synth_status"] for f in fails} == {"failed"}


def test_retry_after_is_honoured(tmp_path):
    with FakeServer({"429": 1.0}, max_faults_per_body=1, retry_after="0.4") as srv:
        run(recipe(examples_per_seed=1), srv, tmp_path, write_seeds(tmp_path / "s.jsonl", 1))
        first, second = srv.requests
    assert first["fault"] == "429" and second["fault"] is None
    assert second["t"] - first["t"] >= 0.38


def test_cache_resumes_and_editing_one_seed_resends_only_its_requests(server, tmp_path):
    seeds = write_seeds(tmp_path / "s.jsonl", 5)
    first = run(recipe(), server, tmp_path, seeds)
    sent = len(server.requests)
    assert first.http_requests == sent == 10
    again = run(recipe(), server, tmp_path, seeds)
    assert len(server.requests) == sent and again.from_cache == 10 and again.http_requests == 0
    assert pq.read_table(tmp_path / "out.parquet").num_rows == 10
    lines = seeds.read_text().splitlines()
    lines[2] = lines[2].replace("explain topic 2", "describe topic 2")
    seeds.write_text("\n".join(lines) + "\n")
    edited = run(recipe(), server, tmp_path, seeds)
    new = server.requests[sent:]
    assert edited.http_requests == 2 and len(new) == 2
    assert all("describe topic 2" in m["messages"][-1]["content"] for m in new)
    assert edited.cache_lifetime["calls"] == 12  # the ledger keeps every paid call


def test_failed_requests_are_not_resent_unless_retry_failed(tmp_path):
    seeds = write_seeds(tmp_path / "s.jsonl", 3, marker_at=1)
    with FakeServer(fail_marker="FAILME") as srv:
        s1 = run(recipe(examples_per_seed=1), srv, tmp_path, seeds)
        n = len(srv.requests)
        s2 = run(recipe(examples_per_seed=1), srv, tmp_path, seeds)
        assert len(srv.requests) == n and s2.failed == 1  # a recorded failure is reported, not re-paid
        srv.fail_marker = None
        s3 = run(recipe(examples_per_seed=1), srv, tmp_path, seeds, retry_failed=True)
        assert len(srv.requests) == n + 1
    assert (s1.failed, s3.failed, s3.succeeded) == (1, 0, 3)
    assert not (tmp_path / "out.failures.parquet").exists()


def test_token_budget_stops_cleanly_and_resumes(server, tmp_path):
    seeds = write_seeds(tmp_path / "s.jsonl", 10)
    s = run(recipe(), server, tmp_path, seeds, max_total_tokens=300, concurrency=4)
    assert s.skipped_budget > 0 and s.succeeded > 0 and s.stopped
    assert s.requested == s.succeeded + s.failed + s.skipped_budget == 20
    assert s.prompt_tokens + s.completion_tokens <= 300
    skipped = pq.read_table(tmp_path / "out.failures.parquet").to_pylist()
    assert len(skipped) == s.skipped_budget and {f["synth_status"] for f in skipped} == {"skipped_budget"}
    done = len(server.requests)
    s2 = run(recipe(), server, tmp_path, seeds)
    assert s2.succeeded == 20 and s2.http_requests == len(server.requests) - done == s.skipped_budget


def test_dollar_budget_needs_prices(server, tmp_path):
    with pytest.raises(UsageError, match="prices"):
        run(recipe(), server, tmp_path, write_seeds(tmp_path / "s.jsonl", 1), budget=1.0)
    s = run(recipe(pricing={"prompt_per_1m": 1e4, "completion_per_1m": 1e4}), server, tmp_path,
            write_seeds(tmp_path / "s.jsonl", 5), budget=2.0, concurrency=1)
    assert 0 < s.succeeded < 10 and s.cost <= 2.0 and s.skipped_budget == 10 - s.succeeded


def test_rate_limit_spaces_requests(server, tmp_path):
    t0 = time.monotonic()
    run(recipe(), server, tmp_path, write_seeds(tmp_path / "s.jsonl", 3), rpm=120, concurrency=6)
    assert time.monotonic() - t0 >= 2.0  # 6 requests at 2/s with a one-request bucket: >= 2.5 s of gaps


def test_fact_flags_end_to_end(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text("The Harbor Line opened on 14 May 1998. It has 17 stops and is run by Velsen Bay Transit.")

    def reply(body):
        if body.get("response_format"):  # the judge's request
            return reply_content(body)
        text = body["messages"][-1]["content"]
        if "#0" in text:
            return "The Harbor Line opened on 14 May 1998 and has 17 stops."
        return "The Harbor Line opened in 1999 with 23 stops, built by Jonas Pike."

    rec = recipe(prompt="{{ document.text }} #{{ index }}", grounding={"documents": ["doc.md"], "use": "each"})
    with FakeServer(reply_fn=reply) as srv:
        s = synthesize(rec, teacher="m", base_url=srv.base_url, output=tmp_path / "o.parquet", base_dir=tmp_path,
                       show_progress=False, verify=True, retry=FAST)
    rows = {r["synth_sample"]: r for r in pq.read_table(tmp_path / "o.parquet").to_pylist()}
    good, bad = rows[0], rows[1]
    assert good["unsupported_claims"] == [] and {c["claim"] for c in good["claims"]} >= {"14 May 1998", "17"}
    assert all(c["evidence"] and c["source"] == "doc.md" for c in good["claims"])
    flagged = {c["claim"]: c for c in bad["unsupported_claims"]}
    assert {"1999", "23", "Jonas Pike"} <= set(flagged) and "Harbor Line" not in flagged
    assert s.flagged_rows == 1 and s.verify_requested == 2 and s.verify_failed == 0
    assert bad["claims"][0]["judge"] == "supported"  # the fake judge labels claim 1 (schema-minimal reply)


def test_recipe_errors_name_key_and_line(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("name: x\nprompt: hi {{ prompt }}\ntemperature: 3\ncolour: red\n")
    with pytest.raises(RecipeError) as e:
        load_synth_recipe(p)
    assert "temperature (line 3)" in str(e.value) and "colour (line 4): unknown key" in str(e.value)
    p.write_text("name: x\nsystem: ok\nprompt: |\n  hello\n  {{ prompt \n")
    with pytest.raises(RecipeError, match=r"prompt \(line \d+\): template syntax error"):
        load_synth_recipe(p)
    p.write_text("name: x\nprompt: hi\nreply:\n  schema:\n    type: objekt\n")
    with pytest.raises(RecipeError, match=r"reply.schema"):
        load_synth_recipe(p)


def test_missing_seed_field_names_file_and_line(server, tmp_path):
    from curate.errors import InputError

    with pytest.raises(InputError, match=r"s.jsonl:1.*'nope'"):
        run(recipe(prompt="{{ nope }}"), server, tmp_path, write_seeds(tmp_path / "s.jsonl", 2))


def test_shipped_recipes_are_valid():
    for p in sorted((ROOT / "recipes").glob("synth-*.yaml")):
        r = load_synth_recipe(p)
        assert r.name and "prompt" in r.templates
    assert len(load_synth_recipe(ROOT / "recipes/synth-grounded-qa.yaml").documents) == 2


def test_real_seed_tasks_as_seeds(server, tmp_path, shared_data):
    s = run(recipe(examples_per_seed=1, limit_seeds=20, prompt="{{ prompt }} [{{ name }}]"), server, tmp_path,
            shared_data / "tatsu-lab__stanford_alpaca__seed_tasks.jsonl")
    assert s.succeeded == 20
    first = pq.read_table(tmp_path / "out.parquet").to_pylist()[0]
    assert first["messages"][0]["content"].endswith("[breakfast_suggestion]")
    assert first["source"]["line"] == 1


def test_cli_exit_codes(server, tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    seeds = write_seeds(tmp_path / "s.jsonl", 2, marker_at=1)
    rp = tmp_path / "r.yaml"
    rp.write_text("name: cli\nprompt: 'Q: {{ prompt }}'\nmax_tokens: 20\n")
    runner = CliRunner()
    r = runner.invoke(cli, ["synth", "--teacher", "gpt-x", "--recipe", str(rp), "--seeds", str(seeds), "-o",
                            str(tmp_path / "o.parquet")])
    assert r.exit_code == 2 and "OPENAI_API_KEY" in r.output
    args = ["synth", "--teacher", "m", "--base-url", server.base_url, "--recipe", str(rp), "--seeds", str(seeds),
            "-o", str(tmp_path / "o.parquet"), "--max-retries", "0", "--json"]
    server.fail_marker = "FAILME"
    r = runner.invoke(cli, args)
    assert r.exit_code == 1
    doc = json.loads(r.stdout)
    assert (doc["succeeded"], doc["failed"]) == (1, 1) and doc["failures_file"].endswith("o.failures.parquet")
    r = runner.invoke(cli, args + ["--max-failure-rate", "0.5"])
    assert r.exit_code == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: cli\nprompt: hi\nmax_tokens: 0\n")
    r = runner.invoke(cli, ["synth", "--teacher", "m", "--base-url", server.base_url, "--recipe", str(bad),
                            "--seeds", str(seeds), "-o", str(tmp_path / "o.parquet")])
    assert r.exit_code == 2 and "max_tokens (line 3)" in r.output


def test_fill_gaps_reads_report_gap_parquet(server, tmp_path):
    import pyarrow as pa

    from curate.dataset import make_row, rows_to_table, write_table

    table = rows_to_table([make_row([{"role": "user", "content": f"cancel my plan please ({i})"}], origin="production")
                           for i in range(2)])
    table = table.append_column("report_cluster", pa.array([4, 4], pa.int64()))
    table = table.append_column("report_cluster_label", pa.array(["cancel plan account"] * 2))
    write_table(table, tmp_path / "gaps.parquet")
    s = run(ROOT / "recipes" / "synth-fill-gaps.yaml", server, tmp_path, tmp_path / "gaps.parquet")
    assert (s.requested, s.succeeded) == (4, 4)
    sent = [r["messages"][-1]["content"] for r in server.requests]
    assert all("(cancel plan account)" in m and "cancel my plan please" in m for m in sent)


def test_retry_after_forms_and_token_bucket():
    import asyncio
    from email.utils import formatdate

    from curate.synth.client import RateLimiter, parse_retry_after

    assert parse_retry_after({"retry-after": "2.5"}) == 2.5
    assert parse_retry_after({"retry-after-ms": "150", "retry-after": "9"}) == 0.15
    assert 8 <= parse_retry_after({"retry-after": formatdate(time.time() + 10, usegmt=True)}) <= 10
    assert parse_retry_after({"retry-after": "soon"}) is None and parse_retry_after({}) is None
    assert RetryPolicy(base=1, cap=4).delay(10, None) <= 4 and RetryPolicy().delay(0, 7.0) == 7.0

    async def spend() -> float:
        tpm = RateLimiter(per_minute=600)  # 10 tokens/s, bucket of 10
        t0 = time.monotonic()
        await tpm.acquire(10)
        await tpm.acquire(5)  # must wait for 5 tokens to refill
        return time.monotonic() - t0

    assert 0.45 <= asyncio.run(spend()) < 1.5
