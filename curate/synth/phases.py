"""The phases a chunk of synth requests goes through: generate -> label checks -> agreement with the data ->
--verify -> the fact gate, each on the rows of one chunk (see stage.py for the order and the counts).

Between chunks a run keeps only small per-row state: the keys of the later phases' requests already sent
(so an identical check request is paid once per run, as when a phase ran over all rows at once). The one
phase that needs every row first is `checks.agree_with_data`: its embedding (TF-IDF is fitted on the
reference and all rows together) sees every row's user message, so `Phases.agree_input` keeps each
row's user message and labels, and the rows themselves wait in a temporary file (sinks.RowSpool).
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from typing import Any

from curate.dataset import make_row
from curate.errors import InputError
from curate.synth.cache import Cache, Outcome, scrub_secrets
from curate.synth.checks import (
    REJECTED_LABEL,
    consistency_jobs,
    disagreement,
    label_accepted,
    label_job,
    labels_only,
)
from curate.synth.client import Teacher
from curate.synth.facts import Sources, check_claims
from curate.synth.jobs import Bar, Job, Limits, Progress, execute, parse_json_reply
from curate.synth.recipe import SynthRecipe
from curate.synth.sinks import AGREE, CHECK, FACTS, GENERATE, VERIFY, SynthSinks
from curate.synth.templates import render
from curate.synth.verify import apply_labels, judge_job


class Phases:
    """One run's phases, applied chunk by chunk; the counts (`c`: StageOutcome counts, `more`: the check and
    verify request counts) add up over the chunks to what one pass over all rows gives."""

    def __init__(self, rec: SynthRecipe, cache: Cache, teacher: Teacher, limits: Limits, model: str, host: str,
                 sinks: SynthSinks, progress: Progress, total: int, *, retry_failed: bool, verify: bool,
                 defined: frozenset[str], counts: dict[str, int], more: dict[str, int]):
        self.rec, self.cache, self.teacher, self.limits, self.model, self.host = rec, cache, teacher, limits, model, host
        self.sinks, self.progress, self.retry_failed, self.verify, self.defined = sinks, progress, retry_failed, verify, defined
        self.c, self.more = counts, more
        self.bar = progress.bar(f"synth {rec.name}", total)
        self.docs = [(d.name, d.text) for d in rec.documents] if rec.grounding_use == "all" else []
        self.check = _Later(self, f"check {rec.name}", "check", retry_failed)
        self.judge = _Later(self, f"verify {rec.name}", "verify", False)
        self.users: list[str] = []  # agree_with_data's input: every checked row's user message and labels
        self.labels: list[dict[str, Any]] = []

    async def generate(self, jobs: list[Job]) -> list[dict[str, Any]]:
        """The rows of a chunk's requests; failed and skipped ones (and replies that make no row) listed."""
        outcomes = await execute(jobs, self.cache, self.teacher, self.limits, retry_failed=self.retry_failed,
                                 progress=self.bar)
        rec, model, host, c = self.rec, self.model, self.host, self.c
        rows, failures = [], []
        for j in jobs:
            out = outcomes[j.key]
            c["from_cache"] += out.cached
            row, problem = (_row(rec, j, out, self.docs, self.defined), None) if out.status == "ok" else (None, out.reason)
            if out.status == "ok" and isinstance(row, str):
                row, problem = None, row
            if row is not None:
                row.update(synth_teacher=model, synth_base_url_host=host, synth_recipe=rec.name,
                           synth_recipe_hash=rec.hash)
                rows.append(row)
                continue
            status = "skipped_budget" if out.status == "skipped_budget" else "failed"
            c[status] += 1
            failures.append(_failure(rec, j, out, status, scrub_secrets(problem, [self.teacher.api_key]), model, host))
        self.sinks.fail(GENERATE, failures)
        return rows

    async def check_labels(self, rows: list[dict]) -> list[dict]:
        """The recipe's label checks (consistency, verify_labels) on every row; returns the rows that pass.

        A row the checks reject is `rejected_check`; one whose check request failed or was skipped is `failed` /
        `skipped_budget`, listed with that request (a rerun, with --retry-failed for failed ones, completes it).
        """
        rec, model, c = self.rec, self.model, self.c
        planned = [(r, consistency_jobs(rec, r["_job"], model),
                    [label_job(rec, r["_job"], model, r["_user"], r["_reply"])] if rec.verify_labels else [])
                   for r in rows]
        outcomes = await self.check.send([x for _, extra, judge in planned for x in extra + judge])
        kept, failures = [], []
        for r, extra, judge in planned:
            bad = next((x for x in extra + judge if outcomes[x.key].status != "ok"), None)
            if bad is not None:
                out = outcomes[bad.key]
                status = "skipped_budget" if out.status == "skipped_budget" else "failed"
                c[status] += 1
                reason = f"{bad.kind} check: {scrub_secrets(out.reason, [self.teacher.api_key]) or 'unknown'}"
                failures.append(_failure(rec, bad, out, status, reason, model, self.host))
                continue
            c["checked"] += 1
            reason = disagreement(rec, [r["_reply"], *(parse_json_reply(outcomes[x.key].content) for x in extra)])
            if reason is None and judge and not label_accepted(outcomes[judge[0].key].content):
                reason = REJECTED_LABEL
            if reason is None:
                kept.append(r)
            else:
                c["rejected_check"] += 1
                failures.append(self._rejected(r, "rejected_check", reason))
        self.sinks.fail(CHECK, failures)
        return kept

    def agree_input(self, rows: list[dict]) -> list[dict]:
        """Keep what agree_with_data compares of each row (its user message, its labels); the rows, ready to
        wait in a file (a reply check is a closure: the job keeps its fields, not its check)."""
        for r in rows:
            self.users.append(r["_user"])
            self.labels.append(labels_only(self.rec, r["_reply"]))
            r["_job"].check = None
        return rows

    def agree_with_data(self, rows: list[dict], reasons: list[str | None]) -> list[dict]:
        """Rows whose labels contradict a clear majority of their nearest reference rows are `rejected_check`."""
        kept, failures = [], []
        for r, reason in zip(rows, reasons):
            if reason is None:
                kept.append(r)
            else:
                self.c["rejected_check"] += 1
                failures.append(self._rejected(r, "rejected_check", reason))
        self.sinks.fail(AGREE, failures)
        return kept

    async def finish(self, rows: list[dict]) -> None:
        """--verify, the claim counts and the fact gate on a chunk's rows; then they are written."""
        if self.verify and rows:
            await self._verify(rows)
        c = self.c
        for r in rows:
            c["claims"] += len(r["claims"])
            c["unsupported_claims"] += len(r["unsupported_claims"])
            c["flagged_rows"] += bool(r["unsupported_claims"])
        kept, held = self._gate_facts(rows)
        c["succeeded"] += len(kept)
        self.sinks.write(kept, held)

    async def _verify(self, rows: list[dict]) -> None:
        """Judge every row with claims; a failed judgement leaves `judge` empty and is listed in the failures file."""
        rec, model, more = self.rec, self.model, self.more
        pairs = [(r, judge_job(model, r["_seed"], r["_generated"], r["claims"], r["_sources"])) for r in rows if r["claims"]]
        more["verify_requested"] += len(pairs)
        outcomes = await self.judge.send([j for _, j in pairs])
        failures = []
        for r, j in pairs:
            out = outcomes[j.key]
            if out.status == "ok":
                apply_labels(r["claims"], out.content)
                r["unsupported_claims"] = [c for c in r["claims"] if c["status"] == "unsupported" or c["judge"] == "unsupported"]
            else:
                more["verify_failed"] += out.status == "failed"
                more["verify_skipped_budget"] += out.status == "skipped_budget"
                failures.append(_failure(rec, j, out, out.status, scrub_secrets(out.reason, [self.teacher.api_key]),
                                         model, self.host))
        self.sinks.fail(VERIFY, failures)

    def _gate_facts(self, rows: list[dict]) -> tuple[list[dict], list[dict]]:
        """The recipe's `facts.unsupported`: (rows kept, rows for review); dropped ones go to the failures."""
        rec = self.rec
        if rec.unsupported_facts == "keep":
            return rows, []
        kept, held, failures = [], [], []
        for r in rows:
            flagged = r["unsupported_claims"]
            if not flagged:
                kept.append(r)
            elif rec.unsupported_facts == "drop":
                self.c["rejected_facts"] += 1
                claims = ", ".join(x["claim"] for x in flagged)
                failures.append(self._rejected(r, "rejected_facts", f"unsupported claims ({len(flagged)}): {claims}"[:300]))
            else:
                self.c["review"] += 1
                r["synth_status"] = "review"
                held.append(r)
        self.sinks.fail(FACTS, failures)
        return kept, held

    def _rejected(self, row: dict[str, Any], status: str, reason: str) -> dict[str, Any]:
        """The failures-file entry of a row a check rejected: its request, its reply and why."""
        return {**_failure(self.rec, row["_job"], row["_out"], status, reason, self.model, self.host),
                "reply": row["_out"].content}

    async def close(self) -> None:
        """Close every client (the teacher last); the later phases' counters join the teacher's."""
        try:
            await self.check.close()
        finally:
            try:
                await self.judge.close()
            finally:
                await self.teacher.close()


