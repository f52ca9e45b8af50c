"""The files people review in, both ways: Label Studio tasks and Argilla records out, their annotations back in.

Label Studio (https://labelstud.io/guide/task_format, https://labelstud.io/tags/choices,
https://labelstud.io/tags/textarea, https://labelstud.io/tags/paragraphs):
    out  a JSON list of tasks `{"data": {...}}` and a labeling config (XML) beside it: the conversation as
         a dialogue, the evidence, the kept row of a near duplicate, a `decision` choice (keep / drop /
         edit), an `edited_reply` and a `note` text area
    in   Label Studio's JSON export: each task with `annotations[]`, each with `result[]`
         (`{"from_name": "decision", "type": "choices", "value": {"choices": ["drop"]}}`,
         `{"from_name": "edited_reply", "type": "textarea", "value": {"text": ["..."]}}`), `completed_by`
         (a user id, or an object with an email) and `updated_at`; cancelled (skipped) annotations are not
         decisions, and of several annotations the last updated wins
Argilla 2.x (https://docs.argilla.io/latest/reference/argilla/records/records, `Record.to_dict`):
    out  a JSON list (or JSONL) of records `{"id", "fields", "metadata", "suggestions", "responses",
         "vectors"}`: fields conversation / evidence / kept_text, the decision curate made as a suggestion
    in   the records as `dataset.records.to_json()` writes them: `responses: {"decision": [{"value",
         "user_id", "status"?}], "edited_reply": [...], "note": [...]}`, or flattened (`to_list(flatten=True)`:
         `decision.responses`, `decision.responses.users`, `decision.responses.status`); responses that are
         not submitted (draft, discarded) are not decisions, and of several users' the last listed wins.
         Argilla's export has no time: `review_at` is the decisions file's modification time.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

from curate.errors import InputError
from curate.review.render import conversation_text, dialogue, last_reply
from curate.review.sources import Item

DECISIONS = ("keep", "drop", "edit")
STATUS = {"near_duplicate": "removed by dedupe", "synth_review": "held for review by synth"}


def item_data(item: Item, task: str) -> dict[str, Any]:
    """What a person needs to decide on one row, as flat JSON values (Label Studio's task `data`)."""
    row = item.row
    status = next((STATUS[r] for r in item.reasons if r in STATUS), "in the dataset")
    src = row.get("source") or {}
    where = ":".join(str(p) for p in (src.get("file"), src.get("line")) if p is not None)
    return {
        "task": task, "row_id": item.id, "reason": item.reasons[0], "reasons": list(item.reasons),
        "status": status, "current": "keep" if item.in_dataset else "drop",
        "summary": f"{', '.join(item.reasons)} | row {item.id} | {status} | origin {row.get('origin')}"
                   + (f" | {where}" if where else ""),
        "evidence": "\n".join(item.evidence) or "(none)",
        "dialogue": dialogue(row), "conversation": conversation_text(row), "reply": last_reply(row),
        "kept_id": item.kept_id, "kept_text": item.kept_text or "",
        "origin": row.get("origin"), "source": where, "files": list(item.files),
        # a row outside the dataset travels with its task, so that `keep` can bring it back
        "curate_row": None if item.in_dataset else json.dumps(row, ensure_ascii=False, default=str),
    }


def label_config() -> str:
    """Label Studio's labeling config for the tasks: read the evidence, decide keep / drop / edit."""
    return "\n".join([
        "<View>",
        "  <Style>.htx-text { white-space: pre-wrap; }</Style>",
        '  <Header value="Why this row needs a person"/>',
        '  <Text name="summary" value="$summary"/>',
        '  <Text name="evidence" value="$evidence"/>',
        '  <Header value="The conversation"/>',
        '  <Paragraphs name="dialogue" value="$dialogue" layout="dialogue" nameKey="author" textKey="text"/>',
        '  <Header value="The row dedupe kept (near duplicates only)"/>',
        '  <Text name="kept" value="$kept_text"/>',
        '  <Header value="Decision: keep the row, drop it, or edit its last assistant reply"/>',
        '  <Choices name="decision" toName="dialogue" choice="single" showInline="true" required="true">',
        *(f"    <Choice value={quoteattr(d)}/>" for d in DECISIONS),
        "  </Choices>",
        '  <TextArea name="edited_reply" toName="dialogue" rows="6" maxSubmissions="1" editable="true"',
        '            placeholder="for edit: the corrected assistant reply"/>',
        '  <TextArea name="note" toName="dialogue" rows="2" maxSubmissions="1" editable="true"',
        '            placeholder="why (optional)"/>',
        "</View>",
        "",
    ])


def label_studio_task(data: dict[str, Any]) -> dict[str, Any]:
    return {"data": data}


def argilla_record(data: dict[str, Any]) -> dict[str, Any]:
    """One Argilla record (`rg.Record.from_dict` reads it); the curate row rides in metadata when it must."""
    metadata = {k: data[k] for k in ("row_id", "task", "reason", "status", "origin", "source") if data[k] is not None}
    metadata["reasons"] = ", ".join(data["reasons"])
    if data["curate_row"] is not None:
        metadata["curate_row"] = data["curate_row"]
    return {"id": data["row_id"],
            "fields": {"conversation": data["conversation"], "evidence": f"{data['summary']}\n\n{data['evidence']}",
                       "kept_text": data["kept_text"]},
            "metadata": metadata,
            "suggestions": {"decision": {"value": data["current"], "score": None, "agent": "curate"}},
            "responses": {}, "vectors": {}}


# ---------------------------------------------------------------- decisions back


@dataclass
class Decision:
    """One person's decision on one row, as read from the annotated file."""

    task: str  # the task as the reviewer saw it: curate's task id, and the tool's own id
    row_id: str | None
    decision: str | None  # keep / drop / edit; None: the task has no decision
    text: str | None = None  # edit: the new last assistant reply
    note: str | None = None
    by: str | None = None
    at: str | None = None
    reasons: tuple[str, ...] = ()
    row: dict[str, Any] | None = None  # the canonical row of a task whose row is not in the dataset
    conflict: bool = False  # reviewers disagree; the last one wins


def read_decisions(path: str | Path) -> tuple[str, list[Decision]]:
    """(the format, one Decision per task) of an annotated Label Studio or Argilla export."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    if not text.strip():
        raise InputError("the decisions file is empty: export the annotations from Label Studio as JSON, or "
                         "the records from Argilla with dataset.records.to_json()", file=str(path))
    try:
        doc = json.loads(text)
    except ValueError:
        try:  # JSONL
            doc = [json.loads(line) for line in text.splitlines() if line.strip()]
        except ValueError as exc:
            raise InputError(f"not JSON or JSONL: {exc}", file=str(path)) from exc
    if isinstance(doc, dict):
        doc = doc.get("records", doc.get("tasks", [doc]))
    if not isinstance(doc, list) or not all(isinstance(x, dict) for x in doc):
        raise InputError("expected a list of tasks or records", file=str(path))
    if not doc:
        return "empty", []
    first = doc[0]
    if "data" in first or "annotations" in first:
        return "label-studio", [_label_studio(t, path, i) for i, t in enumerate(doc, 1)]
    if "fields" in first or "responses" in first or any(k.endswith(".responses") for k in first):
        at = datetime.fromtimestamp(os.stat(path).st_mtime, timezone.utc).isoformat(timespec="seconds")
        return "argilla", [_argilla(r, path, i, at) for i, r in enumerate(doc, 1)]
    raise InputError(f"record 1 is neither a Label Studio task (data, annotations) nor an Argilla record "
                     f"(fields, responses): keys {', '.join(sorted(first)[:8])}", file=str(path))


def _row_of(value: Any) -> dict[str, Any] | None:
    return json.loads(value) if isinstance(value, str) and value else None


def _label_studio(task: dict[str, Any], path: Path, n: int) -> Decision:
    data = task.get("data") or {}
    name = f"{data.get('task') or f'#{n}'} (Label Studio task {task.get('id', n)})"
    votes = []
    for ann in task.get("annotations") or []:
        if ann.get("was_cancelled"):
            continue
        choice = text = note = None
        for res in ann.get("result") or []:
            value = res.get("value") or {}
            if res.get("from_name") == "decision" and value.get("choices"):
                choice = value["choices"][0]
            elif res.get("from_name") == "edited_reply" and value.get("text"):
                text = "\n".join(value["text"])
            elif res.get("from_name") == "note" and value.get("text"):
                note = "\n".join(value["text"])
        if choice is not None:
            votes.append((ann.get("updated_at") or ann.get("created_at") or "", choice, text, note,
                          _user(ann.get("completed_by"))))
    base = {"task": name, "row_id": data.get("row_id"), "reasons": tuple(data.get("reasons") or ()),
                "row": _row_of(data.get("curate_row"))}
    if not votes:
        return Decision(decision=None, **base)
    votes.sort(key=lambda v: v[0])
    at, choice, text, note, by = votes[-1]
    return Decision(decision=choice, text=text, note=note, by=by, at=at or None,
                    conflict=len({v[1] for v in votes}) > 1, **base)


def _user(who: Any) -> str | None:
    """Label Studio's completed_by: a user id, or (some exports) an object with the email."""
    if isinstance(who, dict):
        return str(who.get("email") or who.get("username") or who.get("id"))
    return None if who is None else str(who)


def _argilla(rec: dict[str, Any], path: Path, n: int, at: str) -> Decision:
    meta = rec.get("metadata") or {}
    if "responses" in rec or "fields" in rec:
        responses = rec.get("responses") or {}
    else:  # flattened: decision.responses, decision.responses.users, decision.responses.status
        responses = {}
        for q in ("decision", "edited_reply", "note"):
            values = rec.get(f"{q}.responses") or []
            users = rec.get(f"{q}.responses.users") or [None] * len(values)
            status = rec.get(f"{q}.responses.status") or [None] * len(values)
            responses[q] = [{"value": v, "user_id": u, "status": s} for v, u, s in zip(values, users, status)]
        meta = {k: rec[k] for k in ("row_id", "task", "reasons", "curate_row") if k in rec}
    submitted = {q: [r for r in (responses.get(q) or []) if r.get("status") in (None, "submitted")]
                 for q in ("decision", "edited_reply", "note")}
    row_id = meta.get("row_id") or rec.get("id")
    base = {"task": f"{meta.get('task') or f'#{n}'} (Argilla record {rec.get('id')})", "row_id": row_id,
                "reasons": tuple(r.strip() for r in (meta.get("reasons") or "").split(",") if r.strip()),
                "row": _row_of(meta.get("curate_row"))}
    votes = submitted["decision"]
    if not votes:
        return Decision(decision=None, **base)
    last = votes[-1]
    user = last.get("user_id")

    def answer(q: str) -> str | None:
        mine = [r["value"] for r in submitted[q] if r.get("user_id") == user] or [r["value"] for r in submitted[q]]
        return mine[-1] if mine else None

    return Decision(decision=last.get("value"), text=answer("edited_reply"), note=answer("note"),
                    by=None if user is None else str(user), at=at,
                    conflict=len({v.get("value") for v in votes}) > 1, **base)
