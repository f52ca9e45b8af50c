"""The teacher as a judge: a 1-5 score and a one-line reason per row, on a stated rubric.

Every request goes through the synth client (curate/synth): the same bounded retries, rate limits and
budget, and the same SQLite request cache and ledger, so a rerun pays nothing for rows already judged, a
killed run resumes with only the rest (each reply is committed as it arrives), and a run stops starting
requests at its budget (rows not judged get score None and error 'budget').

The judge is asked for JSON {"score": 1-5, "reason": "..."} (json_schema where the server takes it,
else json_object with the schema; llama.cpp refuses json_schema). Every reply is validated; one that is
not that JSON is sent again, up to `max_attempts` times, and counted as invalid. With `samples` > 1
each row is judged that many times (sample k > 0 sends `seed: k`, and its cache key has the sample
number); the row's score is the median of the samples that answered, the lower middle one for an even
count (a row scores high only when at least half its samples say so), and its reason is that sample's.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import statistics
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, model_validator

from curate.config import Opt, StageConfig
from curate.errors import InputError, UsageError
from curate.synth.cache import Cache, Outcome, request_key, scrub_secrets
from curate.synth.client import Budget, RateLimiter, RetryPolicy, Teacher
from curate.synth.jobs import Job, Limits, Progress, execute, parse_json_reply
from curate.synth.templates import Seed

DEFAULT_RUBRIC = """\
Rate the assistant's last reply in the conversation from 1 to 5, judging helpfulness, correctness and \
instruction following together:
5 = excellent: correct, complete, does exactly what was asked, clear.
4 = good: correct and helpful, with small omissions or small style problems.
3 = acceptable: partly helpful; noticeable gaps, vagueness or minor errors, or follows the instructions only \
loosely.
2 = poor: mostly unhelpful; a significant factual error, ignores a key instruction, or is truncated, \
repetitive or padded.
1 = unacceptable: wrong, off-topic, empty or nonsensical, or refuses a harmless request.
Refusing a clearly harmful request is the right answer and scores 4 or 5."""
REPLY_FORMAT = ('Reply with JSON only, one object: {"score": <an integer from 1 to 5>, '
                '"reason": "<one short sentence saying why>"}')
JUDGE_SCHEMA = {
    "type": "object",
    # an enum, not minimum/maximum: llama.cpp's JSON grammar enforces the enum but ignores the bounds
    "properties": {"score": {"type": "integer", "enum": [1, 2, 3, 4, 5]}, "reason": {"type": "string"}},
    "required": ["score", "reason"],
}
CACHE_FILE = "judge.sqlite"


class JudgeTeacher(StageConfig):
    """Which teacher judges, and the limits on what a run may send and spend (names as in synth): what every judge
    shares (score's rows, dedupe's candidate pairs)."""

    stage: ClassVar[str] = "judge"
    teacher: str = Field(description="Model name at base_url, or 'local' for the embedded llama.cpp teacher.")
    base_url: str | None = Field(None, description="The teacher's OpenAI-compatible endpoint (default: OpenAI).")
    api_key_env: str = Field("OPENAI_API_KEY", description="Environment variable holding the API key.")
    temperature: float = Field(0.0, ge=0, le=2, description="Sampling temperature of the judge.")
    max_tokens: int = Field(200, ge=16, description="Most tokens per judge reply.")
    max_attempts: int = Field(3, ge=1, description="Attempts per request while the reply is not the JSON asked for.")
    concurrency: int = Field(16, ge=1, description="Requests in flight at once.")
    rpm: float | None = Field(None, gt=0, description="Requests-per-minute limit.")
    tpm: float | None = Field(None, gt=0, description="Tokens-per-minute limit (prompt estimate + max_tokens).")
    max_total_tokens: int | None = Field(None, ge=1, description="Stop starting requests before this many tokens.")
    budget: float | None = Field(None, ge=0, description="Stop starting requests before this many dollars are spent.")
    price_in: float | None = Field(None, ge=0, description="Dollars per 1M prompt tokens.")
    price_out: float | None = Field(None, ge=0, description="Dollars per 1M completion tokens.")
    retry_failed: bool = Field(False, description="Send again the requests that failed in an earlier run.")
    timeout: float = Field(120.0, gt=0, description="Seconds per request before it is retried.")
    max_retries: int = Field(6, ge=0, description="Retries per request on 429/5xx/timeouts/drops.")
    response_format: Literal["auto", "json_schema", "json_object", "none"] = Field(
        "auto", description="How the reply schema is sent (the reply is always validated).")

    @model_validator(mode="after")
    def _teacher_consistent(self) -> JudgeTeacher:
        if self.teacher == "local" and self.base_url is not None:
            raise ValueError("teacher 'local' starts its own server: drop base_url")
        if self.budget is not None and not (self.price_in or self.price_out):
            raise ValueError("budget needs token prices: set price_in and/or price_out")
        return self


class JudgeSettings(JudgeTeacher):
    """Which teacher judges, on which rubric, and the limits on what a run may send and spend (names as in synth)."""

    rubric: str | None = Field(None, description="Rubric text (default: the shipped 1-5 rubric, DEFAULT_RUBRIC).")
    rubric_file: Annotated[str | None, Opt(kind="file")] = Field(None, description="Read the rubric from this file.")
    samples: int = Field(1, ge=1, description="Judge each row this many times; its score is their median.")
    max_chars: int = Field(6000, ge=500, description="Conversation characters shown to the judge; each message is "
                                                     "cut to its share (at least 300), head and tail kept.")

    @model_validator(mode="after")
    def _consistent(self) -> JudgeSettings:
        if self.rubric is not None and self.rubric_file is not None:
            raise ValueError("give the rubric as text (rubric) or as a file (rubric_file), not both")
        return self

    def rubric_text(self) -> str:
        """The rubric the judge is given: the text, the file's text, or the shipped default."""
        if self.rubric_file is None:
            return (self.rubric if self.rubric is not None else DEFAULT_RUBRIC).strip()
        try:
            text = Path(self.rubric_file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"cannot read rubric_file {self.rubric_file}: {exc}") from exc
        if not text:
            raise UsageError(f"rubric_file {self.rubric_file} is empty")
        return text


