"""`synthesize`: a recipe + seeds + a teacher -> canonical Parquet of synthetic rows, and a failures file.

It returns a StageOutcome whose counts balance: in = requested = succeeded + failed + skipped_budget +
rejected_check + rejected_facts + review (counts also hold from_cache, checked, claims, unsupported_claims,
flagged_rows). The output holds only the rows kept; OUT.failures.parquet holds every failed or budget-skipped
request with its reason (rerun, with --retry-failed for the failed ones) and every row a check rejected;
OUT.review.parquet the rows with unsupported claims under `facts: {unsupported: review}`. OUT.cache.sqlite
holds every finished response, so a rerun of the same command resumes without sending any finished request
again. The phases: generate -> label checks (the recipe's `checks:`) -> --verify -> the fact gate.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pyarrow as pa

from curate.dataset import SCHEMA, SOURCE_TYPE, make_row
from curate.errors import InputError, UsageError
from curate.inputs import open_input
from curate.outcome import StageOutcome, over_rate
from curate.outputs import OutputSet, write_table
from curate.synth.cache import Cache, Outcome, scrub_secrets
from curate.synth.checks import REJECTED_LABEL, consistency_jobs, disagreement, label_accepted, label_job
from curate.synth.client import Budget, RateLimiter, RetryPolicy, Teacher
from curate.synth.config import SynthConfig
from curate.synth.facts import CLAIM_TYPE, Sources, check_claims, schema_values
from curate.synth.jobs import Job, Limits, Progress, execute, parse_json_reply, plan_jobs
from curate.synth.recipe import SynthRecipe, load_seeds, load_synth_recipe
from curate.synth.templates import Seed, render
from curate.synth.verify import apply_labels, judge_job

PROVENANCE = [
    ("synth_teacher", pa.string()), ("synth_base_url_host", pa.string()), ("synth_recipe", pa.string()),
    ("synth_recipe_hash", pa.string()), ("synth_prompt_hash", pa.string()), ("synth_seed_id", pa.string()),
    ("synth_sample", pa.int64()), ("synth_prompt_tokens", pa.int64()), ("synth_completion_tokens", pa.int64()),
    ("synth_attempts", pa.int64()), ("synth_finish_reason", pa.string()), ("synth_timestamp", pa.string()),
    ("synth_status", pa.string()),
]
OUTPUT_SCHEMA = pa.schema(list(SCHEMA) + [pa.field(n, t) for n, t in PROVENANCE] + [
    pa.field("claims", pa.list_(CLAIM_TYPE)), pa.field("unsupported_claims", pa.list_(CLAIM_TYPE))])
# reply: the teacher's reply of a row a check rejected (rejected_check, rejected_facts), for a person to look at
FAILURES_SCHEMA = pa.schema([pa.field(n, t) for n, t in PROVENANCE] + [
    ("synth_kind", pa.string()), ("reason", pa.string()), ("source", SOURCE_TYPE), ("request", pa.string()),
    ("reply", pa.string())])

LIMIT_OPTIONS = {"max_total_tokens": "--max-total-tokens", "budget": "--budget"}  # how a stop message names a limit
PARTS = ("succeeded", "failed", "skipped_budget", "rejected_check", "rejected_facts", "review")  # sum to requested
COUNTS = ("requested", *PARTS, "from_cache", "checked", "claims", "unsupported_claims", "flagged_rows")


def default_paths(output: str | Path) -> tuple[Path, Path]:
    """OUT.failures.parquet and OUT.cache.sqlite beside the output."""
    out = Path(output)
    return out.with_name(out.stem + ".failures.parquet"), out.with_name(out.stem + ".cache.sqlite")


def review_path(output: str | Path) -> Path:
    """OUT.review.parquet: rows with unsupported claims held for a person (`facts: {unsupported: review}`)."""
    out = Path(output)
    return out.with_name(out.stem + ".review.parquet")


def synthesize(output: str | Path, config: SynthConfig | Mapping[str, Any] | None = None, *, trust: bool = False,
               cache_path: str | Path | None = None, base_dir: str | Path | None = None, show_progress: bool = True,
               output_schema: str | Path | dict[str, Any] | None = None, reference: Any = None,
               **overrides: Any) -> StageOutcome:
    """Generate synthetic rows for every seed of the settings' recipe with their teacher ("local" starts the
    embedded one), and write them to `output` (failed and skipped requests to OUT.failures.parquet).

    `trust` lets the recipe read files outside its folder and the current directory; `cache_path` is the
    request cache (default OUT.cache.sqlite); relative paths in the settings and in the recipe are relative
    to `base_dir` (default: the current directory, and the recipe file's folder for the recipe's own paths).
    `output_schema` is the task's output JSON Schema (a file or a dict, e.g. validate's --output-schema):
    the values it defines, like those of the recipe's reply schema, are not fact claims. `reference` is the
    data the rows will join (a file or a table), for the recipe's `checks.agree_with_data`.
    """
    cfg = SynthConfig.build(config, **overrides)
    task_schema = None
    if output_schema is not None:
        from curate.replies import load_schema

        task_schema = load_schema(output_schema if isinstance(output_schema, dict) or base_dir is None
                                  else _under(base_dir, os.fspath(output_schema)))
    recipe, seeds = cfg.recipe, cfg.seeds
    if base_dir is not None:
        recipe = recipe if isinstance(recipe, dict) else _under(base_dir, recipe)
        seeds = seeds if seeds is None else _under(base_dir, seeds)
    rec = load_synth_recipe(recipe, base_dir, trust=trust)
    if rec.agree_with_data and reference is None:
        raise UsageError(f"recipe {rec.name}: checks.agree_with_data compares labels with the training data; give it "
                         "(--reference FILE, or synthesize(reference=...))")
    ref_table = open_input(reference).read(["messages"]) if rec.agree_with_data else None
    pricing = rec.get("pricing") or {}
    p_in = cfg.price_in if cfg.price_in is not None else pricing.get("prompt_per_1m", 0.0)
    p_out = cfg.price_out if cfg.price_out is not None else pricing.get("completion_per_1m", 0.0)
    if cfg.budget is not None and not (p_in or p_out):
        raise UsageError("--budget needs token prices: set pricing in the recipe or pass --price-in/--price-out")
    loaded = load_seeds(rec, seeds, cfg.max_seeds)  # a missing or unreadable seed file fails before a teacher starts
    teacher, base_url, response_format = cfg.teacher, cfg.base_url, cfg.response_format
    with ExitStack() as stack:
        if teacher == "local":
            from curate.synth.local import start_local_teacher

            local = stack.enter_context(start_local_teacher())
            base_url, teacher = local.base_url, local.model
            response_format = "json_object" if response_format == "auto" else response_format
        api_key = os.environ.get(cfg.api_key_env) if cfg.api_key_env else None
        if not api_key:
            if base_url is None:
                raise UsageError(f"no API key: set {cfg.api_key_env} (or pass --api-key-env NAME, or --base-url for a "
                                 "local server that needs none)")
            api_key = "no-key"  # local servers (llama.cpp, vLLM, Ollama) accept any key
        limits = Limits(cfg.concurrency, RateLimiter(cfg.rpm) if cfg.rpm else None,
                        RateLimiter(cfg.tpm) if cfg.tpm else None,
                        Budget(cfg.max_total_tokens, cfg.budget, p_in / 1e6, p_out / 1e6))
        client = Teacher(teacher, base_url, api_key, timeout=cfg.timeout,
                         retry=RetryPolicy(max_retries=cfg.max_retries), response_format=response_format,
                         max_connections=cfg.concurrency)
        return _run(cfg, rec, loaded, Path(output), cache_path, teacher, base_url, limits, client, show_progress,
                    schema_values(rec.reply_schema, task_schema), ref_table)


def stop_message(outcome: StageOutcome, options: Mapping[str, str] | None = None) -> str | None:
    """One line when a limit skipped requests: how many, which limit, how to continue; None otherwise.

    `options` names the limits as the user set them (default the CLI flags; `curate run` names its recipe keys).
    """
    c, s = outcome.counts, outcome.summary
    if not (c["skipped_budget"] or s["verify_skipped_budget"]):
        return None
    option = (options or LIMIT_OPTIONS).get(s["stopped_by"] or "", "limit")
    counts = f"{c['skipped_budget']} of {c['requested']} requests"
    if s["check_skipped_budget"]:
        counts += f" ({s['check_skipped_budget']} of {s['check_requested']} check requests)"
    if s["verify_skipped_budget"]:
        counts += f" and {s['verify_skipped_budget']} of {s['verify_requested']} verify requests"
    if s["stopped_by"] == "budget":
        spent = f"${s['cost'] + s['possibly_paid_cost']:.4f}"
        lost = f", ${s['possibly_paid_cost']:.4f} of it possibly paid" if s["possibly_paid_attempts"] else ""
    else:
        spent = f"{s['prompt_tokens'] + s['completion_tokens'] + s['possibly_paid_tokens']} tokens"
        lost = f", {s['possibly_paid_tokens']} of them possibly paid" if s["possibly_paid_attempts"] else ""
    return (f"{counts} skipped: {s['stopped']} (spent {spent}{lost}); rerun with a larger {option} to continue "
            "(finished requests come from the cache and are not paid again)")


@dataclass
class _Phase:
    """What the phases after generation share: where to send, cache and record."""

    cache: Cache
    teacher: Teacher
    limits: Limits
    model: str
    host: str
    rec: SynthRecipe
    failures: list[dict[str, Any]]
    show_progress: bool


def _under(base: str | Path, path: str) -> str:
    return path if Path(path).is_absolute() else str(Path(base) / path)


def _run(cfg: SynthConfig, rec: SynthRecipe, loaded: tuple[list[Seed], int], output: Path, cache_path: Any,
         model: str, base_url: str | None, limits: Limits, teacher: Teacher, show_progress: bool,
         defined: frozenset[str] = frozenset(), reference: Any = None) -> StageOutcome:
    t0 = time.monotonic()
    failures_path, default_cache = default_paths(output)
    held_path = review_path(output)
    host = _host(base_url)
    c = dict.fromkeys(COUNTS, 0)
    s: dict[str, Any] = {"teacher": model, "base_url_host": host, "recipe": rec.name, "recipe_hash": rec.hash,
                         "cache": str(cache_path or default_cache)}
    seeds, s["duplicate_seeds"] = loaded
    jobs, s["duplicate_prompts"] = plan_jobs(rec, seeds, model)
    s["seeds"], c["requested"] = len(seeds), len(jobs)
    more = dict.fromkeys(("check_requested", "check_failed", "check_skipped_budget", "verify_requested",
                          "verify_failed", "verify_skipped_budget"), 0)
    cache = Cache(s["cache"], run_id=uuid.uuid4().hex[:12], secrets=[teacher.api_key])
    try:
        with Progress(f"synth {rec.name}", len(jobs), show_progress) as bar:
            outcomes = asyncio.run(_execute_and_close(jobs, cache, teacher, limits, cfg.retry_failed, bar))
        rows, failures = [], []
        docs = [(d.name, d.text) for d in rec.documents] if rec.grounding_use == "all" else []
        for j in jobs:
            out = outcomes[j.key]
            c["from_cache"] += out.cached
            row, problem = (_row(rec, j, out, docs, defined), None) if out.status == "ok" else (None, out.reason)
            if out.status == "ok" and isinstance(row, str):
                row, problem = None, row
            if row is not None:
                row.update(synth_teacher=model, synth_base_url_host=host, synth_recipe=rec.name,
                           synth_recipe_hash=rec.hash)
                rows.append(row)
                continue
            status = "skipped_budget" if out.status == "skipped_budget" else "failed"
            c[status] += 1
            failures.append(_failure(rec, j, out, status, scrub_secrets(problem, [teacher.api_key]), model, host))
        ctx = _Phase(cache, teacher, limits, model, host, rec, failures, show_progress)
        if rows and (rec.consistency > 1 or rec.verify_labels):
            rows = _check_labels(rows, ctx, c, more, cfg.retry_failed)
        if rows and rec.agree_with_data:
            rows = _agree_with_data(rows, ctx, c, reference)
        if cfg.verify and rows:
            _verify(rows, ctx, more)
        for r in rows:
            c["claims"] += len(r["claims"])
            c["unsupported_claims"] += len(r["unsupported_claims"])
            c["flagged_rows"] += bool(r["unsupported_claims"])
        rows, held = _gate_facts(rows, ctx, c)
        c["succeeded"] = len(rows)
        kept = pa.Table.from_pylist(rows, schema=OUTPUT_SCHEMA)
        rejected = pa.Table.from_pylist(failures, schema=FAILURES_SCHEMA)
        outputs = {"data": str(output)}
        # the rows, the failures and the review file are one set; stale companions of an earlier run go with it
        with OutputSet(output, [failures_path, held_path]) as outs:
            write_table(kept, output, outs)
            if failures:
                write_table(rejected, failures_path, outs)
                outputs["failures"] = str(failures_path)
            if held:
                write_table(pa.Table.from_pylist(held, schema=OUTPUT_SCHEMA), held_path, outs)
                outputs["review"] = str(held_path)
        reasons: dict[str, int] = {}
        for f in failures:
            key = f["reason"].split(" (")[0][:80]
            reasons[key] = reasons.get(key, 0) + 1
        run = cache.totals(cache.run_id)
        lifetime = cache.totals()
    finally:
        cache.close()
    st, b = teacher.stats, limits.budget
    stopped = None
    if b.stopped_by == "max_total_tokens":
        stopped = f"the token limit of {b.max_tokens} had no room for the next request"
    elif b.stopped_by == "budget":
        stopped = f"the budget of ${b.max_cost:g} had no room for the next request"
    s.update(
        http_requests=st.sent, retries=st.retries, invalid_replies=st.invalid_replies, errors=dict(st.errors),
        failure_reasons=reasons, prompt_tokens=int(run["prompt_tokens"]),
        completion_tokens=int(run["completion_tokens"]), cost=run["cost"],
        possibly_paid_attempts=int(run["possibly_paid_calls"]), possibly_paid_tokens=int(run["possibly_paid_tokens"]),
        possibly_paid_cost=run["possibly_paid_cost"], cache_lifetime=lifetime,
        checks={"consistency": rec.consistency if rec.consistency > 1 else None,
                "check_temperature": rec.check_temperature, "verify_labels": rec.verify_labels,
                "agree_with_data": rec.agree_with_data or None},
        facts={"unsupported": rec.unsupported_facts}, **more,
        response_format_downgraded=teacher.downgraded, stopped=stopped, stopped_by=b.stopped_by,
        elapsed_s=round(time.monotonic() - t0, 3))
    outcome = StageOutcome("synth", {"in": c["requested"], **c}, outputs, {"config": cfg.to_dict(), **s},
                           kept=kept, rejected=rejected, parts=PARTS)
    outcome.failure = stop_message(outcome) or over_rate(c["failed"], c["requested"], cfg.max_failure_rate,
                                                         "requests failed")
    return outcome


async def _execute_and_close(jobs: list[Job], cache: Cache, teacher: Teacher, limits: Limits, retry_failed: bool,
                             bar: Progress | None, close: bool = True) -> dict[str, Outcome]:
    try:
        return await execute(jobs, cache, teacher, limits, retry_failed=retry_failed, progress=bar)
    finally:
        if close:
            await teacher.close()


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


def _send(jobs: list[Job], ctx: _Phase, retry_failed: bool, label: str, prefix: str) -> dict[str, Outcome]:
    """A later phase's requests, with a client of its own (the first one closed with its event loop); its
    counters join the teacher's, its errors under `prefix:`. Identical requests are sent once."""
    teacher = ctx.teacher
    jobs = list({j.key: j for j in jobs}.values())
    client = Teacher(teacher.model, teacher.base_url, teacher.api_key, timeout=teacher.timeout, retry=teacher.retry,
                     response_format=teacher.response_format, max_connections=ctx.limits.concurrency)
    client.downgraded = teacher.downgraded
    with Progress(label, len(jobs), ctx.show_progress) as bar:
        outcomes = asyncio.run(_execute_and_close(jobs, ctx.cache, client, ctx.limits, retry_failed, bar))
    teacher.downgraded = teacher.downgraded or client.downgraded
    teacher.stats.sent += client.stats.sent
    teacher.stats.retries += client.stats.retries
    teacher.stats.invalid_replies += client.stats.invalid_replies
    for k, v in client.stats.errors.items():
        teacher.stats.errors[f"{prefix}:{k}"] = teacher.stats.errors.get(f"{prefix}:{k}", 0) + v
    return outcomes