class _Later:
    """A later phase's requests over the whole run: a client of its own (its counters join the teacher's, its
    errors under `prefix:`), one progress bar, and each distinct request sent once per run (an identical one
    in a later chunk is answered from the cache, or skipped again when the budget skipped it)."""

    def __init__(self, phases: Phases, label: str, prefix: str, retry_failed: bool):
        self.phases, self.label, self.prefix, self.retry_failed = phases, label, prefix, retry_failed
        self.client: Teacher | None = None
        self.bar: Bar | None = None
        self.sent: dict[str, Outcome | None] = {}  # key -> None (in the cache) or the budget's skip
        self.more = {"check": ("check_requested", "check_failed", "check_skipped_budget"),
                     "verify": ("verify_requested", "verify_failed", "verify_skipped_budget")}[prefix]

    async def send(self, jobs: list[Job]) -> dict[str, Outcome]:
        p, teacher = self.phases, self.phases.teacher
        unique = {j.key: j for j in jobs}
        new = [j for k, j in unique.items() if k not in self.sent]
        if self.client is None:
            self.client = Teacher(teacher.model, teacher.base_url, teacher.api_key, timeout=teacher.timeout,
                                  retry=teacher.retry, response_format=teacher.response_format,
                                  max_connections=p.limits.concurrency)
            self.bar = p.progress.bar(self.label)
        self.bar.grow(len(new))
        self.client.downgraded = self.client.downgraded or teacher.downgraded
        outcomes = await execute(new, p.cache, self.client, p.limits, retry_failed=self.retry_failed, progress=self.bar)
        teacher.downgraded = teacher.downgraded or self.client.downgraded
        if self.prefix == "check":  # --verify counts its requests per row (Phases._verify)
            requested, failed, skipped = self.more
            p.more[requested] += len(new)
            for j in new:
                p.more[failed] += outcomes[j.key].status == "failed"
                p.more[skipped] += outcomes[j.key].status == "skipped_budget"
        for j in new:
            out = outcomes[j.key]
            self.sent[j.key] = out if out.status == "skipped_budget" else None
        earlier = [k for k in unique if k not in outcomes]
        if earlier:
            found = p.cache.get_many(earlier)
            for k in earlier:
                outcomes[k] = self.sent[k] or found[k]  # every request sent but not skipped is in the cache
        return outcomes

    async def close(self) -> None:
        if self.client is None:
            return
        await self.client.close()
        teacher, st = self.phases.teacher, self.client.stats
        teacher.stats.sent += st.sent
        teacher.stats.retries += st.retries
        teacher.stats.invalid_replies += st.invalid_replies
        for k, v in st.errors.items():
            teacher.stats.errors[f"{self.prefix}:{k}"] = teacher.stats.errors.get(f"{self.prefix}:{k}", 0) + v


