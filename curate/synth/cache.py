"""A durable, content-addressed request cache and token/cost ledger in SQLite (WAL mode).

Every finished request (ok or failed) is committed at once when the previous commit is more than
COMMIT_DELAY (10 ms) old, which is always the case for a real teacher at concurrency 1; when responses
arrive faster, those of the next COMMIT_DELAY share one commit (group commit), so the commit stays a
small part of each request's cost. A killed run therefore loses at most the requests in flight and the
responses of its last 10 ms; every committed one is served from the cache on the rerun, never sent
again. The key is a hash of model + messages + parameters
(+ the example index), never of the recipe file, so editing one seed changes only its keys.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
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
    completion_tokens INTEGER, cost REAL, ok INTEGER, created REAL
);
"""


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

    def __init__(self, path: str | Path, run_id: str = ""):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.run_id = run_id
        self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        # WAL + synchronous=NORMAL: a committed row survives the process being killed.
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA busy_timeout=10000")
        self.db.executescript(SCHEMA_SQL)
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
                found[k] = Outcome(st, content, fr, pt or 0, ct or 0, att or 0, reason, created or 0.0, cached=True)
        return found

    def put(self, key: str, outcome: Outcome, model: str, request: dict[str, Any],
            ledger: list[tuple[int, int, float, bool]]) -> None:
        """Record one finished request and the ledger lines of every attempt that used tokens.

        Inside an event loop the commit runs before the loop waits on the network again, or, when the
        last commit is under COMMIT_DELAY old, at that age, shared with every response finished by then
        (group commit); outside a loop it commits at once. `flush()` commits whatever is pending now.
        """
        now = time.time()
        self._pending.append((
            (key, outcome.status, outcome.content, outcome.finish_reason, outcome.prompt_tokens,
             outcome.completion_tokens, outcome.attempts, outcome.reason, model,
             json.dumps(request, ensure_ascii=False), outcome.created or now),
            [(self.run_id, key, model, pt, ct, cost, int(ok), now) for pt, ct, cost, ok in ledger],
        ))
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
            self.db.executemany("INSERT OR REPLACE INTO responses VALUES (?,?,?,?,?,?,?,?,?,?,?)", [r for r, _ in pending])
            lines = [x for _, led in pending for x in led]
            if lines:
                self.db.executemany(
                    "INSERT INTO ledger (run, key, model, prompt_tokens, completion_tokens, cost, ok, created) "
                    "VALUES (?,?,?,?,?,?,?,?)", lines)
        self._last_commit = time.monotonic()

    def totals(self, run: str | None = None) -> dict[str, float]:
        """Tokens and cost in the ledger, for one run or for the cache's whole life."""
        self.flush()
        where, args = ("WHERE run = ?", (run,)) if run is not None else ("", ())
        pt, ct, cost, n = self.db.execute(
            f"SELECT COALESCE(SUM(prompt_tokens),0), COALESCE(SUM(completion_tokens),0), COALESCE(SUM(cost),0), "
            f"COUNT(*) FROM ledger {where}", args,
        ).fetchone()
        return {"prompt_tokens": pt, "completion_tokens": ct, "cost": cost, "calls": n}

    def requests_sent(self) -> list[dict[str, Any]]:
        """The request bodies of every cached response (for audits and tests)."""
        self.flush()
        return [json.loads(r) for (r,) in self.db.execute("SELECT request FROM responses WHERE status = 'ok'")]

    def close(self) -> None:
        self.flush()
        self.db.close()