@dataclass
class Verdict:
    """One row's judgement: score 1-5 (None when not judged), the judge's reason, and why it is missing."""

    score: int | None
    reason: str
    error: str | None = None  # budget | no assistant reply | the last failure's reason
    samples: list[int | None] = field(default_factory=list)  # every sample's score, in sample order


@dataclass
class JudgeRun:
    """The verdicts in the rows' order and the run's counts (rows = judged + failed + budget + no_reply).

    `spent` is dollars as the budget counts them: billed replies plus attempts whose reply was lost, at their
    worst case (`possibly_paid_cost` of it); `prompt_tokens` / `completion_tokens` are the billed usage, and
    `possibly_paid_tokens` the lost attempts' worst case.
    """

    verdicts: list[Verdict]
    counts: dict[str, float]
    summary: dict[str, Any] = field(default_factory=dict)  # teacher, rubric hash, settings, limit that stopped it


@dataclass
class Endpoint:
    """Where the judge's requests go."""

    model: str
    base_url: str | None
    api_key: str
    response_format: str


def judge(rows: Sequence[Mapping[str, Any]], settings: JudgeSettings | Mapping[str, Any], *, cache_dir: Path,
          progress: bool | None = None) -> JudgeRun:
    """Score every row's last assistant reply on the rubric; the cache (CACHE_FILE in cache_dir) makes reruns free.

    `progress` shows a progress bar on stderr (when it is a terminal).
    """
    cfg = JudgeSettings.build(settings)
    with open_endpoint(cfg) as endpoint:
        return judge_at(endpoint, rows, cfg, cache_dir=cache_dir, progress=progress)


def cache_folder(output: str | Path | None, cache_dir: str | Path | None) -> Path:
    """The judge's cache folder: cache_dir, else beside the output (OUT.judge-cache/ for OUT.parquet)."""
    if cache_dir is not None:
        return Path(cache_dir)
    if output is None:
        raise UsageError("the judge needs a cache folder (cache_dir; --cache on the command line) when there is no "
                         "output")
    out = Path(output)
    return out.with_name(f"{out.name.removesuffix('.parquet')}.judge-cache")


