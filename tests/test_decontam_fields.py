"""Decontamination against eval sets of any shape: files of no chat format read by their text fields."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from curate.cli import cli
from curate.dedupe import dedupe
from curate.dedupe.decontam import load_eval
from curate.errors import InputError

# HumanEval's shape (task_id, prompt, canonical_solution, test, entry_point), items written for this test
HUMANEVAL = [
    {"task_id": f"HumanEval/{i}",
     "prompt": f"def {name}(numbers: list) -> int:\n    \"\"\"{doc}\n    >>> {name}([1, 2, 3])\n    \"\"\"\n",
     "canonical_solution": f"    return {body}\n", "test": f"def check(candidate):\n    assert candidate([1]) == {i}\n",
     "entry_point": name}
    for i, (name, doc, body) in enumerate([
        ("count_even_numbers", "Return how many of the given numbers are even, counting zero as an even number too.",
         "sum(1 for n in numbers if n % 2 == 0)"),
        ("largest_gap", "Return the largest difference between two neighbouring numbers once the list is sorted.",
         "max(b - a for a, b in zip(sorted(numbers), sorted(numbers)[1:]))"),
        ("sum_of_squares", "Return the sum of the squares of every number in the list, or zero for an empty list.",
         "sum(n * n for n in numbers)"),
    ])
]


def _chat(user: str, reply: str = "Here you go.") -> dict:
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]}


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def train(tmp_path: Path) -> Path:
    rows = [_chat(f"Write a poem about the number {i} and the sea, in the style of a sailor's song.") for i in range(40)]
    rows.append(_chat("Complete this function:\n" + HUMANEVAL[1]["prompt"]))  # a HumanEval prompt, embedded
    return _write_jsonl(tmp_path / "train.jsonl", rows)


def test_humaneval_shaped_file_read_by_every_string_field(tmp_path, train):
    he = _write_jsonl(tmp_path / "humaneval.jsonl", HUMANEVAL)
    ev = load_eval([he])
    assert set(ev.item_field) == {"task_id", "prompt", "canonical_solution", "test", "entry_point"}
    assert ev.item_id[0] == "HumanEval/0"
    out = dedupe(train, tmp_path / "out.parquet", against=[he])
    rows = out.decontamination.to_pylist()
    assert [(r["eval_id"], r["eval_field"], r["train_row"]) for r in rows] == [("HumanEval/1", "prompt", 40)]
    assert out.counts["kept"] == 40
    removed = pq.read_table(out.outputs["removed"]).to_pylist()
    assert len(removed) == 1 and "HumanEval/1 field 'prompt'" in removed[0]["dedupe_evidence"]


def test_named_fields_and_the_cli(tmp_path, train):
    he = _write_jsonl(tmp_path / "humaneval.jsonl", HUMANEVAL)
    ev = load_eval([he], fields=["prompt"])
    assert ev.item_field == ["prompt"] * 3 and ev.item_id == ["HumanEval/0", "HumanEval/1", "HumanEval/2"]
    res = CliRunner().invoke(cli, ["dedupe", str(train), "-o", str(tmp_path / "o.parquet"), "--against", str(he),
                                   "--against-field", "prompt", "--json"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert (out["eval_items"], out["contaminated_eval_items"], out["reasons"]["contaminated"]) == (3, 1, 1)
    with pytest.raises(InputError, match="no record has the field"):
        load_eval([he], fields=["question"])


def test_mt_bench_and_code_alpaca_as_eval_sets_read_by_field(shared_data, tmp_path):
    mt = shared_data / "lm-sys__FastChat__question.jsonl"
    questions = [json.loads(line) for line in mt.read_text().splitlines()]
    alpaca = json.loads((shared_data / "sahil280114__codealpaca__code_alpaca_2k.json").read_text())
    long_ones = [r for r in alpaca if len(r["instruction"].split()) >= 16][:5]
    rows = [_chat(f"Question from a user: {q['turns'][1]}") for q in questions[:4]]  # second turns, leaked
    rows += [_chat(r["instruction"] + "\n" + r["input"]) for r in long_ones]
    rows += [_chat(f"Tell me a short story about a cat called number {i} who learns to swim.") for i in range(30)]
    train = _write_jsonl(tmp_path / "train.jsonl", rows)
    # MT-Bench by its turns (a list of strings): each turn is an item, named by its field
    ev = load_eval([mt], fields=["turns"])
    assert len(ev) == sum(len(q["turns"]) for q in questions) and set(ev.item_field) == {"turns"}
    out = dedupe(train, tmp_path / "a.parquet", against=[mt], against_field=["turns"])
    hits = out.decontamination.to_pylist()
    assert sorted(r["train_row"] for r in hits) == [0, 1, 2, 3]
    assert {r["eval_id"] for r in hits} == {str(q["question_id"]) for q in questions[:4]}
    assert all(r["eval_field"] == "turns" for r in hits)
    # Code Alpaca (an alpaca-format file) by its instruction field only
    ev = load_eval([shared_data / "sahil280114__codealpaca__code_alpaca_2k.json"], fields=["instruction"])
    assert len(ev) == len(alpaca) and set(ev.item_field) == {"instruction"}
    out = dedupe(train, tmp_path / "b.parquet", against=[shared_data / "sahil280114__codealpaca__code_alpaca_2k.json"],
                 against_field=["instruction"])
    assert sorted({r["train_row"] for r in out.decontamination.to_pylist()}) == [4, 5, 6, 7, 8]
    # a file of a known format without named fields is read as before: user turns, no field
    ev = load_eval([mt])
    assert set(ev.item_field) == {None}


def test_a_damaged_eval_file_names_file_and_line(tmp_path):
    bad = tmp_path / "he.jsonl"
    bad.write_text(json.dumps(HUMANEVAL[0]) + "\n{not json\n")
    with pytest.raises(InputError) as err:
        load_eval([bad])
    assert "he.jsonl:2" in str(err.value)