def _row(rec: SynthRecipe, j: Job, out: Outcome, docs: list[tuple[str, str]],
         defined: frozenset[str] = frozenset()) -> dict[str, Any] | str:
    """The canonical row for one successful reply, or the reason it cannot become one."""
    parsed = parse_json_reply(out.content) if j.schema is not None else None
    v = {**j.variables, "reply": out.content, "json": parsed}
    t = rec.templates
    try:
        user = render(t["output.user"], v, "output.user", j.seed) if "output.user" in t else j.messages[-1]["content"]
        if "output.assistant" in t:
            assistant = render(t["output.assistant"], v, "output.assistant", j.seed)
        else:
            assistant = json.dumps(parsed, ensure_ascii=False) if j.schema is not None else out.content.strip()
        system = render(t["output.system"], v, "output.system", j.seed) if "output.system" in t else None
    except InputError as exc:  # an output template that does not fit this reply fails only this row
        return f"output template failed: {exc}"
    if not user or not assistant:
        return "output template produced an empty user or assistant message"
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    row = make_row(messages, source=j.seed.source, origin="synthetic")
    if j.schema is not None and "output.assistant" not in t:
        answer = "\n".join(_leaves(parsed))
    else:  # an assistant template that writes JSON (`{{ json | tojson }}`): its values, not its quoted keys
        written = _json_value(assistant)
        answer = "\n".join(_leaves(written)) if isinstance(written, (dict, list)) else assistant
    user_src = (rec.get("output") or {}).get("user", "")
    generated = f"{user}\n\n{answer}" if "json" in user_src or "reply" in user_src else answer
    claims = check_claims(generated, Sources(docs + j.seed.texts), defined)
    row.update(
        synth_prompt_hash=j.key, synth_seed_id=j.seed.id, synth_sample=j.sample, synth_prompt_tokens=out.prompt_tokens,
        synth_completion_tokens=out.completion_tokens, synth_attempts=out.attempts, synth_finish_reason=out.finish_reason,
        synth_timestamp=_iso(out.created), synth_status="ok", claims=claims,
        unsupported_claims=[c for c in claims if c["status"] == "unsupported"],
        _generated=generated, _sources=docs + j.seed.texts, _seed=j.seed, _job=j, _out=out, _user=user,
        _reply=parsed,
    )
    return row


def _failure(rec: SynthRecipe, j: Job, out: Outcome, status: str, reason: str | None, model: str,
             host: str) -> dict[str, Any]:
    return {
        "synth_teacher": model, "synth_base_url_host": host, "synth_recipe": rec.name, "synth_recipe_hash": rec.hash,
        "synth_prompt_hash": j.key, "synth_seed_id": j.seed.id, "synth_sample": j.sample, "synth_prompt_tokens": out.prompt_tokens,
        "synth_completion_tokens": out.completion_tokens, "synth_attempts": out.attempts,
        "synth_finish_reason": out.finish_reason, "synth_timestamp": _iso(out.created or time.time()), "synth_status": status,
        "synth_kind": j.kind, "reason": reason or "unknown", "source": j.seed.source,
        "request": json.dumps({"messages": j.messages, "params": j.params}, ensure_ascii=False),
    }


def _leaves(value: Any) -> list[str]:
    """String and number values of a JSON reply (its keys are not claims)."""
    if isinstance(value, dict):
        return [x for v in value.values() for x in _leaves(v)]
    if isinstance(value, list):
        return [x for v in value for x in _leaves(v)]
    return [] if value is None or isinstance(value, bool) else [str(value)]


def _json_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="seconds")
