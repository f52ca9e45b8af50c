"""Synthetic rows checked before training: label consistency, the teacher verifying its labels, the fact gate."""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from curate.cli import cli
from curate.errors import RecipeError
from curate.synth import load_synth_recipe, synthesize
from tests.fakeserver import FakeServer, LabelTeacher, fast_backoff

SCHEMA = {"type": "object", "required": ["category", "priority", "summary"],
          "properties": {"category": {"enum": ["billing", "shipping", "account"]},
                         "priority": {"enum": ["low", "medium", "high"]}, "summary": {"type": "string"}}}
TICKETS = ["Ticket 0: I was charged 20 EUR twice.", "Ticket 1: my parcel is late.", "Ticket 2: I cannot log in.",
           "Ticket 3: the shirt is the wrong size."]


@pytest.fixture(autouse=True)
def _fast_backoff(monkeypatch):
    fast_backoff(monkeypatch)


def triage(**over) -> dict:
    r = {"name": "triage", "prompt": "Triage: {{ prompt }}", "temperature": 0, "max_tokens": 40,
         "reply": {"schema": SCHEMA, "max_attempts": 1}}
    r.update(over)
    return r


def write_seeds(path: Path, texts: list[str] = TICKETS) -> Path:
    path.write_text("".join(json.dumps({"messages": [{"role": "user", "content": t}]}) + "\n" for t in texts))
    return path


def run(srv: FakeServer, tmp_path: Path, rec: dict, **kw):
    return synthesize(kw.pop("output", tmp_path / "o.parquet"), recipe=rec, teacher="m", base_url=srv.base_url,
                      seeds=write_seeds(tmp_path / "s.jsonl"), show_progress=False, max_retries=0, **kw)


def parts(out) -> dict[str, int]:
    assert out.balanced and out.parts == ("succeeded", "failed", "skipped_budget", "rejected_check",
                                          "rejected_facts", "review")
    return {k: out.counts[k] for k in ("requested", *out.parts)}


def per_ticket(srv: FakeServer) -> Counter:
    """Requests the server answered, by the ticket in their prompt."""
    return Counter(next(t for t in TICKETS if t in r["messages"][-1]["content"]) for r in srv.requests)


def ticket_of(row: dict) -> str:
    return next(t for t in TICKETS if t in row["request"])


def label(prompt: str, n: int) -> dict:
    """Ticket 1's second answer says account, ticket 2's third says high; every other answer is billing/low."""
    category = "account" if "Ticket 1" in prompt and n == 1 else "billing"
    priority = "high" if "Ticket 2" in prompt and n == 2 else "low"
    return {"category": category, "priority": priority, "summary": "a ticket"}


