"""Output sets are atomic: all of a command's outputs appear together or none do, stale ones go, temporaries of killed runs are cleaned."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from curate import outputs
from curate.outputs import TMP_SUFFIX, OutputSet, recover

ROOT = Path(__file__).resolve().parents[1]


class Killed(BaseException):
    """Stands for SIGKILL inside a commit: nothing after it runs, no cleanup either."""


def _write_set(folder: Path, tag: str, names: list[str], owned: list[str] | None = None) -> OutputSet:
    outs = OutputSet(folder / names[0], [folder / n for n in owned or names])
    for n in names:
        outs.tmp(folder / n).write_text(f"{tag} {n}")
    return outs


def _state(folder: Path, names: list[str]) -> dict[str, str | None]:
    return {n: (folder / n).read_text() if (folder / n).exists() else None for n in names}


def test_a_kill_at_every_step_of_a_commit_leaves_old_or_nothing_and_recover_finishes(tmp_path, monkeypatch):
    names = ["kept.parquet", "kept.removed.parquet", "kept.clusters.parquet", "kept.dedupe.json"]
    old_names = names + ["kept.decontam.parquet"]  # an earlier run wrote one more file: it is stale now
    steps = 0
    while True:
        folder = tmp_path / f"k{steps}"
        _write_set(folder, "old", old_names).commit()
        new = _write_set(folder, "new", names, old_names)
        calls = {"n": 0}
        real_replace, real_unlink = os.replace, Path.unlink

        def counted(real):
            def op(*args, **kwargs):
                if calls["n"] == steps:
                    raise Killed
                calls["n"] += 1
                return real(*args, **kwargs)
            return op

        monkeypatch.setattr(outputs.os, "replace", counted(real_replace))
        monkeypatch.setattr(Path, "unlink", counted(real_unlink))
        try:
            new.commit()
            finished = True
        except Killed:
            finished = False
        monkeypatch.setattr(outputs.os, "replace", real_replace)
        monkeypatch.setattr(Path, "unlink", real_unlink)
        state = _state(folder, old_names)
        if state["kept.parquet"] is not None:  # the primary is there: its whole set is there with it
            tag = state["kept.parquet"].split()[0]
            assert all(state[n] == f"{tag} {n}" for n in names), state
            assert state["kept.decontam.parquet"] == ("old kept.decontam.parquet" if tag == "old" else None)
        else:
            assert (folder / ".kept.parquet.curate-commit").exists()  # half-published only while the journal says so
        recover(folder / "kept.parquet")
        if calls["n"] > 0 or finished:  # the journal was written: the new set is published
            assert _state(folder, old_names) == {**{n: f"new {n}" for n in names}, "kept.decontam.parquet": None}
        else:
            assert _state(folder, old_names) == {n: f"old {n}" for n in old_names}
        if finished:
            break
        steps += 1
    assert steps >= len(names) + 2  # journal, old primary, stale file and every rename were each a kill point


def test_failure_leaves_earlier_outputs_and_no_temporaries(tmp_path):
    _write_set(tmp_path, "old", ["a.parquet", "a.rejects.jsonl"]).commit()
    with pytest.raises(RuntimeError), _write_set(tmp_path, "new", ["a.parquet", "a.rejects.jsonl"]):
        raise RuntimeError("boom")
    assert _state(tmp_path, ["a.parquet", "a.rejects.jsonl"]) == {"a.parquet": "old a.parquet",
                                                                  "a.rejects.jsonl": "old a.rejects.jsonl"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.parquet", "a.rejects.jsonl"]


def test_temporaries_of_dead_processes_are_cleaned_live_ones_kept(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    stale = tmp_path / f".other.parquet.{dead_pid}.deadbeef{TMP_SUFFIX}"
    live = tmp_path / f".other.parquet.{os.getpid()}.cafef00d{TMP_SUFFIX}"
    unrelated = tmp_path / ".notes.tmp"
    for p in (stale, live, unrelated):
        p.write_text("x")
    _write_set(tmp_path, "new", ["a.parquet"]).commit()
    assert not stale.exists() and live.exists() and unrelated.exists()


def test_ingest_removes_a_stale_rejects_file(tmp_path):
    from curate.ingest import ingest

    bad = tmp_path / "in.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}\n{oops\n')
    out = tmp_path / "o.parquet"
    assert ingest([bad], out).outputs["rejects"] == str(tmp_path / "o.rejects.jsonl")
    bad.write_text('{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}\n')
    assert "rejects" not in ingest([bad], out).outputs
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl", "o.parquet"]


# ---------------------------------------------------------------- SIGKILL at random points, real processes


def _corpus(folder: Path) -> Path:
    """20,000 chat records with planted copies and bad lines: enough work to be killed in any phase."""
    rng = random.Random(7)
    words = [f"w{i}" for i in range(3000)]
    lines, texts = [], []
    for i in range(20_000):
        texts.append(texts[-1] if i % 10 == 5 else " ".join(rng.choice(words) for _ in range(30)))
        lines.append(json.dumps({"messages": [{"role": "user", "content": texts[-1]},
                                              {"role": "assistant", "content": f"answer {i % 97}"}]}))
        if i % 2000 == 1999:
            lines.append("{broken json")
    path = folder / "corpus.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


COMMANDS = {
    "ingest": (["ingest", "{inp}", "-o", "{out}/data.parquet"], ["data.parquet", "data.rejects.jsonl"]),
    "validate": (["validate", "{inp}", "--no-tokens", "--max-error-rate", "1", "-o", "{out}/valid.parquet",
                  "--quarantine", "{out}/quarantine.parquet"], ["valid.parquet", "quarantine.parquet"]),
    "dedupe": (["dedupe", "{data}", "-o", "{out}/kept.parquet"],
               ["kept.parquet", "kept.removed.parquet", "kept.clusters.parquet", "kept.dedupe.json"]),
}
VOLATILE = {"seconds", "seconds_pass1", "seconds_pass2", "cpu_seconds", "peak_rss_mib", "outputs"}  # timings, paths


def _run(args: list[str], **fmt: str) -> subprocess.Popen:
    argv = [sys.executable, "-m", "curate.cli", *(a.format(**fmt) for a in args)]
    return subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})


def _contents(folder: Path, names: list[str]) -> dict[str, object]:
    out: dict[str, object] = {}
    for n in names:
        p = folder / n
        if not p.exists():
            out[n] = None
        elif n.endswith(".json"):
            out[n] = {k: v for k, v in json.loads(p.read_text()).items() if k not in VOLATILE}
        else:
            out[n] = p.read_bytes()
    return out


@pytest.mark.slow
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_sigkill_at_random_points_leaves_a_whole_set_or_none(command, tmp_path):
    args, names = COMMANDS[command]
    inp = _corpus(tmp_path)
    data = tmp_path / "data.parquet"
    subprocess.run([sys.executable, "-m", "curate.cli", "ingest", str(inp), "-o", str(data)], cwd=ROOT,
                   capture_output=True, check=False)
    ref = tmp_path / "ref"
    t0 = time.monotonic()
    assert _run(args, inp=str(inp), data=str(data), out=str(ref)).wait() in (0, 1)
    took = time.monotonic() - t0
    expected = _contents(ref, names)
    assert expected[names[0]] is not None
    out = tmp_path / "out"
    out.mkdir()
    for seed in range(4):
        proc = _run(args, inp=str(inp), data=str(data), out=str(out))
        time.sleep(random.Random(seed).uniform(0.2, took * 1.1))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        got = _contents(out, names)
        if got[names[0]] is not None:
            assert got == expected, f"seed {seed}: a primary output without its whole set"
        elif any(got[n] is not None for n in names[1:]):
            assert (out / f".{names[0]}.curate-commit").exists(), f"seed {seed}: companions without their primary"
    assert _run(args, inp=str(inp), data=str(data), out=str(out)).wait() in (0, 1)
    assert _contents(out, names) == expected
    leftovers = [p.name for p in out.iterdir() if p.name.endswith((TMP_SUFFIX, ".curate-commit"))]
    assert leftovers == []


def test_a_background_sink_writes_the_same_file_and_a_failed_write_publishes_nothing(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from curate.outputs import ParquetSink

    schema = pa.schema([("id", pa.string()), ("n", pa.int64())])
    tables = [pa.table({"id": [f"r{i}-{k}" for k in range(50)], "n": list(range(50))}, schema=schema)
              for i in range(20)]
    for background in (False, True):
        with ParquetSink(tmp_path / f"{background}.parquet", schema, background=background) as sink:
            for t in tables:
                sink.write_table(t)
        assert sink.rows == 1000
    assert pq.read_table(tmp_path / "True.parquet").equals(pq.read_table(tmp_path / "False.parquet"))
    assert pq.ParquetFile(tmp_path / "True.parquet").metadata.num_row_groups == 20

    # a table the writer cannot take fails on the writer thread: the caller sees it, no file appears
    bad = pa.table({"id": ["x"], "n": ["not a number"]})
    with pytest.raises(Exception, match="schema"):  # noqa: PT011, B017
        with ParquetSink(tmp_path / "failed.parquet", schema, background=True) as sink:
            sink.write_table(tables[0])
            sink.write_table(bad)
            for t in tables:
                sink.write_table(t)
    assert not (tmp_path / "failed.parquet").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(TMP_SUFFIX)]
