"""`curate eval`: replies to held-out prompts from the base and each adapter, scored on the task and the format.

The task metrics are curate.evaluation.task's, the comparisons and side-by-side examples
curate.evaluation.compare's, the model calls curate.evaluation.model's.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

from curate.console import console, progress
from curate.errors import InputError, UsageError
from curate.evaluation import model as lm
from curate.evaluation.compare import check_pairs, comparisons, pick_examples
from curate.evaluation.compliance import Checker, RowCheck, summarize
from curate.evaluation.config import EvalConfig
from curate.evaluation.task import (
    Score,
    Task,
    build_task,
    failure,
    reference_labels,
    score,
    summarize_task,
    train_labels,
)
from curate.inputs import Source, open_input
from curate.outcome import StageOutcome
from curate.outputs import OutputSet, write_table
from curate.train.data import percentile
from curate.train.merging import adapter_dir
from curate.train.threads import torch_threads

EVAL_COLUMNS = [
    ("eval_model", pa.string()), ("eval_reply", pa.string()), ("eval_input_tokens", pa.int64()),
    ("eval_p95_bucket", pa.bool_()), ("eval_parses", pa.bool_()), ("eval_schema_valid", pa.bool_()),
    ("eval_schema_error", pa.string()), ("eval_regex_match", pa.bool_()), ("eval_exact_match", pa.bool_()),
    ("eval_ok", pa.bool_()), ("eval_task_correct", pa.bool_()), ("eval_similarity", pa.float64()),
    ("eval_failure", pa.string()),
]

# Replies from somewhere other than the base model loaded here (a served GGUF, say): given the prompts as the
# chat template renders them, max_new_tokens and the progress callback, the greedy replies in prompt order.
ReplySource = Callable[[list[str], int, Callable[[int], Any]], list[str]]


def split_prompt(messages: list[dict]) -> tuple[list[dict], str | None]:
    """The conversation up to the last assistant reply, and that reply as the reference (if any)."""
    last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=None)
    if last is None:
        return messages, None
    return messages[:last], messages[last].get("content")


def _labels(adapters: Sequence[str | Path]) -> list[str]:
    out: list[str] = []
    for a in adapters:
        name = Path(a).name if Path(a).name != "adapter" else Path(a).parent.name
        out.append(name if name not in out and name != "base" else f"{name}#{len(out) + 1}")
    return out


def evaluate(
    data: Source,
    adapters: Sequence[str | Path] | Mapping[str, str | Path] = (),
    output: str | Path | None = None,
    config: EvalConfig | Mapping[str, Any] | None = None,
    *,
    failures: str | Path | None = None,
    train_data: Source | None = None,
    round: int = 1,
    compare: Sequence[Sequence[str]] = (),
    failures_of: Sequence[str] | None = None,
    sources: Mapping[str, ReplySource] | None = None,
    **overrides: Any,
) -> StageOutcome:
    """Reply to each held-out prompt with the base and each adapter; score the task and the format, compare models.

    `adapters` is a list of run/adapter folders (named after their folders) or a mapping name -> folder.
    `output` gets the input rows once per model with eval_ columns; `failures` the rows an adapter (or
    the base, when alone) gets wrong on the task or the format, as seeds for `curate synth`. Both are
    written as one output set. `train_data` adds the training set's label distribution; `round` is
    recorded in each variant; `compare` names pairs (a, b) compared beside every adapter against the base;
    `failures_of` names the models whose failures are seeds (default: every adapter, the base when alone).
    `sources` (name -> ReplySource) replaces the base and adapters: the models are those names, their replies
    come from the sources (no model is loaded here), and no reference loss is measured.
    """
    cfg = EvalConfig.build(config, **overrides)
    checker = Checker.build(cfg.output_schema, cfg.output_regex)
    named = _named(adapters)
    dirs = [adapter_dir(path) for _, path in named]
    names = ["base", *(name for name, _ in named)]
    if sources is not None:
        if named or not sources:
            raise UsageError("sources: give one or more reply sources, and no adapters beside them")
        names = list(sources)
    check_pairs(compare, names)  # before any model loads
    judged = list(failures_of) if failures_of is not None else names[1:] or names
    if not judged or any(n not in names for n in judged):
        raise UsageError(f"failures_of: {judged!r} must name evaluated models ({', '.join(names)})")
    src = open_input(data)
    table = src.read()
    # a previous eval's output can be evaluated again: its eval_ columns are replaced, not duplicated
    table = table.drop_columns([c for c in table.column_names if c.startswith("eval_")])
    if cfg.limit is not None:
        table = table.slice(0, cfg.limit)
    if table.num_rows == 0:
        raise InputError("no rows to evaluate", file=src.name)
    from curate.embedded import load_tokenizer, resolve_model, template_messages

    model_path = resolve_model(cfg.base)
    tokenizer = load_tokenizer(model_path)
    messages, tools = table.column("messages").to_pylist(), table.column("tools").to_pylist()
    prompts, refs, shown, texts = [], [], [], []
    for i, (msgs, tool) in enumerate(zip(messages, tools)):
        prompt, ref = split_prompt(msgs)
        if not prompt:
            raise InputError("row has no prompt before its assistant reply", file=src.name, field=f"row {i}")
        text = tokenizer.apply_chat_template(template_messages(prompt), tools=json.loads(tool) if tool else None,
                                             tokenize=False, add_generation_prompt=True)
        prompts.append(tokenizer(text, add_special_tokens=False)["input_ids"])
        texts.append(text)
        refs.append(ref)
        shown.append(prompt[-1].get("content") or "")
    task = build_task(checker.replies.schema, refs, cfg.task_fields, cfg.short_text, cfg.text_similarity)
    train = _train_labels(task, train_data) if train_data is not None and task.kind == "fields" else None
    lengths = [len(p) for p in prompts]
    p95 = percentile(lengths, 95.0)
    in_bucket = [n >= p95 for n in lengths]
    replies: dict[str, list[str]] = {}
    if sources is not None:
        threads, losses = None, {}
        t0 = time.perf_counter()
        with progress("generating", total=len(prompts) * len(names), unit="replies") as advance:
            for name in names:
                advance(0, description=f"generating: {name}")
                replies[name] = sources[name](texts, cfg.max_new_tokens, advance)
        seconds = {"generate": _since(t0)}
    else:
        with torch_threads(cfg.threads) as threads:
            console.print(f"torch threads: {threads.count} ({threads.why})")
            model = lm.load(model_path, dirs)
            t0 = time.perf_counter()
            with progress("generating", total=len(prompts) * len(names), unit="replies") as advance:
                for k, name in enumerate(names):
                    advance(0, description=f"generating: {name}")
                    replies[name] = lm.generate(model, tokenizer, prompts, None if k == 0 else f"a{k - 1}",
                                                cfg.max_new_tokens, cfg.batch_size, advance)
            seconds = {"generate": _since(t0)}
            t0 = time.perf_counter()
            losses = _losses(model, tokenizer, messages, tools, task, names, cfg.batch_size)
            if losses:
                seconds["reference_loss"] = _since(t0)
    results = {n: [checker.check(r, ref) for r, ref in zip(replies[n], refs)] for n in names}
    scores = {n: [score(task, r, c, i) for i, (r, c) in enumerate(zip(replies[n], results[n]))] for n in names}
    verdicts = {n: [failure(task, c, s) for c, s in zip(results[n], scores[n])] for n in names}
    summary = [summarize(n, results[n], in_bucket, checker, any(r is not None for r in refs)) for n in names]
    ref_labels = reference_labels(task) if task.kind == "fields" else {}
    variants = [_variant(n, round, rates, summarize_task(task, scores[n], ref_labels), losses.get(n, (None, None)))
                for n, rates in zip(names, summary)]
    right = {n: [v is None for v in verdicts[n]] for n in names}
    examples = [{"id": table.column("id")[i].as_py(), "prompt": shown[i], "reference": refs[i],
                 "replies": {n: replies[n][i] for n in names}, "correct": {n: right[n][i] for n in names}}
                for i in pick_examples(cfg.examples, replies, right)]
    failed = _failures(table, judged, replies, verdicts)
    written = {name: str(path) for name, path in (("rows", output), ("failures", failures)) if path is not None}
    if written:
        # per-row results and the failures file are one set: both appear together or neither does
        with OutputSet(output or failures, [p for p in (output, failures) if p is not None]) as outs:
            if output is not None:
                write_table(_long_table(table, names, replies, results, lengths, in_bucket, scores, verdicts), output,
                            outs)
            if failures is not None:
                write_table(failed, failures, outs)
    counts = {"in": table.num_rows, "ok": table.num_rows - failed.num_rows, "failed": failed.num_rows}
    return StageOutcome("eval", counts, written, {
        "config": cfg.to_dict(), "models": names, "checks": checker.names(), "p95_input_tokens": p95,
        "summary": summary,
        "task": {**task.describe(), "labels": {"references": ref_labels, "train": train}},
        "variants": variants,
        "comparisons": comparisons(_per_prompt(task, results, scores, names), names, compare, task.headline, cfg.seed),
        "examples": examples,
        "threads": threads.to_dict() if threads is not None else None, "seconds": seconds,
    }, parts=("ok", "failed"))


def _since(t0: float) -> float:
    """Seconds since t0 (evaluate's `round` argument hides the builtin there)."""
    return round(time.perf_counter() - t0, 2)


def _named(adapters: Sequence[str | Path] | Mapping[str, str | Path]) -> list[tuple[str, str | Path]]:
    """(name, folder) per adapter: a mapping's names, or names from the folders."""
    if isinstance(adapters, Mapping):
        for name in adapters:
            if not isinstance(name, str) or not name or name == "base":
                raise UsageError(f"adapter name {name!r}: give a non-empty name other than 'base'")
        return list(adapters.items())
    return list(zip(_labels(adapters), adapters))


def adapter_specs(specs: Sequence[str | Path]) -> dict[str, str]:
    """The CLI's --adapter values: `NAME=FOLDER` names an adapter; a plain FOLDER is named after its folder."""
    import re

    out: dict[str, str] = {}
    texts = [str(x) for x in specs]
    for label, x in zip(_labels(texts), texts):
        m = re.fullmatch(r"([A-Za-z0-9_.-]+)=(.+)", x)
        name, path = (m[1], m[2]) if m and not Path(x).exists() else (label, x)
        if name == "base" or name in out:
            raise UsageError(f"--adapter {x}: the name {name!r} is {'reserved' if name == 'base' else 'given twice'}")
        out[name] = path
    return out


def _variant(name: str, round: int, rates: dict[str, Any], metrics: dict[str, Any],
             loss: tuple[float | None, float | None]) -> dict[str, Any]:
    """One model's entry: its task metrics, format_rate (the share of replies whose format is right), loss."""
    return {"model": name, "data": name, "round": round, "task_accuracy": metrics["task_accuracy"],
            "format_rate": rates["ok_rate"],
            **{k: metrics[k] for k in ("fields", "confusion", "labels", "collapsed", "similarity")},
            "loss": loss[0], "perplexity": loss[1]}


def _per_prompt(task: Task, results: dict[str, list[RowCheck]], scores: dict[str, list[Score]],
                names: list[str]) -> dict[str, list[float]]:
    """The headline per prompt and model: task right (0/1), similarity (prose), format right (no references)."""
    if task.kind == "fields":
        return {n: [float(bool(scores[n][i].correct)) for i in task.scored] for n in names}
    if task.kind == "prose":
        return {n: [float(scores[n][i].similarity) for i in task.scored] for n in names}
    return {n: [float(c.ok) for c in results[n]] for n in names}


def _losses(model: Any, tokenizer: Any, messages: list, tools: list, task: Task, names: list[str],
            batch_size: int) -> dict[str, tuple[float | None, float | None]]:
    """Prose tasks: the loss and perplexity of the reference replies under each model (others: none)."""
    if task.kind != "prose":
        return {}
    examples = [lm.reference_example(tokenizer, messages[i], tools[i]) for i in task.scored]
    examples = [e for e in examples if e is not None]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    out = {}
    with progress("scoring references", total=len(examples) * len(names), unit="replies") as advance:
        for k, name in enumerate(names):
            advance(0, description=f"scoring references: {name}")
            out[name] = lm.loss_summary(lm.reference_loss(model, examples, None if k == 0 else f"a{k - 1}", batch_size,
                                                          pad, advance))
    return out


def _train_labels(task: Task, train_data: Source) -> dict[str, dict[str, int]]:
    return train_labels(task, open_input(train_data).read(["messages"]).column("messages").to_pylist())


def _long_table(table: pa.Table, names: list[str], replies: dict, results: dict, lengths: list[int],
                in_bucket: list[bool], scores: dict[str, list[Score]], verdicts: dict[str, list[str | None]]) -> pa.Table:
    """The input rows repeated once per model, with eval_ columns."""
    parts = []
    for name in names:
        cols = {"eval_model": [name] * table.num_rows, "eval_reply": replies[name], "eval_input_tokens": lengths,
                "eval_p95_bucket": in_bucket, "eval_task_correct": [s.correct for s in scores[name]],
                "eval_similarity": [s.similarity for s in scores[name]], "eval_failure": verdicts[name]}
        for key in ("parses", "schema_valid", "schema_error", "regex_match", "exact_match", "ok"):
            cols[f"eval_{key}"] = [getattr(r, key) for r in results[name]]
        t = table
        for col, typ in EVAL_COLUMNS:
            t = t.append_column(pa.field(col, typ), pa.array(cols[col], type=typ))
        parts.append(t)
    return pa.concat_tables(parts)


def _failures(table: pa.Table, judged: list[str], replies: dict[str, list[str]],
              verdicts: dict[str, list[str | None]]) -> pa.Table:
    """Rows any judged model gets wrong, as canonical rows: seeds for `curate synth`.

    eval_reply and eval_failure are the last failing model's reply and why it fails (format, wrong
    fields, low similarity); eval_failed_models lists every model that fails the row.
    """
    keep, failed_by, reply, why = [], [], [], []
    for i in range(table.num_rows):
        bad = [n for n in judged if verdicts[n][i] is not None]
        if bad:
            keep.append(i)
            failed_by.append(json.dumps(bad))
            reply.append(replies[bad[-1]][i])
            why.append(verdicts[bad[-1]][i])
    t = table.take(pa.array(keep, type=pa.int64()))
    t = t.append_column("eval_failed_models", pa.array(failed_by, type=pa.string()))
    t = t.append_column("eval_reply", pa.array(reply, type=pa.string()))
    return t.append_column("eval_failure", pa.array(why, type=pa.string()))
