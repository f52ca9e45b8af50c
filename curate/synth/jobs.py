"""Run a synth recipe: plan requests, serve finished ones from the cache, send the rest concurrently."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from curate.replies import ReplyCheck
from curate.synth.cache import Cache, Outcome, request_key
from curate.synth.client import Budget, RateLimiter, Teacher
from curate.synth.recipe import SynthRecipe
from curate.synth.templates import Seed, render


@dataclass
class Job:
    """One request: a seed, an example index, the messages the teacher sees, and its cache key."""

    seed: Seed
    sample: int
    variables: dict[str, Any]
    messages: list[dict[str, str]]
    key: str
    est_prompt: int
    params: dict[str, Any]
    schema: dict | None = None
    max_attempts: int = 3
    check: Callable[[str], str | None] | None = None
    kind: str = "generate"


def plan_jobs(recipe: SynthRecipe, seeds: Iterable[Seed], model: str) -> tuple[list[Job], int]:
    """Every request the recipe asks for, in seed order; identical prompts collapse to one (counted)."""
    planner = JobPlanner(recipe, model)
    jobs = list(planner.jobs(seeds))
    return jobs, planner.duplicates


class JobPlanner:
    """The requests of a stream of seeds, made as they are needed (those of `plan_jobs`, in the same order).

    Across one `jobs()` pass it keeps only the keys it has planned (to collapse identical prompts);
    `duplicates` counts the collapsed ones of the last pass.
    """

    def __init__(self, recipe: SynthRecipe, model: str):
        self.recipe, self.model = recipe, model
        self.docs = [{"name": d.name, "text": d.text} for d in recipe.documents] if recipe.grounding_use == "all" else []
        self.n = int(recipe.get("examples_per_seed", 1))
        self.params, self.schema = recipe.params(), recipe.reply_schema
        self.check = json_checker(self.schema)
        self.duplicates = 0

    def jobs(self, seeds: Iterable[Seed]) -> Iterator[Job]:
        recipe, n = self.recipe, self.n
        seen: set[str] = set()
        self.duplicates = 0
        for seed in seeds:
            for k in range(n):
                v = {**seed.variables, "documents": self.docs, "index": k, "n": n}
                messages = []
                if "system" in recipe.templates:
                    messages.append({"role": "system", "content": render(recipe.templates["system"], v, "system", seed)})
                messages.append({"role": "user", "content": render(recipe.templates["prompt"], v, "prompt", seed)})
                key = request_key(self.model, messages, self.params, self.schema, k)
                if key in seen:
                    self.duplicates += 1
                    continue
                seen.add(key)
                est = sum(len(m["content"]) for m in messages) // 4 + 8
                yield Job(seed, k, v, messages, key, est, self.params, self.schema, recipe.max_attempts, self.check)


def json_checker(schema: dict | None) -> Callable[[str], str | None] | None:
    """A reply check (curate.replies.ReplyCheck): the reply is JSON, or JSON in one ``` fence, matching the schema."""
    if schema is None:
        return None
    checker = ReplyCheck(schema)

    def check(content: str) -> str | None:
        # a teacher's fenced reply is accepted (the row is built from the value inside the fence); stripped,
        # so "at char N" counts from the reply's first non-blank character, as the retry reasons always have
        verdict = checker.check(content.strip())
        if not verdict.has_value:
            err = verdict.json_error
            return f"not JSON ({err.msg} at char {err.pos})"
        if verdict.schema_errors:
            err = verdict.schema_errors[0]
            where = ".".join(map(str, err.absolute_path)) or "(top level)"
            return f"JSON does not match the schema at {where}: {err.message[:160]}"
        return None

    return check


_PARSE = ReplyCheck()


def parse_json_reply(content: str) -> Any:
    """The JSON value of a reply, also of one in a ``` fence (the fence rule of curate/replies.py)."""
    verdict = _PARSE.check(content.strip())
    if not verdict.has_value:
        raise verdict.json_error
    return verdict.value


class Progress:
    """Rich progress on stderr, a bar per phase (silent when stderr is not a terminal); `bar()` adds one."""

    def __init__(self, enabled: bool = True):
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.progress import Progress as RichProgress

        from curate.console import console

        self.display = RichProgress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
            TextColumn("{task.fields[tokens]} tok  ${task.fields[cost]}  {task.fields[failed]}"),
            console=console, disable=not (enabled and console.is_terminal),
        )

    def bar(self, description: str, total: int = 0) -> Bar:
        return Bar(self.display, description, total)

    def __enter__(self) -> Progress:  # noqa: PYI034
        self.display.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.display.__exit__(*exc)


class Bar:
    """One phase's line: done/total, rate, ETA, tokens and cost, failures; its total grows chunk by chunk."""

    def __init__(self, display: Any, description: str, total: int):
        self.display, self.total = display, total
        self.task = display.add_task(description, total=total, rate="", tokens=0, cost="0.00", failed="")
        self.t0, self.sent, self.failed = time.monotonic(), 0, 0

    def grow(self, n: int) -> None:
        self.total += n
        self.display.update(self.task, total=self.total)

    def update(self, budget: Budget, failed: bool, sent: bool) -> None:
        self.sent += sent
        self.failed += failed
        rate = self.sent / max(time.monotonic() - self.t0, 1e-6)
        self.display.update(self.task, advance=1, rate=f"{rate:.1f} req/s", tokens=budget.spent_tokens,
                            cost=f"{budget.spent_cost:.2f}",
                            failed=f"[red]{self.failed} failed[/]" if self.failed else "")


