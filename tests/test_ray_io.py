"""Sharded reads and writes on a real local two-node Ray cluster (curate/ray_io.py): the workers read their blocks
(JSONL) or row ranges (dedupe's Parquet) and write ingest's rows, the driver reads none of it, and every output is the
local engine's, rejects with their exact line numbers. Where a node does not see the file, the driver reads it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from curate.engine import use
from tests.damaged import build
from tests.test_ray import _corpus, _tables_equal

ROOT = Path(__file__).resolve().parents[1]
# (line, what is wrong with it) of the damaged lines planted in the generated file
PLANTED = {1_001: b'{"messages": [{"role": "user", "content": "cut',
           2_002: b'{"messages": [{"role": "user", "content": "bad \xff\xfe bytes"}]}',
           2_500: b'{"prompt_tokens": 3}',
           3_333: b"not json at all"}


@pytest.fixture
def small_blocks(monkeypatch):
    from curate.ingest import blocks

    monkeypatch.setattr(blocks, "BLOCK_BYTES", 16 << 10)
    monkeypatch.setattr(blocks, "POOL_BLOCKS", 2)


def _damaged_corpus(path: Path, n: int = 4_000) -> Path:
    """The generated corpus of test_ray with blank lines and the PLANTED bad lines at their line numbers."""
    _corpus(path, n)
    lines = path.read_bytes().split(b"\n")[:n]
    out, k = [], 0
    for line in range(1, n + len(PLANTED) + 3):
        if line in PLANTED:
            out.append(PLANTED[line])
        elif line in (10, 11):
            out.append(b"")
        else:
            out.append(lines[k])
            k += 1
    path.write_bytes(b"\n".join(out) + b"\n")
    return path


def _inputs(shared_data: Path, tmp_path: Path) -> list[Path]:
    real = sorted(f for f in shared_data.iterdir() if f.suffix == ".jsonl")
    damaged = [tmp_path / "damaged" / c.file for c in build(tmp_path / "damaged") if c.file.endswith(".jsonl")]
    return [*real, *damaged, _damaged_corpus(tmp_path / "gen.jsonl")]


def _refuse_driver_reads(m: pytest.MonkeyPatch) -> list[bool]:
    """Make the driver's readers of JSONL blocks fail (only the workers may read them); the list it returns says, of
    each part converted, whether its rows came through the parts folder."""
    from curate.ingest import blocks

    def refuse(*args, **kwargs):
        raise AssertionError("the driver read the input's blocks")

    m.setattr(blocks, "read_blocks", refuse)
    m.setattr(blocks.Block, "read", refuse)
    spilled: list[bool] = []
    unspill = blocks.Part.unspill

    def spy(part):
        spilled.append(part.spilled is not None)
        return unspill(part)

    m.setattr(blocks.Part, "unspill", spy)
    from curate.outputs import ParquetSink

    append = ParquetSink.write_encoded

    def encoded(sink, *args, **kwargs):  # rows an actor also encoded (the parts folder's Parquet)
        spilled.append(True)
        return append(sink, *args, **kwargs)

    m.setattr(ParquetSink, "write_encoded", encoded)
    return spilled


@pytest.mark.slow
def test_ingest_on_ray_reads_and_writes_on_the_workers(cluster, shared_data, tmp_path, small_blocks, monkeypatch):
    from curate.ingest import ingest

    files = _inputs(shared_data, tmp_path)
    local = ingest(files, tmp_path / "local.parquet", workers=2)
    with monkeypatch.context() as m, use("ray"):
        spilled = _refuse_driver_reads(m)
        remote = ingest(files, tmp_path / "ray.parquet", workers=2)
    assert local.counts == remote.counts and local.summary == {**remote.summary, "config": local.summary["config"]}
    assert _tables_equal(tmp_path / "local.parquet", tmp_path / "ray.parquet")
    assert (tmp_path / "local.rejects.jsonl").read_text() == (tmp_path / "ray.rejects.jsonl").read_text()
    assert sum(spilled) > 10  # the actors' rows came through the parts folder, not the object store
    rejects = [json.loads(x) for x in (tmp_path / "ray.rejects.jsonl").read_text().splitlines()]
    assert [r["line"] for r in rejects if r["file"].endswith("gen.jsonl")] == sorted(PLANTED)
    assert not list(tmp_path.glob(".*.curate-parts"))  # the parts folder is gone


@pytest.mark.slow
def test_validate_on_ray_reads_on_the_workers(cluster, shared_data, tmp_path, small_blocks, monkeypatch):
    from curate.validate import validate

    for i, src in enumerate(_inputs(shared_data, tmp_path)):
        local = validate(src, tmp_path / f"v{i}.parquet", quarantine=tmp_path / f"q{i}.parquet", workers=2,
                         tokens=False, max_error_rate=1)
        with monkeypatch.context() as m, use("ray"):
            _refuse_driver_reads(m)
            remote = validate(src, tmp_path / f"rv{i}.parquet", quarantine=tmp_path / f"rq{i}.parquet", workers=2,
                              tokens=False, max_error_rate=1)
        assert local.counts == remote.counts, src.name
        assert _tables_equal(tmp_path / f"v{i}.parquet", tmp_path / f"rv{i}.parquet"), src.name
        assert _tables_equal(tmp_path / f"q{i}.parquet", tmp_path / f"rq{i}.parquet"), src.name
    lines = pq.read_table(tmp_path / f"rq{i}.parquet").column("source").combine_chunks().field("line").to_pylist()
    assert set(PLANTED) <= set(lines)  # the planted lines are quarantined with their line numbers


@pytest.mark.slow
def test_a_node_that_does_not_see_the_file_gets_its_bytes_from_the_driver(cluster, tmp_path, small_blocks, monkeypatch):
    """The driver's file differs from the one the nodes see (another head): detected, so the driver reads the blocks
    and sends their bytes, and the outputs are the same."""
    from curate import ray_io
    from curate.ingest import blocks, ingest

    src = _damaged_corpus(tmp_path / "gen.jsonl")
    local = ingest([src], tmp_path / "local.parquet", workers=2)
    real = ray_io.FileId.of
    read: list[int] = []
    read_blocks = blocks.read_blocks
    with monkeypatch.context() as m, use("ray"):
        m.setattr(ray_io.FileId, "of", staticmethod(lambda p: ray_io.FileId(real(p).path, real(p).size, "elsewhere")))
        m.setattr(blocks, "read_blocks", lambda *a, **k: (read.append(1), (yield from read_blocks(*a, **k)))[1])
        remote = ingest([src], tmp_path / "ray.parquet", workers=2)
    assert read  # the driver read the blocks
    assert local.counts == remote.counts
    assert _tables_equal(tmp_path / "local.parquet", tmp_path / "ray.parquet")
    assert (tmp_path / "local.rejects.jsonl").read_text() == (tmp_path / "ray.rejects.jsonl").read_text()


@pytest.mark.slow
def test_dedupe_on_ray_reads_its_texts_on_the_workers(cluster, tmp_path, monkeypatch):
    """Dedupe's first pass over a canonical Parquet of small row groups: the driver reads the ids only, the actors
    their row groups' texts; kept, removed and clusters are the local engine's. With one large row group, or without
    the file on the nodes, the driver sends the rows, with the same outputs."""
    from curate import ray_io
    from curate.dedupe import dedupe, distributed
    from curate.ingest import ingest

    _corpus(tmp_path / "big.jsonl", 30_000)
    ingest([tmp_path / "big.jsonl"], tmp_path / "big.parquet")
    pq.write_table(pq.read_table(tmp_path / "big.parquet"), tmp_path / "one.parquet", row_group_size=30_000)
    pq.write_table(pq.read_table(tmp_path / "big.parquet"), tmp_path / "groups.parquet", row_group_size=7_000)
    real = ray_io.FileId.of
    ranges = distributed._ranges_of
    used: list[object] = []

    def spy(*args):
        used.append(ranges(*args))
        return used[-1]

    for name, workers_read, elsewhere in [("groups", True, False), ("one", False, False), ("groups", False, True)]:
        data = tmp_path / f"{name}.parquet"
        local = dedupe(data, tmp_path / name / "local" / "kept.parquet", workers=2, batch_size=2_000)
        used.clear()
        with monkeypatch.context() as m, use("ray"):
            m.setattr(distributed, "_ranges_of", spy)
            if elsewhere:  # the nodes see another file under its name
                m.setattr(ray_io.FileId, "of", staticmethod(lambda p: ray_io.FileId(real(p).path, real(p).size, "x")))
            remote = dedupe(data, tmp_path / name / "ray" / "kept.parquet", workers=2, batch_size=2_000)
        assert (used[0] is not None) == workers_read, name
        assert local.counts == remote.counts and local.counts["rejected"] > 1_000
        for k in ("kept", "removed", "clusters"):
            assert _tables_equal(local.outputs[k], remote.outputs[k]), (name, k)


_KILLED = """
import sys, time
from pathlib import Path
import ray
from ray._private import ray_constants
ray_constants.ENABLE_RAY_CLUSTER = False
ray.init(address=sys.argv[1], log_to_driver=False, logging_level="ERROR")
from curate.engine import use
from curate.ingest import blocks, ingest
from curate.outputs import ParquetSink
blocks.BLOCK_BYTES, blocks.POOL_BLOCKS = 16 << 10, 2
write = ParquetSink.write_encoded
def slow(self, *args):
    write(self, *args)
    if self.rows > 1_000:
        Path(sys.argv[3]).touch()
        time.sleep(600)
