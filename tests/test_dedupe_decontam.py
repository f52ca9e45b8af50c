"""Eval-set decontamination against MT-Bench and a plain question/answer file."""

from __future__ import annotations

import json
import random
import re

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from curate.cli import cli
from curate.dedupe import dedupe

PREFIXES = ["Please answer this: ", "Quick task for you. ", "Homework question: "]


def paraphrase(q: str, rng: random.Random) -> str:
    """Lower-case, drop punctuation, swap one word in every 12 and add a prefix: no 13-gram survives."""
    words = [w for w in re.split(r"[\x00-\x2f\x3a-\x40\x5b-\x60\x7b-\x7f]+", q.lower()) if w]
    words = [("thing" if i % 12 == 11 else w) for i, w in enumerate(words)]
    return rng.choice(PREFIXES) + " ".join(words)


@pytest.fixture(scope="module")
def mtbench_training(shared_data, tmp_path_factory):
    """Alpaca rows mixed with verbatim, paraphrased and embedded copies of MT-Bench first turns."""
    rng = random.Random(3)
    questions = [json.loads(line) for line in (shared_data / "lm-sys__FastChat__question.jsonl").read_text().splitlines()]
    alpaca = json.loads((shared_data / "hiyouga__LLaMA-Factory__alpaca_en_demo.json").read_text())[:400]
    records = [{"instruction": a["instruction"], "input": a["input"], "output": a["output"]} for a in alpaca]
    planted = {}
    for k, q in enumerate(q for q in questions if len(q["turns"][0].split()) >= 14):
        if k >= 36:
            break
        first = q["turns"][0]
        kind = ("verbatim", "paraphrase", "embedded")[k % 3]
        if kind == "verbatim":
            instruction = first
        elif kind == "paraphrase":
            instruction = paraphrase(first, rng)
        else:
            instruction = f"My teacher gave us this and I am stuck. {first} Any help is appreciated, thanks!"
        records.insert(rng.randrange(len(records) + 1), {"instruction": instruction, "input": "", "output": "Here you go."})
        planted[instruction] = kind
    path = tmp_path_factory.mktemp("decontam") / "train.json"
    path.write_text(json.dumps(records))
    return path, planted


def test_mtbench_copies_removed_exactly(mtbench_training, shared_data, tmp_path):
    path, planted = mtbench_training
    out = tmp_path / "clean.parquet"
    r = dedupe(path, out, against=[shared_data / "lm-sys__FastChat__question.jsonl"])
    removed = pq.read_table(tmp_path / "clean.removed.parquet").to_pylist()
    gone = {row["messages"][0]["content"] for row in removed if row["dedupe_reason"] == "contaminated"}
    assert gone == set(planted)
    assert r.summary["reasons"]["contaminated"] == len(planted) == 36
    assert r.outputs["decontamination"] == str(tmp_path / "clean.decontam.parquet")
    report = pq.read_table(tmp_path / "clean.decontam.parquet").to_pylist()
    kinds = {m["match"] for m in report}
    assert kinds == {"ngram", "near"}
    # paraphrases share no 13-gram: they are caught as near copies, with the trigram evidence
    for row in removed:
        text = row["messages"][0]["content"]
        if row["dedupe_reason"] == "contaminated" and planted[text] == "paraphrase":
            assert row["dedupe_evidence"].startswith("near match")
    # every match names its eval item (MT-Bench first turn) and the training row
    assert all(m["eval_turn"] == 0 and m["eval_id"] and m["evidence"] for m in report)
    assert r.summary["contaminated_eval_items"] == 36


def test_boilerplate_and_generic_code_are_not_contamination(tmp_path):
    boiler = "You are a helpful assistant. Read the instructions carefully and answer the question below as well as you can."
    code = "import numpy as np\nimport pandas as pd\nfrom typing import List, Dict, Optional\n\ndef main() -> None:\n    pass\n\nif __name__ == '__main__':\n    main()"
    evals = [
        {"question": f"{boiler} What is the boiling point of water on Mount Everest?", "answer": "about 70 C"},
        {"question": f"Fix the bug in this script.\n{code}\nIt crashes when reading the quarterly sales CSV file.", "answer": "..."},
    ]
    eval_path = tmp_path / "eval.jsonl"
    eval_path.write_text("\n".join(json.dumps(e) for e in evals))
    train = [
        {"instruction": f"{boiler} Name a {i}-letter word for happiness.", "input": "", "output": f"answer {i}"}
        for i in range(30)
    ] + [
        {"instruction": f"Add logging to this program number {i}.", "input": code, "output": f"done {i}"}
        for i in range(30)
    ] + [{"instruction": "What is the boiling point of water on Mount Everest? Explain why.", "input": "", "output": "70 C"}]
    train_path = tmp_path / "train.json"
    train_path.write_text(json.dumps(train))
    r = dedupe(train_path, against=[eval_path], on="conversation")
    contaminated = [x for x in r.rejected.to_pylist() if x["dedupe_reason"] == "contaminated"]
    # only the row that really contains the eval question is flagged, not the 60 boilerplate rows
    assert [x["messages"][0]["content"] for x in contaminated] == [train[-1]["instruction"]]
    assert r.decontamination.column("match").to_pylist() == ["near"]
    # without the boilerplate filter the shared prompt and code would flag those rows
    loose = dedupe(train_path, against=[eval_path], on="conversation", boilerplate_rows=10_000)
    assert loose.summary["reasons"]["contaminated"] == 60
    # ... and the row with the real question is then below the containment (its item's boilerplate counts too)
    assert loose.kept.column("messages").to_pylist()[0][0]["content"] == train[-1]["instruction"]


def test_cli_against_reports_matches(mtbench_training, shared_data, tmp_path):
    path, planted = mtbench_training
    res = CliRunner().invoke(
        cli, ["dedupe", str(path), "-o", str(tmp_path / "o.parquet"), "--against",
              str(shared_data / "lm-sys__FastChat__question.jsonl"), "--json"]
    )
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    # one exact duplicate among the 400 alpaca rows besides the 36 planted eval copies
    assert summary["reasons"] == {"exact": 1, "near": 0, "contaminated": len(planted)}
    assert summary["counts"] == {"in": 436, "kept": 399, "rejected": 37}
    assert summary["outputs"]["decontamination"] == str(tmp_path / "o.decontam.parquet")
    assert pq.read_table(tmp_path / "o.decontam.parquet").num_rows == summary["contaminated_eval_items"] == 36