@dataclass
class Limits:
    concurrency: int
    rpm: RateLimiter | None
    tpm: RateLimiter | None
    budget: Budget


SKIPPED = "token/cost budget reached; rerun with a larger budget"  # why a request the budget had no room for was not sent


async def execute(jobs: list[Job], cache: Cache, teacher: Teacher, limits: Limits, *, retry_failed: bool,
                  progress: Bar | None) -> dict[str, Outcome]:
    """Outcomes by key: cached ones as they are (failed ones re-sent only with retry_failed), the rest sent."""
    outcomes = cache.get_many(j.key for j in jobs)
    todo = []
    for j in jobs:
        c = outcomes.get(j.key)
        if c is not None and (c.status == "ok" or not retry_failed):
            if progress:
                progress.update(limits.budget, c.status != "ok", sent=False)
        else:
            outcomes.pop(j.key, None)
            todo.append(j)
    budget, it = limits.budget, iter(todo)

    async def run_one(j: Job) -> Outcome:
        max_t = int(j.params.get("max_tokens", 0))
        if not budget.reserve(j.est_prompt, max_t):
            return Outcome("skipped_budget", reason=SKIPPED)
        if limits.rpm:
            await limits.rpm.acquire(1)
        if limits.tpm:
            await limits.tpm.acquire(j.est_prompt + max_t)
        ledger: list[tuple[int, int, float, bool, bool]] = []
        reserved = [True]

        def on_usage(pt: int, ct: int, ok: bool) -> None:
            budget.settle(j.est_prompt, max_t, pt, ct)
            reserved[0] = False
            ledger.append((pt, ct, budget.cost(pt, ct), ok, False))
            if limits.tpm:
                limits.tpm.refund(j.est_prompt + max_t - pt - ct)

        def on_lost() -> None:
            budget.settle_lost(j.est_prompt, max_t)
            reserved[0] = False
            ledger.append((j.est_prompt, max_t, budget.cost(j.est_prompt, max_t), False, True))

        def admit() -> bool:
            reserved[0] = budget.reserve(j.est_prompt, max_t)
            return reserved[0]

        out = await teacher.complete(j.messages, j.params, j.schema, j.max_attempts, j.check, on_usage, admit, on_lost)
        if reserved[0]:
            budget.settle(j.est_prompt, max_t, 0, 0)
        # a request skipped before a resend still leaves the ledger lines of its paid attempts
        cache.put(j.key, out, teacher.model, {"messages": j.messages, "params": j.params}, ledger)
        return out

    async def worker() -> None:
        for j in it:  # one shared iterator: workers pull the next job as they free up
            out = await run_one(j)
            outcomes[j.key] = out
            if progress:
                progress.update(budget, out.status == "failed", sent=out.status != "skipped_budget")

    try:
        await asyncio.gather(*(worker() for _ in range(max(1, min(limits.concurrency, len(todo) or 1)))))
    finally:
        cache.flush()  # also on Ctrl-C: every finished response is kept for the resume
    return outcomes
