"""The teacher client: the official async OpenAI client with our own bounded retries, rate limits and budget.

The openai client's own retries are off (max_retries=0) so every attempt is counted, Retry-After is
honoured exactly, and a reply that is not the JSON the recipe asked for is retried like a 5xx.
An attempt whose request reached the server but whose reply was lost (a read timeout, a connection
dropped after sending, a malformed body) may still be billed: it is reported as possibly paid and
charged to the budget at its worst case before the request is sent again.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any

from curate.synth.cache import Outcome, scrub_secrets

RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504, 520, 522, 524}


@dataclass
class RetryPolicy:
    """Exponential backoff with full jitter; Retry-After wins when the server sends it."""

    max_retries: int = 6
    base: float = 0.5
    cap: float = 30.0
    max_retry_after: float = 120.0

    def delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_retry_after)
        return random.uniform(0, min(self.cap, self.base * 2 ** attempt))


def parse_retry_after(headers: Any) -> float | None:
    """Seconds from Retry-After (delta seconds or an HTTP date) or retry-after-ms."""
    if headers is None:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return float(ms) / 1000
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


class RateLimiter:
    """Token bucket refilled at `per_minute`/60 per second, holding at most one second's worth (or one request)."""

    def __init__(self, per_minute: float):
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, self.rate)
        self.tokens = self.capacity
        self.t = time.monotonic()

    async def acquire(self, amount: float = 1.0) -> None:
        need = min(amount, self.capacity)  # a request bigger than the bucket waits for a full bucket
        while True:
            now = time.monotonic()
            self.tokens = min(self.capacity, self.tokens + (now - self.t) * self.rate)
            self.t = now
            if self.tokens >= need:
                self.tokens -= amount
                return
            await asyncio.sleep((need - self.tokens) / self.rate)

    def refund(self, amount: float) -> None:
        self.tokens = min(self.capacity, self.tokens + amount)


@dataclass
class Budget:
    """Token and dollar limits: a request starts only if its worst case fits beside those in flight."""

    max_tokens: int | None = None
    max_cost: float | None = None
    price_in: float = 0.0  # dollars per token
    price_out: float = 0.0
    spent_tokens: int = 0
    spent_cost: float = 0.0
    reserved_tokens: int = 0
    reserved_cost: float = 0.0
    possibly_paid_tokens: int = 0  # part of spent_*: attempts whose reply was lost, at their worst case
    possibly_paid_cost: float = 0.0
    exhausted: bool = False
    stopped_by: str | None = None  # max_total_tokens | budget: the limit that refused a request

    def cost(self, prompt: int, completion: int) -> float:
        return prompt * self.price_in + completion * self.price_out

    def reserve(self, prompt_est: int, completion_max: int) -> bool:
        if self.exhausted:
            return False
        t, c = prompt_est + completion_max, self.cost(prompt_est, completion_max)
        if self.max_tokens is not None and self.spent_tokens + self.reserved_tokens + t > self.max_tokens:
            self.stopped_by = "max_total_tokens"
        elif self.max_cost is not None and self.spent_cost + self.reserved_cost + c > self.max_cost:
            self.stopped_by = "budget"
        if self.stopped_by:
            self.exhausted = True  # stop cleanly: no later request starts either
            return False
        self.reserved_tokens += t
        self.reserved_cost += c
        return True

    def settle(self, prompt_est: int, completion_max: int, prompt: int, completion: int) -> None:
        self.reserved_tokens -= prompt_est + completion_max
        self.reserved_cost -= self.cost(prompt_est, completion_max)
        self.spent_tokens += prompt + completion
        self.spent_cost += self.cost(prompt, completion)

    def settle_lost(self, prompt_est: int, completion_max: int) -> None:
        """An attempt whose reply was lost: it may be billed, so it is spent at its worst case."""
        self.settle(prompt_est, completion_max, prompt_est, completion_max)
        self.possibly_paid_tokens += prompt_est + completion_max
        self.possibly_paid_cost += self.cost(prompt_est, completion_max)


@dataclass
class Stats:
    """Counters for the summary and the progress bar."""

    sent: int = 0
    retries: int = 0
    invalid_replies: int = 0
    errors: dict[str, int] = field(default_factory=dict)

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1


def http_module() -> Any:
    """The HTTP library the installed openai client is built on: httpx2 (openai 3.x) or httpx (1.x, 2.x)."""
    try:
        import httpx2
    except ImportError:
        import httpx as httpx2
    return httpx2


