"""curate score: text statistics on planted rows, the keep rules (parse errors, Kleene logic, reasons, balanced
counts), streaming, real data, perplexity with the embedded model, the judge wiring, the recipe stage, the report."""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import textwrap
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from curate.cli import cli
from curate.dataset import make_row, rows_to_table, write_table
from curate.errors import RecipeError, UsageError
from curate.score import ScoreConfig, parse_rule, score, text_stats
from curate.score.distribution import number_summary
from curate.score.judge import JudgeRun, Verdict

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
LIMA = DATA / "hiyouga__LLaMA-Factory__lima.json"
ALPACA = DATA / "hiyouga__LLaMA-Factory__alpaca_en_demo.json"
TOY = DATA / "openai__openai-cookbook__toy_chat_fine_tuning.jsonl"


def chat(user: str, reply: str | None, **kw) -> dict:
    return make_row([{"role": "user", "content": user}, {"role": "assistant", "content": reply}], **kw)


@pytest.fixture
def planted(tmp_path: Path) -> Path:
    rows = [
        chat("Say hi", "Hello there, friend."),                                  # varied English
        chat("Loop", "Eat a banana! " * 40),                                     # a loop
        chat("Code?", "x = 1; y = {2: 3}"),                                      # mostly symbols
        chat("Numbers", "42 17 99"),                                             # no letter: no language
        chat("Bonjour", "Bonjour, je vais très bien aujourd'hui, merci beaucoup pour votre question."),
    ]
    return write_table(rows_to_table(rows), tmp_path / "planted.parquet")


# ---------------------------------------------------------------- text statistics


