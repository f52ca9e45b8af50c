"""curate synth streams: requests go through the phases a chunk at a time and rows are written as each chunk
finishes. The files and the outcome are the same for any chunk; memory holds one chunk; a run that fails
part way leaves no output and its rerun pays for nothing that finished."""

from __future__ import annotations

import json
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from curate.synth import synthesize
from curate.synth.sinks import SynthSinks
from tests.fakeserver import FakeServer, LabelTeacher, fast_backoff

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = {"type": "object", "required": ["category", "priority", "summary"],
          "properties": {"category": {"enum": ["billing", "shipping", "account"]},
                         "priority": {"enum": ["low", "high"]}, "summary": {"type": "string"}}}
KINDS = ["charged twice", "parcel late", "cannot log in", "wrong size"]


@pytest.fixture(autouse=True)
def _fast_backoff(monkeypatch):
    fast_backoff(monkeypatch)


def tickets(path: Path, n: int) -> Path:
    """n tickets; ticket 5 always gets a 500 (FAILME), ticket 9 twice (a duplicate seed)."""
    lines = [json.dumps({"messages": [{"role": "user", "content": f"Ticket {i}: {KINDS[i % 4]}"
                                       + (" FAILME" if i == 5 else "")}]}) for i in range(n)]
    path.write_text("\n".join(lines + [lines[9]]) + "\n")
    return path


def label(prompt: str, n: int) -> dict:
    """Deterministic labels: every third ticket's extra answers disagree (whatever their order); tickets whose
    number ends in 2 get a summary with a fact the ticket does not state."""
    number = int(prompt.split("Ticket ")[1].split(":")[0])
    category = ["billing", "shipping", "account"][number % 3]
    if n >= 1 and number % 3 == 1:
        category = "billing"
    summary = "refund of 20 EUR" if number % 10 == 2 else "a ticket"
    return {"category": category, "priority": ["low", "high"][number % 2], "summary": summary}


RECIPE = {"name": "stream", "prompt": "Triage: {{ prompt }}", "temperature": 0, "max_tokens": 40,
          "reply": {"schema": SCHEMA, "max_attempts": 1}, "checks": {"consistency": 2, "verify_labels": True},
          "facts": {"unsupported": "review"}, "output": {"user": "{{ prompt }}", "assistant": "{{ json | tojson }}"}}


def run_in(folder: Path, seeds: Path, chunk: int, rec: dict = RECIPE, **kw):
    """A run in a folder of its own against a fresh teacher (its label counters start at 0), with the rows each
    chunk handed to the writer counted."""
    folder.mkdir()
    written: list[int] = []
    write = SynthSinks.write

    def counting(self, rows, held):
        written.append(len(rows) + len(held))
        write(self, rows, held)

    verdict = lambda text: "Ticket 6:" not in text
    with FakeServer(reply_fn=LabelTeacher(label, verdict), fail_marker="FAILME") as srv:
        SynthSinks.write = counting
        try:
            out = synthesize(folder / "o.parquet", recipe=rec, teacher="m", base_url=srv.base_url, seeds=seeds,
                             show_progress=False, max_retries=0, max_failure_rate=1, concurrency=4, chunk=chunk, **kw)
        finally:
            SynthSinks.write = write
    return out, written


def files(folder: Path) -> dict[str, list[dict]]:
    """Every Parquet file of a run, rows without their response times (a fresh run sends again) and with the
    teacher's port (each run has a server of its own) the same."""
    out = {}
    for p in sorted(folder.glob("o*.parquet")):
        rows = pq.read_table(p).to_pylist()
        for r in rows:
            r.pop("synth_timestamp")
            r["synth_base_url_host"] = r["synth_base_url_host"].split(":")[0]
        out[p.name] = rows
    return out


def document(out, folder: Path) -> dict:
    """The outcome's JSON document, without its timing, its folder and its teacher's port."""
    d = json.loads(json.dumps(out.to_dict()).replace(str(folder), "RUN")
                   .replace(out.summary["base_url_host"], "HOST"))
    d.pop("elapsed_s")
    return d


@pytest.mark.parametrize("verify", [False, True])
def test_outputs_are_the_same_for_any_chunk(tmp_path, verify):
    seeds = tickets(tmp_path / "seeds.jsonl", 24)
    whole, written = run_in(tmp_path / "whole", seeds, 10_000, verify=verify)  # every request in one chunk
    assert written == [whole.counts["succeeded"] + whole.counts["review"]]
    c = whole.counts
    # the recipe exercises every phase: a failed request, label checks, the fact gate (and the judge)
    assert (c["requested"], c["succeeded"], c["failed"], c["rejected_check"], c["review"]) == (24, 12, 1, 9, 2)
    assert whole.summary["check_requested"] == 46
    # the fake judge's reply does not fit the judge's schema: both judgements fail, listed after the checks
    assert (whole.summary["verify_requested"], whole.summary["verify_failed"]) == ((2, 2) if verify else (0, 0))
    expected = files(tmp_path / "whole")
    assert set(expected) == {"o.parquet", "o.failures.parquet", "o.review.parquet"}
    assert [f["synth_status"] for f in expected["o.failures.parquet"]] == [
        "failed"] + ["rejected_check"] * 9 + ["failed"] * 2 * verify  # generation's first, then each phase's
    for chunk in (1, 5):
        folder = tmp_path / f"chunk{chunk}"
        out, written = run_in(folder, seeds, chunk, verify=verify)
        assert files(folder) == expected, chunk
        assert document(out, folder) == document(whole, tmp_path / "whole"), chunk
        assert max(written) <= chunk and len(written) >= 24 // chunk - 1  # never more than a chunk held
        assert out.kept.equals(pq.read_table(folder / "o.parquet")) and out.rejected.num_rows == len(
            expected["o.failures.parquet"])


