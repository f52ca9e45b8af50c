"""Dedupe's decision on a real Ray cluster (curate/dedupe/distributed.py) gives the local engine's outputs exactly.

One cluster for the module: a head and a second node of 1 CPU each, bound to 127.0.0.1 (as tests/test_ray.py), so
the blocks of signatures and shingles, the shuffles by exact hash, band key and pair, and the shingle sets sent to
verify pairs are spread over two Ray nodes. In every Ray run the driver's decision (plan.decide) is made to fail,
so the outputs compared come from the distributed one.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curate.dataset import make_row, rows_to_table
from curate.dedupe import dedupe
from curate.engine import use

TIMINGS = {"seconds_pass1", "seconds_pass2", "cpu_seconds", "seconds", "peak_rss_mib"}
WORDS = [f"w{i}" for i in range(5000)]


@pytest.fixture
def on_cluster(cluster, monkeypatch):
    """Run a dedupe on the cluster, with the driver's decision made unreachable."""
    from curate.dedupe import stage

    def driver_decision(*args, **kwargs):
        raise AssertionError("the driver decided; the decision should have run on the cluster")

    def run(data, output, **settings):
        with monkeypatch.context() as m, use("ray"):
            m.setattr(stage, "decide", driver_decision)
            return dedupe(data, output, **settings)

    return run


def _same(local, remote) -> None:
    """Equal outcomes (less timings and paths) and output files, row for row."""
    def drop(d: dict) -> dict:
        return {k: v for k, v in d.items() if k not in TIMINGS and k != "outputs"}

    assert drop(local.to_dict()) == drop(remote.to_dict())
    assert set(local.outputs) == set(remote.outputs)
    for k, path in local.outputs.items():
        if k != "summary":
            assert pq.read_table(path).equals(pq.read_table(remote.outputs[k])), k


def _compare(data, tmp_path: Path, on_cluster, **settings):
    local = dedupe(data, tmp_path / "local" / "kept.parquet", workers=2, **settings)
    remote = on_cluster(data, tmp_path / "ray" / "kept.parquet", workers=2, **settings)
    _same(local, remote)
    return local


def chat(user: str, origin: str | None = None, system: str | None = None, reply: str = "ok") -> dict:
    msgs = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": user}, {"role": "assistant", "content": reply}]
    return make_row(msgs, origin=origin)


def _planted(seed: int = 0) -> list[dict]:
    """Rows with every case the decision treats apart: exact copies (of near copies too), near copies around the
    threshold, a bucket of 40 near-identical rows (beyond lsh's window of 8), rows with no key text, chains that
    join clusters transitively, and origins for keep=origin (one missing, one not in the priority list)."""
    rng = np.random.default_rng(seed)
    origins = ["production", "seed", "synthetic", "web", None]
    base = [" ".join(rng.choice(WORDS, int(rng.integers(30, 90)))) for _ in range(600)]
    rows = []
    for i, t in enumerate(base):
        rows.append(chat(t, origins[i % 5]))
        if i % 7 == 0:  # near copies with 1-10% of the words changed
            w = t.split()
            for k in rng.choice(len(w), max(1, int(len(w) * rng.choice([0.01, 0.03, 0.06, 0.1]))), replace=False):
                w[k] = str(rng.choice(WORDS))
            rows.append(chat(" ".join(w) + (" tail" * int(rng.integers(0, 3))), origins[(i + 2) % 5]))
        if i % 11 == 0:
            rows.append(chat(t.upper() + " !!", origins[(i + 1) % 5]))  # the same normalised text
        if i % 53 == 0:
            rows.append(chat("", origins[i % 5]))  # no key text
    stem = " ".join(rng.choice(WORDS, 60))
    rows += [chat(f"{stem} {WORDS[k]} {WORDS[k + 1]}", origins[k % 5]) for k in range(40)]  # one huge bucket
    chain = " ".join(rng.choice(WORDS, 50)).split()
    for k in range(12):  # each link changes one more word: the ends are far apart, every step is close
        chain[k * 4] = f"chained{k}"
        rows.append(chat(" ".join(chain), origins[k % 5]))
    order = rng.permutation(len(rows))
    return [rows[i] for i in order]


@pytest.mark.slow
def test_real_files_equal_local(shared_data, tmp_path, on_cluster):
    """alpaca_en_demo (14 exact copies) and the labelled near-duplicate articles, cut into many blocks."""
    local = _compare(shared_data / "hiyouga__LLaMA-Factory__alpaca_en_demo.json", tmp_path / "alpaca", on_cluster,
                     batch_size=128)
    assert local.summary["reasons"]["exact"] == 14
    rows = [chat(line.split(" ", 1)[1]) for line in
            (shared_data / "chrisjmccormick__MinHash__articles_1000.train").read_text().splitlines()]
    local = _compare(rows_to_table(rows), tmp_path / "articles", on_cluster, batch_size=100, shingle="word", ngram=3)
    assert local.summary["reasons"]["near"] >= 10