def _check_labels(rows: list[dict], ctx: _Phase, c: dict[str, int], more: dict[str, int],
                  retry_failed: bool) -> list[dict]:
    """The recipe's label checks (consistency, verify_labels) on every row; returns the rows that pass.

    A row the checks reject is `rejected_check`; one whose check request failed or was skipped is `failed` /
    `skipped_budget`, listed with that request (a rerun, with --retry-failed for failed ones, completes it).
    """
    rec, model = ctx.rec, ctx.model
    planned = [(r, consistency_jobs(rec, r["_job"], model),
                [label_job(rec, r["_job"], model, r["_user"], r["_reply"])] if rec.verify_labels else []) for r in rows]
    outcomes = _send([x for _, extra, judge in planned for x in extra + judge], ctx, retry_failed,
                     f"check {rec.name}", "check")
    more["check_requested"] = len(outcomes)
    for out in outcomes.values():
        more["check_failed"] += out.status == "failed"
        more["check_skipped_budget"] += out.status == "skipped_budget"
    kept = []
    for r, extra, judge in planned:
        bad = next((x for x in extra + judge if outcomes[x.key].status != "ok"), None)
        if bad is not None:
            out = outcomes[bad.key]
            status = "skipped_budget" if out.status == "skipped_budget" else "failed"
            c[status] += 1
            reason = f"{bad.kind} check: {scrub_secrets(out.reason, [ctx.teacher.api_key]) or 'unknown'}"
            ctx.failures.append(_failure(rec, bad, out, status, reason, model, ctx.host))
            continue
        c["checked"] += 1
        reason = disagreement(rec, [r["_reply"], *(parse_json_reply(outcomes[x.key].content) for x in extra)])
        if reason is None and judge and not label_accepted(outcomes[judge[0].key].content):
            reason = REJECTED_LABEL
        if reason is None:
            kept.append(r)
        else:
            c["rejected_check"] += 1
            ctx.failures.append(_rejected(r, "rejected_check", reason, ctx))
    return kept


