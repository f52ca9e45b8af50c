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
from tests.fakeserver import FakeServer, fast_backoff, reply_content

ROOT = Path(__file__).resolve().parents[1]
MAX_RETRIES = 4


@pytest.fixture(autouse=True)
def _fast_backoff(monkeypatch):
    fast_backoff(monkeypatch)


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
    kw.setdefault("max_retries", MAX_RETRIES)
    kw.setdefault("show_progress", False)
    return synthesize(kw.pop("output", tmp_path / "out.parquet"), recipe=rec, teacher="fake-model",
                      base_url=srv.base_url, seeds=seeds, **kw)


def counts(out) -> tuple[int, int, int, int]:
    """(requested, succeeded, failed, skipped_budget), checked to balance with `in`."""
    c = out.counts
    assert out.balanced and c["in"] == c["requested"]
    return c["requested"], c["succeeded"], c["failed"], c["skipped_budget"]


def usage_by_prompt(srv) -> dict[str, list[int]]:
    """What the server billed for each request it answered without a fault, by the prompt sent."""
    return {r["messages"][-1]["content"]: r["usage"] for r in srv.requests if r["fault"] is None}


def test_rows_are_canonical_with_provenance(server, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-value")
    s = run(recipe(), server, tmp_path, write_seeds(tmp_path / "s.jsonl", 3))
    assert counts(s) == (6, 6, 0, 0) and s.failure is None
    t = read_dataset(tmp_path / "out.parquet")  # canonical: what validate and dedupe read
    assert s.kept.equals(t) and s.rejected.num_rows == 0 and s.outputs == {"data": str(tmp_path / "out.parquet")}
    rows = t.to_pylist()
    assert {r["origin"] for r in rows} == {"synthetic"}
    r = rows[0]
    assert r["synth_teacher"] == "fake-model" and r["synth_base_url_host"] == f"127.0.0.1:{server.port}"
    assert r["synth_recipe"] == "t" and len(r["synth_recipe_hash"]) == 16
    billed = usage_by_prompt(server)
    assert [[x["synth_prompt_tokens"], x["synth_completion_tokens"]] for x in rows] == [
        billed[x["messages"][0]["content"]] for x in rows]
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
            assert srv.count(key) == MAX_RETRIES + 1
        per_key = Counter(r["key"] for r in srv.requests)
        assert max(per_key.values()) <= MAX_RETRIES + 1
        log = Counter(r["fault"] for r in srv.requests)
    assert counts(s) == (60, 58, 2, 0)
    # what the server log says happened: every attempt reached it; each transport fault (slow = past the
    # timeout) was retried except the last one of each failed request; each bad JSON reply was re-requested
    transport = sum(log[k] for k in ("429", "500", "drop", "malformed", "slow"))
    assert (s.summary["http_requests"], s.summary["retries"], s.summary["invalid_replies"]) == (
        sum(log.values()), transport - 2, log["badjson"])
    rows = pq.read_table(tmp_path / "out.parquet").to_pylist()
    pairs = Counter((r["synth_seed_id"], r["synth_sample"]) for r in rows)
    assert len(pairs) == 58 and set(pairs.values()) == {1}
    assert all(r["messages"][1]["content"].startswith("text") for r in rows)  # valid JSON only
    fails = pq.read_table(tmp_path / "out.failures.parquet").to_pylist()
    assert [f["reason"] for f in fails] == ["HTTP 500: internal error (gave up after 5 attempts)"] * 2
    assert all("FAILME" in f["request"] for f in fails) and {f["synth_status"] for f in fails} == {"failed"}
    assert s.summary["failure_reasons"] == {"HTTP 500: internal error": 2}
    assert s.failure == "2/60 requests failed (3.3%) exceeds the allowed 0.0%"


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
    assert first.summary["http_requests"] == sent == 10
    again = run(recipe(), server, tmp_path, seeds)
    assert len(server.requests) == sent and again.counts["from_cache"] == 10 and again.summary["http_requests"] == 0
    assert pq.read_table(tmp_path / "out.parquet").num_rows == 10
    lines = seeds.read_text().splitlines()
    lines[2] = lines[2].replace("explain topic 2", "describe topic 2")
    seeds.write_text("\n".join(lines) + "\n")
    edited = run(recipe(), server, tmp_path, seeds)
    new = server.requests[sent:]
    assert edited.summary["http_requests"] == 2 and len(new) == 2
    assert all("describe topic 2" in m["messages"][-1]["content"] for m in new)
    assert edited.summary["cache_lifetime"]["calls"] == 12  # the ledger keeps every paid call


def test_failed_requests_are_not_resent_unless_retry_failed(tmp_path):
    seeds = write_seeds(tmp_path / "s.jsonl", 3, marker_at=1)
    with FakeServer(fail_marker="FAILME") as srv:
        s1 = run(recipe(examples_per_seed=1), srv, tmp_path, seeds)
        n = len(srv.requests)
        s2 = run(recipe(examples_per_seed=1), srv, tmp_path, seeds)
        assert len(srv.requests) == n and counts(s2) == (3, 2, 1, 0)  # a recorded failure is reported, not re-paid
        srv.fail_marker = None
        s3 = run(recipe(examples_per_seed=1), srv, tmp_path, seeds, retry_failed=True)
        assert len(srv.requests) == n + 1
    assert (counts(s1), counts(s3)) == ((3, 2, 1, 0), (3, 3, 0, 0))
    assert "failures" in s1.outputs and "failures" not in s3.outputs
    assert not (tmp_path / "out.failures.parquet").exists()


def test_token_budget_stops_cleanly_and_resumes(server, tmp_path):
    seeds = write_seeds(tmp_path / "s.jsonl", 10)
    s = run(recipe(), server, tmp_path, seeds, max_total_tokens=300, concurrency=4)
    # four requests' worst cases (about 72 tokens each) fit in 300; once the first reply is billed, the fifth no
    # longer fits beside the three in flight, and nothing after it starts
    assert len(server.requests) == 4 and counts(s) == (20, 4, 0, 16)
    billed = sum(sum(r["usage"]) for r in server.requests)
    assert s.summary["prompt_tokens"] + s.summary["completion_tokens"] == billed
    assert (s.summary["stopped_by"], s.summary["stopped"]) == (
        "max_total_tokens", "the token limit of 300 had no room for the next request")
    assert s.failure == (f"16 of 20 requests skipped: the token limit of 300 had no room for the next request (spent "
                         f"{billed} tokens); rerun with a larger --max-total-tokens to continue (finished requests "
                         "come from the cache and are not paid again)")
    skipped = pq.read_table(tmp_path / "out.failures.parquet").to_pylist()
    assert len(skipped) == 16 and {f["synth_status"] for f in skipped} == {"skipped_budget"}
    s2 = run(recipe(), server, tmp_path, seeds)
    assert counts(s2) == (20, 20, 0, 0) and s2.counts["from_cache"] == 4 and s2.failure is None
    assert s2.summary["http_requests"] == len(server.requests) - 4 == 16


def test_dollar_budget_needs_prices(server, tmp_path):
    with pytest.raises(UsageError, match="prices"):
        run(recipe(), server, tmp_path, write_seeds(tmp_path / "s.jsonl", 1), budget=1.0)
    s = run(recipe(pricing={"prompt_per_1m": 1e4, "completion_per_1m": 1e4}), server, tmp_path,
            write_seeds(tmp_path / "s.jsonl", 5), budget=2.0, concurrency=1)
    sent = len(server.requests)
    # one at a time: each spends about $0.31 and reserves its worst case, about $0.72, before it starts
    assert counts(s) == (10, sent, 0, 10 - sent) and sent == 5
    assert s.summary["cost"] == pytest.approx(sum(sum(r["usage"]) for r in server.requests) * 1e4 / 1e6)
    assert s.summary["stopped_by"] == "budget" and "rerun with a larger --budget" in s.failure


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
        s = synthesize(tmp_path / "o.parquet", recipe=rec, teacher="m", base_url=srv.base_url, base_dir=tmp_path,
                       show_progress=False, verify=True)
    rows = {r["synth_sample"]: r for r in pq.read_table(tmp_path / "o.parquet").to_pylist()}
    good, bad = rows[0], rows[1]
    assert good["unsupported_claims"] == [] and {c["claim"] for c in good["claims"]} >= {"14 May 1998", "17"}
    assert all(c["evidence"] and c["source"] == "doc.md" for c in good["claims"])
    flagged = {c["claim"]: c for c in bad["unsupported_claims"]}
    assert {"1999", "23", "Jonas Pike"} <= set(flagged) and "Harbor Line" not in flagged
    assert (s.counts["flagged_rows"], s.summary["verify_requested"], s.summary["verify_failed"]) == (1, 2, 0)
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
    assert counts(s) == (20, 20, 0, 0)
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
    assert (doc["counts"]["succeeded"], doc["counts"]["failed"]) == (1, 1)
    assert doc["outputs"] == {"data": str(tmp_path / "o.parquet"), "failures": str(tmp_path / "o.failures.parquet")}
    assert (doc["passed"], doc["failure"]) == (False, "1/2 requests failed (50.0%) exceeds the allowed 0.0%")
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
    assert counts(s) == (4, 4, 0, 0)
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


def test_recipe_problems_after_its_shape_are_reported_together_with_key_and_line(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("name: x\nsystem: '{{ a '\nprompt: hi\nreply:\n  schema:\n    type: objekt\n"
                 "output:\n  assistant: '{% if %}'\n")
    with pytest.raises(RecipeError) as e:
        load_synth_recipe(p)
    assert e.value.problems == [
        "reply.schema (line 6): not a valid JSON Schema: 'objekt' is not valid under any of the given schemas",
        "system (line 2): template syntax error: unexpected end of template, expected 'end of print statement'.",
        "output.assistant (line 8): template syntax error: Expected an expression, got 'end of statement block'",
    ]


def test_an_inline_recipe_keeps_the_run_recipes_file_and_lines(tmp_path):
    from curate.recipe import load_yaml
    from curate.synth import SynthConfig, grounding_files

    (tmp_path / "docs").mkdir()
    for name in ("a.md", "b.md"):
        (tmp_path / "docs" / name).write_text(f"Document {name}.")
    run_recipe = tmp_path / "run.yaml"
    run_recipe.write_text("name: r\nsynth:\n  teacher: m\n  recipe:\n    name: s\n    prompt: '{{ prompt'\n"
                          "    grounding:\n      documents: [docs/*.md, docs/a.md]\n")
    section = load_yaml(run_recipe)["synth"]
    cfg = SynthConfig.build(section)
    rebuilt = SynthConfig.build(cfg, concurrency=2)
    assert cfg.recipe is section["recipe"] and rebuilt.recipe is section["recipe"] and rebuilt.concurrency == 2
    with pytest.raises(RecipeError) as e:  # checked on its own, before anything runs
        load_synth_recipe(rebuilt.recipe, tmp_path)
    assert str(e.value) == (f"invalid recipe {run_recipe}:\n  synth.recipe.prompt (line 6): template syntax error: "
                            "unexpected end of template, expected 'end of print statement'.")
    assert grounding_files(cfg.recipe, tmp_path) == [tmp_path / "docs" / "a.md", tmp_path / "docs" / "b.md"]
    (tmp_path / "s.yaml").write_text("name: s\nprompt: hi\ngrounding:\n  documents: [docs/b.md]\n")
    assert grounding_files("s.yaml", tmp_path) == [tmp_path / "docs" / "b.md"]  # relative to base_dir, as synth reads it


def test_settings_are_checked_before_anything_runs(tmp_path):
    from curate.synth import SynthConfig

    with pytest.raises(UsageError) as e:
        SynthConfig.build(teacher="local", recipe="r.yaml", base_url="http://127.0.0.1:1/v1", concurrency=0)
    assert str(e.value) == (
        "invalid synth settings: base_url: teacher 'local' starts its own server: drop base_url (or name the model "
        "served there as the teacher) (got 'http://127.0.0.1:1/v1'); concurrency: input should be greater than or "
        "equal to 1 (got 0)")
    with pytest.raises(UsageError, match="^invalid synth settings: recipe: field required$"):
        SynthConfig.build(teacher="m")


def test_max_seeds_reads_the_first_records_and_duplicates_among_them_collapse(server, tmp_path):
    seeds = write_seeds(tmp_path / "s.jsonl", 5)
    lines = seeds.read_text().splitlines()
    seeds.write_text("\n".join([lines[0], lines[0], *lines[1:]]) + "\n")  # record 2 repeats record 1
    s = run(recipe(examples_per_seed=1), server, tmp_path, seeds, max_seeds=3)
    assert counts(s) == (2, 2, 0, 0) and (s.summary["seeds"], s.summary["duplicate_seeds"]) == (2, 1)
    assert sorted(r["messages"][-1]["content"] for r in server.requests) == [  # sent concurrently: any order
        f"Answer: Seed question number {i}: explain topic {i}. (t{i}) #0" for i in (0, 1)]
    r = CliRunner().invoke(cli, ["synth", "--teacher", "m", "--base-url", server.base_url, "--recipe",
                                 str(ROOT / "recipes" / "synth-grounded-qa.yaml"), "--max-seeds", "1",
                                 "-o", str(tmp_path / "qa.parquet"), "--json", "--trust-recipe"])
    doc = json.loads(r.stdout)  # grounding.use: each: the first document chunk only, two examples of it
    assert r.exit_code == 0 and doc["counts"]["requested"] == 2 and doc["seeds"] == 1
    assert {row["source"]["file"] for row in pq.read_table(tmp_path / "qa.parquet").to_pylist()} == {
        "../examples/synth/docs/harbor-line-tram.md"}


def test_a_fenced_teacher_reply_is_accepted_and_invalid_ones_say_why(tmp_path):
    schema = {"type": "object", "properties": {"name": {"type": "string"}, "price": {"type": "number"}},
              "required": ["name", "price"]}
    replies = {"0": '```json\n{"name": "Lamp", "price": 12.5}\n```', "1": '  {"name": "Desk", "price": "cheap"}',
               "2": '\n{"name": "Chair", "price": 3', "3": '```\n{"name": "Rug" "price": 9}\n```'}

    def reply(body):
        return replies[body["messages"][-1]["content"].split("number ")[1][0]]

    with FakeServer(reply_fn=reply) as srv:
        s = run(recipe(examples_per_seed=1, reply={"schema": schema, "max_attempts": 1}), srv, tmp_path,
                write_seeds(tmp_path / "s.jsonl", 4), max_failure_rate=1.0)
    assert counts(s) == (4, 1, 3, 0) and s.failure is None
    (row,) = pq.read_table(tmp_path / "out.parquet").to_pylist()
    assert row["messages"][1]["content"] == '{"name": "Lamp", "price": 12.5}'  # the value, without the fence
    reasons = pq.read_table(tmp_path / "out.failures.parquet").column("reason").to_pylist()
    assert reasons == [
        "invalid reply: JSON does not match the schema at price: 'cheap' is not of type 'number' (after 1 attempts)",
        "invalid reply: not JSON (Expecting ',' delimiter at char 28) (after 1 attempts)",  # from the first non-blank
        "invalid reply: not JSON (Expecting value at char 0) (after 1 attempts)",  # a fence around bad JSON
    ]


def test_cli_options_are_the_settings():
    import click

    from curate.synth import SynthConfig

    command = cli.commands["synth"]
    params = {p.name: p for p in command.params}
    assert set(params) == {*SynthConfig.model_fields, "output", "cache_path", "trust_recipe", "output_schema", "reference",
                           "as_json"}
    for name, info in SynthConfig.model_fields.items():
        p = params[name]
        flag = "--" + name.replace("_", "-")
        assert p.opts == [flag] and p.required == info.is_required(), name
        if info.annotation is bool:
            assert p.secondary_opts == ["--no-" + flag[2:]]
    ranges = {n: (p.type.min, p.type.max, p.type.min_open) for n, p in params.items()
              if isinstance(p.type, (click.IntRange, click.FloatRange))}
    assert ranges == {"max_seeds": (1, None, False), "concurrency": (1, None, False), "rpm": (0, None, True),
                      "tpm": (0, None, True), "max_total_tokens": (1, None, False), "budget": (0, None, False),
                      "price_in": (0, None, False), "price_out": (0, None, False), "timeout": (0, None, True),
                      "max_retries": (0, None, False), "max_failure_rate": (0, 1, False)}
    assert list(params["response_format"].type.choices) == ["auto", "json_schema", "json_object", "none"]
    help_text = "".join(CliRunner().invoke(cli, ["synth", "--help"]).output.split())  # wrapped anywhere
    for name, info in SynthConfig.model_fields.items():
        assert "--" + name.replace("_", "-") in help_text and "".join(info.description.split()) in help_text, name
    r = CliRunner().invoke(cli, ["synth", "--teacher", "m", "--recipe", "r.yaml", "-o", "o.parquet",
                                 "--max-failure-rate", "1.5"])
    assert r.exit_code == 2 and "1.5 is not in the range 0<=x<=1" in r.output
    r = CliRunner().invoke(cli, ["synth", "--recipe", "r.yaml", "-o", "o.parquet"])
    assert r.exit_code == 2 and "Missing option '--teacher'" in r.output


def test_stop_message_names_the_limit_as_the_user_set_it(server, tmp_path):
    from curate.synth import stop_message

    s = run(recipe(), server, tmp_path, write_seeds(tmp_path / "s.jsonl", 10), max_total_tokens=150, concurrency=1)
    sent = len(server.requests)
    names = {"max_total_tokens": "synth.max_total_tokens", "budget": "synth.budget"}
    assert s.failure == stop_message(s) and stop_message(s, names) == s.failure.replace(
        "--max-total-tokens", "synth.max_total_tokens")
    assert stop_message(s, names).startswith(f"{20 - sent} of 20 requests skipped: the token limit of 150 had no room")