@contextmanager
def open_endpoint(cfg: JudgeTeacher) -> Iterator[Endpoint]:
    """The teacher's endpoint and key; 'local' starts the embedded llama.cpp server for the block."""
    if cfg.teacher == "local":
        from curate.synth.local import start_local_teacher

        with start_local_teacher() as local:
            fmt = "json_object" if cfg.response_format == "auto" else cfg.response_format
            yield Endpoint(local.model, local.base_url, "no-key", fmt)
        return
    api_key = os.environ.get(cfg.api_key_env) if cfg.api_key_env else None
    if not api_key:
        if cfg.base_url is None:
            raise UsageError(f"no API key for the judge: set {cfg.api_key_env} (or name another variable with "
                             "api_key_env, or give base_url for a local server that needs none)")
        api_key = "no-key"  # local servers (llama.cpp, vLLM, Ollama) accept any key
    yield Endpoint(cfg.teacher, cfg.base_url, api_key, cfg.response_format)


def judge_at(endpoint: Endpoint, rows: Sequence[Mapping[str, Any]], cfg: JudgeSettings, *, cache_dir: Path,
             progress: bool | None = None) -> JudgeRun:
    """judge() on an endpoint already open (calibration judges several sets on one local server)."""
    rubric = cfg.rubric_text()
    system = f"{rubric}\n\n{REPLY_FORMAT}"
    plans: list[list[Job] | None] = []
    for i, row in enumerate(rows):
        messages = row.get("messages")
        if not isinstance(messages, list):
            raise InputError(f"row {i} (id {row.get('id')}): must be a list of messages, not {type(messages).__name__}",
                             field="messages")
        plans.append(_jobs(str(row.get("id", i)), messages, system, endpoint.model, cfg))
    sent = send(endpoint, [j for jobs in plans if jobs for j in jobs], cfg, cache_dir=cache_dir, progress=progress)
    c = dict.fromkeys(("judged", "failed", "budget", "no_reply"), 0)
    verdicts = []
    for jobs in plans:
        if jobs is None:
            v, status = Verdict(None, "", "no assistant reply"), "no_reply"
        else:
            v = _verdict([sent.outcomes[j.key] for j in jobs], endpoint.api_key)
            status = "judged" if v.score is not None else "budget" if v.error == "budget" else "failed"
        c[status] += 1
        verdicts.append(v)
    summary = {**sent.summary, "rubric_hash": hashlib.sha256(rubric.encode()).hexdigest()[:16],
               "config": cfg.to_dict()}
    return JudgeRun(verdicts, {"rows": len(rows), **c, **sent.counts}, summary)


@dataclass
class Sent:
    """What became of a judge's requests (by key), their counts, and the run's facts (teacher, what stopped it)."""

    outcomes: dict[str, Outcome]
    counts: dict[str, float]
    summary: dict[str, Any]


def budget_of(cfg: JudgeTeacher) -> Budget:
    """The token and dollar limits of cfg, as the synth client counts them."""
    return Budget(cfg.max_total_tokens, cfg.budget, (cfg.price_in or 0.0) / 1e6, (cfg.price_out or 0.0) / 1e6)