@pytest.mark.slow
def test_actors_encode_the_written_row_groups_and_the_files_are_the_same_bytes(shared_data, tmp_path, on_cluster,
                                                                                monkeypatch):
    """The kept and removed row groups are encoded on the actors and appended by the driver: the files are byte
    for byte the one-worker local run's."""
    from curate.dedupe import result
    from curate.outputs import ParquetSink

    monkeypatch.setattr(result, "ROW_GROUP_BYTES", 16384)
    data = shared_data / "hiyouga__LLaMA-Factory__alpaca_en_demo.json"
    dedupe(data, tmp_path / "local" / "kept.parquet", workers=1, batch_size=64)
    appended = []
    real = ParquetSink.write_encoded
    monkeypatch.setattr(ParquetSink, "write_encoded", lambda self, p, found, **k: (appended.append(found.rows),
                                                                                  real(self, p, found, **k)))
    remote = on_cluster(data, tmp_path / "ray" / "kept.parquet", workers=2, batch_size=64)
    assert len(appended) > 5 and remote.counts["rejected"] == 14
    for name in ("kept.parquet", "kept.removed.parquet", "kept.clusters.parquet"):
        assert (tmp_path / "local" / name).read_bytes() == (tmp_path / "ray" / name).read_bytes(), name


@pytest.mark.slow
@pytest.mark.parametrize("keep", ["first", "longest", "origin"])
def test_planted_rows_equal_local_for_each_keep_rule(tmp_path, on_cluster, keep):
    table = rows_to_table(_planted())
    local = _compare(table, tmp_path, on_cluster, batch_size=97, keep=keep,
                     origin_priority=["seed", "production", "synthetic"])
    assert local.summary["reasons"]["exact"] > 50 and local.summary["reasons"]["near"] > 50
    assert local.summary["largest_cluster"] >= 40 and local.summary["empty_key_rows"] > 5


@pytest.mark.slow
def test_planted_rows_equal_local_unverified_on_conversations(tmp_path, on_cluster):
    rows = _planted(1)
    rows += [chat(f"question {i}", system="a system prompt shared by several rows", reply=f"answer {i}")
             for i in range(5)]
    _compare(rows_to_table(rows), tmp_path, on_cluster, batch_size=150, on="conversation", verify=False,
             threshold=0.7)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """The benchmark corpus (20,000 records, 20% planted copies) with mixed origins."""
    from benchmarks.bench_dedupe import make_corpus

    path, _ = make_corpus(20_000)
    table = pq.read_table(path)
    rng = np.random.default_rng(3)
    names = np.array(["production", "seed", "synthetic", "web"])
    origin = pa.array(names[rng.integers(0, 4, table.num_rows)].tolist())
    out = tmp_path_factory.mktemp("corpus") / "corpus.parquet"
    pq.write_table(table.set_column(table.schema.get_field_index("origin"), "origin", origin), out)
    return out


@pytest.mark.slow
def test_planted_corpus_with_decontamination_equals_local(corpus, shared_data, tmp_path, on_cluster):
    """Copies of three corpus records leaked into an eval set, besides MT-Bench: the contaminated rows leave the
    decision (as in plan.decide) and the decontamination table is the same."""
    texts = [m[0]["content"] for m in pq.read_table(corpus, columns=["messages"]).column("messages").to_pylist()[:3]]
    leaked = tmp_path / "leaked.jsonl"
    leaked.write_text("".join(json.dumps({"messages": [{"role": "user", "content": t},
                                                       {"role": "assistant", "content": "x"}]}) + "\n" for t in texts))
    against = [leaked, shared_data / "lm-sys__FastChat__question.jsonl"]
    local = _compare(corpus, tmp_path / "first", on_cluster, against=against, batch_size=2_500)
    assert local.summary["reasons"]["contaminated"] >= 3 and local.summary["reasons"]["near"] > 500
    _compare(corpus, tmp_path / "origin", on_cluster, against=against, batch_size=2_500, keep="origin",
             origin_priority=["seed", "web"])


@pytest.mark.slow
def test_partitions_do_not_change_the_answer(corpus, tmp_path, on_cluster, monkeypatch):
    """Five partitions, and three groups of blocks a partition (instead of two and one), give the same outputs."""
    from curate.dedupe import distributed

    monkeypatch.setattr(distributed, "PART_RECORDS", 90_000)  # 20,000 x 21 band records: 5 partitions
    monkeypatch.setattr(distributed, "GROUP_BLOCKS", 3)
    _compare(corpus, tmp_path, on_cluster, batch_size=1_500, keep="longest")


def test_the_decision_runs_here_with_an_index(tmp_path, monkeypatch):
    """--index keeps the driver's decision (the index's rows join it); so does the local engine."""
    from curate.dedupe import distributed
    from curate.dedupe.config import DedupeConfig

    assert not distributed.wanted(DedupeConfig())  # the local engine
    monkeypatch.setattr("curate.engine._ENGINE", "ray")
    assert distributed.wanted(DedupeConfig())
    assert not distributed.wanted(DedupeConfig(index=str(tmp_path / "idx")))
