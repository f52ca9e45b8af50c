"""dedupe's signature pass on several threads (outputs equal for any number), and raw inputs streamed through a
temporary Parquet (outputs equal to deduping the ingested Parquet, the raw file never held whole)."""

from __future__ import annotations

import random
import threading
import time

import numpy as np
import pyarrow.parquet as pq
import pytest

from curate.dataset import make_row, rows_to_table
from curate.dedupe import dedupe, stage
from curate.errors import InputError
from curate.ingest import ingest
from curate.inputs import Input

WORDS = [f"w{i}" for i in range(2000)]


def corpus(n: int = 240, seed: int = 0) -> list[dict]:
    """Rows of 5-120 words, a third of them copies (exact, or with a few words changed) of an earlier row."""
    rng = np.random.default_rng(seed)
    texts: list[str] = []
    for i in range(n):
        if i > 10 and i % 3 == 0:
            words = texts[int(rng.integers(0, i))].split()
            for j in rng.choice(len(words), size=int(rng.integers(0, 3)), replace=False):
                words[j] = "CHANGED"
            texts.append(" ".join(words))
        else:
            texts.append(" ".join(rng.choice(WORDS, int(rng.integers(5, 120)))))
    system = ["You are terse.", "You are kind.", None]
    return [make_row(([{"role": "system", "content": system[i % 3]}] if system[i % 3] else []) +
                     [{"role": "user", "content": t}, {"role": "assistant", "content": f"answer {i % 7}"}],
                     origin=("production", "seed", "synthetic")[i % 3]) for i, t in enumerate(texts)]


@pytest.mark.parametrize("settings", [{}, {"keep": "longest"}, {"keep": "origin", "origin_priority": ["seed"]},
                                      {"on": "conversation"}, {"shingle": "char", "ngram": 4, "verify": False}])
def test_outputs_equal_for_one_and_two_workers(settings, monkeypatch):
    table = rows_to_table(corpus())
    one = dedupe(table, batch_size=7, workers=1, **settings)
    # on two threads, batches are made to finish out of order: results must still be taken in input order
    real, rng, threads = stage.sign, random.Random(0), set()

    def late(s, batch):
        threads.add(threading.current_thread().name)
        time.sleep(rng.random() / 200)
        return real(s, batch)

    monkeypatch.setattr(stage, "sign", late)
    two = dedupe(table, batch_size=7, workers=2, **settings)
    assert threads and all(t.startswith("curate-engine") for t in threads)  # signed on the engine's threads
    assert one.counts == two.counts and one.counts["rejected"] > 20
    assert one.kept.equals(two.kept) and one.rejected.equals(two.rejected) and one.clusters.equals(two.clusters)
    assert one.summary["reasons"] == two.summary["reasons"]
    assert (one.summary["config"]["workers"], two.summary["config"]["workers"]) == (1, 2)


def test_two_workers_encode_the_written_row_groups_and_the_files_are_the_same_bytes(tmp_path, monkeypatch):
    """With 2+ workers the kept and removed row groups are encoded on a pool (started at the first full row group)
    and appended here (curate.stitch): every file byte for byte the one-worker run's."""
    from curate.dedupe import result
    from curate.ingest.blocks import roomy_shm
    from curate.outputs import ParquetSink

    monkeypatch.setattr(result, "ROW_GROUP_BYTES", 4096)  # row groups of a few rows: many parts
    appended = []
    real = ParquetSink.write_encoded
    monkeypatch.setattr(ParquetSink, "write_encoded", lambda self, p, found, **k: (appended.append(found.rows),
                                                                                  real(self, p, found, **k)))
    table = rows_to_table(corpus(600))
    outs = [dedupe(table, tmp_path / f"w{n}" / "k.parquet", batch_size=50, workers=n) for n in (1, 2)]
    assert outs[0].counts == outs[1].counts and outs[0].counts["rejected"] > 50
    for name in ("k.parquet", "k.removed.parquet", "k.clusters.parquet"):
        assert (tmp_path / "w1" / name).read_bytes() == (tmp_path / "w2" / name).read_bytes(), name
    assert pq.ParquetFile(tmp_path / "w1" / "k.parquet").num_row_groups > 5
    if roomy_shm(2):  # all but the row groups before the pool started came from its workers
        assert len(appended) > 5 and sum(appended) > outs[1].counts["in"] // 2


def test_workers_default_to_the_usable_cores():
    from curate.engine import usable_cores

    r = dedupe(rows_to_table(corpus(30)))
    assert r.summary["config"]["workers"] == usable_cores()


@pytest.mark.parametrize("name", ["hiyouga__LLaMA-Factory__alpaca_en_demo.json", "lm-sys__FastChat__dummy_conversation.json"])
def test_raw_input_equals_its_ingested_parquet(shared_data, tmp_path, monkeypatch, name):
    raw = shared_data / name
    ingest([raw], tmp_path / "ingested.parquet")
    from_parquet = dedupe(tmp_path / "ingested.parquet", tmp_path / "p" / "k.parquet", batch_size=97, on="conversation")

    def whole(self, columns=None):
        raise AssertionError("a raw input was read whole")

    monkeypatch.setattr(Input, "read", whole)  # streamed: converted batch by batch, never read as one table
    from_raw = dedupe(raw, tmp_path / "r" / "k.parquet", batch_size=97, on="conversation")
    assert from_raw.counts == from_parquet.counts and from_raw.counts["in"] in (999, 500)
    for key in ("kept", "removed", "clusters"):
        a, b = pq.read_table(from_raw.outputs[key]), pq.read_table(from_parquet.outputs[key])
        assert a.schema == b.schema and a.equals(b), key
    # the temporary Parquet is gone: the output folder holds the outputs and nothing else
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == sorted(
        p.name for p in (tmp_path / "p").iterdir()) == ["k.clusters.parquet", "k.dedupe.json", "k.parquet",
                                                          "k.removed.parquet"]


def test_raw_input_with_an_unreadable_line_fails_naming_it(tmp_path):
    lines = ['{"messages": [{"role": "user", "content": "hello there"}]}'] * 3 + ["{not json"]
    raw = tmp_path / "in.jsonl"
    raw.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out" / "k.parquet"
    with pytest.raises(InputError, match=r"in\.jsonl:4: 1 unreadable record\(s\); first: invalid JSON"):
        dedupe(raw, out)
    assert not out.parent.exists() or not any(out.parent.iterdir())