class Teacher:
    """One chat model behind an OpenAI-compatible endpoint."""

    def __init__(self, model: str, base_url: str | None, api_key: str, *, timeout: float = 120.0,
                 retry: RetryPolicy | None = None, response_format: str = "auto", max_connections: int = 64):
        httpx2 = http_module()
        from openai import AsyncOpenAI

        self.model, self.base_url, self.api_key, self.timeout = model, base_url, api_key, timeout
        self.retry = retry or RetryPolicy()
        self.response_format = response_format  # auto | json_schema | json_object | none
        limits = httpx2.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        self.client = AsyncOpenAI(api_key=api_key, base_url=base_url, max_retries=0, timeout=timeout,
                                  http_client=httpx2.AsyncClient(limits=limits, timeout=timeout))
        self.stats = Stats()
        self.downgraded = False

    def _format(self, schema: dict | None) -> dict | None:
        mode = self.response_format
        if schema is None or mode == "none":
            return None
        if mode == "json_schema" or (mode == "auto" and not self.downgraded):
            return {"type": "json_schema", "json_schema": {"name": "reply", "schema": schema}}
        return {"type": "json_object", "schema": schema}  # llama.cpp and vLLM honour the extra schema key

    async def complete(
        self,
        messages: list[dict],
        params: dict[str, Any],
        schema: dict | None,
        max_attempts: int,
        check: Callable[[str], str | None] | None,
        on_usage: Callable[[int, int, bool], None],
        admit: Callable[[], bool] = lambda: True,
        on_lost: Callable[[], None] = lambda: None,
    ) -> Outcome:
        """Send one request until it succeeds, its retries run out, or its replies stay invalid.

        `on_usage` gets each reply's billed usage, `on_lost` each possibly-paid attempt; `admit` reserves
        the budget for a resend after a paid one and refuses when it does not fit.
        """
        import openai

        transport_failures = invalid = attempts = 0
        last = ""
        while True:
            attempts += 1
            rf = self._format(schema)
            kwargs = dict(params, response_format=rf) if rf else params
            self.stats.sent += 1
            retry_after: float | None = None
            lost = False
            try:
                resp = await self.client.chat.completions.create(model=self.model, messages=messages, **kwargs)
            except openai.APIStatusError as exc:
                status = exc.status_code
                self.stats.error(str(status))
                last = f"HTTP {status}: {_message(exc, [self.api_key])}"
                if rf and rf["type"] == "json_schema" and self.response_format == "auto" and not self.downgraded \
                        and _rejects_format(status, last):
                    self.downgraded = True  # the server rejects json_schema: use json_object and validate ourselves
                    continue
                if status not in RETRY_STATUS:
                    return Outcome("failed", attempts=attempts, reason=last)
                retry_after = parse_retry_after(exc.response.headers)
            except openai.APITimeoutError as exc:
                self.stats.error("timeout")
                last, lost = "timed out", reached_server(exc)
            except openai.APIConnectionError as exc:
                self.stats.error("connection")
                last, lost = self._scrub(f"connection error: {exc.__cause__ or exc}"), reached_server(exc)
            except (json.JSONDecodeError, openai.APIResponseValidationError) as exc:
                self.stats.error("malformed")
                last, lost = self._scrub(f"malformed response body: {exc}"), True
            else:
                usage = resp.usage
                pt, ct = (usage.prompt_tokens or 0, usage.completion_tokens or 0) if usage else (0, 0)
                choice = resp.choices[0] if resp.choices else None
                content = choice.message.content if choice else None
                problem = "no content in reply" if content is None else (check(content) if check else None)
                on_usage(pt, ct, problem is None)
                if problem is None:
                    return Outcome("ok", content, choice.finish_reason, pt, ct, attempts, created=time.time())
                invalid += 1
                self.stats.invalid_replies += 1
                last = self._scrub(f"invalid reply: {problem}")
                if invalid >= max_attempts:
                    return Outcome("failed", content, choice.finish_reason if choice else None, pt, ct, attempts,
                                   reason=f"{last} (after {invalid} attempts)")
                if not admit():
                    return Outcome("skipped_budget", attempts=attempts, reason="token/cost budget reached before retry")
                continue
            if lost:
                on_lost()
            transport_failures += 1
            if transport_failures > self.retry.max_retries:
                return Outcome("failed", attempts=attempts, reason=f"{last} (gave up after {attempts} attempts)")
            if lost and not admit():  # the lost attempt spent this request's reservation
                return Outcome("skipped_budget", attempts=attempts, reason="token/cost budget reached before retry")
            self.stats.retries += 1
            await asyncio.sleep(self.retry.delay(transport_failures - 1, retry_after))

    def _scrub(self, text: str) -> str:
        return scrub_secrets(text, [self.api_key]) or ""

    async def close(self) -> None:
        await self.client.close()


def reached_server(exc: BaseException) -> bool:
    """Whether a failed attempt's request may have reached the server (and be billed): not a connect-phase failure."""
    httpx2 = http_module()
    before_sending = tuple(getattr(httpx2, n) for n in ("ConnectError", "ConnectTimeout", "PoolTimeout", "ProxyError",
                                                         "UnsupportedProtocol", "LocalProtocolError") if hasattr(httpx2, n))
    return not isinstance(exc.__cause__, before_sending)  # unknown causes count as sent: the budget stays conservative


def _rejects_format(status: int, message: str) -> bool:
    """The server refused json_schema itself (llama.cpp says so with a 500), not a passing fault."""
    return status in (400, 422) or (status == 500 and ("response_format" in message or "json_schema" in message))


def _message(exc: Any, secrets: list[str]) -> str:
    """The server's error message, cut to 200 characters after secrets are scrubbed (so no key is cut in half)."""
    body = getattr(exc, "body", None)
    err = body.get("error", body) if isinstance(body, dict) else None
    text = str(err["message"]) if isinstance(err, dict) and err.get("message") else str(exc)
    return (scrub_secrets(text, secrets) or "")[:200]