def test_consistency_keeps_only_rows_whose_answers_agree(tmp_path):
    with FakeServer(reply_fn=LabelTeacher(label)) as srv:
        s = run(srv, tmp_path, triage(checks={"consistency": 3}))
        assert per_ticket(srv) == {t: 3 for t in TICKETS}  # the answer and 2 extra ones, per seed
        temps = {t: sorted(r["temperature"] for r in srv.requests if t in r["messages"][-1]["content"]) for t in TICKETS}
        assert temps == {t: [0, 0.7, 0.7] for t in TICKETS}  # extras at the default check_temperature
        assert parts(s) == {"requested": 4, "succeeded": 2, "failed": 0, "skipped_budget": 0, "rejected_check": 2,
                            "rejected_facts": 0, "review": 0}
        assert (s.counts["checked"], s.summary["check_requested"], s.summary["check_failed"]) == (4, 8, 0)
        kept = [r["messages"][0]["content"] for r in pq.read_table(tmp_path / "o.parquet").to_pylist()]
        assert kept == ["Triage: " + TICKETS[0], "Triage: " + TICKETS[3]]
        fails = pq.read_table(tmp_path / "o.failures.parquet").to_pylist()
        assert [(ticket_of(f), f["synth_status"], f["synth_kind"]) for f in fails] == [
            (TICKETS[1], "rejected_check", "generate"), (TICKETS[2], "rejected_check", "generate")]
        # the row's own answer first; the two extras go out together with equal bodies, so which of them the
        # server answers second (and labels differently) is theirs to race
        reasons = [f["reason"] for f in fails]
        assert reasons[0] in {"inconsistent label category: billing vs account vs billing",
                              "inconsistent label category: billing vs billing vs account"}
        assert reasons[1] in {"inconsistent label priority: low vs low vs high",
                              "inconsistent label priority: low vs high vs low"}
        assert json.loads(fails[0]["reply"]) == label(TICKETS[1], 0)  # the row's own answer, for a person
        assert s.summary["failure_reasons"] == {r: 1 for r in reasons}
        # every check request is paid work: in the ledger with the usage the server billed
        assert s.summary["http_requests"] == 12
        assert s.summary["prompt_tokens"] == sum(r["usage"][0] for r in srv.requests)
        assert s.summary["completion_tokens"] == sum(r["usage"][1] for r in srv.requests)
        again = run(srv, tmp_path, triage(checks={"consistency": 3}))
        assert len(srv.requests) == 12 and again.summary["http_requests"] == 0  # a rerun sends nothing
        assert parts(again) == parts(s) and again.counts["from_cache"] == 4
        assert (again.summary["prompt_tokens"], again.summary["cache_lifetime"]["calls"]) == (0, 12)


def test_extra_answers_have_keys_of_their_own_at_the_same_temperature(tmp_path):
    rec = triage(checks={"consistency": 2, "check_temperature": 0})
    with FakeServer(reply_fn=LabelTeacher(label)) as srv:
        s = run(srv, tmp_path, rec)
        assert per_ticket(srv) == {t: 2 for t in TICKETS} and {r["temperature"] for r in srv.requests} == {0}
        assert parts(s)["rejected_check"] == 1
        assert pq.read_table(tmp_path / "o.failures.parquet").column("reason").to_pylist() == [
            "inconsistent label category: billing vs account"]
        keys = sqlite3.connect(tmp_path / "o.cache.sqlite").execute("SELECT COUNT(DISTINCT key) FROM responses")
        assert keys.fetchone()[0] == 8


def test_a_check_that_cannot_be_done_fails_its_row_and_retry_failed_completes_it(tmp_path):
    def flaky(prompt: str, n: int) -> dict:  # ticket 3's second answer breaks the schema, its third does not
        return {**label(prompt, n), "category": "refunds"} if "Ticket 3" in prompt and n == 1 else label(prompt, n)

    rec = triage(checks={"consistency": 2})
    with FakeServer(reply_fn=LabelTeacher(flaky)) as srv:
        s = run(srv, tmp_path, rec, max_failure_rate=1)
        assert parts(s) == {"requested": 4, "succeeded": 2, "failed": 1, "skipped_budget": 0, "rejected_check": 1,
                            "rejected_facts": 0, "review": 0}
        assert (s.counts["checked"], s.summary["check_failed"]) == (3, 1)
        fails = {ticket_of(f): f for f in pq.read_table(tmp_path / "o.failures.parquet").to_pylist()}
        assert (fails[TICKETS[3]]["synth_status"], fails[TICKETS[3]]["synth_kind"]) == ("failed", "consistency")
        assert fails[TICKETS[3]]["reason"] == ("consistency check: invalid reply: JSON does not match the schema at "
                                               "category: 'refunds' is not one of ['billing', 'shipping', 'account'] "
                                               "(after 1 attempts)")
        again = run(srv, tmp_path, rec, retry_failed=True)
        assert len(srv.requests) == 9  # only the failed check request was sent again
        assert parts(again) == {"requested": 4, "succeeded": 3, "failed": 0, "skipped_budget": 0, "rejected_check": 1,
                                "rejected_facts": 0, "review": 0}


