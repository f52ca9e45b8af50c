"""The request cache's commit timing: at once when commits are rare, grouped (within COMMIT_DELAY) when not."""

from __future__ import annotations

import asyncio
import sqlite3

from curate.synth import cache as cache_module
from curate.synth.cache import Cache, Outcome

DELAY = 0.3  # the test's COMMIT_DELAY: long enough that no pause of a slow machine spans it


def _committed(path) -> int:
    db = sqlite3.connect(path)  # a second connection sees committed rows only
    try:
        return db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]
    finally:
        db.close()


def _put(cache: Cache, key: str) -> None:
    cache.put(key, Outcome("ok", content="x", prompt_tokens=3, completion_tokens=2), "m", {"k": key}, [(3, 2, 0.0, True)])


def test_commit_timing(tmp_path, monkeypatch):
    monkeypatch.setattr(cache_module, "COMMIT_DELAY", DELAY)
    path = tmp_path / "c.sqlite"
    cache = Cache(path, run_id="r")
    seen = []

    async def main():
        _put(cache, "a")  # no commit for a while: committed before the loop waits again
        await asyncio.sleep(0)
        seen.append(_committed(path))
        _put(cache, "b")  # under the delay after the last commit: grouped, committed by then
        _put(cache, "c")
        await asyncio.sleep(0)
        seen.append(_committed(path))
        await asyncio.sleep(DELAY * 1.5)
        seen.append(_committed(path))
        await asyncio.sleep(DELAY * 1.2)
        _put(cache, "d")  # the last commit is old again: at once
        await asyncio.sleep(0)
        seen.append(_committed(path))
        _put(cache, "e")
        cache.flush()  # flush() commits what is pending now, delay or not
        seen.append(_committed(path))

    asyncio.run(main())
    assert seen == [1, 1, 3, 4, 5]
    assert cache.totals("r")["calls"] == 5
    cache.close()
