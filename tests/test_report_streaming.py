"""curate report streams its inputs: features batch by batch, embeddings over a seeded sample of a large set."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from curate.dataset import make_row, rows_to_table, write_table
from curate.report import report

TOPICS = ["bake bread flour oven yeast", "travel visa passport flight hotel", "python function list loop error",
          "sql query table join index"]


def rows(n: int, seed: int, words: int = 12, topics: int = 4) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        vocab = TOPICS[i % topics].split()
        text = " ".join(rng.choice(vocab, words)) + f" {i}"
        out.append(make_row([{"role": "user", "content": text}, {"role": "assistant", "content": "ok " * (i % 5 + 1)}],
                            origin="production"))
    return out


def test_a_set_larger_than_embed_sample_is_sampled_and_said_so(tmp_path, capsys):
    train = write_table(rows_to_table(rows(300, 1, topics=3)), tmp_path / "train.parquet")
    prod = write_table(rows_to_table(rows(260, 2)), tmp_path / "prod.parquet")
    whole = report(train, prod, embedder="tfidf", k=4)
    part = report(train, prod, embedder="tfidf", k=4, embed_sample=120)
    doc, full = part.to_dict()["report"], whole.to_dict()["report"]
    assert doc["inputs"]["train"]["embedding_sample"] == doc["inputs"]["production"]["embedding_sample"] == 120
    assert "embedding_sample" not in full["inputs"]["train"]
    assert any("seeded sample (120 of 300 train rows, 120 of 260 production rows; embed_sample 120)" in w
               for w in doc["warnings"])
    # structure and token lengths count every row; coverage counts the sampled rows
    assert doc["structure"] == full["structure"] and doc["comparison"] == full["comparison"]
    assert sum(c["size"] for c in doc["coverage"]["clusters"]) == 120
    # the gap rows are sampled production rows, the planted fourth topic (sql) that training lacks
    gaps = part.gap_table
    assert 0 < gaps.num_rows <= 120 and set(gaps.column("id").to_pylist()) <= set(whole.gap_table.column("id").to_pylist())
    assert all("sql" in m[0]["content"] or "query" in m[0]["content"] for m in gaps.column("messages").to_pylist())
    # the same seed draws the same sample; the printed report says it too
    again = report(train, prod, embedder="tfidf", k=4, embed_sample=120)
    assert again.to_dict()["report"]["coverage"] == doc["coverage"] and again.gap_table.equals(gaps)
    from curate.report.render import render_report

    render_report(part)
    assert "seeded sample" in capsys.readouterr().err.replace("\n", " ")


MEASURE = """
import json, resource, sys
from curate.report import report
report(sys.argv[1], sys.argv[2], embedder="tfidf", k=3, embed_sample=1000)  # warm: imports, tokenizer, reader
warm = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
doc = report(sys.argv[3], sys.argv[2], embedder="tfidf", k=3, embed_sample=1000).to_dict()["report"]
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"warm_kib": warm, "peak_kib": peak, "inputs": doc["inputs"], "count": doc["structure"]["train"]["count"]}))
"""


@pytest.mark.slow
def test_report_memory_is_bounded_by_batches_not_the_set(tmp_path):
    """60,000 training rows, 1,000 of them embedded. After a warm-up report on 5,000 rows of the same shape
    (imports, tokenizer, the Parquet reader's buffers), the large set raises the process's peak RSS by less than
    holding it once would take: its Arrow table plus its records as Python dicts (~55 MB). Streaming holds a
    batch (2,000 rows) and ~70 bytes a row (the features, an id hash): ~30 MB measured, constant costs of the
    reader and allocator included. Before streaming, the same report grew by ~300 MB: the table, its records as
    dicts twice, every user text, and TF-IDF over all of them."""
    import tracemalloc

    train = rows_to_table(rows(60_000, 3))
    tracemalloc.start()
    records = train.column("messages").to_pylist()
    as_dicts = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del records
    whole = train.nbytes + as_dicts
    big = write_table(train, tmp_path / "big.parquet")
    warm = write_table(rows_to_table(rows(5_000, 4)), tmp_path / "warm.parquet")
    prod = write_table(rows_to_table(rows(400, 2)), tmp_path / "prod.parquet")
    res = subprocess.run([sys.executable, "-c", MEASURE, str(warm), str(prod), str(big)], capture_output=True,
                         text=True, check=True, cwd=Path(__file__).parents[1])
    m = json.loads(res.stdout.strip().splitlines()[-1])
    assert m["count"] == 60_000 and m["inputs"]["train"]["embedding_sample"] == 1000
    grown = (m["peak_kib"] - m["warm_kib"]) * 1024
    assert whole > 50_000_000 and grown < whole, (grown, whole)