def test_verify_labels_rejects_what_the_teacher_rejects(tmp_path):
    teacher = LabelTeacher(label, verdict=lambda text: "Ticket 2" not in text)
    with FakeServer(reply_fn=teacher) as srv:
        s = run(srv, tmp_path, triage(checks={"verify_labels": True}))
        assert per_ticket(srv) == {t: 2 for t in TICKETS}  # the answer and one label check
        assert parts(s) == {"requested": 4, "succeeded": 3, "failed": 0, "skipped_budget": 0, "rejected_check": 1,
                            "rejected_facts": 0, "review": 0}
        (fail,) = pq.read_table(tmp_path / "o.failures.parquet").to_pylist()
        assert (ticket_of(fail), fail["synth_status"], fail["reason"]) == (
            TICKETS[2], "rejected_check", "teacher rejected its own label")
        checks = [r for r in srv.requests if r["messages"][0]["content"].startswith("You check the labels")]
        assert [r["temperature"] for r in checks] == [0.0] * 4
        (first,) = [r for r in checks if TICKETS[0] in r["messages"][1]["content"]]
        assert first["messages"][1]["content"] == (
            f"Input:\nTriage: {TICKETS[0]}\n\nLabels:\ncategory: billing (one of billing, shipping, account)\n"
            "priority: low (one of low, medium, high)\n\nDo these labels fit the input?")
        db = sqlite3.connect(tmp_path / "o.cache.sqlite")
        judged = db.execute("SELECT COUNT(*), SUM(l.prompt_tokens) FROM ledger l JOIN responses r ON l.key = r.key "
                            "WHERE r.request LIKE '%You check the labels%'").fetchone()
        assert judged == (4, sum(r["usage"][0] for r in checks))  # each judge request is a billed ledger line
        assert s.summary["prompt_tokens"] == sum(r["usage"][0] for r in srv.requests)
        again = run(srv, tmp_path, triage(checks={"verify_labels": True}))
        assert len(srv.requests) == 8 and parts(again) == parts(s)


def test_both_checks_name_the_first_problem(tmp_path):
    teacher = LabelTeacher(label, verdict=lambda text: "Ticket 1" not in text and "Ticket 3" not in text)
    with FakeServer(reply_fn=teacher) as srv:
        s = run(srv, tmp_path, triage(checks={"consistency": 2, "verify_labels": True}))
        assert len(srv.requests) == 12 and s.summary["check_requested"] == 8
    reasons = {ticket_of(f): f["reason"] for f in pq.read_table(tmp_path / "o.failures.parquet").to_pylist()}
    assert reasons == {TICKETS[1]: "inconsistent label category: billing vs account",
                       TICKETS[3]: "teacher rejected its own label"}
    assert (s.counts["succeeded"], s.counts["rejected_check"], s.counts["checked"]) == (2, 2, 4)


SUMMARIES = {"Ticket 0": "Refund of 20 EUR", "Ticket 1": "Parcel late by 7 days", "Ticket 2": "Login fails since 2023-05-01",
             "Ticket 3": "wrong size"}


def summarised(prompt: str, n: int) -> dict:
    return {"category": "billing", "priority": "low", "summary": next(v for k, v in SUMMARIES.items() if k in prompt)}


