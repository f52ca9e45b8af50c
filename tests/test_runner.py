"""The runner of `curate run` on its own (no model trained): cache hits, a miss on every kind of input change,
--force, --only, --skip, every recipe error before the first stage, and no temporary folder in any path."""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import pytest

from curate.errors import RecipeError
from curate.pipeline import run_recipe
from curate.pipeline.recipe import schema
from tests.fakeserver import FakeServer

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "examples" / "demo"

RECIPE = """
name: t
data:
  train: [data/train.jsonl]
  production: [data/production.jsonl]
  eval: [data/eval.jsonl]
validate:
  tokens: false
  output_schema: data/task.schema.json
  max_error_rate: 0.9
dedupe:
  threshold: 0.8
report:
  embedder: tfidf
  gap_ratio: 0.5  # as the demo recipe: the account tickets are a gap at half their production share
synth:
  teacher: fake
  base_url: {url}
  max_seeds: 3
  max_failure_rate: 1
  recipe: synth.yaml
"""
SYNTH = """
name: gaps
system: "Write a ticket reply as JSON."
prompt: "Ticket: {{ prompt }}\\nKnown facts: {{ documents[0].text }}"
reply:
  schema:
    type: object
    required: [category, priority, summary]
    properties:
      category: {enum: [billing, shipping, account]}
      priority: {enum: [low, medium, high]}
      summary: {type: string}
output:
  user: "{{ prompt }}"
  assistant: "{{ json | tojson }}"
grounding:
  documents: [docs/facts.md]
"""


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A recipe over a copy of the demo data, in the current directory, with a fake teacher on loopback."""
    (tmp_path / "data").mkdir()
    for name in ("train.jsonl", "production.jsonl", "eval.jsonl", "task.schema.json"):
        shutil.copy(DEMO / name, tmp_path / "data" / name)
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "facts.md").write_text("Accounts lock after five failed logins.\n")
    (tmp_path / "synth.yaml").write_text(textwrap.dedent(SYNTH).lstrip())
    monkeypatch.chdir(tmp_path)
    with FakeServer() as srv:
        (tmp_path / "r.yaml").write_text(textwrap.dedent(RECIPE.format(url=srv.base_url)).lstrip())
        yield tmp_path, srv


def statuses(manifest: dict) -> dict[str, str]:
    return {s["name"]: s["status"] for s in manifest["stages"]}


DATA_STAGES = ("ingest", "validate", "dedupe", "report", "synth", "synth_validate", "final", "final_report")
NO_MODEL = {"train_raw": "skipped", "train": "skipped", "eval": "skipped"}


def test_hits_and_a_miss_on_every_kind_of_input_change(project):
    root, srv = project
    first = run_recipe("r.yaml")
    assert statuses(first) == {**dict.fromkeys(DATA_STAGES, "ran"), **NO_MODEL}
    sent = len(srv.requests)
    synth = next(s for s in first["stages"] if s["name"] == "synth")["outcome"]["counts"]
    assert sent == synth["requested"] == synth["succeeded"] >= 1  # one request per distinct gap seed
    assert statuses(run_recipe("r.yaml")) == {**dict.fromkeys(DATA_STAGES, "cached"), **NO_MODEL}
    # a file a stage's settings name (validate's output schema): that stage reruns, and so does every stage
    # whose input it changes (here the schema now quarantines every ticket of priority "high")
    task = json.loads((root / "data" / "task.schema.json").read_text())
    task["properties"]["priority"]["enum"] = ["low", "medium"]
    (root / "data" / "task.schema.json").write_text(json.dumps(task))
    after_schema = statuses(run_recipe("r.yaml"))
    assert after_schema["ingest"] == "cached"
    assert all(after_schema[n] == "ran" for n in ("validate", "dedupe", "report", "synth_validate", "final"))
    # a grounding document named inside the synth recipe: synth reruns (its prompts change)
    (root / "docs" / "facts.md").write_text("Accounts unlock after an hour.\n")
    after_doc = statuses(run_recipe("r.yaml"))
    assert {n: after_doc[n] for n in ("ingest", "validate", "dedupe", "report")} == dict.fromkeys(
        ("ingest", "validate", "dedupe", "report"), "cached")
    assert after_doc["synth"] == "ran" and len(srv.requests) > sent
    # a setting: that stage reruns, the ones before it do not
    (root / "r.yaml").write_text((root / "r.yaml").read_text().replace("threshold: 0.8", "threshold: 0.9"))
    after_setting = statuses(run_recipe("r.yaml"))
    assert (after_setting["validate"], after_setting["dedupe"]) == ("cached", "ran")
    # a data file: ingest reruns, and everything after it that reads what changed
    with open(root / "data" / "train.jsonl", "a") as f:
        f.write(json.dumps({"messages": [{"role": "user", "content": "My parcel is late, where is it?"},
                                         {"role": "assistant", "content": '{"category": "shipping", '
                                          '"priority": "low", "summary": "Late parcel"}'}]}) + "\n")
    after_data = statuses(run_recipe("r.yaml"))
    assert all(after_data[n] == "ran" for n in ("ingest", "validate", "dedupe", "report", "final"))


def test_force_only_and_skip(project):
    run_recipe("r.yaml")
    forced = statuses(run_recipe("r.yaml", force=["dedupe"]))
    assert forced["dedupe"] == "ran" and forced["validate"] == "cached" and forced["report"] == "cached"
    only = statuses(run_recipe("r.yaml", only="report", force=["report"]))
    assert only["report"] == "ran" and all(only[n] == "cached" for n in DATA_STAGES if n != "report")
    skipped = run_recipe("r.yaml", skip=["validate"])
    by = {s["name"]: s for s in skipped["stages"]}
    assert by["validate"]["status"] == "skipped" and by["synth_validate"]["reason"] == "validate is skipped"
    # with validate skipped, dedupe reads ingest's output, so it ran again
    assert by["dedupe"]["status"] == "ran" and by["dedupe"]["inputs"]["train"]["path"].endswith("ingest/train.parquet")


def test_every_recipe_error_is_reported_before_the_first_stage(project):
    root, _ = project
    text = (root / "r.yaml").read_text() + "train:\n  batchsize: 2\n  max_steps: four\neval:\n  max_new_tokens: 0\n"
    (root / "r.yaml").write_text(text.replace("threshold: 0.8", "treshold: 0.8"))
    with pytest.raises(RecipeError) as err:
        run_recipe("r.yaml")
    lines = str(err.value).splitlines()[1:]
    assert [line.strip() for line in lines] == [
        "dedupe.treshold (line 11): unknown key; did you mean 'threshold'?",
        "train.batchsize (line 22): unknown key; did you mean 'batch_size'?",
        "train.max_steps (line 23): input should be a valid integer, unable to parse string as an integer (got 'four')",
        "eval.max_new_tokens (line 25): input should be greater than or equal to 1 (got 0)",
    ]
    assert not (root / "runs").exists()  # nothing ran


def test_no_path_names_a_temporary_folder(project):
    manifest = run_recipe("r.yaml")
    work = Path(manifest["workdir"])
    texts = [json.dumps(manifest)] + [p.read_text() for p in work.rglob("*.json")]
    assert not any(".partial" in t or ".curate.tmp" in t for t in texts)
    for rec in manifest["stages"]:
        for out in rec["outputs"].values():
            assert Path(out["path"]).is_file() or Path(out["path"]).is_dir()


def test_the_recipe_schema_file_is_generated_from_the_configs():
    on_disk = json.loads((ROOT / "schemas" / "run-recipe.schema.json").read_text())
    assert on_disk == schema(), "run: python -m curate.pipeline.recipe > schemas/run-recipe.schema.json"