def test_agreement_with_the_data_is_the_same_for_any_chunk(tmp_path):
    """The one phase that needs every row first: rows wait in a temporary file, the verdicts are those of one pass."""
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps({"messages": [
        {"role": "user", "content": f"{KINDS[i % 4]}, variant {i}"},
        {"role": "assistant", "content": json.dumps({"category": ["billing", "shipping", "account", "account"][i % 4],
                                                     "priority": "low", "summary": "x"})}]}) + "\n"
        for i in range(16)))
    rec = {**RECIPE, "checks": {"agree_with_data": 3}, "facts": {"unsupported": "drop"}}
    seeds = tickets(tmp_path / "seeds.jsonl", 16)
    whole, _ = run_in(tmp_path / "whole", seeds, 10_000, rec, reference=train)
    assert whole.counts["rejected_check"] >= 3 and whole.counts["succeeded"] >= 1
    expected = files(tmp_path / "whole")
    for chunk in (1, 3):
        out, written = run_in(tmp_path / f"chunk{chunk}", seeds, chunk, rec, reference=train)
        assert files(tmp_path / f"chunk{chunk}") == expected
        assert document(out, tmp_path / f"chunk{chunk}") == document(whole, tmp_path / "whole")
        assert max(written) <= chunk
    assert not [p for p in (tmp_path / "chunk1").iterdir() if p.name.startswith(".")]  # no temporary file left


@pytest.fixture
def server_process():
    """The fake teacher in a process of its own: its request log is not this process's memory."""
    proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "fakeserver.py"), "--port", "0"],
                            stdout=subprocess.PIPE, text=True)
    try:
        yield f"http://127.0.0.1:{int(proc.stdout.readline())}/v1"
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.mark.slow
def test_memory_is_bounded_by_the_chunk_not_the_seeds(server_process, tmp_path):
    """Peak traced memory grows by a request's key and seed id per seed, not by its row (several KB each)."""
    rec = {"name": "mem", "prompt": "Answer: {{ prompt }} #{{ index }}", "max_tokens": 50}

    def peak(n: int) -> int:
        seeds = tmp_path / f"s{n}.jsonl"
        seeds.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"Seed question number {i}: "
                                                           f"explain topic {i} in 2 ways."}]}) + "\n" for i in range(n)))
        tracemalloc.start()
        try:
            out = synthesize(tmp_path / f"o{n}.parquet", recipe=rec, teacher="m", base_url=server_process, seeds=seeds,
                             show_progress=False, concurrency=16, chunk=50)
            assert out.counts["succeeded"] == n
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    peak(20)  # imports and first-use caches, outside the measurement
    small, large = peak(200), peak(2000)
    per_seed = (large - small) / 1800
    assert per_seed < 1200, f"{per_seed:.0f} bytes per seed ({small / 1e6:.1f} MB -> {large / 1e6:.1f} MB)"


def test_a_run_that_fails_part_way_leaves_no_output_and_its_rerun_pays_nothing_again(tmp_path, monkeypatch):
    from curate.synth.phases import Phases

    seeds = tickets(tmp_path / "seeds.jsonl", 20)
    rec = {**RECIPE, "checks": {"consistency": 2}}
    finish = Phases.finish
    calls = []

    async def failing(self, rows):
        calls.append(len(rows))
        if len(calls) == 3:
            raise RuntimeError("killed after two chunks")
        await finish(self, rows)

    out = tmp_path / "o.parquet"
    with FakeServer(reply_fn=LabelTeacher(label), fail_marker="FAILME") as srv:
        monkeypatch.setattr(Phases, "finish", failing)
        with pytest.raises(RuntimeError, match="killed after two chunks"):
            synthesize(out, recipe=rec, teacher="m", base_url=srv.base_url, seeds=seeds, show_progress=False,
                       max_retries=0, max_failure_rate=1, chunk=4)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["o.cache.sqlite", "seeds.jsonl"]  # no output, no temp
        first = list(srv.requests)
        # three chunks' answers and their checks were paid before the failure (ticket 5's answer failed)
        assert len([r for r in first if r["fault"] is None]) == 2 * (3 * 4 - 1)
        monkeypatch.setattr(Phases, "finish", finish)
        again = synthesize(out, recipe=rec, teacher="m", base_url=srv.base_url, seeds=seeds, show_progress=False,
                           max_retries=0, max_failure_rate=1, chunk=4)
        second = srv.requests[len(first):]
    paid = {r["key"] for r in first}  # the server's key: the messages (an answer and its extra share one)
    assert not paid & {r["key"] for r in second}  # nothing that finished is sent again
    assert again.counts["from_cache"] == 3 * 4  # the three chunks' answers (ticket 5's failure is not resent)
    assert again.summary["http_requests"] == len(second) == 2 * (20 - 12)  # the rest: an answer and a check each
    assert again.counts["requested"] == 20 and again.balanced
    assert pq.read_table(out).num_rows == again.counts["succeeded"]
