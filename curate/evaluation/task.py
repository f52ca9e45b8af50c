"""Task metrics: per-field accuracy of JSON replies, enum confusion and label distributions, chrF of prose.

A JSON task is an output schema with top-level properties and references that are all JSON objects.
Each property is scored on every prompt with a reference: exactly for enums, numbers, booleans and
strings up to `short_text` characters; longer strings by chrF (sacrebleu, reported 0-1) and counted
right at `text_similarity` or above. A reply that is not strict JSON (curate.replies's fence rule)
scores 0 on every field. A prompt is right when every task field is. With references that are not
JSON, or no schema with properties, the task is prose: a reply is scored by its chrF against the
reference. Without references only the format is measured.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from curate.errors import UsageError
from curate.evaluation.compliance import RowCheck
from curate.replies import ReplyCheck

INVALID = "(invalid)"  # the predicted label of an unparseable reply, or of a missing / non-enum value
COLLAPSED, SPREAD = 0.9, 0.7  # one label >= 90% of valid predictions while the references' top label < 70%
HEADLINE = {"fields": "task_accuracy", "prose": "similarity", "format": "format_rate"}
_MISSING = object()
_PLAIN = ReplyCheck()  # JSON parsing only: replies and references are read, the schema is checked elsewhere


@dataclass(frozen=True)
class OutputField:
    """One top-level property of the output schema and how it is compared."""

    name: str
    kind: str  # enum / number / boolean / text / value (anything else: compared as JSON values)
    values: tuple[Any, ...] = ()  # an enum's allowed values


@dataclass
class Task:
    """What the references let eval measure, and how."""

    kind: str  # "fields" (JSON outputs), "prose" (references, not JSON fields), "format" (no references)
    fields: list[OutputField]
    task_fields: list[str]
    refs: list[str | None]
    values: list[dict | None]  # the references as JSON objects ("fields" only)
    short_text: int
    threshold: float

    @property
    def headline(self) -> str:
        return HEADLINE[self.kind]

    @property
    def scored(self) -> list[int]:
        """The prompts with a reference: the ones task metrics are computed over."""
        return [i for i, r in enumerate(self.refs) if r is not None]

    @property
    def enums(self) -> list[OutputField]:
        return [f for f in self.fields if f.kind == "enum"]

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "headline": self.headline, "prompts": len(self.scored),
                "fields": {f.name: f.kind for f in self.fields}, "task_fields": self.task_fields}


@dataclass
class Score:
    """One reply scored against its reference."""

    right: dict[str, bool] = field(default_factory=dict)  # per output field ("fields" tasks)
    text: dict[str, float] = field(default_factory=dict)  # chrF 0-1 of string fields whose reference is a string
    labels: dict[str, str] = field(default_factory=dict)  # per enum field: the predicted label or INVALID
    similarity: float | None = None  # chrF 0-1 of the whole reply against the reference
    correct: bool | None = None  # every task field right / similarity at the threshold; None without a reference


def schema_fields(schema: dict | None) -> list[OutputField]:
    """The top-level properties of an object schema, each with its kind (local $refs and nullable unions read)."""
    props = schema.get("properties") if isinstance(schema, dict) else None
    if not isinstance(props, dict):
        return []
    out = []
    for name, prop in props.items():
        p = _resolve(schema, prop)
        if "enum" in p or "const" in p:
            out.append(OutputField(name, "enum", tuple(p["enum"]) if "enum" in p else (p["const"],)))
            continue
        types = p.get("type")
        types = {types} if isinstance(types, str) else set(types or ()) - {"null"}
        kind = ("boolean" if types == {"boolean"} else "number" if types and types <= {"integer", "number"}
                else "text" if types == {"string"} else "value")
        out.append(OutputField(name, kind))
    return out


def _resolve(schema: dict, prop: Any) -> dict:
    """A property's own schema: a local `$ref` followed, a one-branch anyOf/oneOf besides null unwrapped."""
    for _ in range(8):  # refs to refs, not endlessly
        if not isinstance(prop, dict):
            return {}
        ref = prop.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/"):
            node: Any = schema
            for part in ref[2:].split("/"):
                node = node.get(part.replace("~1", "/").replace("~0", "~"), {}) if isinstance(node, dict) else {}
            prop = node
            continue
        branches = [b for b in prop.get("anyOf", prop.get("oneOf", [])) if b != {"type": "null"}]
        if len(branches) == 1 and not {"type", "enum", "const"} & prop.keys():
            prop = branches[0]
            continue
        return prop
    return {}


