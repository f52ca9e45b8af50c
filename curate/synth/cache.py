"""A durable, content-addressed request cache and token/cost ledger in SQLite (WAL mode).

Every finished request (ok or failed) is committed at once when the previous commit is more than
COMMIT_DELAY (10 ms) old, which is always the case for a real teacher at concurrency 1; when responses
arrive faster, those of the next COMMIT_DELAY share one commit (group commit), so the commit stays a
small part of each request's cost. A killed run therefore loses at most the requests in flight and the
responses of its last 10 ms; every committed one is served from the cache on the rerun, never sent
again. The key is a hash of model + messages + parameters
(+ the example index), never of the recipe file, so editing one seed changes only its keys.

The ledger has a line per attempt that may cost money: `possibly_paid = 0` lines hold the usage the
server reported; `possibly_paid = 1` lines are attempts whose request reached the server but whose reply
was lost (client timeout, connection dropped mid-reply, malformed body), recorded at their worst case
(prompt estimate + max_tokens), since a provider bills them all the same. Failure reasons pass through
`scrub_secrets` before they are stored and again when read back (caches written before it existed).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

COMMIT_DELAY = 0.01  # seconds: the most a finished response waits for its commit

SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY, status TEXT NOT NULL, content TEXT, finish_reason TEXT,
    prompt_tokens INTEGER, completion_tokens INTEGER, attempts INTEGER, reason TEXT,
    model TEXT, request TEXT, created REAL
);
CREATE TABLE IF NOT EXISTS ledger (
    id INTEGER PRIMARY KEY, run TEXT, key TEXT, model TEXT, prompt_tokens INTEGER,
    completion_tokens INTEGER, cost REAL, ok INTEGER, created REAL, possibly_paid INTEGER NOT NULL DEFAULT 0
);
"""
REDACTED = "[REDACTED]"
_SECRET_PATTERNS = [  # (pattern, replacement); a header value is an optional scheme and one token
    (re.compile(r"(?i)\b((?:proxy-)?authorization|(?:x-)?api[-_]?key)([\"']?\s*[:=]\s*[\"']?)"
                r"(?:(?:bearer|basic|token)\s+)?[^\s\"',;&)}]+"), rf"\1\2{REDACTED}"),
    (re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]+"), f"Bearer {REDACTED}"),
    (re.compile(r"\bsk-[A-Za-z0-9_-]{8,}"), REDACTED),
]


def scrub_secrets(text: str | None, secrets: Iterable[str] = ()) -> str | None:
    """Error text with API keys removed: the given secret values, auth header values and sk-... tokens."""
    if not text:
        return text
    for secret in secrets:
        if secret and len(secret) >= 8:  # a placeholder like "no-key" is no secret, and short ones over-match
            text = text.replace(secret, REDACTED)
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def request_key(model: str, messages: list[dict], params: dict[str, Any], schema: dict | None, sample: int) -> str:
    """Content address of one request: what the teacher sees, with which parameters, for which example."""
    payload = json.dumps(
        {"model": model, "messages": messages, "params": params, "schema": schema, "sample": sample},
        sort_keys=True, ensure_ascii=False, separators=(",", ":"),
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:32]


@dataclass
class Outcome:
    """What became of one request."""

    status: str  # ok | failed | skipped_budget
    content: str | None = None
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    attempts: int = 0
    reason: str | None = None
    created: float = 0.0
    cached: bool = False