ParquetSink.write_encoded = slow  # the actors encode their rows: the driver appends them
with use("ray"):
    ingest([sys.argv[2]], sys.argv[4])
"""


@pytest.mark.slow
def test_a_killed_ray_ingest_leaves_no_output_and_the_next_run_clears_its_parts(cluster, tmp_path, small_blocks):
    from curate.ingest import ingest

    src = _damaged_corpus(tmp_path / "gen.jsonl")
    out, marker = tmp_path / "out" / "a.parquet", tmp_path / "writing"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen([sys.executable, "-c", _KILLED, cluster.address, str(src), str(marker), str(out)],
                             env=env, cwd=ROOT, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 120
        while not marker.exists():
            assert child.poll() is None, child.stderr.read().decode()[-2000:]
            assert time.time() < deadline, "the child never started writing"
            time.sleep(0.2)
        os.kill(child.pid, signal.SIGKILL)  # mid-write: some parts written, the output not committed
        child.wait(30)
    finally:
        if child.poll() is None:
            os.kill(child.pid, signal.SIGKILL)
        child.stderr.close()
    assert not out.exists() and not out.with_name("a.rejects.jsonl").exists()
    assert list(out.parent.glob(".*.curate-parts"))  # the killed run's parts folder is left ...
    with use("ray"):
        done = ingest([src], out, workers=2)
    assert not list(out.parent.glob(".*.curate-parts"))  # ... and the next run beside it removes it
    assert done.counts["in"] == 4_000 + len(PLANTED) and pq.read_table(out).num_rows == done.counts["kept"]


@pytest.mark.slow
def test_a_failed_ray_ingest_leaves_no_output_and_no_parts(cluster, tmp_path, small_blocks, monkeypatch):
    from curate.ingest import ingest
    from curate.outputs import ParquetSink

    src = _damaged_corpus(tmp_path / "gen.jsonl")
    write = ParquetSink.write_encoded

    def fail(self, *args):
        write(self, *args)
        if self.rows > 1_000:
            raise OSError("disk full")

    with monkeypatch.context() as m, use("ray"), pytest.raises(OSError, match="disk full"):
        m.setattr(ParquetSink, "write_encoded", fail)  # the actors encode their rows: the driver appends them
        ingest([src], tmp_path / "a.parquet", workers=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gen.jsonl"]