def _agree_with_data(rows: list[dict], ctx: _Phase, c: dict[str, int], reference: Any) -> list[dict]:
    """Rows whose labels contradict a clear majority of their nearest reference rows are `rejected_check`."""
    from curate.synth.checks import against_data

    reasons = against_data(ctx.rec, [r["_user"] for r in rows], [r["_reply"] for r in rows], reference,
                           ctx.rec.agree_with_data)
    kept = []
    for r, reason in zip(rows, reasons):
        if reason is None:
            kept.append(r)
        else:
            c["rejected_check"] += 1
            ctx.failures.append(_rejected(r, "rejected_check", reason, ctx))
    return kept


def _gate_facts(rows: list[dict], ctx: _Phase, c: dict[str, int]) -> tuple[list[dict], list[dict]]:
    """The recipe's `facts.unsupported`: (rows kept, rows for review); dropped ones go to the failures."""
    rec = ctx.rec
    if rec.unsupported_facts == "keep":
        return rows, []
    kept, held = [], []
    for r in rows:
        flagged = r["unsupported_claims"]
        if not flagged:
            kept.append(r)
        elif rec.unsupported_facts == "drop":
            c["rejected_facts"] += 1
            claims = ", ".join(x["claim"] for x in flagged)
            ctx.failures.append(_rejected(r, "rejected_facts", f"unsupported claims ({len(flagged)}): {claims}"[:300], ctx))
        else:
            c["review"] += 1
            r["synth_status"] = "review"
            held.append(r)
    return kept, held