def send(endpoint: Endpoint, jobs: Sequence[Job], cfg: JudgeTeacher, *, cache_dir: Path,
         progress: bool | None = None, budget: Budget | None = None) -> Sent:
    """Each distinct request of `jobs` (by key) through the synth client, within cfg's limits: served from the
    cache (CACHE_FILE in cache_dir) when answered before, else sent and committed as its reply arrives. `budget`:
    one shared by several sends (default: a new one from cfg)."""
    t0 = time.monotonic()
    unique = list({j.key: j for j in jobs}.values())
    limits = Limits(cfg.concurrency, RateLimiter(cfg.rpm) if cfg.rpm else None, RateLimiter(cfg.tpm) if cfg.tpm else None,
                    budget if budget is not None else budget_of(cfg))
    teacher = Teacher(endpoint.model, endpoint.base_url, endpoint.api_key, timeout=cfg.timeout,
                      retry=RetryPolicy(max_retries=cfg.max_retries), response_format=endpoint.response_format,
                      max_connections=cfg.concurrency)
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    cache = Cache(Path(cache_dir) / CACHE_FILE, run_id=uuid.uuid4().hex[:12], secrets=[endpoint.api_key])
    try:
        with _bar(bool(progress), len(unique)) as bar:
            outcomes = asyncio.run(_run(unique, cache, teacher, limits, cfg.retry_failed, bar))
        spent = cache.totals(cache.run_id)
    finally:
        cache.close()
    st = teacher.stats
    counts: dict[str, float] = {
        "requests": len(unique), "cached": sum(o.cached for o in outcomes.values()),
        "requests_failed": sum(o.status == "failed" for o in outcomes.values()),
        "requests_budget": sum(o.status == "skipped_budget" for o in outcomes.values()),
        "sent": st.sent, "retries": st.retries, "invalid": st.invalid_replies,
        "prompt_tokens": spent["prompt_tokens"], "completion_tokens": spent["completion_tokens"],
        "spent": spent["cost"] + spent["possibly_paid_cost"],
        "possibly_paid_calls": spent["possibly_paid_calls"], "possibly_paid_tokens": spent["possibly_paid_tokens"],
        "possibly_paid_cost": spent["possibly_paid_cost"], "elapsed_s": round(time.monotonic() - t0, 3)}
    summary = {"teacher": endpoint.model, "response_format_downgraded": teacher.downgraded, "errors": dict(st.errors),
               "stopped_by": limits.budget.stopped_by, "cache": str(Path(cache_dir) / CACHE_FILE)}
    return Sent(outcomes, counts, summary)


@contextmanager
def _bar(enabled: bool, total: int) -> Iterator[Any]:
    """The progress bar on stderr, or None (then execute() draws nothing)."""
    if not enabled:
        yield None
        return
    with Progress(enabled) as display:
        yield display.bar("judge", total)


async def _run(jobs: list[Job], cache: Cache, teacher: Teacher, limits: Limits, retry_failed: bool,
               bar: Any) -> dict[str, Outcome]:
    try:
        return await execute(jobs, cache, teacher, limits, retry_failed=retry_failed, progress=bar)
    finally:
        await teacher.close()


def _jobs(row_id: str, messages: list[Any], system: str, model: str, cfg: JudgeSettings) -> list[Job] | None:
    """The row's judge requests, one per sample, or None when it has no assistant reply to judge."""
    last = messages[-1] if messages else None
    if not isinstance(last, Mapping) or last.get("role") != "assistant" or not (
            last.get("content") or last.get("tool_calls")):
        return None
    user = "Conversation:\n<<<\n" + render_conversation(messages, cfg.max_chars) + \
           "\n>>>\n\nRate the assistant's last reply by the rubric."
    prompt = [{"role": "system", "content": system}, {"role": "user", "content": user}]
    return [judge_job(row_id, prompt, model, cfg, JUDGE_SCHEMA, check_reply, k) for k in range(cfg.samples)]


def judge_job(job_id: str, prompt: list[dict[str, str]], model: str, cfg: JudgeTeacher, schema: dict[str, Any],
              check: Callable[[str], str | None], sample: int = 0) -> Job:
    """One judge request at cfg's temperature and max_tokens, keyed for the cache; sample k > 0 sends `seed: k`
    (sample 0 is the very request a one-sample run sends, so it shares that cache entry)."""
    params: dict[str, Any] = {"temperature": cfg.temperature, "max_tokens": cfg.max_tokens}
    if sample:
        params["seed"] = sample
    est = sum(len(m["content"]) for m in prompt) // 4 + 8
    return Job(Seed(job_id, {}), sample, {}, prompt, request_key(model, prompt, params, schema, sample), est, params,
               schema, cfg.max_attempts, check, "judge")