def build_task(schema: dict | None, refs: list[str | None], task_fields: list[str] | None, short_text: int,
               threshold: float) -> Task:
    """The task the references and the schema describe; task_fields are checked against the schema."""
    fields = schema_fields(schema)
    present = [r for r in refs if r is not None]
    values: list[dict | None] = []
    for r in refs:
        v = _PLAIN.check(r.strip()) if r is not None else None
        values.append(v.value if v is not None and v.parses and isinstance(v.value, dict) else None)
    is_json = bool(present) and all(v is not None for r, v in zip(refs, values) if r is not None)
    kind = "fields" if fields and is_json else "prose" if present else "format"
    if kind != "fields":
        if task_fields:
            why = ("there is no output schema with top-level properties" if not fields else
                   "the references are not all JSON objects" if present else "the data has no references")
            raise UsageError(f"task_fields {','.join(task_fields)} cannot be scored: {why}")
        return Task(kind, [], [], refs, [None] * len(refs), short_text, threshold)
    names = [f.name for f in fields]
    if task_fields:
        unknown = [f for f in task_fields if f not in names]
        if unknown:
            raise UsageError(f"task_fields: {', '.join(unknown)} not in the output schema's properties "
                             f"({', '.join(names)})")
        chosen = list(task_fields)
    else:
        # the fields a task decides (labels, numbers, flags); a schema of strings only: every field
        chosen = [f.name for f in fields if f.kind in ("enum", "number", "boolean")] or names
    return Task(kind, fields, chosen, refs, values, short_text, threshold)


def chrf(reply: str, reference: str) -> float:
    """chrF of a reply against one reference (sacrebleu), 0-1; identical texts (empty ones too) score 1."""
    if reply.strip() == reference.strip():
        return 1.0
    return round(_chrf().sentence_score(reply.strip(), [reference.strip()]).score / 100, 4)


_CHRF: list[Any] = []


def _chrf() -> Any:
    if not _CHRF:
        from sacrebleu.metrics import CHRF

        _CHRF.append(CHRF())
    return _CHRF[0]


def same(a: Any, b: Any) -> bool:
    """JSON values equal as JSON: 1 == 1.0, but true is not 1."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def label(f: OutputField, value: Any) -> str:
    """An enum value as a label (strings as they are, other values as JSON); INVALID outside the enum."""
    if value is _MISSING or not any(same(value, v) for v in f.values):
        return INVALID
    return value if isinstance(value, str) else json.dumps(value)


def score(task: Task, reply: str, check: RowCheck, i: int) -> Score:
    """Prompt i's reply scored against its reference (an empty Score without one)."""
    ref = task.refs[i]
    if ref is None:
        return Score()
    s = Score(similarity=chrf(reply, ref))
    if task.kind == "prose":
        s.correct = s.similarity >= task.threshold
        return s
    ref_obj = task.values[i]
    pred = _PLAIN.check(reply.strip()) if check.parses else None
    pred_obj = pred.value if pred is not None and isinstance(pred.value, dict) else None
    for f in task.fields:
        rv = ref_obj.get(f.name, _MISSING)
        pv = pred_obj.get(f.name, _MISSING) if pred_obj is not None else _MISSING
        if f.kind == "enum":
            s.labels[f.name] = label(f, pv)
        if isinstance(rv, str) and f.kind in ("text", "value"):
            sim = chrf(pv, rv) if isinstance(pv, str) else 0.0
            s.text[f.name] = sim
            s.right[f.name] = (pv == rv) if len(rv) <= task.short_text else sim >= task.threshold
        elif rv is _MISSING:
            s.right[f.name] = pred_obj is not None and pv is _MISSING  # an optional field rightly left out
        else:
            s.right[f.name] = pv is not _MISSING and same(pv, rv)
    s.correct = all(s.right[f] for f in task.task_fields)
    return s


