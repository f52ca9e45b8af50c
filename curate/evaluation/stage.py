"""`curate eval`: generate replies to held-out prompts and measure exact format compliance, base vs adapters."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

from curate.console import progress
from curate.errors import InputError
from curate.evaluation.compliance import Checker, RowCheck, summarize
from curate.evaluation.config import EvalConfig
from curate.inputs import Source, open_input
from curate.outcome import StageOutcome
from curate.outputs import OutputSet, write_table
from curate.train.data import percentile
from curate.train.merging import adapter_dir

EVAL_COLUMNS = [
    ("eval_model", pa.string()), ("eval_reply", pa.string()), ("eval_input_tokens", pa.int64()),
    ("eval_p95_bucket", pa.bool_()), ("eval_parses", pa.bool_()), ("eval_schema_valid", pa.bool_()),
    ("eval_schema_error", pa.string()), ("eval_regex_match", pa.bool_()), ("eval_exact_match", pa.bool_()),
    ("eval_ok", pa.bool_()),
]


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
    adapters: Sequence[str | Path] = (),
    output: str | Path | None = None,
    config: EvalConfig | Mapping[str, Any] | None = None,
    *,
    failures: str | Path | None = None,
    **overrides: Any,
) -> StageOutcome:
    """Reply to each held-out prompt with the base and each adapter; score parse / schema / regex / exact match.

    `output` gets the input rows once per model with eval_ columns; `failures` the rows an adapter (or
    the base, when alone) fails, as seeds for `curate synth`. Both are written as one output set.
    """
    cfg = EvalConfig.build(config, **overrides)
    checker = Checker.build(cfg.output_schema, cfg.output_regex)
    dirs = [adapter_dir(a) for a in adapters]
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
    prompts, refs = [], []
    for i, (messages, tools) in enumerate(zip(table.column("messages").to_pylist(), table.column("tools").to_pylist())):
        prompt, ref = split_prompt(messages)
        if not prompt:
            raise InputError("row has no prompt before its assistant reply", file=src.name, field=f"row {i}")
        text = tokenizer.apply_chat_template(template_messages(prompt), tools=json.loads(tools) if tools else None,
                                             tokenize=False, add_generation_prompt=True)
        prompts.append(tokenizer(text, add_special_tokens=False)["input_ids"])
        refs.append(ref)
    lengths = [len(p) for p in prompts]
    p95 = percentile(lengths, 95.0)
    in_bucket = [n >= p95 for n in lengths]
    model = _load(model_path, dirs)
    names = ["base", *_labels(adapters)]
    replies: dict[str, list[str]] = {}
    with progress("generating", total=len(prompts) * len(names), unit="replies") as advance:
        for k, name in enumerate(names):
            replies[name] = _generate(model, tokenizer, prompts, None if k == 0 else f"a{k - 1}", cfg.max_new_tokens,
                                      cfg.batch_size, advance)
    results = {n: [checker.check(r, ref) for r, ref in zip(replies[n], refs)] for n in names}
    summary = [summarize(n, results[n], in_bucket, checker, any(r is not None for r in refs)) for n in names]
    failed = _failures(table, names, replies, results)
    written = {name: str(path) for name, path in (("rows", output), ("failures", failures)) if path is not None}
    if written:
        # per-row results and the failures file are one set: both appear together or neither does
        with OutputSet(output or failures, [p for p in (output, failures) if p is not None]) as outs:
            if output is not None:
                write_table(_long_table(table, names, replies, results, lengths, in_bucket), output, outs)
            if failures is not None:
                write_table(failed, failures, outs)
    counts = {"in": table.num_rows, "ok": table.num_rows - failed.num_rows, "failed": failed.num_rows}
    return StageOutcome("eval", counts, written, {"config": cfg.to_dict(), "models": names, "checks": checker.names(),
                                                  "p95_input_tokens": p95, "summary": summary}, parts=("ok", "failed"))


def _load(model_path: str, dirs: list[Path]) -> Any:
    from curate.train.stage import cuda_available, load_base

    cuda = cuda_available()
    model = load_base(model_path, qlora=False, cuda=cuda, bf16=cuda)
    model.config.use_cache = True  # generation wants the KV cache back
    if dirs:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(dirs[0]), adapter_name="a0")
        for k, d in enumerate(dirs[1:], start=1):
            model.load_adapter(str(d), adapter_name=f"a{k}")
    if cuda:
        model = model.to("cuda")
    model.eval()
    return model


def _generate(model: Any, tokenizer: Any, prompts: list[list[int]], adapter: str | None, max_new_tokens: int,
              batch_size: int, advance: Any) -> list[str]:
    """Greedy replies, batched by similar length with left padding; `adapter` None means the bare base."""
    import contextlib

    import torch

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    out: list[str] = [""] * len(prompts)
    if adapter is None:
        ctx = model.disable_adapter() if hasattr(model, "disable_adapter") else contextlib.nullcontext()
    else:
        model.set_adapter(adapter)
        ctx = contextlib.nullcontext()
    device = next(model.parameters()).device
    with ctx, torch.no_grad():
        for s in range(0, len(order), batch_size):
            idx = order[s:s + batch_size]
            width = max(len(prompts[i]) for i in idx)
            ids = torch.tensor([[pad] * (width - len(prompts[i])) + prompts[i] for i in idx], device=device)
            mask = torch.tensor([[0] * (width - len(prompts[i])) + [1] * len(prompts[i]) for i in idx], device=device)
            gen = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=pad, eos_token_id=tokenizer.eos_token_id)
            for row, i in enumerate(idx):
                out[i] = tokenizer.decode(gen[row, width:], skip_special_tokens=True)
            advance(len(idx))
    return out


def _long_table(table: pa.Table, names: list[str], replies: dict, results: dict, lengths: list[int],
                in_bucket: list[bool]) -> pa.Table:
    """The input rows repeated once per model, with eval_ columns."""
    parts = []
    for name in names:
        cols = {"eval_model": [name] * table.num_rows, "eval_reply": replies[name], "eval_input_tokens": lengths,
                "eval_p95_bucket": in_bucket}
        for key in ("parses", "schema_valid", "schema_error", "regex_match", "exact_match", "ok"):
            cols[f"eval_{key}"] = [getattr(r, key) for r in results[name]]
        t = table
        for col, typ in EVAL_COLUMNS:
            t = t.append_column(pa.field(col, typ), pa.array(cols[col], type=typ))
        parts.append(t)
    return pa.concat_tables(parts)


def _failures(table: pa.Table, names: list[str], replies: dict[str, list[str]],
              results: dict[str, list[RowCheck]]) -> pa.Table:
    """Rows any adapter (or the base, when alone) fails, as canonical rows: seeds for `curate synth`."""
    judged = names[1:] or names
    keep, failed_by, reply = [], [], []
    for i in range(table.num_rows):
        bad = [n for n in judged if not results[n][i].ok]
        if bad:
            keep.append(i)
            failed_by.append(json.dumps(bad))
            reply.append(replies[bad[-1]][i])
    t = table.take(pa.array(keep, type=pa.int64()))
    t = t.append_column("eval_failed_models", pa.array(failed_by, type=pa.string()))
    return t.append_column("eval_reply", pa.array(reply, type=pa.string()))