class Cache:
    """The SQLite store; one connection, used from the event-loop thread only."""

    def __init__(self, path: str | Path, run_id: str = "", secrets: Iterable[str] = ()):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.run_id = run_id
        self.secrets = [s for s in secrets if s]
        self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        # WAL + synchronous=NORMAL: a committed row survives the process being killed.
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA busy_timeout=10000")
        self.db.executescript(SCHEMA_SQL)
        columns = {row[1] for row in self.db.execute("PRAGMA table_info(ledger)")}
        if "possibly_paid" not in columns:  # a cache from before possibly-paid attempts were recorded
            self.db.execute("ALTER TABLE ledger ADD COLUMN possibly_paid INTEGER NOT NULL DEFAULT 0")
        self._pending: list[tuple[tuple, list[tuple]]] = []
        self._scheduled = False
        self._last_commit = 0.0

    def get_many(self, keys: Iterable[str]) -> dict[str, Outcome]:
        """Cached outcomes for these keys (chunked: SQLite caps bound parameters)."""
        keys = list(dict.fromkeys(keys))
        found: dict[str, Outcome] = {}
        for i in range(0, len(keys), 500):
            part = keys[i:i + 500]
            rows = self.db.execute(
                "SELECT key, status, content, finish_reason, prompt_tokens, completion_tokens, attempts, reason, created "
                f"FROM responses WHERE key IN ({','.join('?' * len(part))})", part,
            )
            for k, st, content, fr, pt, ct, att, reason, created in rows:
                found[k] = Outcome(st, content, fr, pt or 0, ct or 0, att or 0, scrub_secrets(reason, self.secrets),
                                   created or 0.0, cached=True)
        return found

    def put(self, key: str, outcome: Outcome, model: str, request: dict[str, Any], ledger: list[tuple]) -> None:
        """Record one finished request and its ledger lines: (prompt, completion, cost, ok[, possibly_paid]) each.

        A budget-skipped request is no answer, so only its ledger lines are kept. Inside an event loop the
        commit runs before the loop waits on the network again, or, when the last commit is under
        COMMIT_DELAY old, at that age, shared with every response finished by then (group commit);
        outside a loop it commits at once. `flush()` commits whatever is pending now.
        """
        now = time.time()
        row = None if outcome.status == "skipped_budget" else (
            key, outcome.status, outcome.content, outcome.finish_reason, outcome.prompt_tokens,
            outcome.completion_tokens, outcome.attempts, scrub_secrets(outcome.reason, self.secrets), model,
            json.dumps(request, ensure_ascii=False), outcome.created or now)
        lines = [(self.run_id, key, model, pt, ct, cost, int(ok), now, int(pp))
                 for pt, ct, cost, ok, pp in ((*line, False)[:5] for line in ledger)]
        if row is None and not lines:
            return
        self._pending.append((row, lines))
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        if not self._scheduled:
            self._scheduled = True
            wait = self._last_commit + COMMIT_DELAY - time.monotonic()
            if wait > 0:
                loop.call_later(wait, self.flush)
            else:
                loop.call_soon(self.flush)

    def flush(self) -> None:
        """Commit every pending response and ledger line in one transaction."""
        self._scheduled = False
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        with self.db:
            self.db.execute("BEGIN")
            self.db.executemany("INSERT OR REPLACE INTO responses VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                                [r for r, _ in pending if r is not None])
            lines = [x for _, led in pending for x in led]
            if lines:
                self.db.executemany(
                    "INSERT INTO ledger (run, key, model, prompt_tokens, completion_tokens, cost, ok, created, "
                    "possibly_paid) VALUES (?,?,?,?,?,?,?,?,?)", lines)
        self._last_commit = time.monotonic()

    def totals(self, run: str | None = None) -> dict[str, float]:
        """Billed tokens, cost and calls in the ledger, and the possibly-paid ones apart (at their worst case)."""
        self.flush()
        where, args = ("WHERE run = ?", (run,)) if run is not None else ("", ())
        billed = "CASE WHEN possibly_paid = 0 THEN {} ELSE 0 END"
        lost = "CASE WHEN possibly_paid = 1 THEN {} ELSE 0 END"
        pt, ct, cost, n, lost_n, lost_t, lost_cost = self.db.execute(
            "SELECT " + ", ".join(f"COALESCE(SUM({e}),0)" for e in (
                billed.format("prompt_tokens"), billed.format("completion_tokens"), billed.format("cost"),
                billed.format(1), lost.format(1), lost.format("prompt_tokens + completion_tokens"), lost.format("cost")))
            + f" FROM ledger {where}", args,
        ).fetchone()
        return {"prompt_tokens": pt, "completion_tokens": ct, "cost": cost, "calls": n, "possibly_paid_calls": lost_n,
                "possibly_paid_tokens": lost_t, "possibly_paid_cost": lost_cost}

    def close(self) -> None:
        self.flush()
        self.db.close()