@pytest.mark.parametrize("mode", ["keep", "drop", "review"])
def test_fact_gate_moves_the_exact_rows(tmp_path, mode):
    rec = triage(facts={"unsupported": mode})
    with FakeServer(reply_fn=LabelTeacher(summarised)) as srv:
        s = run(srv, tmp_path, rec)
    out = tmp_path / "o.parquet"
    kept = [r["messages"][0]["content"].removeprefix("Triage: ") for r in pq.read_table(out).to_pylist()]
    flagged = {TICKETS[1]: "7 days", TICKETS[2]: "2023-05-01"}
    assert (s.counts["claims"], s.counts["unsupported_claims"], s.counts["flagged_rows"]) == (3, 2, 2)
    assert s.summary["facts"] == {"unsupported": mode}
    if mode == "keep":
        assert kept == TICKETS and s.outputs == {"data": str(out)}
        assert parts(s)["succeeded"] == 4
        return
    assert kept == [TICKETS[0], TICKETS[3]]
    if mode == "drop":
        assert parts(s) == {"requested": 4, "succeeded": 2, "failed": 0, "skipped_budget": 0, "rejected_check": 0,
                            "rejected_facts": 2, "review": 0}
        fails = pq.read_table(tmp_path / "o.failures.parquet").to_pylist()
        assert [(ticket_of(f), f["synth_status"], f["reason"]) for f in fails] == [
            (t, "rejected_facts", f"unsupported claims (1): {c}") for t, c in flagged.items()]
        assert s.outputs == {"data": str(out), "failures": str(tmp_path / "o.failures.parquet")}
        assert not (tmp_path / "o.review.parquet").exists()
        return
    assert parts(s) == {"requested": 4, "succeeded": 2, "failed": 0, "skipped_budget": 0, "rejected_check": 0,
                        "rejected_facts": 0, "review": 2}
    review = pq.read_table(tmp_path / "o.review.parquet").to_pylist()
    assert [(r["messages"][0]["content"].removeprefix("Triage: "), r["synth_status"],
             [c["claim"] for c in r["unsupported_claims"]]) for r in review] == [
        (t, "review", [c]) for t, c in flagged.items()]
    assert s.outputs == {"data": str(out), "review": str(tmp_path / "o.review.parquet")}
    assert not (tmp_path / "o.failures.parquet").exists()
    # the review file belongs to the output set: a rerun that holds nothing back removes it with the rest
    with FakeServer(reply_fn=LabelTeacher(summarised)) as srv:
        again = run(srv, tmp_path, triage(facts={"unsupported": "keep"}))
    assert again.outputs == {"data": str(out)} and not (tmp_path / "o.review.parquet").exists()


def test_label_values_of_the_reply_and_task_schemas_are_not_claims(tmp_path):
    def reply(prompt: str, n: int) -> dict:
        return {"category": "billing", "priority": "low", "team": "Harbor Desk", "summary": "charged 99 EUR"}

    loose = {"type": "object", "properties": {"category": {"type": "string"}, "priority": {"enum": ["low", "high"]},
                                              "team": {"type": "string"}, "summary": {"type": "string"}}}
    task = {"type": "object", "properties": {"category": {"enum": ["billing", "shipping"]},
                                             "team": {"const": "Harbor Desk"}}}
    quoted = 'Category "{{ json.category }}", priority "{{ json.priority }}", team {{ json.team }}: {{ json.summary }}'
    claims = {}
    for name, assistant, schema in (("reply", quoted, None), ("task", quoted, task), ("json", "{{ json | tojson }}", None)):
        rec = triage(reply={"schema": loose}, output={"user": "{{ prompt }}", "assistant": assistant}, limit_seeds=1)
        with FakeServer(reply_fn=LabelTeacher(reply)) as srv:
            s = run(srv, tmp_path, rec, output=tmp_path / f"{name}.parquet", output_schema=schema)
        (row,) = pq.read_table(tmp_path / f"{name}.parquet").to_pylist()
        claims[name] = {c["claim"]: c["kind"] for c in row["claims"]}
        assert s.counts["unsupported_claims"] == len(claims[name])  # none of these is in the ticket
    # the reply schema defines "low" (an enum); the task schema adds "billing" (an enum) and "Harbor Desk" (a const);
    # a reply written as JSON is scanned for its values: its keys and quotes make no titles
    assert claims == {"reply": {"billing": "title", "Harbor Desk": "entity", "99 EUR": "number"},
                      "task": {"99 EUR": "number"},
                      "json": {"Harbor Desk": "entity", "99 EUR": "number"}}


