"""score_perplexity: how surprised a base model is by a row's assistant replies, given what comes before them.

Each row is rendered with the model's chat template (curate.embedded.render: the tokens training's loss covers
are the replies' content and end-of-turn), and the perplexity is exp(mean negative log-likelihood) over those
tokens, each given every token before it. A conversation longer than max_length tokens keeps its last
max_length (the prompt is cut from the front): the cost of a row is bounded, and its replies keep the context
nearest them. Rows of similar length are scored together, right-padded: causal attention never lets a real
token see the padding after it, so a row's figures do not depend on its batch. The output layer runs only at
the positions that predict a reply token (most of a small model's cost is that layer over 49k words).

    score_perplexity         null when the template cannot render the row or no reply token is left to score
    score_perplexity_tokens  the reply tokens scored
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from curate.errors import InputError

FIELDS = {"score_perplexity": pa.float64(), "score_perplexity_tokens": pa.int64()}


@dataclass
class PerplexityScorer:
    """A loaded model and tokenizer, and what it has scored so far."""

    name: str
    path: str
    tokenizer: Any
    model: Any
    max_length: int
    batch: int
    rows: int = 0
    tokens: int = 0  # tokens run through the model (prompt and replies)
    scored: int = 0  # reply tokens scored
    unrenderable: int = 0
    no_reply: int = 0
    seconds: float = 0.0
    _head: Any = field(default=None, repr=False)

    def summary(self) -> dict[str, Any]:
        rate = self.tokens / self.seconds if self.seconds else 0.0
        return {"model": self.name, "path": self.path, "rows": self.rows, "tokens": self.tokens,
                "reply_tokens": self.scored, "unrenderable": self.unrenderable, "no_reply": self.no_reply,
                "seconds": round(self.seconds, 2), "tokens_per_s": round(rate, 1), "max_length": self.max_length}


def load_scorer(name: str, max_length: int, batch: int) -> PerplexityScorer:
    """The model `name` ('embedded', 'gemma3-270m' or a folder) in fp32 on the CPU, ready to score."""
    from curate.bases import check_model, model_dir
    from curate.pickbase import _head, _tokenizer
    from curate.train.stage import load_base

    check_model(name)
    path = str(model_dir(name))
    tok, _ = _tokenizer(path)
    model = load_base(path, qlora=False, cuda=False, bf16=False)
    model.eval()
    scorer = PerplexityScorer(name, path, tok, model, max_length, batch)
    scorer._head = _head(model)
    return scorer


def _window(ids: list[int], mask: list[int], max_length: int) -> tuple[list[int], list[int]]:
    """The last max_length tokens and their reply mask (the prompt is cut from the front)."""
    if len(ids) <= max_length:
        return ids, mask
    return ids[-max_length:], mask[-max_length:]


def _nll_groups(scorer: PerplexityScorer, seqs: list[tuple[list[int], list[int]]],
                advance: Callable[..., None] | None = None) -> list[tuple[float, int]]:
    """(summed negative log-likelihood of the reply tokens, their number) of each (ids, mask), batched by length;
    `advance(rows, rate=...)` after each group."""
    import torch

    from curate.pickbase import selected_nll

    t0 = time.perf_counter()
    out: list[tuple[float, int]] = [(0.0, 0)] * len(seqs)
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i][0]))
    pad = scorer.tokenizer.pad_token_id if scorer.tokenizer.pad_token_id is not None else 0
    for start in range(0, len(order), scorer.batch):
        group = order[start:start + scorer.batch]
        width = max(len(seqs[i][0]) for i in group)
        x = torch.full((len(group), width), pad, dtype=torch.long)
        rows_of, pos_of, targets = [], [], []
        for b, i in enumerate(group):
            ids, mask = seqs[i]
            x[b, :len(ids)] = torch.tensor(ids)
            for p in range(len(ids) - 1):
                if mask[p + 1]:
                    rows_of.append(b)
                    pos_of.append(p)
                    targets.append(ids[p + 1])
        if not targets:
            continue
        rows_t, pos_t, tgt = torch.tensor(rows_of), torch.tensor(pos_of), torch.tensor(targets)
        nll = selected_nll(scorer.model, scorer._head, x, rows_t, pos_t, tgt)
        sums = torch.zeros(len(group), dtype=torch.float64).index_add_(0, rows_t, nll.double())
        counts = torch.bincount(rows_t, minlength=len(group))
        for b, i in enumerate(group):
            out[i] = (float(sums[b]), int(counts[b]))
        scorer.tokens += sum(len(seqs[i][0]) for i in group)
        if advance is not None:
            spent = scorer.seconds + time.perf_counter() - t0
            advance(len(group), rate=f"{scorer.tokens / spent:,.0f} tokens/s" if spent else "")
    return out


def perplexities(scorer: PerplexityScorer, messages: Sequence[list[dict]], tools: Sequence[Any],
                 advance: Callable[..., None] | None = None) -> tuple[list[float | None], list[int | None]]:
    """score_perplexity and score_perplexity_tokens of some rows (see the module docstring); `advance(rows,
    rate=...)` as rows are done."""
    from curate.embedded import render

    t0 = time.perf_counter()
    seqs: list[tuple[list[int], list[int]]] = []
    where: list[int] = []
    for i, (msgs, tl) in enumerate(zip(messages, tools)):
        try:
            r = render(scorer.tokenizer, msgs, tl)
        except (InputError, ValueError, TypeError):
            scorer.unrenderable += 1  # a row the template refuses is counted, and left without a perplexity
            continue
        ids, mask = _window(r.input_ids, r.assistant_mask, scorer.max_length)
        if not any(mask[1:]):
            scorer.no_reply += 1
            continue
        seqs.append((ids, mask))
        where.append(i)
    ppl: list[float | None] = [None] * len(messages)
    tokens: list[int | None] = [None] * len(messages)
    if advance is not None and len(messages) > len(seqs):
        advance(len(messages) - len(seqs))  # rows without a perplexity are done too
    for i, (nll, count) in zip(where, _nll_groups(scorer, seqs, advance)):
        if count:
            mean = nll / count
            ppl[i] = round(math.exp(mean), 4) if mean < 700 else math.inf
            tokens[i] = count
            scorer.scored += count
    scorer.rows += len(messages)
    scorer.seconds += time.perf_counter() - t0
    return ppl, tokens