def _rejected(row: dict[str, Any], status: str, reason: str, ctx: _Phase) -> dict[str, Any]:
    """The failures-file entry of a row a check rejected: its request, its reply and why."""
    return {**_failure(ctx.rec, row["_job"], row["_out"], status, reason, ctx.model, ctx.host),
            "reply": row["_out"].content}


def _verify(rows: list[dict], ctx: _Phase, counts: dict[str, int]) -> None:
    """Judge every row with claims; a failed judgement leaves `judge` empty and is listed in the failures file."""
    rec, model = ctx.rec, ctx.model
    pairs = [(r, judge_job(model, r["_seed"], r["_generated"], r["claims"], r["_sources"])) for r in rows if r["claims"]]
    counts["verify_requested"] = len(pairs)
    outcomes = _send([j for _, j in pairs], ctx, False, f"verify {rec.name}", "verify")
    for r, j in pairs:
        out = outcomes[j.key]
        if out.status == "ok":
            apply_labels(r["claims"], out.content)
            r["unsupported_claims"] = [c for c in r["claims"] if c["status"] == "unsupported" or c["judge"] == "unsupported"]
        else:
            counts["verify_failed"] += out.status == "failed"
            counts["verify_skipped_budget"] += out.status == "skipped_budget"
            ctx.failures.append(_failure(rec, j, out, out.status, scrub_secrets(out.reason, [ctx.teacher.api_key]),
                                         model, ctx.host))


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


def _host(base_url: str | None) -> str:
    u = urlparse(base_url or "https://api.openai.com/v1")
    return f"{u.hostname}:{u.port}" if u.port else (u.hostname or "")


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="seconds")
