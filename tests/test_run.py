"""`curate run`: the demo recipe end to end, reruns that skip unchanged stages, SIGKILL and resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from curate.cli import cli
from curate.errors import RecipeError, UsageError
from curate.pipeline import run_recipe

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "recipes" / "demo.yaml"

pytestmark = pytest.mark.slow


def _demo_recipe(tmp_path: Path, **changes: str) -> Path:
    """The shipped demo recipe, placed where its relative paths still resolve, with text replaced."""
    text = DEMO.read_text()
    for old, new in changes.items():
        assert old in text
        text = text.replace(old, new)
    path = ROOT / "recipes" / f".test-{tmp_path.name}.yaml"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("demo")
    start = time.perf_counter()
    manifest = run_recipe(DEMO, workdir=work)
    return work, manifest, time.perf_counter() - start


def test_demo_end_to_end(demo_run):
    work, manifest, _ = demo_run
    by = {s["name"]: s for s in manifest["stages"]}
    assert [s["name"] for s in manifest["stages"]] == [
        "ingest", "validate", "dedupe", "report", "synth", "synth_validate", "final", "final_report", "train_raw",
        "train", "eval"
    ]
    ran = {s["name"] for s in manifest["stages"] if s["status"] == "ran"}
    assert ran >= {"ingest", "validate", "dedupe", "report", "synth", "train_raw", "train", "eval"}
    # planted problems are found: 22 replies that are not JSON and 60 in an old help desk's labels quarantined,
    # the export job's copies and the leaked eval ticket removed
    assert by["ingest"]["outcome"]["roles"]["train"]["counts"] == {"in": 287, "kept": 287, "rejected": 0}
    assert by["validate"]["outcome"]["counts"] == {"in": 287, "kept": 205, "rejected": 82}
    assert by["dedupe"]["outcome"]["reasons"] == {"exact": 100, "near": 21, "contaminated": 1}
    assert by["report"]["outcome"]["counts"]["gap_rows"] == 50
    gaps = pq.read_table(by["report"]["outputs"]["gaps"]["path"])
    gap_text = " ".join(m[1]["content"] for m in gaps.column("messages").to_pylist())
    assert any(w in gap_text for w in ("account", "log in", "password", "two-factor", "login"))
    synth = by["synth"]["outcome"]
    # the first 8 gap rows are 8 distinct tickets; what the tiny teacher answers varies with the CPU, but a
    # label its nearest training tickets contradict never reaches the dataset
    assert synth["counts"]["requested"] == 8 and synth["counts"]["skipped_budget"] == 0 and synth["balanced"]
    final = pq.read_table(manifest["final_dataset"])
    assert "seed" in set(final.column("origin").to_pylist())
    # base vs raw vs curated on the same 60 held-out tickets: curation is what makes the adapter better
    ev = json.loads(Path(by["eval"]["outputs"]["json"]["path"]).read_text())
    assert ev["counts"]["in"] == 60
    v = {x["data"]: x for x in ev["variants"]}
    assert v["curated"]["task_accuracy"] > v["raw"]["task_accuracy"] > v["base"]["task_accuracy"]
    assert v["curated"]["format_rate"] >= 0.9 and v["base"]["format_rate"] < 0.1
    gap = next(c for c in ev["comparisons"] if (c["a"], c["b"]) == ("curated", "raw"))
    assert gap["difference"] == pytest.approx(v["curated"]["task_accuracy"] - v["raw"]["task_accuracy"], abs=1e-3)
    card = Path(manifest["card"]).read_text()
    for heading in ("Does curation help?", "Sources and origin mix", "Validation", "Deduplication", "Coverage",
                    "Synthetic rows", "Training"):
        assert heading in card, heading
    lineage = json.loads((work / "manifest.json").read_text())
    assert lineage["versions"]["curate"] and all("key" in s for s in lineage["stages"])


def test_rerun_skips_unchanged_stages(demo_run):
    work, manifest, first_seconds = demo_run
    start = time.perf_counter()
    again = run_recipe(DEMO, workdir=work)
    assert all(s["status"] == "cached" for s in again["stages"] if s["status"] != "skipped")
    assert time.perf_counter() - start < first_seconds / 3
    # editing one stage's settings reruns that stage; earlier stages stay cached
    changed = _demo_recipe(work, **{"  max_new_tokens: 48": "  max_new_tokens: 40"})
    try:
        third = run_recipe(changed, workdir=work, only="eval")
    finally:
        changed.unlink()
    status = {s["name"]: s["status"] for s in third["stages"]}
    assert status["eval"] == "ran" and status["train"] == "cached"
    # --force train starts training from scratch: exactly max_steps, not one more step on the old checkpoint
    forced = run_recipe(DEMO, workdir=work, only="train", force=["train"])
    train = next(s for s in forced["stages"] if s["name"] == "train")
    assert train["status"] == "ran" and train["outcome"]["metrics"]["global_step"] == 60


def test_sigkill_then_resume_matches_uninterrupted(demo_run, tmp_path):
    work, manifest, _ = demo_run
    other = tmp_path / "killed"
    cmd = [sys.executable, "-m", "curate.cli", "run", str(DEMO), "--workdir", str(other)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 600
    # kill once training has written a checkpoint: the data stages are finished, training is not
    while time.time() < deadline and proc.poll() is None:
        if list((other / ".cache" / "train").glob("*/checkpoints/checkpoint-*")):
            break
        time.sleep(0.5)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (other / "train" / "stage.json").exists()
    resumed = run_recipe(DEMO, workdir=other)
    status = {s["name"]: s["status"] for s in resumed["stages"]}
    first = {s["name"]: s["status"] for s in manifest["stages"]}
    data_stages = ("ingest", "validate", "dedupe", "report", "synth", "synth_validate", "final", "final_report")
    assert all(status[n] == ("cached" if first[n] == "ran" else first[n]) for n in data_stages)
    assert status["train_raw"] == "ran" and status["train"] == "ran" and status["eval"] == "ran"
    train_stage = next(s for s in resumed["stages"] if s["name"] == "train")
    assert train_stage["outcome"]["metrics"]["global_step"] == 60
    # the final dataset holds the uninterrupted run's rows, in order (provenance timestamps aside)
    fa = pq.read_table(manifest["final_dataset"], columns=["id", "messages", "origin"])
    fb = pq.read_table(resumed["final_dataset"], columns=["id", "messages", "origin"])
    assert fa.equals(fb)
    a = {s["name"]: s for s in manifest["stages"]}
    b = {s["name"]: s for s in resumed["stages"]}
    ea = pq.read_table(a["eval"]["outputs"]["rows"]["path"])
    eb = pq.read_table(b["eval"]["outputs"]["rows"]["path"])
    assert ea.num_rows == eb.num_rows == 180


def test_recipe_errors_name_key_and_line(tmp_path):
    bad = _demo_recipe(tmp_path, **{"  threshold: 0.8": "  threshold: 8\n  bogus: 1"})
    try:
        with pytest.raises(RecipeError) as err:
            run_recipe(bad, workdir=tmp_path)
    finally:
        bad.unlink()
    text = str(err.value)
    assert "dedupe.threshold (line 23): input should be less than or equal to 1 (got 8)" in text
    assert "dedupe.bogus (line 24): unknown key; known: " in text
    res = CliRunner().invoke(cli, ["run", str(ROOT / "recipes" / "nope.yaml")])
    assert res.exit_code == 2 and "no such recipe" in res.output


def test_only_needs_earlier_stages(tmp_path):
    with pytest.raises(UsageError, match="has not run yet"):
        run_recipe(DEMO, workdir=tmp_path / "fresh", only="report")
    with pytest.raises(UsageError, match="unknown stage"):
        run_recipe(DEMO, workdir=tmp_path / "fresh", skip=["nope"])
