"""The loop proves itself: raw versus curated on the same held-out prompts, and rounds that feed the curated
adapter's failures back to synth, end to end on a tiny recipe (two training steps, a fake teacher)."""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import pytest

from curate.pipeline import run_recipe
from tests.fakeserver import FakeServer

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "examples" / "demo"

RECIPE = """
name: loop
data:
  train: [data/train.jsonl]
  production: [data/production.jsonl]
  eval: [data/eval.jsonl]
validate:
  tokens: false
  output_schema: data/task.schema.json
  max_error_rate: 0.3
report:
  embedder: tfidf
  gap_ratio: 0.5
synth:
  teacher: fake
  base_url: {url}
  max_seeds: 4
  recipe:
    name: fill
    prompt: "Triage this ticket: {{{{ prompt }}}}"
    reply:
      schema:
        type: object
        required: [category, priority, summary]
        properties:
          category: {{enum: [billing, shipping, account]}}
          priority: {{enum: [low, medium, high]}}
          summary: {{type: string}}
    output:
      user: "{{{{ prompt }}}}"
      assistant: "{{{{ json | tojson }}}}"
train:
  max_steps: 2
  batch_size: 2
  grad_accum: 1
  eval_steps: 1
  save_steps: 1
eval:
  output_schema: data/task.schema.json
  max_new_tokens: 8
  limit: 6
loop:
  rounds: 2
"""


@pytest.fixture
def project(tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    for name in ("train.jsonl", "production.jsonl", "eval.jsonl", "task.schema.json"):
        shutil.copy(DEMO / name, tmp_path / "data" / name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    with FakeServer() as srv:
        (tmp_path / "r.yaml").write_text(textwrap.dedent(RECIPE.format(url=srv.base_url)).lstrip())
        yield tmp_path, srv


def test_raw_versus_curated_and_two_rounds(project):
    root, srv = project
    manifest = run_recipe("r.yaml")
    by = {s["name"]: s for s in manifest["stages"]}
    assert [s["name"] for s in manifest["stages"]] == [
        "ingest", "validate", "dedupe", "report", "synth", "synth_validate", "final", "final_report", "train_raw",
        "train", "eval", "synth-round2", "synth_validate-round2", "final-round2", "final_report-round2",
        "train-round2", "eval-round2"]
    # the raw adapter learnt from the data as ingested, the curated one from the curated data, same settings
    assert by["train_raw"]["inputs"]["raw"]["path"].endswith("ingest/train.parquet")
    assert by["train"]["inputs"]["train"]["path"].endswith("final/dataset.parquet")
    assert by["train_raw"]["config"] == by["train"]["config"]
    assert by["train_raw"]["outcome"]["counts"]["in"] == 287 and by["train"]["outcome"]["counts"]["in"] < 287
    first, second = by["eval"]["outcome"], by["eval-round2"]["outcome"]
    assert [(v["model"], v["data"], v["round"]) for v in first["variants"]] == [
        ("base", "base", 1), ("raw", "raw", 1), ("curated", "curated", 1)]
    assert [v["round"] for v in second["variants"]] == [2, 2, 2]
    pairs = {(c["a"], c["b"]) for c in first["comparisons"]}
    assert ("curated", "raw") in pairs and ("curated", "base") in pairs
    for c in first["comparisons"]:
        assert c["prompts"] == 6 and c["ci95"][0] <= c["difference"] <= c["ci95"][1]
    # round 2 was seeded by round 1's failures of the curated adapter, and its data grew from them
    failures = by["eval"]["outputs"]["failures"]["path"]
    assert by["synth-round2"]["inputs"]["seeds"]["path"] == failures
    assert by["final-round2"]["inputs"]["train"]["path"].endswith("final/dataset.parquet")
    assert by["train-round2"]["inputs"]["train"]["path"].endswith("final-round2/dataset.parquet")
    assert manifest["rounds"] == 2 and manifest["loop"] == "ran all 2 round(s)"
    card = Path(manifest["card"]).read_text()
    assert "## Does curation help?" in card and "curated vs raw:" in card and "Rounds" in card
    # a target the first round already meets stops the loop there (the first round's stages are cached)
    (root / "r.yaml").write_text((root / "r.yaml").read_text().replace("  rounds: 2\n",
                                                                       "  rounds: 2\n  target: {format_rate: 0}\n"))
    again = run_recipe("r.yaml")
    assert [s["name"] for s in again["stages"]][-1] == "eval" and again["rounds"] == 1
    assert again["loop"].startswith("round 1: the curated adapter reached the target (format_rate")
    assert all(s["status"] == "cached" for s in again["stages"] if s["status"] != "skipped")


def test_the_comparison_can_be_turned_off(project):
    root, _ = project
    text = (root / "r.yaml").read_text().replace("  rounds: 2\n", "  compare_raw: false\n")
    text = text.replace("  limit: 6\n", "  limit: 2\n")
    (root / "r.yaml").write_text(text)
    manifest = run_recipe("r.yaml", skip=["synth"])
    by = {s["name"]: s for s in manifest["stages"]}
    assert by["train_raw"]["status"] == "skipped" and by["train_raw"]["reason"] == "loop.compare_raw is off"
    assert [v["data"] for v in by["eval"]["outcome"]["variants"]] == ["base", "curated"]
    assert json.loads(Path(by["eval"]["outputs"]["json"]["path"]).read_text())["counts"]["in"] == 2