def test_text_statistics_on_hand_made_rows():
    rows = [
        make_row([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Count to three"},
                  {"role": "assistant", "content": "one two three one two three"}]),
        make_row([{"role": "user", "content": "你好"}, {"role": "assistant", "content": "123 {}"}]),
        make_row([{"role": "user", "content": "q"},
                  {"role": "assistant", "content": None, "tool_calls": [
                      {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
                  {"role": "tool", "content": "r"}, {"role": "assistant", "content": "The answer is r."}]),
        make_row([{"role": "user", "content": "nothing back"}, {"role": "assistant", "content": ""}]),
    ]
    s = {k: v.to_pylist() for k, v in text_stats(rows_to_table(rows).column("messages")).items()}
    assert s["score_reply_chars"] == [27, 6, 16, 0]
    assert s["score_reply_words"] == [6, 2, 4, 0]
    assert s["score_prompt_chars"] == [9 + 14, 2, 2, 12]  # system + user; user + tool
    assert s["score_prompt_words"] == [5, 1, 2, 2]
    # 4 word 3-grams, 3 distinct ("one two three" twice): 1 of 4 repeats; fewer words than n: 0; no word: null
    assert s["score_repetition"] == [0.25, 0.0, 0.0, None]
    assert s["score_non_alpha"][0] == 0.0 and s["score_non_alpha"][1] == 1.0 and s["score_non_alpha"][3] is None
    assert s["score_non_alpha"][2] == pytest.approx(1 / 13, abs=1e-6)  # the full stop of "Theanswerisr."
    assert s["score_language"][0] == "en" and s["score_language"][1] is None and s["score_language"][3] is None
    assert 0 < s["score_language_prob"][0] <= 1 and s["score_language_prob"][1] is None


def test_distribution_summary():
    d = number_summary(pa.array([1.0, 2.0, 2.0, 5.0]).to_numpy(), missing=1)
    assert (d["count"], d["missing"], d["p50"], d["max"], d["mean"]) == (4, 1, 2.0, 5.0, 2.5)
    assert d["histogram"]["scale"] == "unit" and d["histogram"]["counts"] == [1, 2, 0, 0, 1]
    tail = number_summary(pa.array([0.0] + [10.0] * 50 + [10_000.0]).to_numpy(), missing=0)
    assert tail["histogram"]["scale"] == "log" and tail["histogram"]["edges"][0] == 0.0
    assert sum(tail["histogram"]["counts"]) == 52


# ---------------------------------------------------------------- the rules


def test_rule_syntax_errors_name_the_setting_and_never_run_code():
    for bad, says in [("score_judge >", "ends too early"), ("score_judge >> 3", "expected"),
                      ("__import__('os').system('x') > 1", "unexpected character '.'"), ("3 > 2", "names no column"),
                      ("score_judge >= 3 and", "ends too early"), ("score_judge = 3", "unexpected character"),
                      ("(score_judge > 1", "ends too early"), ("", "is empty"), ("'en' in [1]", "needs a column")]:
        with pytest.raises(UsageError, match=says) as err:
            parse_rule(bad, "keep[0]")
        assert str(err.value).startswith("keep[0] '")
    r = parse_rule("not (score_judge >= 3 or 0.3 < score_repetition) and score_language in ['en', \"de\"]")
    assert r.columns == ("score_judge", "score_repetition", "score_language")


def test_unknown_column_and_kinds_fail_before_any_row_is_read(planted, tmp_path):
    out = tmp_path / "o.parquet"
    with pytest.raises(UsageError, match="keep\\[0\\] 'origin_x == 1': unknown column 'origin_x'; known: id"):
        score(planted, out, keep=["origin_x == 1"])
    with pytest.raises(UsageError, match="compares values of different kinds.*score_language is text"):
        score(planted, out, keep=["score_language > 3"])
    assert not out.exists()
    r = CliRunner().invoke(cli, ["score", str(planted), "-o", str(out), "--keep", "score_repetiton < 0.3"])
    assert r.exit_code == 2 and "keep: rule 'score_repetiton < 0.3': unknown score column 'score_repetiton'" in r.output


def test_rules_quarantine_with_reasons_and_counts_balance(planted, tmp_path):
    out = tmp_path / "kept.parquet"
    rules = ["score_repetition < 0.3", "score_language == 'en' or score_non_alpha > 0.5"]
    o = score(planted, out, keep=rules)
    assert o.counts == {"in": 5, "kept": 3, "rejected": 2} and o.balanced
    q = pq.read_table(tmp_path / "kept.quarantine.parquet")
    assert q.column_names[:2] == ["score_row", "reason"] and "score_repetition" in q.column_names
    reasons = dict(zip(q.column("score_row").to_pylist(), q.column("reason").to_pylist()))
    assert set(reasons) == {2, 5}
    assert reasons[2].startswith("score_repetition < 0.3: false (score_repetition = 0.9746); score_language == 'en' "
                                 "or score_non_alpha > 0.5: false (score_language = ")
    assert reasons[5] == ("score_language == 'en' or score_non_alpha > 0.5: false (score_language = 'fr', "
                          "score_non_alpha = 0.06154)")
    # "42 17 99" has no language, but unknown or true is true: the rule holds whatever its language
    kept = pq.read_table(out)
    assert kept.column("score_reply_chars").to_pylist() == [20, 17, 8]
    assert [r["failed"] for r in o.summary["gate"]["rules"]] == [1, 2]
    # a rule that hangs on the missing language cannot be decided: quarantined by default, kept with missing: keep
    o2 = score(planted, tmp_path / "k2.parquet", keep=["score_language != 'fr'"])
    q2 = pq.read_table(tmp_path / "k2.quarantine.parquet").to_pylist()
    assert o2.counts == {"in": 5, "kept": 3, "rejected": 2} and o2.summary["gate"]["undecided_quarantined"] == 1
    assert [r["reason"] for r in q2] == ["score_language != 'fr': score_language missing",
                                         "score_language != 'fr': false (score_language = 'fr')"]
    o3 = score(planted, tmp_path / "k3.parquet", keep=["score_language != 'fr'"], missing="keep")
    assert o3.counts == {"in": 5, "kept": 4, "rejected": 1} and o3.summary["gate"]["undecided_kept"] == 1


def test_streaming_in_small_batches_gives_the_same_files(planted, tmp_path):
    big = pa.concat_tables([pq.read_table(planted)] * 11)  # 55 rows
    src = write_table(big, tmp_path / "big.parquet")
    rules = ["score_repetition < 0.3"]
    whole = score(src, tmp_path / "a.parquet", keep=rules)
    small = score(src, tmp_path / "b.parquet", keep=rules, batch_size=7)
    assert whole.counts == small.counts == {"in": 55, "kept": 44, "rejected": 11}
    assert pq.read_table(tmp_path / "a.parquet").equals(pq.read_table(tmp_path / "b.parquet"))
    qa, qb = pq.read_table(tmp_path / "a.quarantine.parquet"), pq.read_table(tmp_path / "b.quarantine.parquet")
    assert qa.equals(qb) and qb.column("score_row").to_pylist() == list(range(2, 56, 5))
    assert whole.summary["scores"] == small.summary["scores"]


def test_a_rerun_replaces_its_own_columns_and_keeps_earlier_ones(planted, tmp_path):
    first = tmp_path / "first.parquet"
    score(planted, first)
    table = pq.read_table(first).append_column("quality", pa.array([1.0, 2.0, 3.0, 4.0, 5.0]))
    again = score(table, tmp_path / "again.parquet", keep=["quality >= 3"])
    cols = pq.read_table(tmp_path / "again.parquet").column_names
    assert cols.count("score_repetition") == 1 and "quality" in cols and again.counts["kept"] == 3
    # a score column of an earlier run may be named when the input has it; else the error says what computes it
    with pytest.raises(UsageError, match="'score_judge' is not computed by these settings \\(add a judge section\\)"):
        score(table, tmp_path / "x.parquet", keep=["score_judge >= 3"])
    with pytest.raises(UsageError, match="unknown score column 'score_repetiton'"):
        ScoreConfig.build(keep=["score_repetiton < 0.3"])


# ---------------------------------------------------------------- real data and the CLI


def test_real_data_lima_alpaca_and_the_toy_file(tmp_path):
    lima = score(LIMA, tmp_path / "lima.parquet", batch_size=400)
    s = lima.summary["scores"]
    assert lima.counts["in"] == 1029 and s["score_language"]["values"]["en"] > 0.95
    assert s["score_repetition"]["p50"] < 0.05 and s["score_reply_words"]["p50"] > 100
    # the cookbook's flawed sample: one reply repeats "Eat a banana!" 2000 times
    toy = score(TOY, tmp_path / "toy.parquet", keep=["score_repetition < 0.5"])
    q = pq.read_table(tmp_path / "toy.quarantine.parquet").to_pylist()
    assert toy.counts == {"in": 5, "kept": 4, "rejected": 1}
    assert "Eat a banana!" in q[0]["messages"][-1]["content"] and q[0]["score_repetition"] > 0.99
    r = CliRunner().invoke(cli, ["score", str(ALPACA), "-o", str(tmp_path / "al.parquet"), "--json",
                                 "--keep", "score_reply_words >= 5"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["counts"]["in"] == 999 and doc["balanced"] and doc["counts"]["rejected"] > 0
    assert doc["outputs"]["quarantine"].endswith("al.quarantine.parquet") and "score_language" in doc["scores"]


# ---------------------------------------------------------------- perplexity


def test_perplexity_with_the_embedded_model_matches_pick_base(tmp_path):
    pytest.importorskip("torch")
    from curate.embedded import render
    from curate.inputs import load_any
    from curate.pickbase import token_nll
    from curate.score.perplexity import load_scorer, perplexities
    from curate.train.threads import torch_threads

    toy = load_any(TOY).slice(0, 3)  # short real chats (the fourth has no user turn, the fifth is 2,000 bananas)
    msgs = toy.column("messages").to_pylist() + [[{"role": "user", "content": "Say hi"}]]  # no reply: no perplexity
    with torch_threads("auto"):
        scorer = load_scorer("embedded", 1024, 4)
        ppl, n = perplexities(scorer, msgs, [None] * 4)
        assert ppl[3] is None and n[3] is None and scorer.no_reply == 1
        for m, p, k in zip(msgs[:3], ppl, n):  # batched and padded, it is the one-row figure of pick-base
            r = render(scorer.tokenizer, m, None)
            nll = [v for v, mask in zip(token_nll(scorer.model, r.input_ids).tolist(), r.assistant_mask[1:]) if mask]
            assert k == len(nll) and p == pytest.approx(math.exp(sum(nll) / len(nll)), rel=1e-3)
        scorer.max_length = 8  # the window keeps the last 8 tokens: the reply's end, without the prompt
        _, short = perplexities(scorer, msgs[:1], [None])
        assert 0 < short[0] <= 7 < n[0]
    out = score(toy.slice(0, 2), perplexity=True, perplexity_batch=2, keep=["score_perplexity < 1e6"])
    assert out.kept.column("score_perplexity").null_count == 0 and out.summary["perplexity"]["tokens_per_s"] > 0


# ---------------------------------------------------------------- the judge


def test_judge_wiring_with_a_stand_in_judge(planted, tmp_path, monkeypatch):
    calls = []

    def fake(endpoint, rows, settings, *, cache_dir, progress=None):
        calls.append((len(rows), settings.budget, Path(cache_dir), endpoint))
        verdicts = []
        for r in rows:
            reply = r["messages"][-1]["content"]
            if "banana" in reply:
                verdicts.append(Verdict(None, "", "timed out"))
            else:
                verdicts.append(Verdict(1 if "42" in reply else 4, f"judged {len(reply)}"))
        return JudgeRun(verdicts, {"rows": len(rows), "judged": sum(v.score is not None for v in verdicts),
                                   "spent": 0.25})

    opened = []
    monkeypatch.setattr("curate.score.judge.judge_at", fake)
    monkeypatch.setattr("curate.score.judge.open_endpoint", lambda cfg: contextlib.nullcontext(opened.append(1) or "ep"))
    judge = {"teacher": "t", "base_url": "http://127.0.0.1:9/v1", "budget": 1.0, "price_in": 1.0}
    o = score(planted, tmp_path / "j.parquet", batch_size=2, judge=judge, keep=["score_judge >= 3"])
    assert [c[0] for c in calls] == [2, 2, 1] and [c[1] for c in calls] == [1.0, 0.75, 0.5]  # one budget for the run
    assert calls[0][2] == tmp_path / "j.judge-cache"
    assert opened == [1] and {c[3] for c in calls} == {"ep"}  # one endpoint (one local server) for the run
    assert o.counts == {"in": 5, "kept": 3, "rejected": 2} and o.summary["judge"]["counts"]["spent"] == 0.75
    q = pq.read_table(tmp_path / "j.quarantine.parquet")
    assert q.column("reason").to_pylist() == ["score_judge >= 3: score_judge missing (judge: timed out)",
                                              "score_judge >= 3: false (score_judge = 1)"]
    kept = pq.read_table(tmp_path / "j.parquet")
    assert kept.column("score_judge").to_pylist() == [4, 4, 4] and kept.column("score_judge_reason")[0].as_py() == "judged 20"


def test_judge_for_real_against_a_loopback_server(planted, tmp_path):
    from tests.fakeserver import FakeServer

    def reply(body: dict) -> str:
        text = body["messages"][-1]["content"]
        return json.dumps({"score": 2 if "banana" in text else 5, "reason": "planted"})

    with FakeServer(reply_fn=reply) as srv:
        o = score(planted, tmp_path / "r.parquet", judge={"teacher": "fake", "base_url": srv.base_url},
                  keep=["score_judge >= 3"])
        sent = len(srv.requests)
        again = score(planted, tmp_path / "r.parquet", judge={"teacher": "fake", "base_url": srv.base_url},
                      keep=["score_judge >= 3"])
        assert len(srv.requests) == sent == 5  # the rerun is served from the cache
    assert o.counts == again.counts == {"in": 5, "kept": 4, "rejected": 1}
    assert o.summary["scores"]["score_judge"]["histogram"]["counts"] == [1, 0, 0, 4]


# ---------------------------------------------------------------- the recipe stage and the report

RECIPE = """
name: s
data:
  train: [data/train.jsonl]
validate:
  tokens: false
  output_schema: data/task.schema.json
  max_error_rate: 0.9
score:
  keep: ["score_reply_words >= 10"]
"""


@pytest.fixture
def project(tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    for name in ("train.jsonl", "task.schema.json"):
        shutil.copy(ROOT / "examples" / "demo" / name, tmp_path / "data" / name)
    (tmp_path / "r.yaml").write_text(textwrap.dedent(RECIPE).lstrip())
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_the_score_stage_in_a_run(project):
    from curate.pipeline import run_recipe

    manifest = run_recipe("r.yaml")
    by = {s["name"]: s for s in manifest["stages"]}
    assert [s["name"] for s in manifest["stages"]][:4] == ["ingest", "validate", "dedupe", "score"]
    sc = by["score"]
    assert sc["status"] == "ran" and sc["inputs"]["train"]["path"].endswith("dedupe/deduped.parquet")
    c = sc["outcome"]["counts"]
    assert c["in"] == by["dedupe"]["outcome"]["counts"]["kept"] == c["kept"] + c["rejected"] and c["rejected"] > 0
    final = pq.read_table(manifest["final_dataset"])
    assert manifest["final_dataset"].endswith("score/scored.parquet") and final.num_rows == c["kept"]
    assert min(final.column("score_reply_words").to_pylist()) >= 10
    assert statuses(run_recipe("r.yaml"))["score"] == "cached"
    # without a score section the stage is not part of the run at all
    (project / "r.yaml").write_text(textwrap.dedent(RECIPE).split("score:")[0])
    assert "score" not in statuses(run_recipe("r.yaml"))


def statuses(manifest: dict) -> dict[str, str]:
    return {s["name"]: s["status"] for s in manifest["stages"]}


def test_recipe_errors_in_the_score_section_come_before_any_stage(project):
    from curate.pipeline import run_recipe

    (project / "r.yaml").write_text(textwrap.dedent(RECIPE).replace(">= 10", ">= 10 and"))
    with pytest.raises(RecipeError, match=r"score.keep \(line 10\): rule 'score_reply_words >= 10 and': ends too"):
        run_recipe("r.yaml")
    (project / "r.yaml").write_text(textwrap.dedent(RECIPE) + "  judge: {teacher: t, api_key_env: HOME}\n")
    with pytest.raises(RecipeError, match="score.judge.api_key_env.*may not choose"):
        run_recipe("r.yaml")
    assert not (project / "runs").exists()


def test_report_shows_score_distributions(planted, tmp_path):
    from jsonschema import Draft202012Validator

    from curate.recipe import load_schema
    from curate.report import report

    scored = score(planted, tmp_path / "s.parquet").outputs["kept"]
    rep = report(scored, embedder="tfidf", html=tmp_path / "r.html")
    doc = rep.to_dict()["report"]
    Draft202012Validator(load_schema("report")).validate(doc)
    s = doc["structure"]["train"]["scores"]
    assert s["score_reply_chars"]["count"] == 5 and s["score_language"]["missing"] == 1
    assert "score_judge_reason" not in s and "<h2>Scores</h2>" in (tmp_path / "r.html").read_text()
    plain = report(planted, embedder="tfidf").to_dict()["report"]
    assert plain["structure"]["train"]["scores"] is None


def test_the_judge_from_the_command_line_scores_and_calibrates(planted, tmp_path):
    from click.testing import CliRunner

    from curate.cli import cli
    from tests.fakeserver import FakeServer

    labels = Path(__file__).resolve().parents[1] / "examples" / "judge" / "labels.jsonl"
    wanted = {r["messages"][-1]["content"][:80]: r["label"]
              for r in map(json.loads, labels.read_text().splitlines())}

    def reply(body: dict) -> str:  # a judge that gives each labelled row its label, and 5 to anything else
        text = body["messages"][-1]["content"]
        found = [k for k in wanted if k in text]
        label = wanted[max(found, key=len)] if found else 2 if "banana" in text else 5  # the longest: a short
        return json.dumps({"score": label, "reason": "planted"})  # reply may be inside another row

    src = planted
    with FakeServer(reply_fn=reply) as srv:
        r = CliRunner().invoke(cli, ["score", str(src), "-o", str(tmp_path / "s.parquet"), "--judge", "fake",
                                     "--judge-base-url", srv.base_url, "--keep", "score_judge >= 3", "--json"])
        assert r.exit_code == 0, r.output
        doc = json.loads(r.stdout)
        assert doc["counts"] == {"in": 5, "kept": 4, "rejected": 1} and doc["judge"]["counts"]["judged"] == 5
        r = CliRunner().invoke(cli, ["calibrate-judge", str(labels), "--judge", "fake", "--judge-base-url",
                                     srv.base_url, "--cache", str(tmp_path / "cal"), "--json"])
        assert r.exit_code == 0, r.output
    cal = json.loads(r.stdout)
    assert cal["rows"] == len(wanted) and cal["self_agreement"]["kappa"] == 1.0
    assert cal["vs_labels"]["score"]["exact"] == 1.0, cal["disagreements"]
    assert cal["vs_labels"]["score"]["kappa"] == 1.0
    r = CliRunner().invoke(cli, ["calibrate-judge", str(labels)])
    assert r.exit_code != 0 and "--judge MODEL" in r.output