def failure(task: Task, check: RowCheck, s: Score) -> str | None:
    """Why a reply fails the task: its format, the task fields it got wrong, or a low similarity; None if it passes."""
    parts = [] if check.ok else [f"format: {check.why}"]
    if s.correct is False and task.kind == "fields" and check.parses:
        parts.append("wrong fields: " + ", ".join(f for f in task.task_fields if not s.right[f]))
    elif s.correct is False and task.kind == "prose":
        parts.append(f"similarity {s.similarity:.2f} < {task.threshold:g}")
    return "; ".join(parts) or None


def _rate(values: list[bool]) -> float | None:
    return round(sum(values) / len(values), 4) if values else None


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 4) if values else None


def distribution(f: OutputField, labels: list[str]) -> dict[str, int]:
    """Counts per label in the enum's order (zeros shown), then INVALID when any."""
    counts = Counter(labels)
    out = {label(f, v): counts.get(label(f, v), 0) for v in f.values}
    if counts.get(INVALID):
        out[INVALID] = counts[INVALID]
    return out


def reference_labels(task: Task) -> dict[str, dict[str, int]]:
    """The label distribution of the references, per enum field."""
    return {f.name: distribution(f, [label(f, task.values[i].get(f.name, _MISSING)) for i in task.scored])
            for f in task.enums}


def train_labels(task: Task, messages: list[list[dict]]) -> dict[str, dict[str, int]]:
    """The label distribution of training rows' last assistant replies (strict JSON; anything else is INVALID)."""
    values = []
    for msgs in messages:
        reply = next((m.get("content") for m in reversed(msgs) if m["role"] == "assistant"), None)
        v = _PLAIN.check(reply.strip()) if reply else None
        values.append(v.value if v is not None and v.parses and isinstance(v.value, dict) else {})
    return {f.name: distribution(f, [label(f, v.get(f.name, _MISSING)) for v in values]) for f in task.enums}


def summarize_task(task: Task, scores: list[Score], refs_labels: dict[str, dict[str, int]]) -> dict[str, Any]:
    """One model's task metrics over the prompts with a reference."""
    idx = task.scored
    rows = [scores[i] for i in idx]
    out: dict[str, Any] = {"task_accuracy": None, "fields": {}, "confusion": {}, "labels": {}, "collapsed": {},
                           "similarity": _mean([s.similarity for s in rows])}
    if task.kind != "fields" or not rows:
        return out
    out["task_accuracy"] = _rate([bool(s.correct) for s in rows])
    for f in task.fields:
        sims = [s.text[f.name] for s in rows if f.name in s.text]
        out["fields"][f.name] = {"accuracy": _rate([s.right[f.name] for s in rows]), "similarity": _mean(sims)}
    for f in task.enums:
        predicted = [s.labels[f.name] for s in rows]
        refs = [label(f, task.values[i].get(f.name, _MISSING)) for i in idx]
        order = [*distribution(f, []), INVALID]
        pairs = Counter(zip(refs, predicted))
        out["confusion"][f.name] = {r: {p: pairs[(r, p)] for p in order if pairs[(r, p)]}
                                    for r in order if any(pairs[(r, p)] for p in order)}
        out["labels"][f.name] = dist = distribution(f, predicted)
        valid = {k: n for k, n in dist.items() if k != INVALID and n}
        top = max(valid, key=lambda k: valid[k]) if valid else None  # the first of equal counts, in enum order
        ref_top = max(refs_labels[f.name].values(), default=0)
        if top is not None and valid[top] >= COLLAPSED * sum(valid.values()) and ref_top < SPREAD * len(idx):
            out["collapsed"][f.name] = top
    return out
