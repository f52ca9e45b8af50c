"""Mixing: data.train entries with a weight or a count, drawn deterministically after the validation split."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from curate.ingest import ingest
from curate.pipeline.recipe import DataConfig
from curate.pipeline.stages import _mixed


def _chat(i: int, topic: str) -> dict:
    return {"messages": [{"role": "user", "content": f"{topic} question number {i}?"},
                         {"role": "assistant", "content": f"{topic} answer {i}."}]}


@pytest.fixture
def two_files(tmp_path: Path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text("".join(json.dumps(_chat(i, "billing")) + "\n" for i in range(300)))
    b.write_text("".join(json.dumps(_chat(i, "shipping")) + "\n" for i in range(40)))
    data = tmp_path / "train.parquet"
    ingest([a, b], data)
    return tmp_path, data


def _run(root: Path) -> SimpleNamespace:
    return SimpleNamespace(rel=lambda p: root / p)


def _files(path: Path) -> Counter:
    return Counter(Path(s["file"]).name for s in pq.read_table(path).column("source").to_pylist())


def test_weights_hold_and_validation_rows_never_repeat_into_training(two_files, tmp_path):
    root, data = two_files
    cfg = SimpleNamespace(seed=3, val_fraction=0.1)
    out = tmp_path / "out"
    out.mkdir()
    rows, val, report = _mixed(_run(root), data, cfg, {"a.jsonl": {"weight": 1}, "b.jsonl": {"weight": 1}}, out)
    got = _files(rows)
    assert pq.read_table(val).num_rows == 34  # 10% of 340, drawn before mixing
    train_avail = 340 - 34
    assert sum(got.values()) == train_avail and abs(got["a.jsonl"] - got["b.jsonl"]) <= 1  # 50/50 as asked
    by = {r["file"]: r for r in report}
    assert by["b.jsonl"]["repeats"] > 0 and by["a.jsonl"]["repeats"] == 0  # the small file is drawn with repeats
    val_ids = set(pq.read_table(val).column("id").to_pylist())
    assert not val_ids & set(pq.read_table(rows).column("id").to_pylist())  # no validation row leaks into training
    again = _mixed(_run(root), data, cfg, {"a.jsonl": {"weight": 1}, "b.jsonl": {"weight": 1}}, tmp_path / "out")
    assert again[2] == report  # deterministic for a seed


def test_weights_within_sampling_error_and_counts_exact(two_files, tmp_path):
    root, data = two_files
    cfg = SimpleNamespace(seed=0, val_fraction=0.0)
    (tmp_path / "o").mkdir()
    rows, _, report = _mixed(_run(root), data, cfg, {"a.jsonl": {"weight": 3}, "b.jsonl": {"weight": 1}}, tmp_path / "o")
    got = _files(rows)
    assert got["a.jsonl"] == 255 and got["b.jsonl"] == 85  # 340 rows in 3:1
    rows, _, report = _mixed(_run(root), data, cfg, {"a.jsonl": {"count": 50}, "b.jsonl": {"count": 100}},
                             tmp_path / "o")
    assert _files(rows) == {"a.jsonl": 50, "b.jsonl": 100}
    assert [r["repeats"] for r in report[:2]] == [0, 60]


def test_recipe_entries(tmp_path):
    d = DataConfig(train=["x.jsonl", {"path": "y.jsonl", "weight": 2}])
    assert d.files("train") == ["x.jsonl", "y.jsonl"] and d.mix() == {"y.jsonl": {"weight": 2.0}}
    assert DataConfig(train=["x.jsonl"]).mix() is None
    with pytest.raises(ValidationError, match="weight or count, not both"):
        DataConfig(train=[{"path": "y.jsonl", "weight": 2, "count": 3}])
    with pytest.raises(ValidationError, match="not some of each"):
        DataConfig(train=[{"path": "y.jsonl", "weight": 2}, {"path": "z.jsonl", "count": 3}])
    with pytest.raises(ValidationError):
        DataConfig(train=[{"path": "y.jsonl", "weight": 0}])


def test_a_weighted_entry_outside_the_recipe_folder_is_refused(tmp_path, monkeypatch):
    from curate.pipeline.checks import preflight
    from curate.pipeline.recipe import STAGE_NAMES
    from curate.trust import RecipeRefused

    (tmp_path / "proj").mkdir()
    (tmp_path / "secret.jsonl").write_text("{}\n")
    monkeypatch.chdir(tmp_path / "proj")
    recipe = {"name": "m", "data": {"train": [{"path": "../secret.jsonl", "weight": 1}]}}
    with pytest.raises(RecipeRefused, match=r"data.train.0.path: .* is outside the recipe.s folder"):
        preflight(recipe, tmp_path / "proj" / "r.yaml", stages=STAGE_NAMES, workdir="w")