def test_checks_need_labels_and_a_sane_n(tmp_path):
    with pytest.raises(RecipeError) as e:
        load_synth_recipe({"name": "x", "prompt": "p", "checks": {"consistency": 1, "check_temperature": 3}})
    assert e.value.problems == ["checks.check_temperature: 3 is greater than the maximum of 2",
                                "checks.consistency: 1 is less than the minimum of 2"]
    p = tmp_path / "r.yaml"
    p.write_text("name: x\nprompt: p\nreply:\n  schema: {type: object}\nchecks:\n  consistency: 2\n  verify_labels: true\n"
                 "facts: {unsupported: hide}\n")
    with pytest.raises(RecipeError) as e:
        load_synth_recipe(p)
    assert "facts.unsupported (line 8): 'hide' is not one of ['keep', 'drop', 'review']" in str(e.value)
    p.write_text("name: x\nprompt: p\nreply:\n  schema: {type: object}\nchecks:\n  consistency: 2\n  verify_labels: true\n")
    with pytest.raises(RecipeError) as e:
        load_synth_recipe(p)
    why = "compares labels, but reply.schema has no property with an `enum` (the labels to check)"
    assert e.value.problems == [f"checks.consistency (line 6): {why}", f"checks.verify_labels (line 7): {why}"]


def test_cli_prints_the_checks_and_takes_the_task_schema(tmp_path):
    rp = tmp_path / "r.yaml"
    rp.write_text(json.dumps(triage(checks={"consistency": 2}, facts={"unsupported": "review"})))
    task = tmp_path / "task.schema.json"
    task.write_text(json.dumps(SCHEMA))
    with FakeServer(reply_fn=LabelTeacher(lambda p, n: {**label(p, n), "summary": summarised(p, n)["summary"]})) as srv:
        r = CliRunner().invoke(cli, ["synth", "--teacher", "m", "--base-url", srv.base_url, "--recipe", str(rp),
                                     "--seeds", str(write_seeds(tmp_path / "s.jsonl")), "-o", str(tmp_path / "o.parquet"),
                                     "--output-schema", str(task)])
    assert r.exit_code == 0, r.output
    text = " ".join(r.stderr.split())
    assert ("requested 4 = succeeded 2 + failed 0 + skipped by budget 0 + rejected by checks 1 + to review 1 -> "
            f"{tmp_path / 'o.parquet'}") in text
    assert "label checks (2 answers agree): 4 rows checked, 1 rejected; 4 check requests (0 failed)" in text
    assert f"for review: {tmp_path / 'o.review.parquet'} (rows with unsupported claims: 1)" in text


