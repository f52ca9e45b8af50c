"""Kill `curate synth` with SIGKILL mid-run, rerun it: every row exactly once, no cached request sent again."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.fakeserver import body_key

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def fake_server_process(tmp_path):
    log = tmp_path / "requests.jsonl"
    proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "fakeserver.py"), "--log", str(log), "--delay", "0.05"],
                            stdout=subprocess.PIPE, text=True)
    port = int(proc.stdout.readline())
    yield f"http://127.0.0.1:{port}/v1", log
    proc.terminate()
    proc.wait(10)


def logged(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()] if log.exists() else []


@pytest.mark.slow
def test_sigkill_then_resume_sends_no_finished_request_again(fake_server_process, tmp_path):
    base_url, log = fake_server_process
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"question {i}"}]}) + "\n"
                             for i in range(60)))
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: resume\nprompt: 'Answer briefly: {{ prompt }}'\nmax_tokens: 20\n")
    out = tmp_path / "out.parquet"
    cmd = [sys.executable, "-m", "curate.cli", "synth", "--teacher", "m", "--base-url", base_url, "--recipe",
           str(recipe), "--seeds", str(seeds), "-o", str(out), "--concurrency", "4", "--json"]
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while len(logged(log)) < 20 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists()  # the output appears only when a run completes
    first_run = logged(log)
    assert 20 <= len(first_run) < 60

    db = sqlite3.connect(tmp_path / "out.cache.sqlite")
    cached = {body_key(json.loads(r)) for (r,) in db.execute("SELECT request FROM responses WHERE status = 'ok'")}
    db.close()
    assert len(cached) >= 10

    done = subprocess.run(cmd, check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    second_run = logged(log)[len(first_run):]
    assert not {r["key"] for r in second_run} & cached  # nothing finished was paid for twice
    assert summary["counts"]["from_cache"] == len(cached)
    assert summary["http_requests"] == len(second_run) == 60 - len(cached)
    rows = pq.read_table(out).to_pylist()
    assert len(rows) == 60
    assert set(Counter(r["messages"][0]["content"] for r in rows).values()) == {1}
    assert [r["messages"][0]["content"] for r in rows] == [f"Answer briefly: question {i}" for i in range(60)]