def render_conversation(messages: list[Any], max_chars: int) -> str:
    """The conversation as the judge reads it: `### role` headings, each message cut to its share of max_chars."""
    share = max(300, max_chars // max(1, len(messages)))
    parts = []
    for m in messages:
        m = m if isinstance(m, Mapping) else {"role": "?", "content": str(m)}
        text = m.get("content") or ""
        for call in m.get("tool_calls") or []:
            fn = (call or {}).get("function") or {}
            text += f"\n[tool call] {fn.get('name')}({fn.get('arguments') or ''})"
        parts.append(f"### {m.get('role')}\n{cut(text.strip(), share)}")
    return "\n\n".join(parts)


def cut(text: str, limit: int) -> str:
    """The text, or its head (two thirds) and tail within `limit` characters, saying how much was cut."""
    if len(text) <= limit:
        return text
    head = limit * 2 // 3
    tail = limit - head
    return f"{text[:head]}\n[... {len(text) - head - tail} characters cut ...]\n{text[-tail:]}"


def reply_check(parse: Callable[[str], Any]) -> Callable[[str], str | None]:
    """A reply check for Teacher.complete: why `parse` refuses a reply (its ValueError), or None."""
    def check(content: str) -> str | None:
        try:
            parse(content)
        except ValueError as exc:
            return str(exc)
        return None

    return check


def parse_verdict(content: str) -> tuple[int, str]:
    """(score, reason) of a judge reply: JSON (also in one ``` fence) with an integer score 1-5 and a string reason.

    A score written as "4" or 4.0 is taken as 4; anything else raises ValueError saying what is wrong.
    """
    return parse_judged(content, "score", _score_of, "an integer from 1 to 5")


def _score_of(value: Any) -> int | None:
    if isinstance(value, str) and value.strip() in ("1", "2", "3", "4", "5"):
        return int(value.strip())
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return value if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 5 else None


def parse_judged(content: str, name: str, value_of: Callable[[Any], Any], wanted: str) -> tuple[Any, str]:
    """(value, reason) of a judge reply: a JSON object (also in one ``` fence) whose `name` value_of() takes (None:
    it does not) and a string `reason`; anything else raises ValueError saying what is wrong."""
    try:
        value = parse_json_reply(content)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON ({exc.msg} at char {exc.pos})") from None
    got = value_of(value.get(name)) if isinstance(value, dict) else None
    reason = value.get("reason") if isinstance(value, dict) else None
    if not isinstance(value, dict):
        problem = f"not a JSON object but {type(value).__name__}"
    elif got is None:
        problem = f"{name} must be {wanted}, got {json.dumps(value.get(name))[:40]}"
    elif not isinstance(reason, str):
        problem = f"reason must be a string, got {json.dumps(reason)[:40]}"
    else:
        return got, reason.strip()
    raise ValueError(problem)


check_reply = reply_check(parse_verdict)  # why a reply is not the verdict JSON asked for, or None


def _verdict(outs: list[Outcome], api_key: str) -> Verdict:
    """A row's verdict from its samples' outcomes: the median score of those that answered (lower middle one)."""
    answered: list[tuple[int, str]] = []
    samples: list[int | None] = []
    failures: list[Outcome] = []
    for out in outs:
        value, out = parsed(out, parse_verdict)
        samples.append(value[0] if value is not None else None)
        if value is not None:
            answered.append(value)
        else:
            failures.append(out)
    if answered:
        median = statistics.median_low(s for s, _ in answered)
        return Verdict(median, next(r for s, r in answered if s == median), None, samples)
    return Verdict(None, "", why_unanswered(failures, api_key), samples)


def parsed(out: Outcome, parse: Callable[[str], Any]) -> tuple[Any, Outcome]:
    """(the parsed reply, the outcome), or (None, the outcome that says why there is none): a cached reply is
    parsed again, and one the check no longer accepts is a failure."""
    if out.status != "ok":
        return None, out
    try:
        return parse(out.content or ""), out
    except ValueError as exc:
        return None, Outcome("failed", reason=f"invalid reply: {exc}")


def why_unanswered(failures: Sequence[Outcome], api_key: str) -> str:
    """'budget' when the budget left a request unsent, else the first failure's reason (the key scrubbed)."""
    if any(o.status == "skipped_budget" for o in failures):
        return "budget"
    reason = next((o.reason for o in failures if o.reason), None)
    return scrub_secrets(reason, [api_key]) or "failed"