def test_check_requests_count_against_the_token_limit(tmp_path):
    from curate.synth import stop_message

    rec = triage(checks={"consistency": 2})
    with FakeServer(reply_fn=LabelTeacher(label)) as probe:  # what each request costs (an extra costs as its answer)
        run(probe, tmp_path, rec, output=tmp_path / "probe.parquet")
    cost = {t: sum(next(r["usage"] for r in probe.requests if t in r["messages"][-1]["content"])) for t in TICKETS}
    reserve = {t: len("Triage: " + t) // 4 + 8 + 40 for t in TICKETS}  # a request's worst case: estimate + max_tokens
    # room for the 4 answers and the checks of tickets 0 and 1, not for ticket 2's check (nor, after it, ticket 3's)
    limit = sum(cost.values()) + cost[TICKETS[0]] + cost[TICKETS[1]] + reserve[TICKETS[2]] - 1
    with FakeServer(reply_fn=LabelTeacher(label)) as srv:
        s = run(srv, tmp_path, rec, max_total_tokens=limit, concurrency=1)
        assert per_ticket(srv) == {TICKETS[0]: 2, TICKETS[1]: 2, TICKETS[2]: 1, TICKETS[3]: 1}
        assert parts(s) == {"requested": 4, "succeeded": 1, "failed": 0, "skipped_budget": 2, "rejected_check": 1,
                            "rejected_facts": 0, "review": 0}
        assert (s.summary["check_requested"], s.summary["check_skipped_budget"]) == (4, 2)
        assert s.summary["prompt_tokens"] + s.summary["completion_tokens"] == limit - reserve[TICKETS[2]] + 1
        assert s.failure == stop_message(s) and s.failure.startswith(
            f"2 of 4 requests (2 of 4 check requests) skipped: the token limit of {limit} had no room")
        fails = {ticket_of(f): (f["synth_status"], f["synth_kind"]) for f in
                 pq.read_table(tmp_path / "o.failures.parquet").to_pylist()}
        assert fails == {TICKETS[1]: ("rejected_check", "generate"), TICKETS[2]: ("skipped_budget", "consistency"),
                         TICKETS[3]: ("skipped_budget", "consistency")}
        again = run(srv, tmp_path, rec)  # no limit: only the two skipped check requests are sent
        assert len(srv.requests) == 8 and again.summary["http_requests"] == 2
        assert parts(again)["succeeded"] == 3 and again.failure is None


def test_shipped_triage_recipe_sends_four_requests_a_row(tmp_path):
    root = Path(__file__).resolve().parents[1]
    teacher = LabelTeacher(lambda prompt, n: {"category": "billing", "priority": "low", "summary": "a ticket"})
    with FakeServer(reply_fn=teacher) as srv:
        s = synthesize(tmp_path / "t.parquet", recipe=root / "recipes" / "synth-triage.yaml", teacher="m",
                       base_url=srv.base_url, max_seeds=4, show_progress=False,
                       output_schema=root / "examples" / "demo" / "task.schema.json")
        assert (s.counts["requested"], s.counts["succeeded"], s.counts["checked"]) == (4, 4, 4)
        assert (len(srv.requests), s.summary["check_requested"]) == (16, 12)  # 1 + 2 (consistency: 3) + 1 each
        assert s.summary["checks"] == {"consistency": 3, "check_temperature": 0.7, "verify_labels": True,
                                       "agree_with_data": None}


def test_labels_that_contradict_the_training_data_are_rejected(tmp_path):
    """A teacher that calls every ticket billing: the login ticket is rejected, since the training rows nearest
    to it say account; the rows the data agrees with are kept. No request is sent for the check."""
    train = tmp_path / "train.jsonl"
    rows = [("I was charged twice this month.", "billing"), ("Refund my last invoice please.", "billing"),
            ("My card was declined at renewal.", "billing"), ("I cannot log in to my account.", "account"),
            ("My password reset email never arrives.", "account"), ("I am locked out of my login.", "account")]
    train.write_text("".join(json.dumps({"messages": [
        {"role": "user", "content": u},
        {"role": "assistant", "content": json.dumps({"category": c, "priority": "low", "summary": "x"})}]}) + "\n"
        for u, c in rows))
    teacher = LabelTeacher(lambda prompt, n: {"category": "billing", "priority": "low", "summary": "a ticket"})
    with FakeServer(reply_fn=teacher) as srv:
        rec = triage(checks={"agree_with_data": 3})
        with pytest.raises(Exception, match="agree_with_data compares labels with the training data"):
            run(srv, tmp_path, rec)
        seeds = write_seeds(tmp_path / "s.jsonl", ["Ticket: I was charged twice for one renewal.",
                                                   "Ticket: I cannot log in, my password is refused."])
        out = synthesize(tmp_path / "o.parquet", recipe=rec, teacher="m", base_url=srv.base_url, seeds=seeds,
                         show_progress=False, max_retries=0, reference=train)
        assert len(srv.requests) == 2  # one answer per seed; the check itself asks nothing
    assert (out.counts["succeeded"], out.counts["rejected_check"]) == (1, 1)
    failed = pq.read_table(out.outputs["failures"]).to_pylist()
    assert [f["synth_status"] for f in failed] == ["rejected_check"]
    assert "log in" in failed[0]["request"]
    assert failed[0]["reason"] == "label category billing, but 3 of its 3 nearest training rows say account"
