"""`synthesize`: a recipe + seeds + a teacher -> canonical Parquet of synthetic rows, and a failures file.

It returns a StageOutcome whose counts balance: in = requested = succeeded + failed + skipped_budget +
rejected_check + rejected_facts + review (counts also hold from_cache, checked, claims, unsupported_claims,
flagged_rows). The output holds only the rows kept; OUT.failures.parquet holds every failed or budget-skipped
request with its reason (rerun, with --retry-failed for the failed ones) and every row a check rejected;
OUT.review.parquet the rows with unsupported claims under `facts: {unsupported: review}`. OUT.cache.sqlite
holds every finished response, so a rerun of the same command resumes without sending any finished request
again. The phases: generate -> label checks (the recipe's `checks:`) -> --verify -> the fact gate.

The requests go through the phases a chunk at a time (`chunk`, default max(256, 16 x concurrency)) and
each chunk's rows are written as it finishes (curate/synth/sinks.py), so memory holds one chunk of rows
and a few bytes per request (its key), not every row; the seeds are read from their file on each pass
(a counting pass before a teacher starts, a planning pass before a request is sent, the run itself).
`checks.agree_with_data` needs every row's user message first (curate/synth/phases.py says why).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import ExitStack
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.parquet as pq

from curate.errors import UsageError
from curate.inputs import open_input
from curate.outcome import StageOutcome, over_rate
from curate.synth.cache import Cache
from curate.synth.client import Budget, RateLimiter, RetryPolicy, Teacher
from curate.synth.config import SynthConfig
from curate.synth.facts import schema_values
from curate.synth.jobs import Job, JobPlanner, Limits, Progress
from curate.synth.phases import Phases
from curate.synth.recipe import SeedStream, SynthRecipe, load_synth_recipe
from curate.synth.sinks import FAILURES_SCHEMA, OUTPUT_SCHEMA, RowSpool, SynthSinks

CHUNK = 256  # the least number of requests a chunk takes through the phases (see `synthesize(chunk=)`)
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
               chunk: int | None = None, **overrides: Any) -> StageOutcome:
    """Generate synthetic rows for every seed of the settings' recipe with their teacher ("local" starts the
    embedded one), and write them to `output` (failed and skipped requests to OUT.failures.parquet).

    `trust` lets the recipe read files outside its folder and the current directory; `cache_path` is the
    request cache (default OUT.cache.sqlite); relative paths in the settings and in the recipe are relative
    to `base_dir` (default: the current directory, and the recipe file's folder for the recipe's own paths).
    `output_schema` is the task's output JSON Schema (a file or a dict, e.g. validate's --output-schema):
    the values it defines, like those of the recipe's reply schema, are not fact claims. `reference` is the
    data the rows will join (a file or a table), for the recipe's `checks.agree_with_data`. `chunk` is how
    many requests go through all the phases before their rows are written (default max(256, 16 x
    concurrency)): memory holds one chunk of rows; the rows, the files and the counts are the same for any
    chunk, except which requests a token or cost limit skips when a recipe has label checks.
    The outcome's `kept` and `rejected` are the written files' rows, read when first asked for.
    """
    cfg = SynthConfig.build(config, **overrides)
    if chunk is not None and chunk < 1:
        raise UsageError(f"chunk must be at least 1, not {chunk}")
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
    loaded = SeedStream(rec, seeds, cfg.max_seeds).check()  # a missing or unreadable seed file fails before a teacher starts
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
                    schema_values(rec.reply_schema, task_schema), ref_table, chunk or max(CHUNK, 16 * cfg.concurrency))


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


def _under(base: str | Path, path: str) -> str:
    return path if Path(path).is_absolute() else str(Path(base) / path)


def _run(cfg: SynthConfig, rec: SynthRecipe, seeds: SeedStream, output: Path, cache_path: Any,
         model: str, base_url: str | None, limits: Limits, teacher: Teacher, show_progress: bool,
         defined: frozenset[str] = frozenset(), reference: Any = None, chunk: int = CHUNK) -> StageOutcome:
    t0 = time.monotonic()
    failures_path, default_cache = default_paths(output)
    held_path = review_path(output)
    host = _host(base_url)
    c = dict.fromkeys(COUNTS, 0)
    s: dict[str, Any] = {"teacher": model, "base_url_host": host, "recipe": rec.name, "recipe_hash": rec.hash,
                         "cache": str(cache_path or default_cache), "duplicate_seeds": seeds.duplicates}
    planner = JobPlanner(rec, model)
    c["requested"] = sum(1 for _ in planner.jobs(seeds))  # a prompt template that fails, fails before a request
    s["duplicate_prompts"], s["seeds"] = planner.duplicates, seeds.count
    more = dict.fromkeys(("check_requested", "check_failed", "check_skipped_budget", "verify_requested",
                          "verify_failed", "verify_skipped_budget"), 0)
    cache = Cache(s["cache"], run_id=uuid.uuid4().hex[:12], secrets=[teacher.api_key])
    try:
        with SynthSinks(output, failures_path, held_path) as sinks, Progress(show_progress) as progress:
            phases = Phases(rec, cache, teacher, limits, model, host, sinks, progress, c["requested"],
                            retry_failed=cfg.retry_failed, verify=cfg.verify, defined=defined, counts=c, more=more)
            asyncio.run(_stream(phases, planner.jobs(seeds), chunk, reference))
        outputs, reasons = sinks.outputs, sinks.reasons
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
    outcome = SynthOutcome("synth", {"in": c["requested"], **c}, outputs, {"config": cfg.to_dict(), **s}, parts=PARTS)
    outcome.failure = stop_message(outcome) or over_rate(c["failed"], c["requested"], cfg.max_failure_rate,
                                                         "requests failed")
    return outcome


async def _stream(p: Phases, jobs: Iterator[Job], chunk: int, reference: Any) -> None:
    """Every chunk of requests through the phases; the teacher and the check clients stay open until the end."""
    rec = p.rec
    waiting = RowSpool(p.sinks.folder) if rec.agree_with_data else None
    try:
        while part := list(itertools.islice(jobs, chunk)):
            rows = await p.generate(part)
            if rows and (rec.consistency > 1 or rec.verify_labels):
                rows = await p.check_labels(rows)
            if waiting is None:
                await p.finish(rows)
            elif rows:
                waiting.add(p.agree_input(rows))
        if waiting is not None and p.users:
            from curate.synth.checks import against_data

            reasons = iter(against_data(rec, p.users, p.labels, reference, rec.agree_with_data))
            p.users, p.labels = [], []
            for rows in waiting:
                await p.finish(p.agree_with_data(rows, list(itertools.islice(reasons, len(rows)))))
    finally:
        if waiting is not None:
            waiting.close()
        await p.close()


class SynthOutcome(StageOutcome):
    """synth's StageOutcome: `kept` and `rejected` are the rows of the files it wrote, read when first asked for
    (a run holds one chunk of rows, not all of them). The files are opened when the run ends, so a later
    run that replaces them does not change what an earlier outcome reads."""

    def __init__(self, *args: Any, **kwargs: Any):
        outputs = args[2] if len(args) > 2 else kwargs.get("outputs", {})
        self._tables: dict[str, pa.Table] = {}
        self._files = {name: (pa.memory_map(outputs[key]) if key in outputs else None, schema)
                       for name, key, schema in (("kept", "data", OUTPUT_SCHEMA), ("rejected", "failures", FAILURES_SCHEMA))}
        super().__init__(*args, **kwargs)

    def _table(self, name: str) -> pa.Table:
        if name not in self._tables:
            source, schema = self._files[name]
            self._tables[name] = pq.read_table(source, schema=schema) if source is not None else schema.empty_table()
        return self._tables[name]

    def _set(self, name: str, value: pa.Table | None) -> None:
        if value is None:
            self._tables.pop(name, None)  # read again from the file when next asked for
        else:
            self._tables[name] = value

    kept = property(lambda self: self._table("kept"), lambda self, v: self._set("kept", v))  # type: ignore[assignment]
    rejected = property(lambda self: self._table("rejected"),  # type: ignore[assignment]
                        lambda self, v: self._set("rejected", v))


def _host(base_url: str | None) -> str:
    u = urlparse(base_url or "https://api.openai.com/v1")
    return f"{u.hostname}:{u.port}" if u.port else (u.hostname or "")
