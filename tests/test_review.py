"""`curate review`: rows that need a person out to Label Studio / Argilla, their decisions back in."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from curate.cli import cli
from curate.dataset import make_row
from curate.errors import InputError
from curate.outputs import write_table
from curate.review import REVIEW_COLUMNS, export_review, import_review

WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet", "kilo", "lima",
         "mike", "november", "oscar", "papa", "quebec", "romeo", "sierra", "tango", "uniform", "victor", "whiskey",
         "xray", "yankee", "zulu"]


def _text(n: int, salt: str) -> str:
    return " ".join(f"{WORDS[i % len(WORDS)]}{salt}{i // len(WORDS)}" for i in range(n))


def _chat(user: str, reply: str, **kw) -> dict:
    return make_row([{"role": "system", "content": "You answer tickets."}, {"role": "user", "content": user},
                     {"role": "assistant", "content": reply}], **kw)


def _claim(text: str) -> dict:
    return {"claim": text, "kind": "date", "status": "unsupported", "reason": "not in the grounding documents",
            "source": None, "start": None, "end": None, "evidence": None, "judge": None}


@pytest.fixture
def stages(tmp_path: Path) -> dict[str, Path]:
    """Real validate and dedupe outputs of a planted file, and hand-built synth and eval outputs."""
    from curate.dedupe import dedupe
    from curate.synth.stage import OUTPUT_SCHEMA
    from curate.validate import validate

    base = _text(60, "a")
    words = base.split()
    near = " ".join([*words[:30], "CHANGED", *words[31:]])  # 5 of 56 shingles differ: Jaccard 51/61 = 0.836
    far = " ".join([*_text(60, "b").split()[:-1], "CHANGED"])  # the last word only: 55/57 = 0.965
    rows = [_chat(base, "reply one"), _chat(near, "reply two"), _chat(_text(60, "b"), "reply three"),
            _chat(far, "reply four"), _chat("my invoice shows \ufffd instead of the euro sign", "We will fix it."),
            _chat("where is my parcel?", "It ships tomorrow.")]
    raw = tmp_path / "raw.jsonl"
    raw.write_text("".join(json.dumps({"messages": [{"role": m["role"], "content": m["content"]}
                                                    for m in r["messages"]]}) + "\n" for r in rows))
    validate(raw, tmp_path / "valid.parquet", quarantine=tmp_path / "quarantine.parquet", tokens=False, workers=1)
    dedupe(tmp_path / "valid.parquet", tmp_path / "deduped.parquet", workers=1)

    flagged = _chat("when did the shop open?", "It opened on 14 May 1998.", origin="synthetic")
    plain = _chat("how do I reset my password?", "Use the reset link.", origin="synthetic")
    held = _chat("who founded the shop?", "Jonas Pike founded it in 1999.", origin="synthetic")
    synth = [{**flagged, "synth_status": "ok", "claims": [_claim("14 May 1998")], "unsupported_claims": [_claim("14 May 1998")]},
             {**plain, "synth_status": "ok", "claims": [], "unsupported_claims": []}]
    write_table(pa.Table.from_pylist(synth, schema=OUTPUT_SCHEMA), tmp_path / "synth.parquet")
    write_table(pa.Table.from_pylist([{**held, "synth_status": "review", "claims": [_claim("1999")],
                                       "unsupported_claims": [_claim("1999")]}], schema=OUTPUT_SCHEMA),
                tmp_path / "synth.review.parquet")

    failing = _chat("cancel order 7", '{"category": "account"}', origin="eval")
    fail_table = pa.Table.from_pylist([failing]).append_column("eval_failed_models", pa.array(['["curated"]'])) \
        .append_column("eval_reply", pa.array(['{"category": "billing"}'])) \
        .append_column("eval_failure", pa.array(["wrong fields: category"]))
    write_table(fail_table, tmp_path / "failures.parquet")

    # the dataset the decisions apply to: the deduplicated rows and the synthetic ones (as `curate run`'s final)
    kept = pq.read_table(tmp_path / "deduped.parquet")
    data = pa.concat_tables([kept, pq.read_table(tmp_path / "synth.parquet")], promote_options="default")
    write_table(data, tmp_path / "dataset.parquet")
    return {"dir": tmp_path, "valid": tmp_path / "valid.parquet", "removed": tmp_path / "deduped.removed.parquet",
            "synth": tmp_path / "synth.parquet", "held": tmp_path / "synth.review.parquet",
            "failures": tmp_path / "failures.parquet", "dataset": tmp_path / "dataset.parquet",
            "near_id": rows[1]["id"], "base_id": rows[0]["id"], "far_id": rows[3]["id"], "warn_id": rows[4]["id"],
            "flagged_id": flagged["id"], "held_id": held["id"], "eval_id": failing["id"], "plain_id": plain["id"]}


def _inputs(s: dict) -> list[Path]:
    return [s["valid"], s["removed"], s["synth"], s["held"], s["failures"]]


def _by_row(tasks: list[dict]) -> dict[str, dict]:
    return {t["data"]["row_id"]: t["data"] for t in tasks}


def test_export_lists_each_edge_case_with_its_reason(stages):
    out = export_review(_inputs(stages), stages["dir"] / "tasks.json")
    tasks = json.loads((stages["dir"] / "tasks.json").read_text())
    assert all(set(t) == {"data"} for t in tasks)
    data = _by_row(tasks)
    reasons = {rid: d["reasons"] for rid, d in data.items()}
    assert reasons == {stages["near_id"]: ["near_duplicate"], stages["warn_id"]: ["validate_warning"],
                       stages["flagged_id"]: ["synth_unsupported_claims"], stages["held_id"]: ["synth_review"],
                       stages["eval_id"]: ["eval_failure"]}  # the 0.965 pair is well above 0.8 + 0.05
    near = data[stages["near_id"]]
    assert near["kept_id"] == stages["base_id"] and _text(60, "a") in near["kept_text"]
    assert "Jaccard 0.836" in near["evidence"] and "threshold 0.8" in near["evidence"]
    assert json.loads(near["curate_row"])["id"] == stages["near_id"] and near["current"] == "drop"
    assert "replacement_character" in data[stages["warn_id"]]["evidence"]
    assert "'14 May 1998'" in data[stages["flagged_id"]]["evidence"]
    assert "wrong fields: category" in data[stages["eval_id"]]["evidence"]
    assert [t["author"] for t in data[stages["warn_id"]]["dialogue"]] == ["system", "user", "assistant"]
    assert "[assistant]\nWe will fix it." in data[stages["warn_id"]]["conversation"]
    assert out.counts == {"tasks": 5} and out.summary["reasons"]["near_duplicate"] == 1
    assert out.summary["near_duplicate_thresholds"][0]["threshold"] == 0.8  # read from deduped.dedupe.json

    view = ET.fromstring(Path(out.outputs["config"]).read_text())
    choices = view.find("Choices")
    assert choices.get("name") == "decision" and [c.get("value") for c in choices] == ["keep", "drop", "edit"]
    assert {t.get("name") for t in view.iter("TextArea")} == {"edited_reply", "note"}
    used = {e.get("value") for e in view.iter() if (e.get("value") or "").startswith("$")}
    assert {v[1:] for v in used} <= set(near)  # every $variable of the config is in each task's data

    # the margin decides: 0.04 above a 0.8 threshold leaves out 0.836; 0.02 below 0.836 takes it in
    again = export_review([stages["removed"]], stages["dir"] / "narrow.json", margin=0.03)
    assert again.counts["tasks"] == 0
    lower = export_review([stages["removed"]], stages["dir"] / "low.json", threshold=0.82, margin=0.02)
    assert lower.counts["tasks"] == 1


def _ls_export(tasks: list[dict], decisions: dict[str, tuple]) -> list[dict]:
    """Tasks as Label Studio's JSON export writes them once annotated.

    Shape from https://labelstud.io/guide/task_format (annotations -> result -> value; completed_by is the
    user's id; was_cancelled marks a skipped task), results of <Choices> as value.choices and of <TextArea>
    as value.text (https://labelstud.io/tags/choices, https://labelstud.io/tags/textarea).
    """
    out = []
    for n, t in enumerate(tasks, 1):
        annotations = []
        for k, (choice, *rest) in enumerate(decisions.get(t["data"]["row_id"], ())):
            text = rest[0] if rest else None
            result = [] if choice is None else [{"id": f"r{n}{k}", "from_name": "decision", "to_name": "dialogue",
                                                 "type": "choices", "origin": "manual",
                                                 "value": {"choices": [choice]}}]
            if text:
                result.append({"id": f"e{n}{k}", "from_name": "edited_reply", "to_name": "dialogue",
                               "type": "textarea", "origin": "manual", "value": {"text": [text]}})
            annotations.append({"id": 1000 + n * 10 + k, "completed_by": 7 + k, "result": result,
                                "was_cancelled": choice is None, "ground_truth": False,
                                "created_at": f"2025-05-0{k + 1}T10:00:00.000000Z",
                                "updated_at": f"2025-05-0{k + 1}T10:05:00.000000Z", "lead_time": 12.5,
                                "prediction": {}, "result_count": 0, "task": n, "project": 3,
                                "last_action": None, "parent_prediction": None, "parent_annotation": None})
        out.append({"id": n, "annotations": annotations, "drafts": [], "predictions": [], "data": t["data"],
                    "meta": {}, "created_at": "2025-05-01T09:00:00.000000Z",
                    "updated_at": "2025-05-01T10:05:00.000000Z", "inner_id": n, "total_annotations": len(annotations),
                    "cancelled_annotations": 0, "total_predictions": 0, "comment_count": 0,
                    "unresolved_comment_count": 0, "last_comment_updated_at": None, "project": 3,
                    "updated_by": 7, "comment_authors": []})
    return out


def test_label_studio_round_trip(stages):
    d = stages["dir"]
    export_review(_inputs(stages), d / "tasks.json")
    tasks = json.loads((d / "tasks.json").read_text())
    exported = _ls_export(tasks, {
        stages["warn_id"]: [("edit", "We will fix the euro sign in your invoice.")],
        stages["flagged_id"]: [("keep",), ("drop",)],  # two reviewers; the later one wins
        stages["near_id"]: [("keep",)],  # not a duplicate after all: back into the dataset
        stages["held_id"]: [("drop",)],  # held by synth, and stays out
        stages["eval_id"]: [("drop",)],  # an eval row: not in the training dataset
    })
    (d / "annotated.json").write_text(json.dumps(exported))
    before = pq.read_table(stages["dataset"])
    out = import_review(d / "annotated.json", stages["dataset"], d / "reviewed.parquet")

    c = out.counts
    assert c["in"] == before.num_rows == c["kept"] + c["dropped"] and out.to_dict()["balanced"]
    assert (c["dropped"], c["edited"], c["restored"], c["already_out"], c["conflicts"]) == (1, 1, 1, 1, 1)
    assert c["out"] == c["kept"] + c["restored"] and c["decisions"] == 5 and c["rejects"] == 1
    [reject] = out.summary["rejects"]
    assert reject["id"] == stages["eval_id"] and "Label Studio task" in reject["task"]
    assert "no row with this id" in reject["why"]

    rows = {r["id"]: r for r in pq.read_table(d / "reviewed.parquet").to_pylist()}
    assert len(rows) == c["out"] and stages["flagged_id"] not in rows
    edited = rows[stages["warn_id"]]
    assert edited["messages"][-1]["content"] == "We will fix the euro sign in your invoice."
    assert (edited["review_original"], edited["review_decision"], edited["review_by"]) == ("We will fix it.", "edit", "7")
    assert edited["review_at"] == "2025-05-01T10:05:00.000000Z" and edited["review_reason"] == "validate_warning"
    restored = rows[stages["near_id"]]
    assert restored["review_restored"] is True and restored["review_decision"] == "keep"
    assert restored["messages"][1]["content"].startswith("alpha")
    untouched = rows[stages["plain_id"]]
    assert all(untouched[f.name] is None for f in REVIEW_COLUMNS)
    assert untouched["synth_status"] == "ok"  # the dataset's own columns pass through

    [dropped] = pq.read_table(out.outputs["dropped"]).to_pylist()
    assert dropped["id"] == stages["flagged_id"] and dropped["review_decision"] == "drop"
    assert (dropped["review_by"], dropped["review_at"]) == ("8", "2025-05-02T10:05:00.000000Z")
    assert dropped["review_reason"] == "synth_unsupported_claims"


def test_argilla_round_trip(stages):
    d = stages["dir"]
    out = export_review(_inputs(stages), d / "records.json", to="argilla")
    assert "config" not in out.outputs
    records = json.loads((d / "records.json").read_text())
    by_id = {r["id"]: r for r in records}
    rec = by_id[stages["near_id"]]
    assert set(rec) == {"id", "fields", "metadata", "suggestions", "responses", "vectors"}
    assert set(rec["fields"]) == {"conversation", "evidence", "kept_text"} and "alpha" in rec["fields"]["kept_text"]
    assert rec["metadata"]["reason"] == "near_duplicate" and "curate_row" in rec["metadata"]
    assert rec["suggestions"]["decision"] == {"value": "drop", "score": None, "agent": "curate"}
    assert by_id[stages["warn_id"]]["suggestions"]["decision"]["value"] == "keep"
    assert "curate_row" not in by_id[stages["warn_id"]]["metadata"]

    # as Argilla 2.x's dataset.records.to_json() writes them (Record.to_dict: responses per question, a list of
    # {"value", "user_id"}; https://docs.argilla.io/latest/reference/argilla/records/records)
    user = "3f5d2c1e-0b8a-4c8e-9d3e-2a1b0c9d8e7f"
    by_id[stages["flagged_id"]]["responses"] = {"decision": [{"value": "drop", "user_id": user}],
                                                "note": [{"value": "the date is made up", "user_id": user}]}
    by_id[stages["warn_id"]]["responses"] = {"decision": [{"value": "edit", "user_id": user, "status": "submitted"}],
                                             "edited_reply": [{"value": "Fixed.", "user_id": user,
                                                               "status": "submitted"}]}
    by_id[stages["near_id"]]["responses"] = {"decision": [{"value": "keep", "user_id": user, "status": "draft"}]}
    for r in records:
        r["_server_id"] = "9c1e6f0a-1111-2222-3333-444455556666"
    (d / "argilla_export.json").write_text(json.dumps(records))
    res = import_review(d / "argilla_export.json", stages["dataset"], d / "reviewed.parquet")
    assert res.summary["format"] == "argilla" and res.to_dict()["balanced"]
    c = res.counts
    assert (c["dropped"], c["edited"], c["restored"], c["decisions"], c["undecided"]) == (1, 1, 0, 2, 3)
    rows = {r["id"]: r for r in pq.read_table(d / "reviewed.parquet").to_pylist()}
    assert rows[stages["warn_id"]]["messages"][-1]["content"] == "Fixed."
    assert rows[stages["warn_id"]]["review_by"] == user and rows[stages["warn_id"]]["review_at"]
    assert stages["near_id"] not in rows  # a draft is no decision
    [dropped] = pq.read_table(res.outputs["dropped"]).to_pylist()
    assert dropped["review_note"] == "the date is made up"

    # the flattened form (dataset.records.to_list(flatten=True)) reads the same
    flat = [{"id": stages["flagged_id"], "conversation": "...", "row_id": stages["flagged_id"], "task": "t9",
             "decision.responses": ["drop"], "decision.responses.users": [user],
             "decision.responses.status": ["submitted"]}]
    (d / "flat.json").write_text(json.dumps(flat))
    assert import_review(d / "flat.json", stages["dataset"], d / "flat.parquet").counts["dropped"] == 1


def test_unknown_id_is_listed_or_stops_with_strict(stages):
    d = stages["dir"]
    fake = {"task": "t42", "row_id": "0000000000000000", "reasons": ["validate_warning"]}
    exported = [{"id": 42, "data": fake, "annotations": [
        {"id": 1, "completed_by": 3, "was_cancelled": False, "updated_at": "2025-05-01T10:00:00Z",
         "result": [{"from_name": "decision", "to_name": "dialogue", "type": "choices",
                     "value": {"choices": ["drop"]}}]}]}]
    (d / "unknown.json").write_text(json.dumps(exported))
    out = import_review(d / "unknown.json", stages["dataset"], d / "out.parquet")
    assert out.counts["dropped"] == 0 and out.counts["kept"] == out.counts["in"]
    assert out.summary["rejects"] == [{"task": "t42 (Label Studio task 42)", "id": "0000000000000000",
                                       "decision": "drop", "why": "no row with this id in the dataset"}]

    with pytest.raises(InputError, match="task t42 .*row 0000000000000000"):
        import_review(d / "unknown.json", stages["dataset"], d / "strict.parquet", strict=True)
    assert not (d / "strict.parquet").exists()
    result = CliRunner().invoke(cli, ["review", "import", str(d / "unknown.json"), "-d", str(stages["dataset"]),
                                      "-o", str(d / "strict.parquet"), "--strict"])
    assert result.exit_code == 1 and "Error:" in result.output and "t42" in result.output


def test_empty_decisions(stages):
    d = stages["dir"]
    (d / "none.json").write_text("[]")
    out = import_review(d / "none.json", stages["dataset"], d / "same.parquet")
    assert out.summary["format"] == "empty" and out.counts["kept"] == out.counts["in"] == out.counts["out"]
    assert pq.read_table(d / "same.parquet").column("id").to_pylist() == \
        pq.read_table(stages["dataset"]).column("id").to_pylist()
    assert "dropped" not in out.outputs

    (d / "blank.json").write_text("")
    with pytest.raises(InputError, match="decisions file is empty"):
        import_review(d / "blank.json", stages["dataset"], d / "blank.parquet")


def test_cli_from_a_run_folder(stages, tmp_path):
    """A `curate run` work folder: its manifest names each stage's outputs."""
    run = tmp_path / "run"
    run.mkdir()

    def stage(name: str, kind: str, **outputs: Path) -> dict:
        return {"name": name, "status": "ran", "config": {}, "outcome": {"stage": kind, "config": {"threshold": 0.8}},
                "outputs": {k: {"path": str(p), "sha256": "x"} for k, p in outputs.items()}}

    manifest = {"stages": [stage("validate", "validate", valid=stages["valid"]),
                           stage("dedupe", "dedupe", kept=stages["dir"] / "deduped.parquet", removed=stages["removed"]),
                           stage("synth", "synth", data=stages["synth"], review=stages["held"]),
                           stage("eval", "eval", failures=stages["failures"])]}
    (run / "manifest.json").write_text(json.dumps(manifest))
    runner = CliRunner()
    result = runner.invoke(cli, ["review", "export", str(run), "-o", str(tmp_path / "t.json"), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["stage"] == "review_export" and doc["counts"] == {"tasks": 5}
    assert [s["stage"] for s in doc["sources"]] == ["validate", "dedupe", "synth", "eval"]

    tasks = json.loads((tmp_path / "t.json").read_text())
    (tmp_path / "a.json").write_text(json.dumps(_ls_export(tasks, {stages["flagged_id"]: [("drop",)]})))
    result = runner.invoke(cli, ["review", "import", str(tmp_path / "a.json"), "-d", str(stages["dataset"]),
                                 "-o", str(tmp_path / "r.parquet"), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["balanced"] and doc["counts"]["dropped"] == 1 and doc["outputs"]["dropped"].endswith("r.dropped.parquet")

    bad = runner.invoke(cli, ["review", "export", str(stages["dataset"].with_name("raw.jsonl")), "-o", "x.json"])
    assert bad.exit_code == 2 and "review reads the Parquet files" in bad.output
