"""A recipe's `checks:`: the teacher's labels (the reply schema's enum fields) checked before a row is kept.

consistency: N   the same prompt is answered N times; the row is kept only when every label agrees
verify_labels    the teacher is asked, in one more request, whether the labels fit the input
agree_with_data: k   the row's labels must not contradict those of its k most similar reference rows
                 (the training data it will join): when a clear majority of them (at least 60%) carry
                 another label, the row is rejected. No request: rows are compared by embedding their
                 user turns (all-MiniLM-L6-v2 when installed, else TF-IDF, as `curate report` does).

Every check request is an ordinary Job: cached (a rerun pays nothing again), ledgered and budgeted.
"""

from __future__ import annotations

import json
from typing import Any

from curate.synth.cache import request_key
from curate.synth.jobs import Job, json_checker, parse_json_reply
from curate.synth.recipe import SynthRecipe

LABEL_SCHEMA = {"type": "object", "properties": {"correct": {"type": "boolean"}}, "required": ["correct"]}
LABEL_SYSTEM = ("You check the labels of training examples. Decide whether every label fits the input. "
                'Reply with JSON only: {"correct": true} or {"correct": false}')
LABEL_PARAMS = {"temperature": 0.0, "max_tokens": 32}
REJECTED_LABEL = "teacher rejected its own label"
_LABEL_CHECK = json_checker(LABEL_SCHEMA)
MISSING = "(missing)"


def consistency_jobs(recipe: SynthRecipe, job: Job, model: str) -> list[Job]:
    """The extra answers of one request: the same messages at the check temperature, each its own cache key."""
    params = {**job.params, "temperature": recipe.check_temperature}
    return [Job(job.seed, job.sample, job.variables, job.messages,
                # a sample of its own: the answers differ in the key even when the temperatures are equal
                request_key(model, job.messages, params, job.schema, f"{job.sample}+{i}"), job.est_prompt, params,
                job.schema, job.max_attempts, job.check, "consistency")
            for i in range(1, recipe.consistency)]


def label_job(recipe: SynthRecipe, job: Job, model: str, user: str, reply: Any) -> Job:
    """The request asking the teacher whether the labels of one row fit its input (the row's user message)."""
    listing = []
    for path in recipe.label_fields:
        choices = _at(recipe.reply_schema, [x for p in path for x in ("properties", p)])["enum"]
        listing.append(f"{'.'.join(path)}: {_show(_at(reply, path))} (one of {', '.join(map(_show, choices))})")
    text = f"Input:\n{user}\n\nLabels:\n" + "\n".join(listing) + "\n\nDo these labels fit the input?"
    messages = [{"role": "system", "content": LABEL_SYSTEM}, {"role": "user", "content": text}]
    key = request_key(model, messages, LABEL_PARAMS, LABEL_SCHEMA, 0)
    return Job(job.seed, job.sample, {}, messages, key, len(text) // 4 + 32, dict(LABEL_PARAMS), LABEL_SCHEMA, 3,
               _LABEL_CHECK, "verify_labels")


def disagreement(recipe: SynthRecipe, answers: list[Any]) -> str | None:
    """Why the answers' labels disagree (`inconsistent label category: billing vs account`), or None."""
    problems = []
    for path in recipe.label_fields:
        values = [_show(_at(a, path)) for a in answers]
        if len(set(values)) > 1:
            problems.append(f"inconsistent label {'.'.join(path)}: {' vs '.join(values)}")
    return "; ".join(problems) or None


def label_accepted(content: str) -> bool:
    """Whether the teacher's check reply says the labels are correct."""
    return parse_json_reply(content)["correct"] is True


def labels_only(recipe: SynthRecipe, reply: Any) -> dict[str, Any]:
    """A reply cut down to its label fields: what `against_data` reads of it (`_at` finds the same values)."""
    out: dict[str, Any] = {}
    for path in recipe.label_fields:
        value = _at(reply, path)
        if value == MISSING:
            continue
        node = out
        for p in path[:-1]:
            node = node.setdefault(p, {})
        node[path[-1]] = value
    return out


def _at(value: Any, path: Any) -> Any:
    for p in path:
        value = value.get(p, MISSING) if isinstance(value, dict) else MISSING
    return value


def _show(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


AGREE_SHARE = 0.6  # the neighbours' label must be this clear to overrule the teacher


def reference_labels(recipe: SynthRecipe, table: Any) -> tuple[list[str], list[dict[tuple[str, ...], Any]]]:
    """(first user turn, labels) of every reference row whose last assistant reply is JSON with the label fields."""
    from curate.replies import ReplyCheck

    texts, labels = [], []
    check = ReplyCheck()
    for messages in table.column("messages").to_pylist():
        user = next((m["content"] for m in messages if m["role"] == "user" and m.get("content")), None)
        reply = next((m["content"] for m in reversed(messages) if m["role"] == "assistant" and m.get("content")), None)
        if user is None or reply is None:
            continue
        verdict = check.check(reply)
        if not verdict.has_value or not isinstance(verdict.value, dict):
            continue
        texts.append(user)
        labels.append({path: _at(verdict.value, path) for path in recipe.label_fields})
    return texts, labels


def against_data(recipe: SynthRecipe, users: list[str], replies: list[Any], reference: Any, k: int) -> list[str | None]:
    """Per row, why its labels contradict its k nearest reference rows (None when they do not)."""
    from collections import Counter

    import numpy as np

    from curate.report.embed import load_embedder

    ref_texts, ref_labels = reference_labels(recipe, reference)
    if not ref_texts or not users:
        return [None] * len(users)
    ref_vecs, row_vecs = load_embedder("auto").embed_sets([ref_texts, users])
    nearest = np.argsort(-(row_vecs @ ref_vecs.T), axis=1, kind="stable")[:, :k]
    out = []
    for i, reply in enumerate(replies):
        problems = []
        for path in recipe.label_fields:
            votes = Counter(_show(ref_labels[j][path]) for j in nearest[i] if ref_labels[j][path] != MISSING)
            if not votes:
                continue
            label, n = votes.most_common(1)[0]
            mine = _show(_at(reply, path))
            if label != mine and n >= AGREE_SHARE * len(nearest[i]):
                problems.append(f"label {'.'.join(path)} {mine}, but {n} of its {len(nearest[i])} nearest training "
                                f"rows say {label}")
        out.append("; ".join(problems) or None)
    return out
